//! The stratified train/test split shared by the datasets, and the removal of held-out classes
//! from the train split.

use std::collections::BTreeMap;

use pretext_plugin_api::{Description, Param, Params, Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Indices of the samples in each split, both sorted in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// How a dataset divides its samples: the share of each class in the test split, the seed, and
/// the classes kept out of the train split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOptions {
    pub test_fraction: f64,
    pub seed: u64,
    pub holdout_classes: Vec<i64>,
}

impl SplitOptions {
    /// Adds the `test_fraction`, `split_seed` and `holdout_classes` parameters to a schema.
    pub fn declare(description: Description) -> Description {
        description
            .param(
                Param::float("test_fraction", 0.2, "share of each class put in the test split")
                    .range(0.0, 1.0),
            )
            .param(Param::int("split_seed", 0, "seed of the train/test split").min(0.0))
            .param(Self::declare_holdout())
    }

    /// The `holdout_classes` parameter alone, for datasets whose seed parameter has another
    /// name.
    pub fn declare_holdout() -> Param {
        Param::int_list(
            "holdout_classes",
            &[],
            "labels removed from the train split and kept in the test split, for anomaly \
             detection",
        )
    }

    /// Reads the parameters that [`SplitOptions::declare`] adds.
    ///
    /// # Errors
    ///
    /// Fails when a parameter is missing from `params`.
    pub fn from_params(params: &Params) -> Result<Self> {
        Self::with_seed_param(params, "split_seed")
    }

    /// Reads `test_fraction`, `holdout_classes` and the seed from the parameter `seed_name`.
    ///
    /// # Errors
    ///
    /// Fails when a parameter is missing from `params`.
    pub fn with_seed_param(params: &Params, seed_name: &str) -> Result<Self> {
        Ok(Self {
            test_fraction: params.float("test_fraction")?,
            seed: params.int(seed_name)? as u64,
            holdout_classes: params.int_list("holdout_classes")?,
        })
    }

    /// Splits the samples with these options: stratified, then with the held-out classes moved
    /// to the test split.
    ///
    /// # Errors
    ///
    /// Fails as [`stratified_split`] and [`hold_out_classes`] do.
    pub fn split(&self, labels: &[i64]) -> Result<SplitIndices> {
        let split = stratified_split(labels, self.test_fraction, self.seed)?;
        hold_out_classes(split, labels, &self.holdout_classes)
    }
}

/// Splits sample indices into train and test, stratified by label.
///
/// One `ChaCha8Rng` seeded with `seed` shuffles the indices of each class in turn, in ascending
/// label order, and the first `round(test_fraction * class size)` of each go to the test split.
/// Each split is then sorted by original index, so the result depends only on the labels, the
/// fraction and the seed.
///
/// # Errors
///
/// Fails when `test_fraction` is not strictly between 0 and 1, or when either split would be
/// empty.
pub fn stratified_split(labels: &[i64], test_fraction: f64, seed: u64) -> Result<SplitIndices> {
    ensure!(
        test_fraction > 0.0 && test_fraction < 1.0,
        "test_fraction must be strictly between 0 and 1, found {test_fraction}"
    );

    let mut classes: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (index, &label) in labels.iter().enumerate() {
        classes.entry(label).or_default().push(index);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut test = Vec::new();
    for indices in classes.values_mut() {
        indices.shuffle(&mut rng);
        let test_count = (test_fraction * indices.len() as f64).round() as usize;
        test.extend_from_slice(&indices[..test_count]);
        train.extend_from_slice(&indices[test_count..]);
    }
    train.sort_unstable();
    test.sort_unstable();

    if test.is_empty() || train.is_empty() {
        let empty = if test.is_empty() { "test" } else { "train" };
        bail!(
            "test_fraction {test_fraction} leaves the {empty} split empty for {} samples; \
             change test_fraction or use more samples",
            labels.len()
        );
    }
    Ok(SplitIndices { train, test })
}

/// Moves every sample whose label is in `classes` out of the train split and into the test split,
/// so that an anomaly evaluator can treat those classes as unseen.
///
/// Both splits stay sorted by original index. An empty `classes` leaves the split unchanged.
///
/// # Errors
///
/// Fails when a class in `classes` does not occur in `labels`, or when holding them out leaves
/// the train split empty.
pub fn hold_out_classes(
    split: SplitIndices,
    labels: &[i64],
    classes: &[i64],
) -> Result<SplitIndices> {
    if classes.is_empty() {
        return Ok(split);
    }
    for &class in classes {
        ensure!(
            labels.contains(&class),
            "holdout_classes contains {class}, which is not a label of this dataset"
        );
    }

    let (held, train): (Vec<usize>, Vec<usize>) =
        split.train.into_iter().partition(|&index| classes.contains(&labels[index]));
    ensure!(
        !train.is_empty(),
        "holdout_classes {classes:?} removes every train sample; keep at least one class"
    );
    let mut test = split.test;
    test.extend(held);
    test.sort_unstable();
    Ok(SplitIndices { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(indices: &[usize], labels: &[i64], label: i64) -> usize {
        indices.iter().filter(|&&index| labels[index] == label).count()
    }

    #[test]
    fn split_rounds_each_class() {
        // 10 of class 0, 5 of class 1, 3 of class 2.
        let labels: Vec<i64> = [vec![0; 10], vec![1; 5], vec![2; 3]].concat();

        let split = stratified_split(&labels, 0.3, 7).unwrap();

        assert_eq!(count(&split.test, &labels, 0), 3);
        assert_eq!(count(&split.test, &labels, 1), 2);
        assert_eq!(count(&split.test, &labels, 2), 1);
        assert_eq!(split.train.len() + split.test.len(), labels.len());
    }

    #[test]
    fn split_is_sorted_and_disjoint() {
        let labels: Vec<i64> = (0..100).map(|i| i % 4).collect();

        let split = stratified_split(&labels, 0.25, 3).unwrap();

        assert!(split.train.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(split.test.windows(2).all(|pair| pair[0] < pair[1]));
        let mut all = [split.train.clone(), split.test.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn split_depends_on_seed_only() {
        let labels: Vec<i64> = (0..200).map(|i| i % 3).collect();

        let first = stratified_split(&labels, 0.2, 11).unwrap();
        let again = stratified_split(&labels, 0.2, 11).unwrap();
        let other = stratified_split(&labels, 0.2, 12).unwrap();

        assert_eq!(first, again);
        assert_ne!(first.test, other.test);
    }

    #[test]
    fn split_rejects_fraction_bounds() {
        let labels = [0, 1, 0, 1];

        for fraction in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(stratified_split(&labels, fraction, 0).is_err(), "accepted {fraction}");
        }
    }

    #[test]
    fn split_rejects_empty_test_split() {
        let error = stratified_split(&[0, 1], 0.2, 0).unwrap_err();

        assert_eq!(
            error.message(),
            "test_fraction 0.2 leaves the test split empty for 2 samples; \
             change test_fraction or use more samples"
        );
    }

    #[test]
    fn holdout_moves_classes_to_test() {
        let labels: Vec<i64> = (0..40).map(|i| i % 4).collect();
        let split = stratified_split(&labels, 0.25, 1).unwrap();
        let test_before = split.test.len();

        let held = hold_out_classes(split, &labels, &[1, 3]).unwrap();

        assert!(held.train.iter().all(|&index| labels[index] % 2 == 0));
        assert_eq!(count(&held.test, &labels, 1), 10);
        assert_eq!(count(&held.test, &labels, 3), 10);
        assert_eq!(held.test.len(), test_before + 2 * 7);
        assert!(held.test.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn holdout_rejects_unknown_class() {
        let labels = [0, 1, 0, 1, 0, 1];
        let split = stratified_split(&labels, 0.5, 0).unwrap();

        let error = hold_out_classes(split, &labels, &[7]).unwrap_err();

        assert_eq!(
            error.message(),
            "holdout_classes contains 7, which is not a label of this dataset"
        );
    }

    #[test]
    fn holdout_rejects_every_class() {
        let labels = [0, 1, 0, 1, 0, 1];
        let split = stratified_split(&labels, 0.5, 0).unwrap();

        let error = hold_out_classes(split, &labels, &[0, 1]).unwrap_err();

        assert_eq!(
            error.message(),
            "holdout_classes [0, 1] removes every train sample; keep at least one class"
        );
    }
}
