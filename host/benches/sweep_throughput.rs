//! Sweep throughput: trials per hour of one 8-trial grid with 1 and with 2 local workers, and
//! the per-trial launch overhead, from the trial process's start (as the journal records it) to
//! its first training step (the first `train/loss` point in its run store).
//!
//! Run with `cargo bench -p pretext --bench sweep_throughput`; the built plugin libraries must
//! sit next to the binary (`cargo build --release --workspace` first).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use pretext::store::Store;

const SPEC: &str = r#"
name = "sweep-bench"
seed = 1

[dataset]
plugin = "digits"

[encoder]
plugin = "mlp"
hidden = [64]
latent = 8

[objective]
plugin = "autoencoder"

[trainer]
epochs = 5
batch_size = 32

[evaluate.reconstruction]

[sweep]
metric = "reconstruction/mse"
# One thread per trial in both runs, so that only the number of workers changes.
threads_per_trial = 1
"#;

const GRID: &str = "trainer.lr=1e-3,2e-3,3e-3,4e-3,5e-3,6e-3,7e-3,8e-3";

struct Measured {
    trials: usize,
    seconds: f64,
    overheads: Vec<f64>,
}

fn run_sweep(dir: &Path, spec: &Path, workers: usize) -> Measured {
    let sweep_dir = dir.join(format!("workers-{workers}"));
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .env_remove("PRETEXT_PLUGIN_PATH")
        .env_remove("RUST_LOG")
        .arg("sweep")
        .arg(spec)
        .arg(GRID)
        .args(["--max-parallel", &workers.to_string(), "--dir"])
        .arg(&sweep_dir)
        .output()
        .expect("run pretext sweep");
    let seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let (_, trials) = pretext::sweep::read(&sweep_dir).expect("read the journal");
    let mut overheads = Vec::new();
    for trial in &trials {
        let (Some(started_at), Some(run_id)) = (trial.started_at, &trial.run_id) else { continue };
        let store = Store::open(&trial.dir).expect("open the trial's run store");
        let first_step = store
            .metrics(run_id)
            .expect("read metrics")
            .into_iter()
            .filter(|point| point.key == "train/loss")
            .map(|point| point.timestamp)
            .min();
        if let Some(first_step) = first_step {
            overheads.push((first_step - started_at) as f64 / 1000.0);
        }
    }
    Measured { trials: trials.len(), seconds, overheads }
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let spec = dir.path().join("sweep-bench.toml");
    std::fs::write(&spec, SPEC).expect("write the spec");
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    println!("sweep of 8 trials (digits MLP autoencoder, 5 epochs each) on {cores} cores");

    let mut rates = Vec::new();
    for workers in [1, 2] {
        let measured = run_sweep(dir.path(), &spec, workers);
        let per_hour = measured.trials as f64 / measured.seconds * 3600.0;
        let mut overheads = measured.overheads.clone();
        overheads.sort_by(f64::total_cmp);
        let median = overheads.get(overheads.len() / 2).copied().unwrap_or(f64::NAN);
        let mean = overheads.iter().sum::<f64>() / overheads.len().max(1) as f64;
        println!(
            "{workers} worker(s): {} trials in {:.1} s = {per_hour:.0} trials/hour; launch to \
             first step: median {median:.2} s, mean {mean:.2} s",
            measured.trials, measured.seconds
        );
        rates.push(per_hour);
    }
    println!("speed-up with 2 workers: {:.2}x (goal >= 1.8x)", rates[1] / rates[0]);
}
