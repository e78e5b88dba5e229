//! Comparison of `linear_probe` with scikit-learn's `LogisticRegression` on the same data,
//! through `tests/reference/probe_check.py` at the repository root.
//!
//! The tests need the Python interpreter named by `PRETEXT_PYTHON`, with numpy and
//! scikit-learn; the repository's cargo configuration sets it. Without it they print why and
//! pass without checking.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use pretext_plugin_api::tch::Device;
use pretext_plugin_api::{
    BuildContext, EvalReport, Evaluator, EvaluatorPlugin, ParamValue, Params,
};

use crate::probe::LinearProbe;
use crate::testing::{FakeContext, matrix};

/// Largest accepted difference between a metric here and scikit-learn's.
const TOLERANCE: f64 = 0.01;

const METRICS: [&str; 4] = ["accuracy", "precision_macro", "recall_macro", "f1_macro"];

/// A labelled train/test split as rows of float64 values.
pub(crate) struct Problem {
    pub(crate) train: Vec<Vec<f64>>,
    pub(crate) train_labels: Vec<i64>,
    pub(crate) test: Vec<Vec<f64>>,
    pub(crate) test_labels: Vec<i64>,
}

impl Problem {
    pub(crate) fn context(&self) -> FakeContext {
        FakeContext::labelled(&self.train, &self.train_labels, &self.test, &self.test_labels)
    }
}

pub(crate) fn reference_python() -> Option<PathBuf> {
    std::env::var_os("PRETEXT_PYTHON").filter(|value| !value.is_empty()).map(PathBuf::from)
}

pub(crate) fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes the problem as .npy files and returns the scores that probe_check.py prints.
fn sklearn_scores(python: &Path, problem: &Problem) -> serde_json::Value {
    let folder = tempfile::tempdir().unwrap();
    let context = problem.context();
    context.train.write_npy(folder.path().join("train.npy")).unwrap();
    context.test.write_npy(folder.path().join("test.npy")).unwrap();
    let labels = |values: &[i64]| pretext_plugin_api::tch::Tensor::from_slice(values);
    labels(&problem.train_labels).write_npy(folder.path().join("train_labels.npy")).unwrap();
    labels(&problem.test_labels).write_npy(folder.path().join("test_labels.npy")).unwrap();

    let script = repository_root().join("tests/reference/probe_check.py");
    let output = Command::new(python).arg(&script).arg(folder.path()).output().unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn probe_report(problem: &Problem) -> EvalReport {
    let params = Params::new(vec![
        ("c".into(), ParamValue::Float(1.0)),
        ("max_iter".into(), ParamValue::Int(1000)),
        ("standardize".into(), ParamValue::Bool(false)),
        ("label_fractions".into(), ParamValue::FloatList(Default::default())),
        ("plots".into(), ParamValue::Bool(false)),
    ]);
    let build = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
    let mut probe = LinearProbe::create(&params, &build).unwrap();
    probe.evaluate(&problem.context()).unwrap()
}

/// Runs both fits and asserts that every metric agrees within [`TOLERANCE`].
fn compare_with_sklearn(name: &str, problem: &Problem) {
    let Some(python) = reference_python() else {
        eprintln!("skipped {name}: PRETEXT_PYTHON is not set, so scikit-learn cannot be run");
        return;
    };

    let reference = sklearn_scores(&python, problem);
    let report = probe_report(problem);
    for metric in METRICS {
        let ours = report.metrics.iter().find(|(key, _)| key == metric).unwrap().1;
        let theirs = reference[metric].as_f64().unwrap();
        eprintln!("{name} {metric}: linear_probe {ours:.4}, scikit-learn {theirs:.4}");
        assert!((ours - theirs).abs() <= TOLERANCE, "{name} {metric}: {ours} vs {theirs}");
    }
}

/// Reads the digits (pixels / 16) and puts every fifth sample of each class in the test split.
pub(crate) fn digits_problem() -> Problem {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/data/digits.csv.gz");
    let mut text = String::new();
    let file = std::fs::File::open(&path).unwrap();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).unwrap();

    let mut problem =
        Problem { train: vec![], train_labels: vec![], test: vec![], test_labels: vec![] };
    let mut seen = [0usize; 10];
    for line in text.lines().filter(|line| !line.is_empty()) {
        let values: Vec<f64> = line.split(',').map(|field| field.trim().parse().unwrap()).collect();
        let label = values[64] as i64;
        let pixels = values[..64].iter().map(|pixel| pixel / 16.0).collect();
        seen[label as usize] += 1;
        if seen[label as usize] % 5 == 0 {
            problem.test.push(pixels);
            problem.test_labels.push(label);
        } else {
            problem.train.push(pixels);
            problem.train_labels.push(label);
        }
    }
    problem
}

/// SplitMix64, a small generator that is enough for reproducible test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next_normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.next_unit()).ln()).sqrt();
        radius * (2.0 * std::f64::consts::PI * self.next_unit()).cos()
    }
}

/// Overlapping Gaussian blobs: unit-variance points around `classes` centres drawn with standard
/// deviation `spread`. A quarter of each class goes to the test split.
pub(crate) fn blobs_problem(
    classes: i64,
    dim: usize,
    per_class: usize,
    spread: f64,
    seed: u64,
) -> Problem {
    let mut rng = SplitMix64(seed);
    let centres: Vec<Vec<f64>> =
        (0..classes).map(|_| (0..dim).map(|_| spread * rng.next_normal()).collect()).collect();

    let mut problem =
        Problem { train: vec![], train_labels: vec![], test: vec![], test_labels: vec![] };
    for index in 0..per_class {
        for (label, centre) in centres.iter().enumerate() {
            let point = centre.iter().map(|value| value + rng.next_normal()).collect();
            if index % 4 == 0 {
                problem.test.push(point);
                problem.test_labels.push(label as i64);
            } else {
                problem.train.push(point);
                problem.train_labels.push(label as i64);
            }
        }
    }
    problem
}

#[test]
fn probe_matches_sklearn_on_digits() {
    let problem = digits_problem();
    assert_eq!(problem.train.len() + problem.test.len(), 1797);

    compare_with_sklearn("digits", &problem);
}

#[test]
fn probe_matches_sklearn_on_overlapping_blobs() {
    compare_with_sklearn("blobs", &blobs_problem(5, 4, 150, 1.0, 1));
}

#[test]
fn probe_matches_sklearn_on_binary_blobs() {
    compare_with_sklearn("binary blobs", &blobs_problem(2, 3, 200, 1.5, 2));
}

#[test]
fn digits_rows_have_pixels_and_label() {
    let problem = digits_problem();

    assert!(problem.train.iter().chain(&problem.test).all(|row| row.len() == 64));
    assert_eq!(matrix(&problem.test).size(), [problem.test.len() as i64, 64]);
}
