//! The MLflow writer's concurrent `log-batch` requests, against a fake server that keeps each
//! request waiting for a while, and against a real `mlflow server`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pretext::store::{MetricPoint, RunStatus};
use pretext::tracking::Tracker;
use pretext::tracking::writer::{MlflowTracker, REQUESTS_IN_FLIGHT, RunStart};
use serde_json::Value;

use crate::mlflow_server::{FakeServer, MlflowServer, Received, mlflow_answer, target};

/// Points per key in the backlog: 4 keys of 1500 points fill at least 6 requests of 1000
/// metrics, more than the writer keeps in flight.
const STEPS: u64 = 1500;
const KEYS: [&str; 4] = ["train/loss", "train/lr", "eval/mse", "eval/kl"];

fn start(uri: &str, run_dir: &Path) -> MlflowTracker {
    let run = RunStart {
        local_run_id: "concurrent".to_owned(),
        run_name: "writer".to_owned(),
        start_time: 1,
        tags: Vec::new(),
    };
    MlflowTracker::start(&target(uri), run_dir, run).expect("writer starts")
}

/// Logs `STEPS` steps of every key, one call per step as a training loop does.
fn log_backlog(tracker: &mut MlflowTracker) {
    for step in 0..STEPS {
        let points: Vec<MetricPoint> = KEYS
            .iter()
            .enumerate()
            .map(|(index, key)| MetricPoint {
                key: (*key).to_owned(),
                value: step as f64 + index as f64 / 10.0,
                step,
                timestamp: 1000 + step as i64,
            })
            .collect();
        tracker.log_metrics(&points).unwrap();
    }
}

/// Counts how often the fake server received each (key, step) in `log-batch` requests.
fn received_points(requests: &[Received]) -> HashMap<(String, i64), usize> {
    let mut counts = HashMap::new();
    for request in requests {
        let body: Value = serde_json::from_str(&request.body).unwrap();
        for metric in body["metrics"].as_array().unwrap() {
            let key = metric["key"].as_str().unwrap().to_owned();
            *counts.entry((key, metric["step"].as_i64().unwrap())).or_insert(0) += 1;
        }
    }
    counts
}

/// Checks that no request carries more than MLflow's 1000 metrics; 6000 points need at least six.
fn assert_within_limit(requests: &[Received]) {
    assert!(requests.len() >= 6, "{} requests for 6000 points", requests.len());
    for request in requests {
        let body: Value = serde_json::from_str(&request.body).unwrap();
        let metrics = body["metrics"].as_array().unwrap().len();
        assert!((1..=1000).contains(&metrics), "a request with {metrics} metrics");
    }
}

fn assert_every_point_once(counts: &HashMap<(String, i64), usize>) {
    assert_eq!(counts.len(), KEYS.len() * STEPS as usize, "every point arrived");
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        repeated.is_empty(),
        "points sent more than once: {:?}",
        &repeated[..5.min(repeated.len())]
    );
}

/// The number of `log-batch` requests the fake server is handling at the same moment.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    seen: AtomicUsize,
}

impl InFlight {
    /// Holds a `log-batch` request for 150 ms while counting it; returns its index among them.
    fn hold(&self) -> usize {
        let index = self.seen.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        self.now.fetch_sub(1, Ordering::SeqCst);
        index
    }
}

#[test]
fn backlog_goes_out_in_concurrent_requests() {
    let in_flight = Arc::new(InFlight::default());
    let counter = Arc::clone(&in_flight);
    let server = FakeServer::start(Box::new(move |_, request| {
        if request.path.ends_with("runs/log-batch") {
            counter.hold();
        }
        mlflow_answer(request)
    }));
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = start(&server.uri, run_dir.path());
    log_backlog(&mut tracker);
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(report.complete, "{report:?}");

    let batches = server.requests("runs/log-batch");
    assert_within_limit(&batches);
    assert_every_point_once(&received_points(&batches));
    assert_eq!(
        in_flight.max.load(Ordering::SeqCst),
        REQUESTS_IN_FLIGHT,
        "the writer keeps its maximum of requests in flight at once"
    );
    assert_eq!(server.requests("runs/update").len(), 1);
    assert!(!run_dir.path().join("mlflow/spool.jsonl").exists(), "a delivered spool is removed");
}

#[test]
fn failed_concurrent_request_sent_again() {
    let in_flight = Arc::new(InFlight::default());
    let failed = Arc::new(Mutex::new(None));
    let (counter, failed_body) = (Arc::clone(&in_flight), Arc::clone(&failed));
    let server = FakeServer::start(Box::new(move |_, request| {
        if request.path.ends_with("runs/log-batch") && counter.hold() == 1 {
            // One of the first two concurrent requests fails once.
            *failed_body.lock().unwrap() = Some(request.body.clone());
            return (503, r#"{"message":"database is locked"}"#.to_owned());
        }
        mlflow_answer(request)
    }));
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = start(&server.uri, run_dir.path());
    log_backlog(&mut tracker);
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(report.complete, "{report:?}");

    let batches = server.requests("runs/log-batch");
    assert_within_limit(&batches);
    let mut counts = received_points(&batches);
    // The failed request reached the fake server too; take its points out once.
    let failed = failed.lock().unwrap().clone().expect("one request failed");
    let failed: Value = serde_json::from_str(&failed).unwrap();
    for metric in failed["metrics"].as_array().unwrap() {
        let key = (metric["key"].as_str().unwrap().to_owned(), metric["step"].as_i64().unwrap());
        *counts.get_mut(&key).unwrap() -= 1;
    }
    assert_every_point_once(&counts);
}

#[test]
fn concurrent_requests_reach_real_server() {
    let Some(server) = MlflowServer::start() else {
        panic!("mlflow is not installed beside PRETEXT_PYTHON; run scripts/setup.sh");
    };
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = start(&server.uri, run_dir.path());
    log_backlog(&mut tracker);
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(report.complete, "{report:?}");
    let run_id = report.remote_run_id.expect("the run exists on the server");

    let client = server.client();
    for (index, key) in KEYS.iter().enumerate() {
        let mut history = client.metric_history(&run_id, key).unwrap();
        history.sort_by_key(|metric| metric.step);
        assert_eq!(history.len(), STEPS as usize, "{key}: every step once");
        for (step, metric) in history.iter().enumerate() {
            assert_eq!(metric.step, step as i64, "{key}");
            assert_eq!(metric.value, step as f64 + index as f64 / 10.0, "{key} at {step}");
        }
    }
}
