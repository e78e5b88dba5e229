//! The `knn` evaluator: a k-nearest-neighbours classifier over cosine similarity between
//! L2-normalised embeddings, fitted on the train split and scored on the test split.
//!
//! With `weights = "distance"` each neighbour votes with weight `1 / (1 - cosine similarity)`,
//! the inverse cosine distance, as scikit-learn's
//! `KNeighborsClassifier(metric="cosine", weights="distance")` does. When some neighbours are at
//! distance 0, only those vote, as in scikit-learn. With `weights = "uniform"` every neighbour
//! votes with weight 1. A tie between classes goes to the lowest label.

use std::collections::BTreeMap;

use pretext_plugin_api::{
    BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin, Param, Params,
    Result, bail,
};

use crate::data;
use crate::neighbours::{Neighbours, nearest_by_cosine};

/// The weighting of the neighbours' votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Uniform,
    /// Inverse cosine distance.
    Distance,
}

/// Scores embeddings by the test accuracy of a cosine k-nearest-neighbours vote.
pub struct Knn {
    k: usize,
    weights: Weights,
}

impl EvaluatorPlugin for Knn {
    fn describe() -> Description {
        Description::new(
            "knn",
            env!("CARGO_PKG_VERSION"),
            "k-nearest-neighbours vote by cosine similarity on normalised embeddings: test accuracy",
        )
        .param(Param::int("k", 20, "number of train neighbours that vote").min(1.0))
        .param(
            Param::string(
                "weights",
                "distance",
                "vote weight: `distance` for 1 / cosine distance, `uniform` for 1",
            )
            .choices(&["distance", "uniform"]),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let k = params.int("k")?;
        pretext_plugin_api::ensure!(k >= 1, "k must be at least 1, found {k}");
        let weights = match params.string("weights")?.as_str() {
            "distance" => Weights::Distance,
            "uniform" => Weights::Uniform,
            other => bail!("weights must be `distance` or `uniform`, found `{other}`"),
        };
        Ok(Self { k: k as usize, weights })
    }
}

impl Evaluator for Knn {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let splits = data::labelled_splits(context, "knn")?;
        let neighbours = nearest_by_cosine(&splits.train, &splits.test, self.k)?;
        let predicted = vote(&neighbours, &splits.train_labels, self.weights);

        let correct =
            predicted.iter().zip(&splits.test_labels).filter(|(guess, truth)| guess == truth);
        let accuracy = correct.count() as f64 / splits.test_labels.len() as f64;
        Ok(EvalReport { metrics: vec![("accuracy".to_owned(), accuracy)], artifacts: Vec::new() })
    }
}

/// Predicts one label per query row from its neighbours' train labels.
pub fn vote(neighbours: &Neighbours, train_labels: &[i64], weights: Weights) -> Vec<i64> {
    let rows = neighbours.indices.len() / neighbours.k;
    (0..rows)
        .map(|row| {
            let distances: Vec<f64> = neighbours
                .similarities_of(row)
                .iter()
                .map(|similarity| (1.0 - similarity).max(0.0))
                .collect();
            let exact = distances.contains(&0.0);

            let mut totals: BTreeMap<i64, f64> = BTreeMap::new();
            for (&index, &distance) in neighbours.indices_of(row).iter().zip(&distances) {
                let weight = match weights {
                    Weights::Uniform => 1.0,
                    Weights::Distance if exact => f64::from(u8::from(distance == 0.0)),
                    Weights::Distance => 1.0 / distance,
                };
                *totals.entry(train_labels[index]).or_default() += weight;
            }
            // The first maximum in ascending label order wins, as `argmax` does in scikit-learn.
            let mut best = (i64::MAX, f64::NEG_INFINITY);
            for (label, total) in totals {
                if total > best.1 {
                    best = (label, total);
                }
            }
            best.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::FakeContext;

    fn knn(k: i64, weights: &str) -> Knn {
        let params = Params::new(vec![
            ("k".into(), ParamValue::Int(k)),
            ("weights".into(), ParamValue::Str(weights.into())),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        Knn::create(&params, &context).unwrap()
    }

    fn accuracy(report: &EvalReport) -> f64 {
        assert_eq!(report.metrics.len(), 1);
        assert_eq!(report.metrics[0].0, "accuracy");
        report.metrics[0].1
    }

    /// Train rows at angles 0 (label 0), 90 (label 1) and 180 degrees (label 2), three each.
    fn directions() -> FakeContext {
        let mut train = Vec::new();
        let mut labels = Vec::new();
        for (label, direction) in [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]].iter().enumerate() {
            for scale in [1.0, 2.0, 5.0] {
                train.push(vec![direction[0] * scale + 0.01, direction[1] * scale - 0.01]);
                labels.push(label as i64);
            }
        }
        let test = vec![vec![4.0, 0.5], vec![0.3, 9.0], vec![-2.0, -0.2]];
        FakeContext::labelled(&train, &labels, &test, &[0, 1, 2])
    }

    #[test]
    fn knn_classifies_by_direction() {
        for weights in ["distance", "uniform"] {
            let report = knn(3, weights).evaluate(&directions()).unwrap();

            assert_eq!(accuracy(&report), 1.0, "{weights}");
        }
    }

    #[test]
    fn distance_weights_outvote_majority() {
        // One close neighbour of label 1 against two far ones of label 0.
        let neighbours =
            Neighbours { similarities: vec![0.99, 0.5, 0.4], indices: vec![0, 1, 2], k: 3 };
        let labels = [1, 0, 0];

        assert_eq!(vote(&neighbours, &labels, Weights::Distance), [1]);
        assert_eq!(vote(&neighbours, &labels, Weights::Uniform), [0]);
    }

    #[test]
    fn exact_matches_take_whole_vote() {
        let neighbours =
            Neighbours { similarities: vec![1.0, 0.999, 0.998], indices: vec![0, 1, 2], k: 3 };

        assert_eq!(vote(&neighbours, &[2, 1, 1], Weights::Distance), [2]);
    }

    #[test]
    fn tied_vote_goes_to_lowest_label() {
        let neighbours = Neighbours { similarities: vec![0.5, 0.5], indices: vec![0, 1], k: 2 };

        assert_eq!(vote(&neighbours, &[3, 1], Weights::Uniform), [1]);
    }

    #[test]
    fn knn_rejects_k_above_train_size() {
        let error = knn(20, "distance").evaluate(&directions()).err().unwrap();

        assert_eq!(error.message(), "k is 20 but there are only 9 reference embeddings; lower k");
    }

    #[test]
    fn knn_rejects_unlabelled_dataset() {
        let mut context = directions();
        context.test_labels = None;

        let error = knn(3, "uniform").evaluate(&context).err().unwrap();

        assert_eq!(error.message(), "the dataset has no labels; knn needs class labels");
    }
}
