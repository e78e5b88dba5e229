//! Agreement between a clustering and the true labels: normalised mutual information, adjusted
//! Rand index and purity, as scikit-learn 1.x's `normalized_mutual_info_score` (arithmetic
//! mean) and `adjusted_rand_score` define them.

use std::collections::BTreeMap;

use pretext_plugin_api::{Result, ensure};

/// Counts of each (label, cluster) pair and the totals of each label and each cluster.
#[derive(Debug, Clone, Default)]
struct Contingency {
    cells: BTreeMap<(i64, i64), usize>,
    labels: BTreeMap<i64, usize>,
    clusters: BTreeMap<i64, usize>,
    total: usize,
}

impl Contingency {
    fn new(labels: &[i64], clusters: &[i64]) -> Result<Self> {
        ensure!(
            labels.len() == clusters.len(),
            "there are {} labels but {} cluster assignments",
            labels.len(),
            clusters.len()
        );
        ensure!(!labels.is_empty(), "there are no samples to compare with the clusters");

        let mut table = Self { total: labels.len(), ..Self::default() };
        for (&label, &cluster) in labels.iter().zip(clusters) {
            *table.cells.entry((label, cluster)).or_default() += 1;
            *table.labels.entry(label).or_default() += 1;
            *table.clusters.entry(cluster).or_default() += 1;
        }
        Ok(table)
    }
}

/// The three agreement scores of one clustering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterScores {
    pub nmi: f64,
    pub ari: f64,
    pub purity: f64,
}

/// Scores `clusters` against `labels`, one entry per sample.
///
/// # Errors
///
/// Fails when the lists are empty or differ in length.
pub fn cluster_scores(labels: &[i64], clusters: &[i64]) -> Result<ClusterScores> {
    let table = Contingency::new(labels, clusters)?;
    Ok(ClusterScores {
        nmi: normalized_mutual_info(&table),
        ari: adjusted_rand(&table),
        purity: purity(&table),
    })
}

/// Mutual information divided by the arithmetic mean of the two entropies, in nats.
///
/// As in scikit-learn, two single-group labelings score 1, and zero mutual information scores
/// 0 (which also covers one single-group side).
fn normalized_mutual_info(table: &Contingency) -> f64 {
    if table.labels.len() == 1 && table.clusters.len() == 1 {
        return 1.0;
    }
    let total = table.total as f64;
    let mutual: f64 = table
        .cells
        .iter()
        .map(|(&(label, cluster), &count)| {
            let count = count as f64;
            let expected = (table.labels[&label] * table.clusters[&cluster]) as f64;
            count / total * (total * count / expected).ln()
        })
        .sum();
    if mutual <= 0.0 {
        return 0.0;
    }
    let entropy = |groups: &BTreeMap<i64, usize>| -> f64 {
        groups.values().map(|&count| count as f64 / total).map(|p| -p * p.ln()).sum()
    };
    let normaliser = (entropy(&table.labels) + entropy(&table.clusters)) / 2.0;
    mutual / normaliser.max(f64::EPSILON)
}

/// Number of unordered pairs among `count` items, `count choose 2`.
fn pairs(count: usize) -> f64 {
    let count = count as f64;
    count * (count - 1.0) / 2.0
}

/// Rand index adjusted for chance, the Hubert and Arabie form. Identical trivial labelings,
/// whose expected and maximal index coincide, score 1 as in scikit-learn.
fn adjusted_rand(table: &Contingency) -> f64 {
    let index: f64 = table.cells.values().map(|&count| pairs(count)).sum();
    let label_pairs: f64 = table.labels.values().map(|&count| pairs(count)).sum();
    let cluster_pairs: f64 = table.clusters.values().map(|&count| pairs(count)).sum();
    let all_pairs = pairs(table.total);
    if all_pairs == 0.0 {
        return 1.0;
    }
    let expected = label_pairs * cluster_pairs / all_pairs;
    let maximum = (label_pairs + cluster_pairs) / 2.0;
    if maximum == expected {
        return 1.0;
    }
    (index - expected) / (maximum - expected)
}

/// Share of samples whose label is the most common label of their cluster.
fn purity(table: &Contingency) -> f64 {
    let mut largest: BTreeMap<i64, usize> = BTreeMap::new();
    for (&(_, cluster), &count) in &table.cells {
        let entry = largest.entry(cluster).or_default();
        *entry = (*entry).max(count);
    }
    largest.values().sum::<usize>() as f64 / table.total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, name: &str) {
        assert!((actual - expected).abs() < 1e-12, "{name}: {actual} vs {expected}");
    }

    #[test]
    fn renamed_clusters_score_one() {
        let scores = cluster_scores(&[0, 0, 1, 1, 2, 2], &[5, 5, 3, 3, 9, 9]).unwrap();

        assert_close(scores.nmi, 1.0, "nmi");
        assert_close(scores.ari, 1.0, "ari");
        assert_close(scores.purity, 1.0, "purity");
    }

    #[test]
    fn scores_match_hand_computed_example() {
        // Labels [0 0 0 1 1 1], clusters [0 0 1 1 2 2]: contingency rows (2 1 0) and (0 1 2).
        let scores = cluster_scores(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]).unwrap();

        // Pairs: index 1 + 1 = 2, labels 3 + 3 = 6, clusters 1 + 1 + 1 = 3, all 15.
        let expected = 6.0 * 3.0 / 15.0;
        assert_close(scores.ari, (2.0 - expected) / (4.5 - expected), "ari");
        // Each cell of 2 adds (2/6) ln(6 * 2 / (3 * 2)), and each cell of 1 adds ln 1 = 0.
        let mutual = 2.0 * (2.0 / 6.0) * 2f64.ln();
        let label_entropy = 2f64.ln();
        let cluster_entropy = 3f64.ln();
        assert_close(scores.nmi, mutual / ((label_entropy + cluster_entropy) / 2.0), "nmi");
        assert_close(scores.purity, 5.0 / 6.0, "purity");
    }

    #[test]
    fn single_cluster_scores_zero_information() {
        let scores = cluster_scores(&[0, 1, 0, 1], &[0, 0, 0, 0]).unwrap();

        assert_close(scores.nmi, 0.0, "nmi");
        assert_close(scores.ari, 0.0, "ari");
        assert_close(scores.purity, 0.5, "purity");
    }

    #[test]
    fn single_groups_on_both_sides_score_one() {
        let scores = cluster_scores(&[4, 4, 4], &[1, 1, 1]).unwrap();

        assert_close(scores.nmi, 1.0, "nmi");
        assert_close(scores.ari, 1.0, "ari");
    }

    #[test]
    fn scores_reject_length_mismatch() {
        let error = cluster_scores(&[0, 1], &[0]).unwrap_err();

        assert_eq!(error.message(), "there are 2 labels but 1 cluster assignments");
    }
}
