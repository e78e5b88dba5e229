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
//! 50000). `PRETEXT_BENCH_ASYNC_POINTS` and `PRETEXT_BENCH_SYNC_POINTS` set those of the two
//! per-point Python modes (defaults 2000 and 500), which run at tens of points per second.
//! `PRETEXT_BENCH_ROUNDS` sets how often the writer and the batch call are each timed (default
//! 3, alternating; the median is reported). `PRETEXT_BENCH_REPETITIONS` sets the training runs
//! with tracking on and off (default 7 each, interleaved). Part 3 runs the server on the last
//! CPU and training on the others, as if the server were another machine. With
//! `PRETEXT_BENCH_PIN=0` both run on all CPUs. `PRETEXT_PYTHON` names the venv Python whose
//! `mlflow` executable and package are used; `.cargo/config.toml` sets it.

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

/// The spec's `name`, which is the MLflow experiment its runs go to.
const SPEC_NAME: &str = "digits-autoencoder";

/// The Python client script, relative to the workspace root.
const CLIENT_SCRIPT: &str = "tests/reference/mlflow_client_rate.py";

/// Metric keys the points are spread over, as a training loop logs several metrics per step.
const KEYS: usize = 10;

/// Overrides of every training run: 200 epochs of 23 batches are 4600 steps, each logged. They
/// take a few seconds, so the run's start (experiment lookup and run creation on the server)
/// weighs on the rate no more than it does in a real run.
const TRAIN_OVERRIDES: [&str; 3] =
    ["trainer.epochs=200", "trainer.log_every=1", "trainer.threads=1"];

/// Untimed small runs, each with its own connections, that warm the server's workers up.
const WARM_UP_RUNS: usize = 8;

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
    let points = env_count("PRETEXT_BENCH_POINTS", 50_000, KEYS)?;
    let async_points = env_count("PRETEXT_BENCH_ASYNC_POINTS", 2_000, KEYS)?;
    let sync_points = env_count("PRETEXT_BENCH_SYNC_POINTS", 500, KEYS)?;
    let repetitions = env_count("PRETEXT_BENCH_REPETITIONS", 7, 1)?;
    let rounds = env_count("PRETEXT_BENCH_ROUNDS", 3, 1)?;
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

    warm_up(&server)?;
    let mut writers = Vec::new();
    let mut batches = Vec::new();
    for round in 1..=rounds {
        let writer = measure_writer(&server, points)?;
        println!("round {round}: pretext writer: {points} points in {:.2} s", writer.seconds);
        writers.push(writer);
        batches.push(run_client(&python, &root, &server.uri, "batch", points)?);
    }
    let writer = median_rate(writers);
    let batch = median_rate(batches);
    let asynchronous = run_client(&python, &root, &server.uri, "async", async_points)?;
    let synchronous = run_client(&python, &root, &server.uri, "sync", sync_points)?;
    drop(server);
    let training = measure_training(&binary, &root, repetitions)?;

    print_report(&writer, &[batch, asynchronous, synchronous], &training);
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Reads a count of at least `minimum` from the environment variable `name`, or `default`.
fn env_count(name: &str, default: usize, minimum: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => {
            let count: usize = value.parse().with_context(|| format!("invalid {name}={value}"))?;
            ensure!(count >= minimum, "{name} must be at least {minimum}, got {count}");
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

/// Returns the measurement with the median rate.
fn median_rate(mut rates: Vec<Rate>) -> Rate {
    rates.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    rates.swap_remove(rates.len() / 2)
}

/// Sends a few small runs through separate connections before anything is timed. Each of the
/// server's worker processes opens its store on its first request, which takes far longer than
/// a request to a warm worker. Without this, whichever client runs first pays for it.
fn warm_up(server: &MlflowServer) -> anyhow::Result<()> {
    for _ in 0..WARM_UP_RUNS {
        measure_writer(server, 2_000)?;
    }
    Ok(())
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
fn run_with_timeout(command: &mut Command, label: &str) -> anyhow::Result<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {label}"))?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            child.kill()?;
            child.wait()?;
            bail!("{label} timed out after {CHILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{label} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Training steps per second with tracking off and on, one list per setting, in run order.
struct Training {
    off: Vec<f64>,
    on: Vec<f64>,
    /// The split of CPUs between training and the server, for the report.
    placement: String,
}

impl Training {
    /// Returns the median over repetitions of `1 - on / off`. Each repetition's two runs are
    /// taken together, so a slow stretch of the machine falls on both settings alike.
    fn paired_slowdown(&self) -> f64 {
        let slowdowns: Vec<f64> =
            self.off.iter().zip(&self.on).map(|(off, on)| 1.0 - on / off).collect();
        median(&slowdowns)
    }
}

/// Returns the `taskset` CPU lists of the server and of training, or `None` when both run on
/// all CPUs. With `PRETEXT_BENCH_PIN` unset or `1` and at least two CPUs, the server gets the
/// last CPU and training the others, as when the server is another machine.
fn placement() -> anyhow::Result<Option<(String, String)>> {
    let pin = std::env::var("PRETEXT_BENCH_PIN").unwrap_or_else(|_| "1".to_owned());
    ensure!(pin == "0" || pin == "1", "PRETEXT_BENCH_PIN must be 0 or 1, got {pin}");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if pin == "0" || cpus < 2 {
        return Ok(None);
    }
    let training = if cpus == 2 { "0".to_owned() } else { format!("0-{}", cpus - 2) };
    Ok(Some(((cpus - 1).to_string(), training)))
}

/// Trains the digits autoencoder `repetitions` times with tracking off and on, interleaved and
/// alternating which goes first, against a server of its own, and checks that each tracked run
/// reached the server.
fn measure_training(binary: &Path, root: &Path, repetitions: usize) -> anyhow::Result<Training> {
    let cpus = placement()?;
    let Some(server) = MlflowServer::start_on(cpus.as_ref().map(|(server, _)| server.as_str()))
    else {
        bail!("mlflow is not installed beside PRETEXT_PYTHON; run scripts/setup.sh");
    };
    let train_cpus = cpus.as_ref().map(|(_, training)| training.as_str());
    let placement = match &cpus {
        Some((server, training)) => {
            format!("training on CPU {training}, the MLflow server on CPU {server}")
        }
        None => "training and the MLflow server on all CPUs".to_owned(),
    };
    println!("{placement}");
    let mut training = Training { off: Vec::new(), on: Vec::new(), placement };
    let tracking_on =
        ["tracking.backend=mlflow".to_owned(), format!("tracking.uri={}", server.uri)];
    let tracking_off = ["tracking.backend=local".to_owned()];
    for repetition in 0..repetitions {
        let (off, on) = if repetition.is_multiple_of(2) {
            let off = train_once(binary, root, train_cpus, &tracking_off)?;
            (off, train_once(binary, root, train_cpus, &tracking_on)?)
        } else {
            let on = train_once(binary, root, train_cpus, &tracking_on)?;
            (train_once(binary, root, train_cpus, &tracking_off)?, on)
        };
        check_delivered(&server, &on.run_id)?;
        println!(
            "training {}: off {:.1} steps/s, on {:.1} steps/s",
            repetition + 1,
            off.steps_per_second,
            on.steps_per_second
        );
        training.off.push(off.steps_per_second);
        training.on.push(on.steps_per_second);
    }
    Ok(training)
}

/// Checks that the server contains the run with local id `local_run_id`, with its final
/// `train/steps_per_second` point, which the run logs after training.
fn check_delivered(server: &MlflowServer, local_run_id: &str) -> anyhow::Result<()> {
    let client = server.client();
    let request = |error| anyhow::anyhow!("MLflow request failed: {error:?}");
    let experiment_id = client.experiment_id(SPEC_NAME).map_err(request)?;
    let run = client
        .find_run(&experiment_id, local_run_id)
        .map_err(request)?
        .with_context(|| format!("run {local_run_id} not found on the MLflow server"))?;
    let history = client.metric_history(&run.run_id, "train/steps_per_second").map_err(request)?;
    ensure!(
        history.len() == 1,
        "run {local_run_id} has {} train/steps_per_second points on the server, expected 1",
        history.len()
    );
    Ok(())
}

/// The outcome of one `pretext run`.
struct TrainRun {
    run_id: String,
    steps_per_second: f64,
}

/// Runs `pretext run` once in a fresh run root, on `cpus` when given, and reads the run's
/// `metrics.json`.
fn train_once(
    binary: &Path,
    root: &Path,
    cpus: Option<&str>,
    tracking: &[String],
) -> anyhow::Result<TrainRun> {
    let run_root = tempfile::tempdir()?;
    let mut command = mlflow_server::command_on(binary, cpus);
    command
        .current_dir(root)
        .arg("--run-root")
        .arg(run_root.path())
        .args(["run", SPEC])
        .args(TRAIN_OVERRIDES)
        .args(tracking)
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_EXPERIMENT_NAME");
    run_with_timeout(&mut command, "pretext run")?;

    for entry in std::fs::read_dir(run_root.path())? {
        let path = entry?.path().join("metrics.json");
        if !path.is_file() {
            continue;
        }
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let missing = |field: &str| format!("no {field} in {}", path.display());
        return Ok(TrainRun {
            run_id: summary["run_id"].as_str().with_context(|| missing("run_id"))?.to_owned(),
            steps_per_second: summary["train_steps_per_second"]
                .as_f64()
                .with_context(|| missing("train_steps_per_second"))?,
        });
    }
    bail!("no metrics.json under {}", run_root.path().display())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// Returns the minimum and maximum of `values`.
fn spread(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

fn verdict(met: bool) -> &'static str {
    if met { "goal met" } else { "goal not met" }
}

fn print_report(writer: &Rate, python: &[Rate], training: &Training) {
    println!();
    println!(
        "| client (median of rounds) | points | seconds | points/s | stored points of bench/k0 |"
    );
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

    let slowdown = training.paired_slowdown();
    println!();
    println!("{}:", training.placement);
    println!("| training, {} runs each | median steps/s | min | max |", training.off.len());
    println!("|---|---|---|---|");
    for (label, values) in [("tracking off", &training.off), ("tracking on (MLflow)", &training.on)]
    {
        let (low, high) = spread(values);
        println!("| {label} | {:.1} | {low:.1} | {high:.1} |", median(values));
    }

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
        "training slowdown with MLflow on (median over pairs of runs): {:.1}%, goal <= {:.0}%: {}",
        slowdown * 100.0,
        GOAL_MAX_SLOWDOWN * 100.0,
        verdict(slowdown <= GOAL_MAX_SLOWDOWN)
    );
}
