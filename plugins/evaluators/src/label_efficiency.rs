//! Stratified, seeded subsets of the train labels, for measuring probe accuracy when only a
//! fraction of the labels is available.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Returns the sorted indices of a stratified subset: from each class, `round(fraction * size)`
/// samples and at least one, drawn by one `ChaCha8Rng` seeded with `seed` that shuffles the
/// classes in ascending label order.
pub fn stratified_subset(labels: &[i64], fraction: f64, seed: u64) -> Vec<usize> {
    let mut classes: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (index, &label) in labels.iter().enumerate() {
        classes.entry(label).or_default().push(index);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut subset = Vec::new();
    for indices in classes.values_mut() {
        indices.shuffle(&mut rng);
        let count = ((fraction * indices.len() as f64).round() as usize).clamp(1, indices.len());
        subset.extend_from_slice(&indices[..count]);
    }
    subset.sort_unstable();
    subset
}

/// Names the accuracy metric of a label fraction by its percentage: `accuracy_at_1pct` for
/// 0.01, `accuracy_at_0.5pct` for 0.005.
pub fn fraction_metric_name(fraction: f64) -> String {
    let percent = fraction * 100.0;
    let rounded = (percent * 1000.0).round() / 1000.0;
    let text = format!("{rounded:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("accuracy_at_{text}pct")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_keeps_share_of_each_class() {
        let labels: Vec<i64> = [vec![0; 100], vec![1; 50], vec![2; 3]].concat();

        let subset = stratified_subset(&labels, 0.1, 7);

        let count = |class| subset.iter().filter(|&&index| labels[index] == class).count();
        assert_eq!(count(0), 10);
        assert_eq!(count(1), 5);
        assert_eq!(count(2), 1);
        assert!(subset.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn subset_keeps_one_sample_per_class() {
        let labels = [0, 0, 0, 1, 1, 2];

        let subset = stratified_subset(&labels, 0.01, 0);

        assert_eq!(subset.len(), 3);
    }

    #[test]
    fn subset_of_full_fraction_is_everything() {
        let labels = [3, 1, 3, 1, 2];

        assert_eq!(stratified_subset(&labels, 1.0, 5), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn subset_depends_on_seed() {
        let labels: Vec<i64> = (0..200).map(|i| i % 2).collect();

        assert_eq!(stratified_subset(&labels, 0.1, 1), stratified_subset(&labels, 0.1, 1));
        assert_ne!(stratified_subset(&labels, 0.1, 1), stratified_subset(&labels, 0.1, 2));
    }

    #[test]
    fn metric_names_use_percentages() {
        assert_eq!(fraction_metric_name(0.01), "accuracy_at_1pct");
        assert_eq!(fraction_metric_name(0.1), "accuracy_at_10pct");
        assert_eq!(fraction_metric_name(1.0), "accuracy_at_100pct");
        assert_eq!(fraction_metric_name(0.005), "accuracy_at_0.5pct");
        assert_eq!(fraction_metric_name(0.125), "accuracy_at_12.5pct");
    }
}
