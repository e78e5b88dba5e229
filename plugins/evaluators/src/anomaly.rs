//! The `anomaly` evaluator: detects test samples of the anomaly classes by a score that should
//! be higher for them, and reports the area under the ROC curve and average precision.
//!
//! `score = "knn_distance"` scores a test sample by its mean cosine distance (1 - cosine
//! similarity) to its `k` nearest normal train embeddings. Train samples of the anomaly
//! classes are left out of that reference set. `score = "reconstruction"` scores it by the mean
//! squared error of the objective's reconstruction of its inputs.

use pretext_plugin_api::tch::{self, Kind, Tensor};
use pretext_plugin_api::{
    BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin, Param, Params,
    Result, Split, bail, ensure,
};

use crate::data::{self, LabelledSplits};
use crate::neighbours::nearest_by_cosine;
use crate::ranking::{average_precision, roc_auc};

/// Number of test samples reconstructed per call to the objective.
const BATCH_SIZE: usize = 256;

/// The anomaly score of a test sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    KnnDistance,
    Reconstruction,
}

/// Scores how well a per-sample score separates anomaly classes from normal ones.
pub struct Anomaly {
    /// Labels that count as anomalies; empty means the test labels absent from the train split.
    anomaly_classes: Vec<i64>,
    score: Score,
    k: usize,
}

impl EvaluatorPlugin for Anomaly {
    fn describe() -> Description {
        Description::new(
            "anomaly",
            env!("CARGO_PKG_VERSION"),
            "anomaly detection of held-out classes: AUROC and average precision of a score",
        )
        .param(Param::int_list(
            "anomaly_classes",
            &[],
            "labels that count as anomalies; empty uses the test labels absent from the train split \
             (see the datasets' holdout_classes)",
        ))
        .param(
            Param::string(
                "score",
                "knn_distance",
                "`knn_distance`: mean cosine distance to the k nearest normal train embeddings; \
                 `reconstruction`: mean squared reconstruction error",
            )
            .choices(&["knn_distance", "reconstruction"]),
        )
        .param(Param::int("k", 5, "number of neighbours for `knn_distance`").min(1.0))
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let score = match params.string("score")?.as_str() {
            "knn_distance" => Score::KnnDistance,
            "reconstruction" => Score::Reconstruction,
            other => bail!("score must be `knn_distance` or `reconstruction`, found `{other}`"),
        };
        let k = params.int("k")?;
        ensure!(k >= 1, "k must be at least 1, found {k}");
        Ok(Self { anomaly_classes: params.int_list("anomaly_classes")?, score, k: k as usize })
    }
}

impl Evaluator for Anomaly {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let splits = data::labelled_splits(context, "anomaly")?;
        let classes = self.resolve_classes(&splits)?;
        let positives: Vec<bool> =
            splits.test_labels.iter().map(|label| classes.contains(label)).collect();

        let scores = match self.score {
            Score::KnnDistance => knn_distances(&splits, &classes, self.k)?,
            Score::Reconstruction => reconstruction_errors(context)?,
        };
        let metrics = vec![
            ("auroc".to_owned(), roc_auc(&scores, &positives)?),
            ("average_precision".to_owned(), average_precision(&scores, &positives)?),
        ];
        Ok(EvalReport { metrics, artifacts: Vec::new() })
    }
}

impl Anomaly {
    /// Returns the anomaly classes: the configured ones, or the test labels that the train
    /// split lacks.
    fn resolve_classes(&self, splits: &LabelledSplits) -> Result<Vec<i64>> {
        if !self.anomaly_classes.is_empty() {
            return Ok(self.anomaly_classes.clone());
        }
        let mut unseen: Vec<i64> = splits
            .test_labels
            .iter()
            .copied()
            .filter(|label| !splits.train_labels.contains(label))
            .collect();
        unseen.sort_unstable();
        unseen.dedup();
        ensure!(
            !unseen.is_empty(),
            "anomaly_classes is empty and every test label occurs in the train split; set \
             anomaly_classes, or the dataset's holdout_classes"
        );
        Ok(unseen)
    }
}

/// Mean cosine distance of each test embedding to its `k` nearest train embeddings outside the
/// anomaly classes.
fn knn_distances(splits: &LabelledSplits, classes: &[i64], k: usize) -> Result<Vec<f64>> {
    let normal: Vec<i64> = (0..splits.train_labels.len() as i64)
        .filter(|&index| !classes.contains(&splits.train_labels[index as usize]))
        .collect();
    ensure!(
        !normal.is_empty(),
        "every train sample belongs to anomaly_classes {classes:?}; knn_distance needs normal \
         train samples"
    );
    let reference = splits.train.f_index_select(0, &Tensor::from_slice(&normal))?;

    let neighbours = nearest_by_cosine(&reference, &splits.test, k)?;
    let rows = splits.test_labels.len();
    Ok((0..rows)
        .map(|row| {
            let similarities = neighbours.similarities_of(row);
            similarities.iter().map(|similarity| 1.0 - similarity).sum::<f64>() / k as f64
        })
        .collect())
}

/// Mean squared reconstruction error of each test sample, in float64.
fn reconstruction_errors(context: &dyn EvalContext) -> Result<Vec<f64>> {
    let _no_grad = tch::no_grad_guard();
    let indices: Vec<i64> = (0..context.dataset().test_len as i64).collect();
    let mut errors = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(BATCH_SIZE) {
        let inputs = context.inputs(Split::Test, chunk)?.inputs.f_to_device(context.device())?;
        let Some(outputs) = context.reconstruct(&inputs)? else {
            bail!(
                "the objective has no decoder; score = \"reconstruction\" needs one (such as \
                 `autoencoder`), or use score = \"knn_distance\""
            );
        };
        let rows = chunk.len() as i64;
        ensure!(
            outputs.size().first() == Some(&rows) && outputs.numel() == inputs.numel(),
            "reconstructions have shape {:?} but the inputs have shape {:?}",
            outputs.size(),
            inputs.size()
        );
        let inputs = inputs.f_to_kind(Kind::Double)?.f_reshape([rows, -1])?;
        let outputs =
            outputs.f_to_device(inputs.device())?.f_to_kind(Kind::Double)?.f_reshape([rows, -1])?;
        let difference = outputs.f_sub(&inputs)?;
        let mean = difference.f_square()?.f_mean_dim(1, false, Kind::Double)?;
        errors.extend(Vec::<f64>::try_from(&mean.f_to_device(tch::Device::Cpu)?)?);
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::FakeContext;

    fn anomaly(classes: &[i64], score: &str) -> Anomaly {
        let params = Params::new(vec![
            ("anomaly_classes".into(), ParamValue::IntList(classes.into())),
            ("score".into(), ParamValue::Str(score.into())),
            ("k".into(), ParamValue::Int(2)),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        Anomaly::create(&params, &context).unwrap()
    }

    fn metric(report: &EvalReport, name: &str) -> f64 {
        report.metrics.iter().find(|(key, _)| key == name).map(|(_, value)| *value).unwrap()
    }

    /// Normal classes 0 and 1 point along the axes; class 2 points along the diagonal.
    fn context(train_has_anomalies: bool) -> FakeContext {
        let mut train = vec![vec![1.0, 0.05], vec![2.0, -0.1], vec![0.05, 1.0], vec![-0.1, 3.0]];
        let mut train_labels = vec![0, 0, 1, 1];
        if train_has_anomalies {
            train.push(vec![1.0, 1.0]);
            train_labels.push(2);
        }
        let test = vec![vec![3.0, 0.2], vec![0.2, 2.0], vec![1.0, 0.9], vec![2.0, 2.1]];
        FakeContext::labelled(&train, &train_labels, &test, &[0, 1, 2, 2])
    }

    #[test]
    fn knn_distance_finds_unseen_class() {
        let report = anomaly(&[], "knn_distance").evaluate(&context(false)).unwrap();

        assert_eq!(metric(&report, "auroc"), 1.0);
        assert_eq!(metric(&report, "average_precision"), 1.0);
    }

    #[test]
    fn knn_distance_ignores_train_anomalies() {
        let report = anomaly(&[2], "knn_distance").evaluate(&context(true)).unwrap();

        assert_eq!(metric(&report, "auroc"), 1.0);
    }

    #[test]
    fn reconstruction_scores_decoder_error() {
        // The decoder zeroes the second feature, so samples with a large second value score high.
        let mut context = context(false);
        context.decoder = Some(Box::new(|inputs: &Tensor| {
            let mask = Tensor::from_slice(&[1.0f32, 0.0]);
            inputs * mask
        }));

        let report = anomaly(&[2], "reconstruction").evaluate(&context).unwrap();

        // Test second values: 0.2 (normal), 2.0 (normal), 0.9 and 2.1 (anomalies): 3 of 4 pairs.
        assert_eq!(metric(&report, "auroc"), 0.75);
    }

    #[test]
    fn anomaly_needs_unseen_or_listed_classes() {
        let error = anomaly(&[], "knn_distance").evaluate(&context(true)).err().unwrap();

        assert_eq!(
            error.message(),
            "anomaly_classes is empty and every test label occurs in the train split; set \
             anomaly_classes, or the dataset's holdout_classes"
        );
    }

    #[test]
    fn reconstruction_needs_decoder() {
        let error = anomaly(&[2], "reconstruction").evaluate(&context(false)).err().unwrap();

        assert!(error.message().starts_with("the objective has no decoder"), "{}", error.message());
    }
}
