//! The stratified train/test split shared by the datasets.

use std::collections::BTreeMap;

use pretext_plugin_api::{Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Indices of the samples in each split, both sorted in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
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
}
