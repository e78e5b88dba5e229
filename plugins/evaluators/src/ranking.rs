//! Scores of a ranking of binary outcomes: the area under the ROC curve and average precision,
//! as scikit-learn 1.x's `roc_auc_score` and `average_precision_score` compute them.

use pretext_plugin_api::{Result, ensure};

/// Checks that `scores` and `positives` pair up and that both outcomes occur.
fn check(scores: &[f64], positives: &[bool]) -> Result<()> {
    ensure!(
        scores.len() == positives.len(),
        "there are {} scores but {} outcomes",
        scores.len(),
        positives.len()
    );
    ensure!(
        scores.iter().all(|score| score.is_finite()),
        "the scores contain NaN or infinite values"
    );
    let positive = positives.iter().filter(|&&positive| positive).count();
    ensure!(
        positive > 0 && positive < positives.len(),
        "ranking scores need both outcomes, found {positive} positives among {} samples",
        positives.len()
    );
    Ok(())
}

/// Indices sorted by descending score; equal scores keep their order.
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    order
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, with ties counted as one half.
///
/// # Errors
///
/// Fails when the lengths differ, a score is not finite, or only one outcome occurs.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Result<f64> {
    check(scores, positives)?;

    // Sum, over positives, of the number of negatives ranked below, ties counting one half.
    let order = descending(scores);
    let negatives_total = positives.iter().filter(|&&positive| !positive).count() as f64;
    let positives_total = positives.len() as f64 - negatives_total;
    let mut negatives_above = 0.0;
    let mut wins = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let group = &order[start..end];
        let group_positives = group.iter().filter(|&&index| positives[index]).count() as f64;
        let group_negatives = group.len() as f64 - group_positives;
        let below = negatives_total - negatives_above - group_negatives;
        wins += group_positives * (below + 0.5 * group_negatives);
        negatives_above += group_negatives;
        start = end;
    }
    Ok(wins / (positives_total * negatives_total))
}

/// Average precision: the sum over score thresholds, highest first, of the precision at each
/// threshold times the recall gained there. Tied scores form one threshold.
///
/// # Errors
///
/// Fails as [`roc_auc`] does.
pub fn average_precision(scores: &[f64], positives: &[bool]) -> Result<f64> {
    check(scores, positives)?;

    let order = descending(scores);
    let positives_total = positives.iter().filter(|&&positive| positive).count() as f64;
    let (mut true_positives, mut seen, mut previous_recall, mut sum) = (0.0, 0.0, 0.0, 0.0);
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            true_positives += f64::from(u8::from(positives[order[end]]));
            seen += 1.0;
            end += 1;
        }
        let recall = true_positives / positives_total;
        sum += (recall - previous_recall) * (true_positives / seen);
        previous_recall = recall;
        start = end;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, name: &str) {
        assert!((actual - expected).abs() < 1e-12, "{name}: {actual} vs {expected}");
    }

    #[test]
    fn perfect_ranking_scores_one() {
        let scores = [0.9, 0.8, 0.1, 0.2];
        let positives = [true, true, false, false];

        assert_close(roc_auc(&scores, &positives).unwrap(), 1.0, "auroc");
        assert_close(average_precision(&scores, &positives).unwrap(), 1.0, "ap");
    }

    #[test]
    fn ranking_matches_hand_computed_values() {
        // Descending: 0.8 (+), 0.6 (-), 0.4 (+), 0.2 (-). Positive 0.8 beats both negatives,
        // positive 0.4 beats one: AUROC 3 / 4. AP: recall 1/2 at precision 1, then recall 1
        // at precision 2/3.
        let scores = [0.4, 0.2, 0.8, 0.6];
        let positives = [true, false, true, false];

        assert_close(roc_auc(&scores, &positives).unwrap(), 0.75, "auroc");
        assert_close(average_precision(&scores, &positives).unwrap(), 0.5 + 0.5 * 2.0 / 3.0, "ap");
    }

    #[test]
    fn tied_scores_count_half() {
        let scores = [0.5, 0.5, 0.5];
        let positives = [true, false, false];

        assert_close(roc_auc(&scores, &positives).unwrap(), 0.5, "auroc");
        assert_close(average_precision(&scores, &positives).unwrap(), 1.0 / 3.0, "ap");
    }

    #[test]
    fn ranking_rejects_one_outcome() {
        let error = roc_auc(&[0.1, 0.2], &[true, true]).unwrap_err();

        assert_eq!(
            error.message(),
            "ranking scores need both outcomes, found 2 positives among 2 samples"
        );
    }
}
