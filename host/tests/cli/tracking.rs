//! Tracking to MLflow: runs against a real `mlflow server`, the writer against a fake one for the
//! failure responses, outages, signals, stale runs and `pretext sync`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use pretext::store::{MetricPoint, RunStatus, Store};
use pretext::tracking::Tracker;
use pretext::tracking::client::Client;
use pretext::tracking::records::Record;
use pretext::tracking::writer::{MlflowTracker, RunStart};
use serde_json::Value;

use crate::common::{SMALL_AUTOENCODER, library, pretext, repo_root, text, write_spec};
use crate::mlflow_server::{FakeServer, MlflowServer, Received, free_port, mlflow_answer, target};

fn run_id(stdout: &str) -> String {
    stdout.split_whitespace().nth(1).expect("the summary starts with `run ID`").to_owned()
}

fn mlflow_args(uri: &str) -> [String; 2] {
    ["tracking.backend=\"mlflow\"".to_owned(), format!("tracking.uri=\"{uri}\"")]
}

/// The MLflow run recorded for a local run, from its `state.json`.
fn remote_run_id(run_root: &Path, local: &str) -> String {
    let state = std::fs::read_to_string(run_root.join(local).join("mlflow/state.json"))
        .expect("the run has an MLflow state");
    serde_json::from_str::<Value>(&state).unwrap()["run_id"].as_str().unwrap().to_owned()
}

fn remote_run(client: &Client, run: &str) -> Value {
    client.get_run(run).expect("runs/get")["run"].clone()
}

fn pairs(run: &Value, field: &str) -> HashMap<String, String> {
    run["data"][field]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| {
                    (
                        entry["key"].as_str().unwrap().to_owned(),
                        entry["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every (step, value bits) of every metric, sorted, from the local store.
fn local_points(run_root: &Path, run: &str) -> HashMap<String, Vec<(i64, u64)>> {
    let store = Store::open(run_root).unwrap();
    let mut points: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
    for point in store.metrics(run).unwrap() {
        points.entry(point.key).or_default().push((point.step as i64, point.value.to_bits()));
    }
    points.values_mut().for_each(|list| list.sort_unstable());
    points
}

/// The same from the server, for the keys in `keys`.
fn remote_points(
    client: &Client,
    run: &str,
    keys: impl Iterator<Item = String>,
) -> HashMap<String, Vec<(i64, u64)>> {
    let mut points = HashMap::new();
    for key in keys {
        let mut list: Vec<(i64, u64)> = client
            .metric_history(run, &key)
            .unwrap()
            .into_iter()
            .map(|metric| (metric.step, metric.value.to_bits()))
            .collect();
        list.sort_unstable();
        points.insert(key, list);
    }
    points
}

/// Compares point sets key by key, naming the first difference rather than printing them all.
fn assert_same_points(
    received: &HashMap<String, Vec<(i64, u64)>>,
    expected: &HashMap<String, Vec<(i64, u64)>>,
) {
    assert_eq!(received.len(), expected.len(), "metric keys differ");
    for (key, points) in expected {
        let got = &received[key];
        assert_eq!(
            got.len(),
            points.len(),
            "{key}: {} points on the server, {} logged",
            got.len(),
            points.len()
        );
        if let Some(index) = (0..points.len()).find(|&index| got[index] != points[index]) {
            panic!(
                "{key}: point {index} is (step {}, {}) on the server, (step {}, {}) logged",
                got[index].0,
                f64::from_bits(got[index].1),
                points[index].0,
                f64::from_bits(points[index].1)
            );
        }
    }
}

fn wait_with_output(child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        assert!(started.elapsed() < limit, "pretext (pid {pid}) still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    waiter.join().unwrap()
}

fn start_tracker(uri: &str, run_dir: &Path, local: &str, budget: Duration) -> MlflowTracker {
    let target = pretext::tracking::MlflowTarget { retry_budget: budget, ..target(uri) };
    let run = RunStart {
        local_run_id: local.to_owned(),
        run_name: "writer".to_owned(),
        start_time: 1,
        tags: pretext::tracking::system_tags(local, "spec.toml", None),
    };
    MlflowTracker::start(&target, run_dir, run).expect("writer starts")
}

fn point(key: &str, value: f64, step: u64) -> MetricPoint {
    MetricPoint { key: key.to_owned(), value, step, timestamp: 1000 + step as i64 }
}

#[test]
fn main_experiment_recorded_on_server() {
    let Some(server) = MlflowServer::start() else { return };
    let run_root = tempfile::tempdir().unwrap();
    let spec = repo_root().join("experiments/digits-autoencoder.toml");
    let output = pretext(run_root.path())
        .arg("run")
        .arg(&spec)
        .arg("trainer.epochs=2")
        .args(mlflow_args(&server.uri))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("not delivered"), "{stderr}");
    let local = run_id(&stdout);
    let remote = remote_run_id(run_root.path(), &local);
    let client = server.client();

    let run = remote_run(&client, &remote);
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    assert!(run["info"]["end_time"].as_i64().is_some(), "{run}");
    assert_eq!(run["info"]["run_name"], "digits-autoencoder");
    let experiment = client.experiment_id("digits-autoencoder").unwrap();
    assert_eq!(run["info"]["experiment_id"].as_str(), Some(experiment.as_str()));

    let store = Store::open(run_root.path()).unwrap();
    let params = pairs(&run, "params");
    let local_params = store.params(&local).unwrap();
    assert_eq!(params.len(), local_params.len(), "{params:?}");
    for (key, value) in &local_params {
        assert_eq!(params.get(key), Some(value), "param {key}");
    }
    let tags = pairs(&run, "tags");
    for (key, value) in store.tags(&local).unwrap() {
        assert_eq!(tags.get(&key), Some(&value), "tag {key}");
    }
    for key in ["mlflow.runName", "mlflow.user", "mlflow.source.name", "mlflow.source.type"] {
        assert!(tags.contains_key(key), "system tag {key} missing in {tags:?}");
    }
    assert_eq!(tags["mlflow.source.type"], "LOCAL");
    assert_eq!(tags.get("mlflow.source.git.commit"), tags.get("pretext.git_commit"));
    assert_eq!(tags["pretext.run_id"], local);

    let expected = local_points(run_root.path(), &local);
    assert!(expected.contains_key("train/loss"), "{:?}", expected.keys());
    assert!(expected.contains_key("linear_probe/accuracy"));
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);

    let root: Vec<String> =
        client.list_artifacts(&remote, "").unwrap().into_iter().map(|(path, _)| path).collect();
    for name in ["spec.toml", "checkpoint.safetensors", "run.log", "artifacts"] {
        assert!(root.iter().any(|path| path == name), "artifact {name} missing in {root:?}");
    }
    let plots = client.list_artifacts(&remote, "artifacts/latent_plot").unwrap();
    assert!(plots.iter().any(|(path, _)| path == "artifacts/latent_plot/latent.png"), "{plots:?}");
    assert!(!Path::new(&run_root.path().join(&local).join("mlflow/spool.jsonl")).exists());
}

#[test]
fn non_finite_metrics_reach_server() {
    let Some(server) = MlflowServer::start() else { return };
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker =
        start_tracker(&server.uri, run_dir.path(), "nonfinite", Duration::from_secs(30));
    let points = [point("m", f64::NAN, 1), point("m", f64::INFINITY, 2), point("m", 0.25, 3)];
    tracker.log_metrics(&points).unwrap();
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(report.complete, "{report:?}");
    let history =
        server.client().metric_history(report.remote_run_id.as_ref().unwrap(), "m").unwrap();
    let by_step: HashMap<i64, f64> =
        history.iter().map(|metric| (metric.step, metric.value)).collect();
    assert_eq!(history.len(), 3);
    assert!(by_step[&1].is_nan(), "{history:?}");
    // NOTE: MLflow's SQL store (3.17.2) cannot keep infinities and stores +inf as the largest
    // double, so that is what any client reads back.
    assert_eq!(by_step[&2], f64::MAX, "{history:?}");
    assert_eq!(by_step[&3], 0.25);
}

#[test]
fn wide_step_within_batch_limits() {
    let Some(server) = MlflowServer::start() else { return };
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = start_tracker(&server.uri, run_dir.path(), "wide", Duration::from_secs(30));
    let params: Vec<(String, String)> =
        (0..250).map(|index| (format!("param_{index:03}"), format!("value {index}"))).collect();
    tracker.log_params(&params).unwrap();
    tracker.log_params(&[("long".to_owned(), "x".repeat(6000))]).unwrap();
    let points: Vec<MetricPoint> =
        (0..1500).map(|index| point(&format!("metric_{index:04}"), index as f64, 7)).collect();
    tracker.log_metrics(&points).unwrap();
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(report.complete, "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let run = remote_run(&server.client(), report.remote_run_id.as_ref().unwrap());
    let remote_params = pairs(&run, "params");
    assert_eq!(remote_params.len(), 251);
    assert_eq!(remote_params["param_249"], "value 249");
    assert_eq!(remote_params["long"].len(), 6000, "a value at the limit is accepted");
    let metrics = run["data"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1500);
    assert!(metrics.iter().all(|metric| metric["step"] == 7));
}

#[test]
fn param_value_over_limit_rejected_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    let at_limit = format!("name=\"{}\"", "n".repeat(6000));
    let over_limit = format!("name=\"{}\"", "n".repeat(6001));
    let accepted = pretext(dir.path())
        .args(["run"])
        .arg(&spec)
        .args(["trainer.epochs=0", &at_limit])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&accepted);
    assert!(accepted.status.success(), "{stdout}\n{stderr}");

    let port = free_port();
    let rejected = pretext(dir.path())
        .args(["run"])
        .arg(&spec)
        .arg(&over_limit)
        .args(mlflow_args(&format!("http://127.0.0.1:{port}")))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&rejected);
    assert_eq!(rejected.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("parameter `name` has a value of 6001 characters"), "{stderr}");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list_runs().unwrap().len(), 1, "the rejected spec recorded no run");
}

fn log_batch_points(requests: &[Received]) -> Vec<(String, i64)> {
    let mut points = Vec::new();
    for request in requests {
        let body: Value = serde_json::from_str(&request.body).unwrap();
        for metric in body["metrics"].as_array().into_iter().flatten() {
            points.push((
                metric["key"].as_str().unwrap().to_owned(),
                metric["step"].as_i64().unwrap(),
            ));
        }
    }
    points.sort();
    points
}

#[test]
fn too_many_requests_retried_until_ok() {
    let server = FakeServer::start(Box::new(|index, request| {
        if index < 3 {
            (429, r#"{"message":"slow down"}"#.to_owned())
        } else {
            mlflow_answer(request)
        }
    }));
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = start_tracker(&server.uri, run_dir.path(), "retry", Duration::from_secs(30));
    let points: Vec<MetricPoint> = (0..50).map(|step| point("loss", 0.5, step)).collect();
    tracker.log_metrics(&points).unwrap();
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(report.complete, "{report:?}");
    let sent = log_batch_points(&server.requests("runs/log-batch"));
    let expected: Vec<(String, i64)> = (0..50).map(|step| ("loss".to_owned(), step)).collect();
    assert_eq!(sent, expected, "every point once");
    assert_eq!(server.requests("runs/update").len(), 1);
}

#[test]
fn too_many_requests_forever_keeps_spool() {
    let server = FakeServer::start(Box::new(|_, _| (429, r#"{"message":"busy"}"#.to_owned())));
    let run_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut tracker = start_tracker(&server.uri, run_dir.path(), "busy", Duration::from_secs(2));
    tracker.log_metrics(&[point("loss", 1.0, 0)]).unwrap();
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(!report.complete);
    assert_eq!(report.pending, 3, "creation, batch and end wait in the spool");
    assert!(report.errors[0].contains("still failing"), "{:?}", report.errors);
    let spool = std::fs::read_to_string(run_dir.path().join("mlflow/spool.jsonl")).unwrap();
    assert_eq!(spool.lines().count(), 3, "{spool}");
    let attempts = server.requests("").len();
    assert!((2..=20).contains(&attempts), "{attempts} attempts in a 2 s budget");
}

#[test]
fn bad_request_not_retried() {
    let server = FakeServer::start(Box::new(|_, request| {
        if request.path.ends_with("runs/log-batch") {
            (400, r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"Invalid value for metric 'loss'"}"#.to_owned())
        } else {
            mlflow_answer(request)
        }
    }));
    let run_dir = tempfile::tempdir().unwrap();
    let mut tracker = start_tracker(&server.uri, run_dir.path(), "bad", Duration::from_secs(30));
    tracker.log_metrics(&[point("loss", 1.0, 0)]).unwrap();
    let report = tracker.finish(RunStatus::Finished, 5000);
    assert_eq!(server.requests("runs/log-batch").len(), 1, "a 400 is not retried");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("Invalid value for metric 'loss'"), "{:?}", report.errors);
    assert!(report.errors[0].contains("metric `loss`"), "{:?}", report.errors);
    assert_eq!(server.requests("runs/update").len(), 1, "the run still ends");
}

fn long_run(run_root: &Path, uri: &str, epochs: u32) -> Child {
    let spec = write_spec(run_root, "long.toml", SMALL_AUTOENCODER);
    pretext(run_root)
        .arg("run")
        .arg(&spec)
        .arg(format!("trainer.epochs={epochs}"))
        .arg("trainer.log_every=1")
        .args(mlflow_args(uri))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Returns every local metric point's timestamp, in milliseconds since the Unix epoch.
fn local_timestamps(run_root: &Path, run: &str) -> Vec<i64> {
    let store = Store::open(run_root).unwrap();
    store.metrics(run).unwrap().iter().map(|point| point.timestamp).collect()
}

#[test]
fn server_outage_loses_and_duplicates_nothing() {
    let Some(mut server) = MlflowServer::start() else { return };
    let run_root = tempfile::tempdir().unwrap();
    let spec = write_spec(run_root.path(), "long.toml", SMALL_AUTOENCODER);
    // About 46000 steps, which took about 110 s in the debug build on a 2-core machine with other
    // work running. The check after the restart fails if the run ends before the server is back.
    // Each request may keep failing for 120 s, longer than the outage and the restart together.
    let mut child = pretext(run_root.path())
        .arg("run")
        .arg(&spec)
        .args(["trainer.epochs=2000", "trainer.log_every=1", "encoder.hidden=[512, 256]"])
        .args(mlflow_args(&server.uri))
        .arg("tracking.retry_seconds=120")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (local, run_dir) = only_run(run_root.path(), Duration::from_secs(60));
    wait_for_remote_loss(&server.client(), &run_dir, Duration::from_secs(60));

    server.kill();
    let outage_start = pretext::store::now_millis();
    std::thread::sleep(Duration::from_secs(30));
    let outage_end = pretext::store::now_millis();
    server.resume();
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the server came back");

    let output = wait_with_output(child, Duration::from_secs(600));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("incomplete"), "{stderr}");
    let logged_during_outage = local_timestamps(run_root.path(), &local)
        .into_iter()
        .filter(|time| (outage_start..outage_end).contains(time))
        .count();
    assert!(logged_during_outage > 1000, "{logged_during_outage} points logged during the outage");

    let remote = remote_run_id(run_root.path(), &local);
    let client = server.client();
    assert_eq!(remote_run(&client, &remote)["info"]["status"], "FINISHED");
    let expected = local_points(run_root.path(), &local);
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);
    assert!(!run_dir.join("mlflow/spool.jsonl").exists(), "a delivered spool is removed");
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: `kill` with the pid of our own child and a standard signal has no memory effects.
    let sent = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(sent, 0);
}

#[test]
fn sigterm_ends_server_run_killed() {
    let Some(server) = MlflowServer::start() else { return };
    let run_root = tempfile::tempdir().unwrap();
    let child = long_run(run_root.path(), &server.uri, 100_000);
    std::thread::sleep(Duration::from_secs(4));
    signal(&child, libc::SIGTERM);
    let output = wait_with_output(child, Duration::from_secs(120));
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let local = run_id(&stdout);
    let run = remote_run(&server.client(), &remote_run_id(run_root.path(), &local));
    assert_eq!(run["info"]["status"], "KILLED", "{run}");
    assert!(run["info"]["end_time"].as_i64().is_some(), "{run}");
}

#[test]
fn panicking_plugin_fails_server_run() {
    let Some(server) = MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        library("libfixture_panicking_plugin.so"),
        plugins.path().join("libfixture_panicking_plugin.so"),
    )
    .unwrap();
    let spec = write_spec(
        dir.path(),
        "panics.toml",
        "[dataset]\nplugin = \"digits\"\n[encoder]\nplugin = \"mlp\"\n[objective]\nplugin = \"panicking_objective\"\npanic_at_step = 3\n[trainer]\nepochs = 1\n",
    );
    let output = pretext(dir.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("run")
        .arg(&spec)
        .args(mlflow_args(&server.uri))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let run = remote_run(&server.client(), &remote_run_id(dir.path(), &run_id(&stdout)));
    assert_eq!(run["info"]["status"], "FAILED", "{run}");
    assert!(run["info"]["end_time"].as_i64().is_some(), "{run}");
}

#[test]
fn sigkilled_run_marked_on_next_start() {
    let Some(server) = MlflowServer::start() else { return };
    let run_root = tempfile::tempdir().unwrap();
    let child = long_run(run_root.path(), &server.uri, 100_000);
    std::thread::sleep(Duration::from_secs(5));
    signal(&child, libc::SIGKILL);
    let output = wait_with_output(child, Duration::from_secs(30));
    assert_eq!(output.status.code(), None, "killed by a signal");
    let store = Store::open(run_root.path()).unwrap();
    let runs = store.list_runs().unwrap();
    assert_eq!(runs[0].status, "RUNNING");
    let local = runs[0].id.clone();
    let remote = remote_run_id(run_root.path(), &local);
    assert_eq!(remote_run(&server.client(), &remote)["info"]["status"], "RUNNING");

    let next = pretext(run_root.path()).arg("sync").arg(&local).output().unwrap();
    let (stdout, stderr) = text(&next);
    assert!(stdout.contains(&format!("marked run {local} FAILED")), "{stdout}\n{stderr}");
    let row = store.find_run(&local).unwrap();
    assert_eq!(row.status, "FAILED");
    assert!(row.end_time.is_some());
    assert!(store.run_error(&local).unwrap().unwrap().contains("SIGKILL"));
    let run = remote_run(&server.client(), &remote);
    assert_eq!(run["info"]["status"], "FAILED", "{run}");
    assert!(run["info"]["end_time"].as_i64().is_some(), "{run}");
}

/// Metric points in the records of a run's spool, acknowledged or not.
fn spooled_point_count(run_dir: &Path) -> usize {
    pretext::tracking::spool::read_records(run_dir)
        .unwrap()
        .iter()
        .map(|record| match record {
            Record::Batch { metrics, .. } => metrics.len(),
            _ => 0,
        })
        .sum()
}

/// Waits until the local store has more points of the run than its spool.
fn wait_until_unspooled(run_root: &Path, run: &str, run_dir: &Path, limit: Duration) {
    let started = Instant::now();
    loop {
        let recorded: usize = local_points(run_root, run).values().map(Vec::len).sum();
        if recorded > spooled_point_count(run_dir) {
            return;
        }
        assert!(started.elapsed() < limit, "every point was still spooled after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the server has at least one `train/loss` point of the run that `run_dir` records.
fn wait_for_remote_loss(client: &Client, run_dir: &Path, limit: Duration) {
    let started = Instant::now();
    loop {
        let state = std::fs::read_to_string(run_dir.join("mlflow/state.json")).ok();
        let remote = state.and_then(|text| serde_json::from_str::<Value>(&text).ok());
        let history = remote
            .as_ref()
            .and_then(|state| state["run_id"].as_str())
            .and_then(|run| client.metric_history(run, "train/loss").ok());
        if history.is_some_and(|points| !points.is_empty()) {
            return;
        }
        assert!(started.elapsed() < limit, "no train/loss on the server after {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Returns the id and folder of the only run in a run root, once it is recorded.
fn only_run(run_root: &Path, limit: Duration) -> (String, std::path::PathBuf) {
    let started = Instant::now();
    loop {
        if let Ok(store) = Store::open(run_root)
            && let Some(run) = store.list_runs().ok().and_then(|runs| runs.into_iter().next())
        {
            return (run.id, run.dir);
        }
        assert!(started.elapsed() < limit, "no run recorded after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigkilled_run_delivers_every_point() {
    let Some(server) = MlflowServer::start() else { return };
    let client = server.client();
    let spec = repo_root().join("experiments/digits-autoencoder.toml");
    // A kill that lands just after the writer spooled everything leaves nothing to recover, so
    // such an attempt is repeated with a new run.
    let mut attempts = 0;
    let (run_root, local, expected) = loop {
        attempts += 1;
        let run_root = tempfile::tempdir().unwrap();
        let child = pretext(run_root.path())
            .arg("run")
            .arg(&spec)
            .args(["trainer.epochs=100000", "trainer.log_every=1"])
            .args(mlflow_args(&server.uri))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (local, run_dir) = only_run(run_root.path(), Duration::from_secs(60));
        wait_for_remote_loss(&client, &run_dir, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(2));
        wait_until_unspooled(run_root.path(), &local, &run_dir, Duration::from_secs(30));
        signal(&child, libc::SIGKILL);
        let output = wait_with_output(child, Duration::from_secs(30));
        assert_eq!(output.status.code(), None, "killed by a signal");

        let expected = local_points(run_root.path(), &local);
        let local_count: usize = expected.values().map(Vec::len).sum();
        let spooled = spooled_point_count(&run_dir);
        if spooled < local_count {
            break (run_root, local, expected);
        }
        assert!(
            attempts < 5,
            "in {attempts} attempts no kill left a point outside the spool ({spooled} spooled, \
             {local_count} recorded)"
        );
    };

    let sync = pretext(run_root.path()).args(["sync", &local]).output().unwrap();
    let (stdout, stderr) = text(&sync);
    assert!(sync.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("marked run {local} FAILED")), "{stdout}\n{stderr}");
    let remote = remote_run_id(run_root.path(), &local);
    assert_eq!(remote_run(&client, &remote)["info"]["status"], "FAILED");
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);
    let root: Vec<String> =
        client.list_artifacts(&remote, "").unwrap().into_iter().map(|(path, _)| path).collect();
    assert!(root.iter().any(|path| path == "run.log"), "run.log missing in {root:?}");

    let again = pretext(run_root.path()).args(["sync", &local]).output().unwrap();
    let (stdout, stderr) = text(&again);
    assert!(again.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing sent"), "{stdout}");
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);
}

#[test]
fn undelivered_run_exits_three_until_synced() {
    let Some(mut server) = MlflowServer::start() else { return };
    server.kill();
    let run_root = tempfile::tempdir().unwrap();
    let spec = write_spec(run_root.path(), "small.toml", SMALL_AUTOENCODER);
    let output = pretext(run_root.path())
        .arg("run")
        .arg(&spec)
        .args(mlflow_args(&server.uri))
        .arg("tracking.retry_seconds=1")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("FINISHED"), "{stdout}");
    let local = run_id(&stdout);
    assert!(stderr.contains("training finished but tracking delivery is incomplete"), "{stderr}");
    assert!(stderr.contains(&format!("pretext sync {local}")), "{stderr}");
    let spool_path = run_root.path().join(&local).join("mlflow/spool.jsonl");
    assert!(spool_path.exists(), "the spool is kept");

    let down =
        pretext(run_root.path()).args(["sync", &local, "--retry-seconds", "1"]).output().unwrap();
    let (stdout, stderr) = text(&down);
    assert_eq!(down.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("tracking delivery is incomplete"), "{stderr}");
    assert!(spool_path.exists(), "the spool is kept");

    server.resume();
    let up = pretext(run_root.path()).args(["sync", &local]).output().unwrap();
    let (stdout, stderr) = text(&up);
    assert_eq!(up.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("complete"), "{stdout}");
    assert!(!spool_path.exists(), "a delivered spool is removed");
    let client = server.client();
    let remote = remote_run_id(run_root.path(), &local);
    assert_eq!(remote_run(&client, &remote)["info"]["status"], "FINISHED");
    let expected = local_points(run_root.path(), &local);
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);
}

#[test]
fn rejected_records_exit_three() {
    // A real server accepts every batch pretext builds, so a fake one rejects them.
    let server = FakeServer::start(Box::new(|_, request| {
        if request.path.ends_with("runs/log-batch") {
            (400, r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"rejected"}"#.to_owned())
        } else {
            mlflow_answer(request)
        }
    }));
    let run_root = tempfile::tempdir().unwrap();
    let spec = write_spec(run_root.path(), "small.toml", SMALL_AUTOENCODER);
    let output = pretext(run_root.path())
        .arg("run")
        .arg(&spec)
        .args(["trainer.epochs=1"])
        .args(mlflow_args(&server.uri))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("the MLflow server rejected"), "{stderr}");
    assert!(!server.requests("runs/log-batch").is_empty());
    assert_eq!(server.requests("runs/update").len(), 1, "the run still ends");
}

#[test]
fn undelivered_trial_counts_as_finished() {
    let Some(server) = MlflowServer::start() else { return };
    let down = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{SMALL_AUTOENCODER}\n[tracking]\nbackend = \"mlflow\"\nuri = \"{}\"\nretry_seconds = 1\n\n\
         [sweep]\nmetric = \"reconstruction/mse\"\n",
        server.uri
    );
    let spec = write_spec(dir.path(), "sweep.toml", &body);
    let sweep_dir = dir.path().join("sweep");
    let output = pretext(dir.path())
        .arg("sweep")
        .arg(&spec)
        .arg(format!("tracking.uri=\"{}\",\"{down}\"", server.uri))
        .args(["trainer.epochs=1", "--max-parallel", "1", "--dir"])
        .arg(&sweep_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");

    let trials = pretext::sweep::read(&sweep_dir).unwrap().1;
    assert_eq!(trials.len(), 2);
    for trial in &trials {
        assert_eq!(trial.status, pretext::sweep::journal::TrialStatus::Finished, "{trial:?}");
        assert!(trial.value.is_some(), "{trial:?}");
        let undelivered = trial.overrides.iter().any(|text| text.contains(&down));
        let error = trial.error.as_deref().unwrap_or_default();
        if undelivered {
            assert!(error.contains("tracking delivery is incomplete"), "{trial:?}");
            assert!(error.contains("sync"), "{trial:?}");
        } else {
            assert_eq!(trial.error, None, "{trial:?}");
        }
    }
}

/// A run that logs every step and checkpoints at each epoch end (23 steps), long enough to be
/// killed several times.
const CHECKPOINTED: &str = r#"
name = "resumed"
seed = 11

[dataset]
plugin = "digits"

[encoder]
plugin = "mlp"
hidden = [32]
latent = 8
dropout = 0.1

[objective]
plugin = "denoising_autoencoder"

[trainer]
epochs = 1500
checkpoint_every = 1000
keep_checkpoints = 2
log_every = 1
threads = 1

[evaluate.reconstruction]
"#;

fn checkpoint_step(run_dir: &Path) -> Option<u64> {
    pretext::train::checkpoint::latest(run_dir).map(|found| found.meta.state.step)
}

/// Returns the largest `train/loss` step in the local store.
fn local_last_step(run_root: &Path, run: &str) -> Option<u64> {
    let store = Store::open(run_root).unwrap();
    let points = store.metrics(run).unwrap();
    points.iter().filter(|point| point.key == "train/loss").map(|point| point.step).max()
}

/// Waits until the MLflow run `run` has `status`.
fn wait_for_status(client: &Client, run: &str, status: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let found = remote_run(client, run)["info"]["status"].clone();
        if found == status {
            return;
        }
        assert!(started.elapsed() < limit, "run {run} is {found}, not {status}, after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the run has recorded a step after its latest checkpoint, which a resume repeats.
fn wait_past_checkpoint(run_root: &Path, run: &str, run_dir: &Path, limit: Duration) {
    let started = Instant::now();
    loop {
        let last = local_last_step(run_root, run).unwrap_or(0);
        if last > checkpoint_step(run_dir).unwrap_or(0) {
            return;
        }
        assert!(started.elapsed() < limit, "no step after the checkpoint within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn resume_sends_each_step_once() {
    use rand::{Rng, SeedableRng};

    let Some(server) = MlflowServer::start() else { return };
    let client = server.client();
    let run_root = tempfile::tempdir().unwrap();
    let spec = write_spec(run_root.path(), "resumed.toml", CHECKPOINTED);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut run: Option<(String, std::path::PathBuf)> = None;
    let mut remote: Option<String> = None;
    let mut repeated_steps = 0;

    // Kill the run three times at random moments once the server has its first points, and
    // resume it each time.
    for _ in 0..3 {
        let mut command = pretext(run_root.path());
        match &run {
            None => command.arg("run").arg(&spec).args(mlflow_args(&server.uri)),
            Some((local, _)) => command.args(["run", "--resume", local]),
        };
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (local, run_dir) =
            run.get_or_insert_with(|| only_run(run_root.path(), Duration::from_secs(60)));
        wait_for_remote_loss(&client, run_dir, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.random_range(500..1500)));
        wait_past_checkpoint(run_root.path(), local, run_dir, Duration::from_secs(60));
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();

        let found = remote_run_id(run_root.path(), local);
        assert_eq!(remote.get_or_insert_with(|| found.clone()), &found, "the same MLflow run");
        let checkpoint = checkpoint_step(run_dir).unwrap_or(0);
        let last = local_last_step(run_root.path(), local).unwrap_or(0);
        repeated_steps += last.saturating_sub(checkpoint);
    }
    assert!(repeated_steps > 0, "no kill left steps after its checkpoint to repeat");

    let (local, _) = run.unwrap();
    let remote = remote.unwrap();
    // Marking the killed run first leaves it FAILED on the server, and the resumed run must set
    // it back to RUNNING while it trains.
    let marked = pretext(run_root.path()).args(["sync", &local]).output().unwrap();
    assert!(marked.status.success(), "{}", text(&marked).1);
    assert_eq!(remote_run(&client, &remote)["info"]["status"], "FAILED");
    let child = pretext(run_root.path())
        .args(["run", "--resume", &local])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&client, &remote, "RUNNING", Duration::from_secs(60));
    let output = wait_with_output(child, Duration::from_secs(300));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(remote_run_id(run_root.path(), &local), remote, "the same MLflow run");
    let experiment = client.experiment_id("resumed").unwrap();
    let found = client.search_runs(&experiment, "").unwrap();
    assert_eq!(found["runs"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(remote_run(&client, &remote)["info"]["status"], "FINISHED");

    let expected = local_points(run_root.path(), &local);
    let received = remote_points(&client, &remote, expected.keys().cloned());
    for (key, points) in &received {
        let mut steps: Vec<i64> = points.iter().map(|(step, _)| *step).collect();
        let total = steps.len();
        steps.dedup();
        assert_eq!(steps.len(), total, "{key}: a step is on the server twice");
    }
    assert_same_points(&received, &expected);
}

#[test]
fn sync_sends_local_and_spooled_runs_once() {
    let Some(server) = MlflowServer::start() else { return };
    let run_root = tempfile::tempdir().unwrap();
    let spec = write_spec(run_root.path(), "small.toml", SMALL_AUTOENCODER);
    let local_only = pretext(run_root.path()).arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&local_only);
    assert!(local_only.status.success(), "{stderr}");
    let local = run_id(&stdout);
    assert!(
        !run_root.path().join(&local).join("mlflow").exists(),
        "the local backend has no spool"
    );

    // A run whose server is down for the whole run leaves its spool.
    let down = format!("http://127.0.0.1:{}", free_port());
    let spooled_run = pretext(run_root.path())
        .arg("run")
        .arg(&spec)
        .args(mlflow_args(&down))
        .arg("tracking.retry_seconds=1")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&spooled_run);
    assert_eq!(spooled_run.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("pretext sync"), "{stderr}");
    let spooled = run_id(&stdout);
    assert!(run_root.path().join(&spooled).join("mlflow/spool.jsonl").exists());

    let first =
        pretext(run_root.path()).args(["sync", &local, "--uri", &server.uri]).output().unwrap();
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("complete"), "{stdout}");
    let again =
        pretext(run_root.path()).args(["sync", &local, "--uri", &server.uri]).output().unwrap();
    let (stdout, _) = text(&again);
    assert!(stdout.contains("nothing sent"), "{stdout}");

    let client = server.client();
    let store = Store::open(run_root.path()).unwrap();
    let (remote, complete) = store.mlflow_run(&local, &server.uri).unwrap().unwrap();
    assert!(complete);
    let run = remote_run(&client, &remote);
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(pairs(&run, "params").len(), store.params(&local).unwrap().len());
    let expected = local_points(run_root.path(), &local);
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);

    // The spooled run's server comes up (here: a new port, so the spool's URI is rewritten).
    let spool_path = run_root.path().join(&spooled).join("mlflow/spool.jsonl");
    let spool = std::fs::read_to_string(&spool_path).unwrap().replace(&down, &server.uri);
    std::fs::write(&spool_path, spool).unwrap();
    let output = pretext(run_root.path()).args(["sync", &spooled]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("complete"), "{stdout}");
    assert!(!spool_path.exists(), "a delivered spool is removed");
    let output = pretext(run_root.path()).args(["sync", &spooled]).output().unwrap();
    let (stdout, _) = text(&output);
    assert!(stdout.contains("nothing sent"), "{stdout}");
    let (remote, _) = store.mlflow_run(&spooled, &server.uri).unwrap().unwrap();
    let expected = local_points(run_root.path(), &spooled);
    assert_same_points(&remote_points(&client, &remote, expected.keys().cloned()), &expected);
    assert_eq!(remote_run(&client, &remote)["info"]["status"], "FINISHED");
}
