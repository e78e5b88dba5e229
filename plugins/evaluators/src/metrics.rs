//! Classification scores, computed as scikit-learn 1.7's `accuracy_score` and
//! `precision_recall_fscore_support(average="macro", zero_division="warn")` compute them.

use std::collections::BTreeMap;

use pretext_plugin_api::{Result, ensure};

/// Accuracy and macro-averaged precision, recall and F1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassificationScores {
    pub accuracy: f64,
    pub precision_macro: f64,
    pub recall_macro: f64,
    pub f1_macro: f64,
}

impl ClassificationScores {
    /// Converts the scores into named metrics, in a fixed order.
    pub fn to_metrics(self) -> Vec<(String, f64)> {
        vec![
            ("accuracy".to_owned(), self.accuracy),
            ("precision_macro".to_owned(), self.precision_macro),
            ("recall_macro".to_owned(), self.recall_macro),
            ("f1_macro".to_owned(), self.f1_macro),
        ]
    }
}

/// Per-class counts of a confusion matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClassCounts {
    true_positives: usize,
    false_positives: usize,
    false_negatives: usize,
}

/// Scores `predicted` against `truth`.
///
/// The macro averages run over every label that occurs in either list. A class whose precision,
/// recall or F1 has a zero denominator scores 0 for it, as scikit-learn does by default.
///
/// # Errors
///
/// Fails when the lists are empty or differ in length.
pub fn classification_scores(truth: &[i64], predicted: &[i64]) -> Result<ClassificationScores> {
    ensure!(
        truth.len() == predicted.len(),
        "there are {} true labels but {} predictions",
        truth.len(),
        predicted.len()
    );
    ensure!(!truth.is_empty(), "there are no labels to score");

    let mut counts: BTreeMap<i64, ClassCounts> = BTreeMap::new();
    let mut correct = 0;
    for (&actual, &guess) in truth.iter().zip(predicted) {
        if actual == guess {
            correct += 1;
            counts.entry(actual).or_default().true_positives += 1;
        } else {
            counts.entry(actual).or_default().false_negatives += 1;
            counts.entry(guess).or_default().false_positives += 1;
        }
    }

    let classes = counts.len() as f64;
    let mut precision_sum = 0.0;
    let mut recall_sum = 0.0;
    let mut f1_sum = 0.0;
    for class in counts.values() {
        let tp = class.true_positives as f64;
        precision_sum += ratio(tp, tp + class.false_positives as f64);
        recall_sum += ratio(tp, tp + class.false_negatives as f64);
        f1_sum +=
            ratio(2.0 * tp, 2.0 * tp + (class.false_positives + class.false_negatives) as f64);
    }

    Ok(ClassificationScores {
        accuracy: correct as f64 / truth.len() as f64,
        precision_macro: precision_sum / classes,
        recall_macro: recall_sum / classes,
        f1_macro: f1_sum / classes,
    })
}

/// Divides, with 0 for a zero denominator.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 { 0.0 } else { numerator / denominator }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, name: &str) {
        assert!((actual - expected).abs() < 1e-12, "{name}: {actual} vs {expected}");
    }

    #[test]
    fn scores_match_hand_computed_confusion_matrix() {
        // Confusion matrix, rows true and columns predicted, over classes 0, 1, 2:
        //   [3 1 0]
        //   [0 2 2]
        //   [1 0 1]
        // Precision: 3/4, 2/3, 1/3. Recall: 3/4, 2/4, 1/2. F1 = 2tp / (2tp + fp + fn):
        // 6/8, 4/7, 2/5.
        let truth = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2];
        let predicted = [0, 0, 0, 1, 1, 1, 2, 2, 0, 2];

        let scores = classification_scores(&truth, &predicted).unwrap();

        assert_close(scores.accuracy, 6.0 / 10.0, "accuracy");
        assert_close(
            scores.precision_macro,
            (3.0 / 4.0 + 2.0 / 3.0 + 1.0 / 3.0) / 3.0,
            "precision",
        );
        assert_close(scores.recall_macro, (3.0 / 4.0 + 2.0 / 4.0 + 1.0 / 2.0) / 3.0, "recall");
        assert_close(scores.f1_macro, (6.0 / 8.0 + 4.0 / 7.0 + 2.0 / 5.0) / 3.0, "f1");
    }

    #[test]
    fn scores_count_predicted_only_labels() {
        // Label 5 is never true, so its precision, recall and F1 are all 0 but it still counts.
        let truth = [1, 1, 2, 2];
        let predicted = [1, 5, 2, 2];

        let scores = classification_scores(&truth, &predicted).unwrap();

        assert_close(scores.accuracy, 0.75, "accuracy");
        assert_close(scores.precision_macro, (1.0 + 1.0 + 0.0) / 3.0, "precision");
        assert_close(scores.recall_macro, (0.5 + 1.0 + 0.0) / 3.0, "recall");
        assert_close(scores.f1_macro, (2.0 / 3.0 + 1.0 + 0.0) / 3.0, "f1");
    }

    #[test]
    fn perfect_predictions_score_one() {
        let labels = [0, 1, 2, 1];

        let scores = classification_scores(&labels, &labels).unwrap();

        assert_eq!(
            scores,
            ClassificationScores {
                accuracy: 1.0,
                precision_macro: 1.0,
                recall_macro: 1.0,
                f1_macro: 1.0
            }
        );
    }

    #[test]
    fn scores_reject_length_mismatch() {
        let error = classification_scores(&[0, 1], &[0]).unwrap_err();

        assert_eq!(error.message(), "there are 2 true labels but 1 predictions");
    }

    #[test]
    fn scores_reject_empty_lists() {
        assert!(classification_scores(&[], &[]).is_err());
    }
}
