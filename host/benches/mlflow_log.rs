//! MLflow logging throughput, measured in one run against a real `mlflow server` on a free
//! 127.0.0.1 port with a SQLite store in a temporary folder:
//!
//! 1. metric points per second that pretext's background writer delivers,
//! 2. the same for the MLflow Python client: `mlflow.log_metric` synchronous, with
//!    `synchronous=False`, and `MlflowClient.log_batch` as the server's ingest ceiling,
//! 3. training steps per second of the digits autoencoder with MLflow tracking on and off.
//!
//! Build the release binary and plugins first, because part 3 runs `target/release/pretext`:
//!
//! ```text
//! cargo build --release --workspace
//! cargo bench -p pretext --bench mlflow_log
//! ```
//!
//! `PRETEXT_BENCH_POINTS` sets the points of the pretext writer and of the batch call (default
//! 50000), `PRETEXT_BENCH_ASYNC_POINTS` and `PRETEXT_BENCH_SYNC_POINTS` those of the two
//! per-point Python modes (defaults 2000 and 500, because they run at tens of points per
//! second), and `PRETEXT_BENCH_REPETITIONS` the training runs with tracking on and off
//! (default 5 each, interleaved). `PRETEXT_PYTHON` names the venv Python whose `mlflow`
//! executable and package are used; `.cargo/config.toml` sets it.

#[allow(dead_code)]
#[path = "../tests/cli/mlflow_server.rs"]
mod mlflow_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mlflow_server::MlflowServer;
use pretext::store::{MetricPoint, RunStatus, now_millis};
use pretext::tracking::writer::RunStart;
use pretext::tracking::{Credentials, MlflowTarget, MlflowTracker};

/// The experiment trained in part 3, relative to the workspace root.
const SPEC: &str = "experiments/digits-autoencoder.toml";

/// The Python client script, relative to the workspace root.
const CLIENT_SCRIPT: &str = "tests/reference/mlflow_client_rate.py";

/// Metric keys the points are spread over, as a training loop logs several metrics per step.
const KEYS: usize = 10;

/// Overrides of every training run: 20 epochs of 23 batches are 460 steps, each logged.
const TRAIN_OVERRIDES: [&str; 3] =
    ["trainer.epochs=20", "trainer.log_every=1", "trainer.threads=1"];

/// Maximum time of one Python client run or one training run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Goal for the pretext writer, in points per second.
const GOAL_POINTS_PER_SECOND: f64 = 20_000.0;
/// Goal for the pretext writer against the synchronous Python client.
const GOAL_RATIO_TO_SYNC: f64 = 100.0;
/// Maximum slowdown of training with MLflow on, as a fraction.
const GOAL_MAX_SLOWDOWN: f64 = 0.01;

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    let points = env_count("PRETEXT_BENCH_POINTS", 50_000)?;
    let async_points = env_count("PRETEXT_BENCH_ASYNC_POINTS", 2_000)?;
    let sync_points = env_count("PRETEXT_BENCH_SYNC_POINTS", 500)?;
    let repetitions = env_count("PRETEXT_BENCH_REPETITIONS", 5)?;
    let python =
        PathBuf::from(std::env::var_os("PRETEXT_PYTHON").context("PRETEXT_PYTHON is not set")?);
    let binary = root.join("target/release/pretext");
    ensure!(
        binary.is_file(),
        "missing {}; run `cargo build --release --workspace` first",
        binary.display()
    );

    let Some(server) = MlflowServer::start() else {
        bail!("mlflow is not installed beside PRETEXT_PYTHON; run scripts/setup.sh");
    };
    println!("mlflow server at {} (SQLite store)", server.uri);

    let writer = measure_writer(&server, points)?;
    println!("pretext writer: {points} points in {:.2} s", writer.seconds);
    let batch = run_client(&python, &root, &server.uri, "batch", points)?;
    let asynchronous = run_client(&python, &root, &server.uri, "async", async_points)?;
    let synchronous = run_client(&python, &root, &server.uri, "sync", sync_points)?;
    let training = measure_training(&binary, &root, &server.uri, repetitions)?;

    print_report(&writer, &[batch, asynchronous, synchronous], &training);
    drop(server);
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => {
            let count: usize = value.parse().with_context(|| format!("invalid {name}={value}"))?;
            ensure!(count >= KEYS, "{name} must be at least {KEYS}, got {count}");
            Ok(count)
        }
        Err(_) => Ok(default),
    }
}

/// One delivery-rate measurement.
struct Rate {
    label: String,
    points: usize,
    seconds: f64,
    /// Points of key 0 that the server returned afterwards.
    stored_k0: usize,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.points as f64 / self.seconds
    }
}

/// Drives pretext's MLflow tracker with `points` points, `KEYS` per call as one training step
/// logs them, and times from the run's start until the writer reports everything delivered.
fn measure_writer(server: &MlflowServer, points: usize) -> anyhow::Result<Rate> {
    let run_dir = tempfile::tempdir()?;
    let target = MlflowTarget {
        uri: server.uri.clone(),
        experiment: "bench-pretext".to_owned(),
        credentials: Credentials::None,
        retry_budget: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
    };
    let run = RunStart {
        local_run_id: uuid::Uuid::new_v4().to_string(),
        run_name: "pretext-writer".to_owned(),
        start_time: now_millis(),
        tags: Vec::new(),
    };
    let timestamp = now_millis();

    let started = Instant::now();
    let mut tracker =
        MlflowTracker::start(&target, run_dir.path(), run).map_err(anyhow::Error::msg)?;
    for step in 0..points / KEYS {
        let batch: Vec<MetricPoint> = (0..KEYS)
            .map(|key| MetricPoint {
                key: format!("bench/k{key}"),
                value: (step * KEYS + key) as f64,
                step: step as u64,
                timestamp,
            })
            .collect();
        pretext::tracking::Tracker::log_metrics(&mut tracker, &batch)?;
    }
    let report = tracker.finish(RunStatus::Finished, now_millis());
    let seconds = started.elapsed().as_secs_f64();

    ensure!(report.complete, "the writer did not deliver everything: {:?}", report.errors);
    let run_id = report.remote_run_id.context("the writer reported no MLflow run")?;
    let stored = server
        .client()
        .metric_history(&run_id, "bench/k0")
        .map_err(|error| anyhow::anyhow!("metrics/get-history failed: {error:?}"))?;
    Ok(Rate {
        label: "pretext writer".to_owned(),
        points: points / KEYS * KEYS,
        seconds,
        stored_k0: stored.len(),
    })
}

/// Runs the Python client script in `mode` and reads its JSON result.
fn run_client(
    python: &Path,
    root: &Path,
    uri: &str,
    mode: &str,
    points: usize,
) -> anyhow::Result<Rate> {
    let mut command = Command::new(python);
    command
        .arg(root.join(CLIENT_SCRIPT))
        .args([uri, mode, &points.to_string(), &KEYS.to_string()])
        .env("MLFLOW_TRACKING_URI", uri);
    let stdout = run_with_timeout(&mut command, &format!("python client ({mode})"))?;
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).context("no JSON output")?;
    let result: serde_json::Value = serde_json::from_str(line)?;
    let seconds = result["seconds"].as_f64().context("no `seconds` in the output")?;
    let stored_k0 = result["stored_k0"].as_u64().context("no `stored_k0` in the output")? as usize;
    let label = match mode {
        "sync" => "mlflow.log_metric".to_owned(),
        "async" => "mlflow.log_metric(synchronous=False)".to_owned(),
        _ => "MlflowClient.log_batch (ceiling)".to_owned(),
    };
    println!("{label}: {points} points in {seconds:.2} s");
    Ok(Rate { label, points, seconds, stored_k0 })
}

/// Runs `command` with a piped stdout, kills it after `CHILD_TIMEOUT` and returns its stdout.
fn run_with_timeout(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            child.kill()?;
            child.wait()?;
            bail!("{what} timed out after {CHILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{what} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Training steps per second with tracking off and on, one list per setting.
struct Training {
    off: Vec<f64>,
    on: Vec<f64>,
}

/// Trains the digits autoencoder `repetitions` times with tracking off and on, interleaved.
fn measure_training(
    binary: &Path,
    root: &Path,
    uri: &str,
    repetitions: usize,
) -> anyhow::Result<Training> {
    let mut training = Training { off: Vec::new(), on: Vec::new() };
    let tracking_on = ["tracking.backend=mlflow".to_owned(), format!("tracking.uri={uri}")];
    let tracking_off = ["tracking.backend=local".to_owned()];
    for repetition in 0..repetitions {
        let off = train_once(binary, root, &tracking_off)?;
        let on = train_once(binary, root, &tracking_on)?;
        println!("training {}: off {off:.1} steps/s, on {on:.1} steps/s", repetition + 1);
        training.off.push(off);
        training.on.push(on);
    }
    Ok(training)
}

/// Runs `pretext run` once in a fresh run root and reads `train_steps_per_second` from the
/// run's `metrics.json`.
fn train_once(binary: &Path, root: &Path, tracking: &[String]) -> anyhow::Result<f64> {
    let run_root = tempfile::tempdir()?;
    let mut command = Command::new(binary);
    command
        .current_dir(root)
        .arg("--run-root")
        .arg(run_root.path())
        .args(["run", SPEC])
        .args(TRAIN_OVERRIDES)
        .args(tracking)
        .env_remove("MLFLOW_TRACKING_URI");
    run_with_timeout(&mut command, "pretext run")?;

    for entry in std::fs::read_dir(run_root.path())? {
        let path = entry?.path().join("metrics.json");
        if path.is_file() {
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            return summary["train_steps_per_second"]
                .as_f64()
                .with_context(|| format!("no train_steps_per_second in {}", path.display()));
        }
    }
    bail!("no metrics.json under {}", run_root.path().display())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 0 { (sorted[middle - 1] + sorted[middle]) / 2.0 } else { sorted[middle] }
}

fn verdict(met: bool) -> &'static str {
    if met { "goal met" } else { "goal not met" }
}

fn print_report(writer: &Rate, python: &[Rate], training: &Training) {
    println!();
    println!("| client | points | seconds | points/s | stored points of bench/k0 |");
    println!("|---|---|---|---|---|");
    for rate in std::iter::once(writer).chain(python) {
        println!(
            "| {} | {} | {:.2} | {:.0} | {} of {} |",
            rate.label,
            rate.points,
            rate.seconds,
            rate.per_second(),
            rate.stored_k0,
            rate.points / KEYS
        );
    }

    let off = median(&training.off);
    let on = median(&training.on);
    let slowdown = 1.0 - on / off;
    println!();
    println!("| training (median of {}) | steps/s |", training.off.len());
    println!("|---|---|");
    println!("| tracking off | {off:.1} |");
    println!("| tracking on (MLflow) | {on:.1} |");

    let synchronous = python.iter().find(|rate| rate.label == "mlflow.log_metric");
    let batch = python.iter().find(|rate| rate.label.starts_with("MlflowClient.log_batch"));
    println!();
    println!(
        "pretext writer: {:.0} points/s, goal >= {GOAL_POINTS_PER_SECOND:.0}: {}",
        writer.per_second(),
        verdict(writer.per_second() >= GOAL_POINTS_PER_SECOND)
    );
    if let Some(synchronous) = synchronous {
        let ratio = writer.per_second() / synchronous.per_second();
        println!(
            "pretext writer / synchronous log_metric: {ratio:.1}x, goal about {GOAL_RATIO_TO_SYNC:.0}x: {}",
            verdict(ratio >= GOAL_RATIO_TO_SYNC)
        );
    }
    if let Some(batch) = batch {
        println!(
            "pretext writer / log_batch ceiling: {:.2}x",
            writer.per_second() / batch.per_second()
        );
    }
    println!(
        "training slowdown with MLflow on: {:.1}%, goal <= {:.0}%: {}",
        slowdown * 100.0,
        GOAL_MAX_SLOWDOWN * 100.0,
        verdict(slowdown <= GOAL_MAX_SLOWDOWN)
    );
}
