//! The `linear_probe` evaluator: a logistic-regression classifier fitted on frozen train-split
//! embeddings and scored on the test split.

use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{
    BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin, Param, Params,
    Result, Split, ensure,
};

use crate::data;
use crate::logistic::{FitOptions, LogisticRegression};
use crate::metrics::classification_scores;

/// Scores embeddings by how well a linear classifier separates their classes.
pub struct LinearProbe {
    options: FitOptions,
    standardize: bool,
}

impl EvaluatorPlugin for LinearProbe {
    fn describe() -> Description {
        Description::new(
            "linear_probe",
            env!("CARGO_PKG_VERSION"),
            "logistic regression on frozen embeddings: test accuracy and macro precision, recall, F1",
        )
        .param(
            Param::float("c", 1.0, "inverse of the L2 penalty strength, scikit-learn's `C`; must be > 0")
                .min(0.0),
        )
        .param(Param::int("max_iter", 1000, "maximum number of L-BFGS iterations").min(1.0))
        .param(Param::bool(
            "standardize",
            false,
            "z-score each feature with the train split's mean and standard deviation before fitting",
        ))
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let c = params.float("c")?;
        let max_iter = params.int("max_iter")?;
        // NOTE: the schema can only state an inclusive minimum, so `c = 0` passes the host's check.
        ensure!(c > 0.0 && c.is_finite(), "c must be a positive number, found {c}");
        ensure!(max_iter >= 1, "max_iter must be at least 1, found {max_iter}");

        let options = FitOptions { c, max_iter: max_iter as usize };
        Ok(Self { options, standardize: params.bool("standardize")? })
    }
}

impl Evaluator for LinearProbe {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let mut train = data::embeddings(context, Split::Train)?;
        let mut test = data::embeddings(context, Split::Test)?;
        let no_labels =
            "the dataset has no labels; linear_probe needs class labels to fit and score";
        let Some(train_labels) = data::labels(context, Split::Train, train.size()[0])? else {
            pretext_plugin_api::bail!("{no_labels}");
        };
        let Some(test_labels) = data::labels(context, Split::Test, test.size()[0])? else {
            pretext_plugin_api::bail!("{no_labels}");
        };
        ensure!(
            !train_labels.is_empty(),
            "the train split is empty; linear_probe needs samples to fit"
        );
        ensure!(
            !test_labels.is_empty(),
            "the test split is empty; linear_probe needs samples to score"
        );
        ensure!(
            train.size()[1] == test.size()[1],
            "train embeddings have {} columns but test embeddings have {}",
            train.size()[1],
            test.size()[1]
        );

        if self.standardize {
            (train, test) = standardize(&train, &test);
        }

        // NOTE: a fit that reaches `max_iter` is still scored, as in scikit-learn. The plugin
        // interface has no channel for the convergence warning that scikit-learn would print.
        let (model, _summary) = LogisticRegression::fit(&train, &train_labels, &self.options)?;
        let predicted = model.predict(&test)?;
        let scores = classification_scores(&test_labels, &predicted)?;
        Ok(EvalReport { metrics: scores.to_metrics(), artifacts: Vec::new() })
    }
}

/// Z-scores both splits with the train split's per-feature mean and population standard
/// deviation. A constant feature keeps a divisor of 1, as in scikit-learn's `StandardScaler`.
fn standardize(train: &Tensor, test: &Tensor) -> (Tensor, Tensor) {
    let mean = train.mean_dim(0, true, Kind::Double);
    let deviation = train.std_dim(0, false, true);
    let deviation = deviation.where_self(&deviation.gt(0.0), &deviation.ones_like());
    ((train - &mean) / &deviation, (test - &mean) / &deviation)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::FakeContext;

    fn probe(c: f64, standardize: bool) -> Result<LinearProbe> {
        let params = Params::new(vec![
            ("c".into(), ParamValue::Float(c)),
            ("max_iter".into(), ParamValue::Int(1000)),
            ("standardize".into(), ParamValue::Bool(standardize)),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        LinearProbe::create(&params, &context)
    }

    /// Three clusters around (0, 0), (4, 0) and (0, 4), scaled and shifted by `scale`, `offset`.
    fn clusters(scale: f64, offset: f64) -> FakeContext {
        let centres = [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]];
        let jitter = [[0.3, -0.2], [-0.1, 0.4], [0.2, 0.2], [-0.4, -0.3]];
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (label, centre) in centres.iter().enumerate() {
            for shift in jitter {
                rows.push(vec![
                    (centre[0] + shift[0]) * scale + offset,
                    (centre[1] + shift[1]) * scale + offset,
                ]);
                labels.push(label as i64);
            }
        }
        FakeContext::labelled(&rows, &labels, &rows[1..], &labels[1..])
    }

    fn metric(report: &EvalReport, name: &str) -> f64 {
        report.metrics.iter().find(|(key, _)| key == name).map(|(_, value)| *value).unwrap()
    }

    #[test]
    fn probe_scores_separable_data_perfectly() {
        let report = probe(1.0, false).unwrap().evaluate(&clusters(1.0, 0.0)).unwrap();

        let names: Vec<&str> = report.metrics.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["accuracy", "precision_macro", "recall_macro", "f1_macro"]);
        for (name, value) in &report.metrics {
            assert_eq!(*value, 1.0, "{name}");
        }
        assert!(report.artifacts.is_empty());
    }

    #[test]
    fn probe_standardizes_badly_scaled_features() {
        // Scaled by 1e-3 and shifted to 1e3, the clusters need weights too large for the penalty.
        let context = clusters(1e-3, 1e3);

        let raw = probe(1.0, false).unwrap().evaluate(&context).unwrap();
        let standardized = probe(1.0, true).unwrap().evaluate(&context).unwrap();

        assert!(metric(&raw, "accuracy") < 1.0, "raw accuracy {}", metric(&raw, "accuracy"));
        assert_eq!(metric(&standardized, "accuracy"), 1.0);
    }

    #[test]
    fn probe_is_deterministic() {
        let context = clusters(1.0, 0.5);

        let first = probe(0.05, false).unwrap().evaluate(&context).unwrap();
        let again = probe(0.05, false).unwrap().evaluate(&context).unwrap();

        let bits = |report: &EvalReport| {
            report.metrics.iter().map(|(_, v)| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(bits(&first), bits(&again));
    }

    #[test]
    fn probe_rejects_unlabelled_dataset() {
        let mut context = clusters(1.0, 0.0);
        context.train_labels = None;
        context.test_labels = None;

        let error = probe(1.0, false).unwrap().evaluate(&context).err().unwrap();

        assert_eq!(
            error.message(),
            "the dataset has no labels; linear_probe needs class labels to fit and score"
        );
    }

    #[test]
    fn probe_rejects_non_finite_embeddings() {
        let mut context = clusters(1.0, 0.0);
        context.train = context.train.copy();
        let _ = context.train.get(0).get(0).fill_(f64::NAN);

        let error = probe(1.0, false).unwrap().evaluate(&context).err().unwrap();

        assert_eq!(error.message(), "train embeddings contain NaN or infinite values");
    }

    #[test]
    fn probe_rejects_zero_c() {
        let error = probe(0.0, false).err().unwrap();

        assert_eq!(error.message(), "c must be a positive number, found 0");
    }
}
