//! The `linear_probe` evaluator: a logistic-regression classifier fitted on frozen train-split
//! embeddings and scored on the test split, with its confusion matrix, and the same probe fitted
//! on stratified fractions of the train labels (label efficiency).

use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{
    Artifact, BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin,
    Param, Params, Result, Split, ensure,
};

use crate::charts::{confusion_matrix_png, label_efficiency_png};
use crate::data;
use crate::label_efficiency::{fraction_metric_name, stratified_subset};
use crate::logistic::{FitOptions, LogisticRegression};
use crate::metrics::classification_scores;
use crate::plot::text_available;

/// Scores embeddings by how well a linear classifier separates their classes.
pub struct LinearProbe {
    options: FitOptions,
    standardize: bool,
    /// Shares of the train labels to refit the probe on, each in (0, 1].
    label_fractions: Vec<f64>,
    plots: bool,
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
        .param(
            Param::float_list(
                "label_fractions",
                &[0.01, 0.1, 1.0],
                "shares of the train labels (stratified, at least one per class) to refit the \
                 probe on; each gives a metric such as accuracy_at_1pct",
            )
            .range(0.0, 1.0),
        )
        .param(Param::bool(
            "plots",
            true,
            "write confusion_matrix.png and, with label_fractions, label_efficiency.png",
        ))
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let c = params.float("c")?;
        let max_iter = params.int("max_iter")?;
        // NOTE: the schema can only state an inclusive minimum, so `c = 0` passes the host's check.
        ensure!(c > 0.0 && c.is_finite(), "c must be a positive number, found {c}");
        ensure!(max_iter >= 1, "max_iter must be at least 1, found {max_iter}");

        let label_fractions = params.float_list("label_fractions")?;
        for &fraction in &label_fractions {
            ensure!(
                fraction > 0.0 && fraction <= 1.0,
                "label_fractions must lie in (0, 1], found {fraction}"
            );
        }

        let options = FitOptions { c, max_iter: max_iter as usize };
        Ok(Self {
            options,
            standardize: params.bool("standardize")?,
            label_fractions,
            plots: params.bool("plots")?,
        })
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
        let mut metrics = scores.to_metrics();

        let mut curve = Vec::new();
        for &fraction in &self.label_fractions {
            let accuracy = if fraction == 1.0 {
                scores.accuracy
            } else {
                let subset = stratified_subset(&train_labels, fraction, context.seed());
                self.subset_accuracy(&train, &train_labels, &subset, &test, &test_labels)?
            };
            metrics.push((fraction_metric_name(fraction), accuracy));
            curve.push((fraction, accuracy));
        }

        let mut artifacts = Vec::new();
        if self.plots {
            let text = text_available();
            let (counts, names) = confusion_counts(&test_labels, &predicted, context);
            let bytes = confusion_matrix_png(&counts, &names, text)?;
            artifacts.push(Artifact { path: "confusion_matrix.png".to_owned(), bytes });
            if !curve.is_empty() {
                let bytes = label_efficiency_png(&curve, text)?;
                artifacts.push(Artifact { path: "label_efficiency.png".to_owned(), bytes });
            }
        }
        Ok(EvalReport { metrics, artifacts })
    }
}

impl LinearProbe {
    /// Fits the probe on the train rows at `subset` and returns its test accuracy.
    fn subset_accuracy(
        &self,
        train: &Tensor,
        train_labels: &[i64],
        subset: &[usize],
        test: &Tensor,
        test_labels: &[i64],
    ) -> Result<f64> {
        let rows: Vec<i64> = subset.iter().map(|&index| index as i64).collect();
        let features = train.f_index_select(0, &Tensor::from_slice(&rows))?;
        let labels: Vec<i64> = subset.iter().map(|&index| train_labels[index]).collect();
        let (model, _summary) = LogisticRegression::fit(&features, &labels, &self.options)?;
        let predicted = model.predict(test)?;
        Ok(classification_scores(test_labels, &predicted)?.accuracy)
    }
}

/// Counts (true, predicted) pairs over the labels that occur in either list, in ascending
/// order, and names each label by the dataset's class name or by its number.
fn confusion_counts(
    truth: &[i64],
    predicted: &[i64],
    context: &dyn EvalContext,
) -> (Vec<Vec<usize>>, Vec<String>) {
    let mut labels: Vec<i64> = truth.iter().chain(predicted).copied().collect();
    labels.sort_unstable();
    labels.dedup();

    let mut counts = vec![vec![0; labels.len()]; labels.len()];
    for (actual, guess) in truth.iter().zip(predicted) {
        let row = labels.binary_search(actual).unwrap_or(0);
        let column = labels.binary_search(guess).unwrap_or(0);
        counts[row][column] += 1;
    }
    let class_names = context.dataset().class_names;
    let names = labels
        .iter()
        .map(|&label| {
            let known = usize::try_from(label).ok().and_then(|index| class_names.get(index));
            known.cloned().unwrap_or_else(|| label.to_string())
        })
        .collect();
    (counts, names)
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
        probe_with(c, standardize, &[], false)
    }

    fn probe_with(
        c: f64,
        standardize: bool,
        label_fractions: &[f64],
        plots: bool,
    ) -> Result<LinearProbe> {
        let params = Params::new(vec![
            ("c".into(), ParamValue::Float(c)),
            ("max_iter".into(), ParamValue::Int(1000)),
            ("standardize".into(), ParamValue::Bool(standardize)),
            ("label_fractions".into(), ParamValue::FloatList(label_fractions.into())),
            ("plots".into(), ParamValue::Bool(plots)),
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
    fn probe_reports_label_efficiency() {
        let report =
            probe_with(1.0, false, &[0.3, 1.0], false).unwrap().evaluate(&clusters(1.0, 0.0));
        let report = report.unwrap();

        let names: Vec<&str> = report.metrics.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "accuracy",
                "precision_macro",
                "recall_macro",
                "f1_macro",
                "accuracy_at_30pct",
                "accuracy_at_100pct"
            ]
        );
        assert_eq!(metric(&report, "accuracy_at_100pct"), metric(&report, "accuracy"));
        assert!(metric(&report, "accuracy_at_30pct") > 0.9);
    }

    #[test]
    fn probe_writes_plots() {
        let mut probe = probe_with(1.0, false, &[0.5, 1.0], true).unwrap();

        let report = probe.evaluate(&clusters(1.0, 0.0)).unwrap();

        let paths: Vec<&str> = report.artifacts.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["confusion_matrix.png", "label_efficiency.png"]);
        for artifact in &report.artifacts {
            assert!(image::load_from_memory(&artifact.bytes).is_ok(), "{}", artifact.path);
        }
    }

    #[test]
    fn confusion_counts_rows_are_true_labels() {
        let context = clusters(1.0, 0.0);

        let (counts, names) = confusion_counts(&[0, 0, 2, 2], &[0, 2, 2, 2], &context);

        assert_eq!(counts, [vec![1, 1], vec![0, 2]]);
        assert_eq!(names, ["class 0", "class 2"]);
    }

    #[test]
    fn probe_rejects_zero_label_fraction() {
        let error = probe_with(1.0, false, &[0.0], false).err().unwrap();

        assert_eq!(error.message(), "label_fractions must lie in (0, 1], found 0");
    }

    #[test]
    fn probe_rejects_zero_c() {
        let error = probe(0.0, false).err().unwrap();

        assert_eq!(error.message(), "c must be a positive number, found 0");
    }
}
