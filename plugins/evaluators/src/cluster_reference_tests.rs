//! Comparison of `knn` and `kmeans` with scikit-learn's `KNeighborsClassifier`, `KMeans`,
//! `normalized_mutual_info_score` and `adjusted_rand_score` on the same embeddings, through
//! `tests/reference/neighbours_clusters_check.py` at the repository root.
//!
//! Like the probe comparison, the tests need `PRETEXT_PYTHON` with numpy and scikit-learn, and
//! print why and pass without checking when it is not set.

use std::path::Path;
use std::process::Command;

use pretext_plugin_api::tch::{Device, Tensor};
use pretext_plugin_api::{
    BuildContext, EvalReport, Evaluator, EvaluatorPlugin, ParamValue, Params,
};

use crate::cluster_metrics::cluster_scores;
use crate::clustering::{KMeansOptions, Points, kmeans};
use crate::kmeans::KMeans;
use crate::knn::Knn;
use crate::reference_tests::{
    Problem, blobs_problem, digits_problem, reference_python, repository_root,
};
use crate::testing::matrix;

/// Largest accepted difference between a score here and scikit-learn's.
const TOLERANCE: f64 = 0.01;

/// Number of neighbours in every comparison, the `knn` default.
const NEIGHBOURS: i64 = 20;

fn build_context() -> BuildContext {
    BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None }
}

fn metric(report: &EvalReport, name: &str) -> f64 {
    report.metrics.iter().find(|(key, _)| key == name).map(|(_, value)| *value).unwrap()
}

fn knn_accuracy(problem: &Problem, weights: &str) -> f64 {
    let params = Params::new(vec![
        ("k".into(), ParamValue::Int(NEIGHBOURS)),
        ("weights".into(), ParamValue::Str(weights.into())),
    ]);
    let mut knn = Knn::create(&params, &build_context()).unwrap();
    metric(&knn.evaluate(&problem.context()).unwrap(), "accuracy")
}

fn kmeans_report(problem: &Problem) -> EvalReport {
    let params = Params::new(vec![
        ("k".into(), ParamValue::Int(0)),
        ("n_init".into(), ParamValue::Int(10)),
        ("max_iter".into(), ParamValue::Int(300)),
        ("tol".into(), ParamValue::Float(1e-4)),
    ]);
    let mut evaluator = KMeans::create(&params, &build_context()).unwrap();
    evaluator.evaluate(&problem.context()).unwrap()
}

/// Clusters the test rows as the `kmeans` evaluator does and returns the assignments.
fn test_assignments(problem: &Problem, clusters: usize) -> Vec<i64> {
    let values: Vec<f64> = problem.test.iter().flatten().copied().collect();
    let options = KMeansOptions { clusters, n_init: 10, max_iter: 300, tol: 1e-4, seed: 0 };
    let points = Points { values: &values, dim: problem.test[0].len() };
    kmeans(points, &options).unwrap().assignments.iter().map(|&index| index as i64).collect()
}

/// Writes the problem and the assignments as .npy files and returns the script's scores.
fn sklearn_scores(
    python: &Path,
    problem: &Problem,
    assignments: &[i64],
    clusters: usize,
) -> serde_json::Value {
    let folder = tempfile::tempdir().unwrap();
    let save = |tensor: Tensor, name: &str| {
        tensor.write_npy(folder.path().join(format!("{name}.npy"))).unwrap();
    };
    save(matrix(&problem.train), "train");
    save(matrix(&problem.test), "test");
    save(Tensor::from_slice(&problem.train_labels), "train_labels");
    save(Tensor::from_slice(&problem.test_labels), "test_labels");
    save(Tensor::from_slice(assignments), "assignments");
    let settings = serde_json::json!({ "k": NEIGHBOURS, "clusters": clusters });
    std::fs::write(folder.path().join("settings.json"), settings.to_string()).unwrap();

    let script = repository_root().join("tests/reference/neighbours_clusters_check.py");
    let output = Command::new(python).arg(&script).arg(folder.path()).output().unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Compares both evaluators with scikit-learn on `problem`. With `compare_optimum`
/// false, the two k-means fits may find different optima, so only the metric functions on
/// identical assignments are asserted and the fitted scores are printed.
fn compare_with_sklearn(name: &str, problem: &Problem, clusters: usize, compare_optimum: bool) {
    let Some(python) = reference_python() else {
        eprintln!("skipped {name}: PRETEXT_PYTHON is not set, so scikit-learn cannot be run");
        return;
    };

    let assignments = test_assignments(problem, clusters);
    let reference = sklearn_scores(&python, problem, &assignments, clusters);
    let theirs = |key: &str| reference[key].as_f64().unwrap();

    for weights in ["distance", "uniform"] {
        let ours = knn_accuracy(problem, weights);
        let expected = theirs(&format!("knn_{weights}"));
        eprintln!("{name} knn {weights}: pretext {ours:.4}, scikit-learn {expected:.4}");
        assert!((ours - expected).abs() <= TOLERANCE, "{name} knn {weights}: {ours} vs {expected}");
    }

    let same = cluster_scores(&problem.test_labels, &assignments).unwrap();
    for (key, ours) in [("assigned_nmi", same.nmi), ("assigned_ari", same.ari)] {
        eprintln!("{name} {key}: pretext {ours:.6}, scikit-learn {:.6}", theirs(key));
        assert!((ours - theirs(key)).abs() < 1e-9, "{name} {key}: {ours} vs {}", theirs(key));
    }

    let report = kmeans_report(problem);
    for key in ["nmi", "ari"] {
        let (ours, expected) = (metric(&report, key), theirs(&format!("kmeans_{key}")));
        eprintln!("{name} kmeans {key}: pretext {ours:.4}, scikit-learn KMeans {expected:.4}");
        if compare_optimum {
            assert!((ours - expected).abs() <= TOLERANCE, "{name} {key}: {ours} vs {expected}");
        }
    }
}

#[test]
fn knn_and_kmeans_match_sklearn_on_separated_blobs() {
    compare_with_sklearn("separated blobs", &blobs_problem(6, 5, 80, 8.0, 3), 6, true);
}

#[test]
fn knn_and_kmeans_match_sklearn_on_overlapping_blobs() {
    compare_with_sklearn("overlapping blobs", &blobs_problem(4, 3, 120, 1.5, 4), 4, true);
}

#[test]
fn knn_and_cluster_metrics_match_sklearn_on_digits() {
    compare_with_sklearn("digits", &digits_problem(), 10, false);
}
