//! Training steps per second on the digits autoencoder, measured three ways in one run: the
//! pretext trainer with its plugins, a hand-written tch loop of the same model, and the PyTorch
//! eager reference script.
//!
//! Build the plugins in release first, because this bench loads them from `target/release`:
//!
//! ```text
//! cargo build --release -p pretext-datasets -p pretext-encoders -p pretext-evaluators -p pretext-objectives
//! cargo bench -p pretext --bench train_step
//! ```
//!
//! `PRETEXT_BENCH_THREADS` sets the libtorch intra-op threads of all three (default 1), and
//! `PRETEXT_BENCH_REPETITIONS` the number of timed runs of each (default 3).
//! `PRETEXT_PYTHON` names the Python that runs the reference; `.cargo/config.toml` sets it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use flate2::read::GzDecoder;
use pretext::plugins::Registry;
use pretext::spec::{Experiment, TrainerConfig};
use pretext::store::MetricPoint;
use pretext::train::{Pipeline, TrainObserver, train};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Init, LinearConfig, Module, OptimizerConfig, VarStore};
use tch::{Device, Reduction, Tensor};

/// The experiment the host trains, relative to the workspace root.
const SPEC: &str = "experiments/digits-autoencoder.toml";

/// The digits CSV that the `digits` dataset plugin embeds, relative to the workspace root.
const DIGITS_CSV_GZ: &str = "plugins/datasets/data/digits.csv.gz";

/// The PyTorch eager reference, relative to the workspace root.
const REFERENCE_SCRIPT: &str = "tests/reference/digits_autoencoder.py";

/// The plugin libraries that the experiment needs, as cargo names them in `target/release`.
const PLUGIN_LIBRARIES: [&str; 4] =
    ["pretext_datasets", "pretext_encoders", "pretext_evaluators", "pretext_objectives"];

/// Epochs of every timed run: 20 epochs of 23 batches are 460 optimizer steps.
const EPOCHS: u64 = 20;

/// Timed runs of each implementation unless `PRETEXT_BENCH_REPETITIONS` sets them. The report
/// shows their median.
const DEFAULT_REPETITIONS: usize = 3;

/// libtorch intra-op threads unless `PRETEXT_BENCH_THREADS` sets them. One thread makes runs less
/// noisy on a small machine, where more threads share the cores with pretext's prefetch thread.
const DEFAULT_THREADS: i32 = 1;

/// Layer widths of the encoder in the experiment spec. The decoder mirrors them.
const ENCODER_WIDTHS: [i64; 4] = [64, 128, 64, 16];

/// Values per digits image (8 x 8).
const PIXELS: usize = 64;

/// Largest pixel value in the digits CSV, by which pixels are divided.
const MAX_PIXEL: f32 = 16.0;

/// The smallest acceptable ratio of pretext's steps per second to the hand-written tch loop's.
const RAW_TCH_GOAL: f64 = 0.97;

/// The smallest acceptable ratio of pretext's steps per second to PyTorch eager's.
const PYTORCH_GOAL: f64 = 1.6;

/// One timed training run.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    steps: u64,
    steps_per_second: f64,
}

/// The timed runs of one implementation, or the reason it was skipped.
struct Series {
    name: &'static str,
    runs: Vec<Measurement>,
    skipped: Option<String>,
}

impl Series {
    fn new(name: &'static str) -> Self {
        Self { name, runs: Vec::new(), skipped: None }
    }

    fn median(&self) -> Option<f64> {
        if self.runs.is_empty() || self.skipped.is_some() {
            return None;
        }
        let mut values: Vec<f64> = self.runs.iter().map(|run| run.steps_per_second).collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        if values.len() % 2 == 1 {
            Some(values[middle])
        } else {
            Some((values[middle - 1] + values[middle]) / 2.0)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let threads = env_count("PRETEXT_BENCH_THREADS", DEFAULT_THREADS as usize)? as i32;
    let repetitions = env_count("PRETEXT_BENCH_REPETITIONS", DEFAULT_REPETITIONS)?;
    tch::set_num_threads(threads);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent");

    let mut registry = plugin_registry()?;
    let experiment = load_experiment(root, &mut registry)?;
    let pixels = read_digits(&root.join(DIGITS_CSV_GZ))?;
    let python = python_interpreter();

    // Untimed warm-up, so that libtorch's lazy initialisation lands in neither series.
    let mut warm_up = experiment.clone();
    warm_up.trainer.epochs = 1;
    let train_len = measure_pretext(&warm_up, &registry)?.1;
    measure_raw_tch(&pixels, train_len, &warm_up.trainer, experiment.seed)?;

    let mut pretext = Series::new("pretext");
    let mut raw_tch = Series::new("raw tch");
    let mut pytorch = Series::new("PyTorch eager");
    if let Err(reason) = &python {
        pytorch.skipped = Some(reason.clone());
    }
    let load_before = load_average();
    for repetition in 1..=repetitions {
        eprintln!("repetition {repetition} of {repetitions}");
        pretext.runs.push(measure_pretext(&experiment, &registry)?.0);
        raw_tch.runs.push(measure_raw_tch(
            &pixels,
            train_len,
            &experiment.trainer,
            experiment.seed,
        )?);
        if let (Ok(python), None) = (&python, &pytorch.skipped) {
            match measure_pytorch(python, &root.join(REFERENCE_SCRIPT), threads) {
                Ok(run) => pytorch.runs.push(run),
                Err(error) => pytorch.skipped = Some(format!("the reference failed: {error:#}")),
            }
        }
    }

    let load = [load_before, load_average()];

    print_report(&experiment.trainer, train_len, threads, load, &[pretext, raw_tch, pytorch]);
    Ok(())
}

/// Reads a count of at least 1 from the environment variable `name`, or returns `default` when
/// it is unset.
fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    let Some(text) = std::env::var_os(name) else {
        return Ok(default);
    };
    let text = text.to_string_lossy();
    match text.trim().parse::<usize>() {
        Ok(count) if (1..=i32::MAX as usize).contains(&count) => Ok(count),
        _ => bail!("{name}=`{text}` is invalid, expected an integer of at least 1"),
    }
}

/// Reads the one-minute load average from `/proc/loadavg`, or returns `None` where the file is
/// missing.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Loads the plugin libraries that the experiment needs from `target/release`, the folder above
/// this bench's executable in `target/release/deps`.
///
/// The files are named one by one, rather than found by `Registry::discover`, so that the
/// measured plugins are these release builds whatever `PRETEXT_PLUGIN_PATH` contains.
fn plugin_registry() -> anyhow::Result<Registry> {
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} has no grandparent folder", exe.display()))?;
    let mut files = Vec::new();
    for name in PLUGIN_LIBRARIES {
        let file = dir.join(format!(
            "{}{name}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        ensure!(
            file.is_file(),
            "plugin library {} not found; build the plugins first with `cargo build --release -p \
             pretext-datasets -p pretext-encoders -p pretext-evaluators -p pretext-objectives`",
            file.display()
        );
        files.push(file);
    }

    let mut registry = Registry::default();
    registry.load_spec_paths(&files);
    if let Some(warning) = registry.warnings().first() {
        bail!("cannot load plugin library {}: {}", warning.path.display(), warning.message);
    }
    Ok(registry)
}

/// Loads the experiment with [`EPOCHS`] epochs on the CPU.
fn load_experiment(root: &Path, registry: &mut Registry) -> anyhow::Result<Experiment> {
    let overrides = [format!("trainer.epochs={EPOCHS}"), "trainer.device=cpu".to_owned()];
    let spec_path = root.join(SPEC);
    pretext::spec::load(&spec_path, &overrides, registry)
        .map_err(|errors| anyhow::anyhow!("invalid spec {}:\n{errors}", spec_path.display()))
}

//////////////////////////////////////////////////////////////////////////////////////////////////
// pretext: the host trainer and its plugins

/// An observer that drops metric points except the mean loss of each epoch, and runs no
/// evaluators.
#[derive(Default)]
struct EpochLossObserver {
    epoch_losses: Vec<f64>,
}

impl TrainObserver for EpochLossObserver {
    fn metrics(&mut self, points: Vec<MetricPoint>) {
        let epoch_losses = points.iter().filter(|point| point.key == "train/epoch_loss");
        self.epoch_losses.extend(epoch_losses.map(|point| point.value));
    }

    fn evaluate(
        &mut self,
        _pipeline: &mut Pipeline,
        _epoch: u64,
        _step: u64,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// Trains a freshly composed pipeline with the host trainer and returns the trainer's own timing
/// and the number of train samples.
fn measure_pretext(
    experiment: &Experiment,
    registry: &Registry,
) -> anyhow::Result<(Measurement, usize)> {
    let mut pipeline = Pipeline::compose(experiment, registry, Device::Cpu)?;
    if pipeline.encoder_info.needs_fit {
        let dataset = std::sync::Arc::clone(&pipeline.dataset);
        pipeline.encoder.fit(&dataset)?;
    }
    let mut observer = EpochLossObserver::default();
    let stop = AtomicBool::new(false);

    let summary = train(&mut pipeline, &experiment.trainer, &mut observer, &stop)?;

    if let [first, .., last] = observer.epoch_losses[..] {
        ensure!(last < first, "pretext did not train: epoch loss went from {first} to {last}");
    }
    let measurement =
        Measurement { steps: summary.steps, steps_per_second: summary.steps_per_second() };
    Ok((measurement, pipeline.data_info.train_len))
}

//////////////////////////////////////////////////////////////////////////////////////////////////
// raw tch: the same model and data in a hand-written loop

/// Builds linear layers of the given widths, initialised as PyTorch's `nn.Linear` and the
/// plugins do: weights and biases uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`.
fn linear_layers(path: nn::Path<'_>, widths: &[i64]) -> Vec<nn::Linear> {
    let mut layers = Vec::new();
    for (index, pair) in widths.windows(2).enumerate() {
        let bound = 1.0 / (pair[0] as f64).sqrt();
        let config =
            LinearConfig { ws_init: Init::Uniform { lo: -bound, up: bound }, ..Default::default() };
        layers.push(nn::linear(&path / format!("layer{index}"), pair[0], pair[1], config));
    }
    layers
}

/// Applies the layers with ReLU between them and none after the last.
fn forward(layers: &[nn::Linear], inputs: &Tensor) -> Tensor {
    let mut xs = inputs.shallow_clone();
    for (index, layer) in layers.iter().enumerate() {
        xs = layer.forward(&xs);
        if index + 1 < layers.len() {
            xs = xs.relu();
        }
    }
    xs
}

/// Copies the images at `indices` into a `[batch, 64]` tensor, as the `digits` plugin builds a
/// batch from the index list that the host sends it.
fn gather_batch(pixels: &[f32], indices: &[usize]) -> Tensor {
    let mut values = Vec::with_capacity(indices.len() * PIXELS);
    for &index in indices {
        values.extend_from_slice(&pixels[index * PIXELS..(index + 1) * PIXELS]);
    }
    Tensor::from_slice(&values).reshape([indices.len() as i64, PIXELS as i64])
}

/// Trains the autoencoder on the first `train_len` images with `nn::Adam` and times the loop,
/// shuffling and batch building included.
fn measure_raw_tch(
    pixels: &[f32],
    train_len: usize,
    config: &TrainerConfig,
    seed: u64,
) -> anyhow::Result<Measurement> {
    ensure!(
        train_len * PIXELS <= pixels.len(),
        "the digits CSV has {} images, fewer than the {train_len} train samples",
        pixels.len() / PIXELS
    );
    tch::manual_seed(seed as i64);
    let vs = VarStore::new(Device::Cpu);
    let encoder = linear_layers(vs.root() / "encoder", &ENCODER_WIDTHS);
    let mut decoder_widths = ENCODER_WIDTHS;
    decoder_widths.reverse();
    let decoder = linear_layers(vs.root() / "decoder", &decoder_widths);
    let adam = nn::Adam {
        beta1: config.beta1,
        beta2: config.beta2,
        wd: config.weight_decay,
        ..Default::default()
    };
    let mut optimizer = adam.build(&vs, config.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train_len).collect();
    let train_inputs = gather_batch(pixels, &order);
    let loss_before = train_loss(&encoder, &decoder, &train_inputs);

    let started = Instant::now();
    let mut steps = 0u64;
    for _ in 0..config.epochs {
        order.shuffle(&mut rng);
        for indices in order.chunks(config.batch_size) {
            let batch = gather_batch(pixels, indices);
            let reconstruction = forward(&decoder, &forward(&encoder, &batch));
            let loss = reconstruction.mse_loss(&batch, Reduction::Mean);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            steps += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let loss_after = train_loss(&encoder, &decoder, &train_inputs);
    ensure!(
        loss_after < loss_before,
        "raw tch did not train: train loss went from {loss_before} to {loss_after}"
    );
    Ok(Measurement { steps, steps_per_second: steps as f64 / seconds })
}

/// Computes the mean squared reconstruction error over `inputs` without recording gradients.
fn train_loss(encoder: &[nn::Linear], decoder: &[nn::Linear], inputs: &Tensor) -> f64 {
    tch::no_grad(|| {
        let reconstruction = forward(decoder, &forward(encoder, inputs));
        reconstruction.mse_loss(inputs, Reduction::Mean).double_value(&[])
    })
}

/// Reads the digits CSV (64 pixels in 0..=16 and a label per row) as row-major pixels in [0, 1].
fn read_digits(path: &Path) -> anyhow::Result<Vec<f32>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot decompress {}", path.display()))?;

    let mut pixels = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        ensure!(
            fields.len() == PIXELS + 1,
            "{} line {}: expected {} values, found {}",
            path.display(),
            line_index + 1,
            PIXELS + 1,
            fields.len()
        );
        for field in &fields[..PIXELS] {
            let value: f32 = field.trim().parse().with_context(|| {
                format!("{} line {}: invalid pixel `{field}`", path.display(), line_index + 1)
            })?;
            pixels.push(value / MAX_PIXEL);
        }
    }
    Ok(pixels)
}

//////////////////////////////////////////////////////////////////////////////////////////////////
// PyTorch eager: the reference script

/// Reads the Python path from `PRETEXT_PYTHON`, or returns why the PyTorch series is skipped.
fn python_interpreter() -> Result<PathBuf, String> {
    match std::env::var_os("PRETEXT_PYTHON") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err("PRETEXT_PYTHON is not set. cargo sets it from .cargo/config.toml, which \
                  scripts/setup.sh writes"
            .to_owned()),
    }
}

/// Runs the reference script for [`EPOCHS`] epochs and reads the steps per second it prints.
fn measure_pytorch(python: &Path, script: &Path, threads: i32) -> anyhow::Result<Measurement> {
    let output = Command::new(python)
        .arg(script)
        .args(["--epochs", &EPOCHS.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot start {}", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        bail!("{} exited with {}: {tail}", script.display(), output.status);
    }

    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} printed no JSON object", script.display()))?;
    let field = |name: &str| {
        report[name].as_f64().with_context(|| format!("the report has no number `{name}`"))
    };
    Ok(Measurement {
        steps: field("train_steps")? as u64,
        steps_per_second: field("steps_per_second")?,
    })
}

//////////////////////////////////////////////////////////////////////////////////////////////////
// Report

fn print_report(
    config: &TrainerConfig,
    train_len: usize,
    threads: i32,
    load: [Option<f64>; 2],
    series: &[Series; 3],
) {
    let repetitions = series.iter().map(|item| item.runs.len()).max().unwrap_or(0);
    println!();
    println!(
        "digits autoencoder: {train_len} train samples, batch {}, {} epochs, {threads} libtorch \
         thread(s), median of {repetitions} interleaved runs",
        config.batch_size, config.epochs
    );
    if let [Some(before), Some(after)] = load {
        println!("1-minute load average: {before:.2} before the timed runs, {after:.2} after");
    }
    println!();

    let run_columns: String =
        (1..=repetitions).map(|run| format!("{:>10}", format!("run {run}"))).collect();
    println!("{:<15}{:>7}{run_columns}{:>10}", "steps/s", "steps", "median");
    for item in series {
        match (&item.skipped, item.median()) {
            (None, Some(median)) => {
                let steps = item.runs[0].steps;
                let runs: String =
                    item.runs.iter().map(|run| format!("{:>10.1}", run.steps_per_second)).collect();
                println!("{:<15}{steps:>7}{runs}{median:>10.1}", item.name);
            }
            (reason, _) => {
                let reason = reason.as_deref().unwrap_or("no runs");
                println!("{:<15}skipped: {reason}", item.name);
            }
        }
    }
    let mut step_counts: Vec<u64> = series
        .iter()
        .filter(|item| item.skipped.is_none())
        .flat_map(|item| item.runs.iter().map(|run| run.steps))
        .collect();
    step_counts.sort_unstable();
    step_counts.dedup();
    if step_counts.len() > 1 {
        println!(
            "NOTE: the runs took different numbers of steps, so their rates are not comparable"
        );
    }
    println!();

    let [pretext, raw_tch, pytorch] = series;
    print_ratio(pretext, raw_tch, RAW_TCH_GOAL);
    print_ratio(pretext, pytorch, PYTORCH_GOAL);
}

fn print_ratio(numerator: &Series, denominator: &Series, goal: f64) {
    let label = format!("{} / {}", numerator.name, denominator.name);
    match (numerator.median(), denominator.median()) {
        (Some(top), Some(bottom)) => {
            let ratio = top / bottom;
            let verdict = if ratio >= goal { "goal met" } else { "goal not met" };
            println!("{label:<26}{ratio:>6.3}  (goal >= {goal}): {verdict}");
        }
        _ => println!("{label:<26}     -  (goal >= {goal}): not measured"),
    }
}
