//! Whole runs: the main job's figures, the baseline against scikit-learn, failures, signals,
//! determinism and the run listing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    SMALL_AUTOENCODER, library, pretext, repo_root, run_summary, text, write_spec,
};

fn metric(summary: &serde_json::Value, key: &str) -> f64 {
    summary["metrics"][key].as_f64().unwrap_or_else(|| panic!("metric {key} missing in {summary}"))
}

fn run_id(stdout: &str) -> String {
    stdout.split_whitespace().nth(1).expect("the summary starts with `run ID`").to_owned()
}

#[test]
fn main_job_meets_reference_figures() {
    let run_root = tempfile::tempdir().unwrap();
    let spec = repo_root().join("experiments/digits-autoencoder.toml");
    let output = pretext(run_root.path()).arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let summary = run_summary(&stdout);
    let accuracy = metric(&summary, "linear_probe/accuracy");
    let mse = metric(&summary, "reconstruction/mse");
    println!("main job: probe accuracy {accuracy:.4}, test MSE {mse:.5}");
    assert!(accuracy >= 0.92, "probe accuracy {accuracy}");
    assert!(mse <= 0.010, "test MSE {mse}");
    let id = run_id(&stdout);
    let plot = run_root.path().join(&id).join("artifacts/latent_plot/latent.png");
    let bytes = std::fs::read(&plot).unwrap_or_else(|_| panic!("{} missing", plot.display()));
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");

    let listing = pretext(run_root.path()).arg("runs").output().unwrap();
    let (listing, _) = text(&listing);
    assert!(listing.contains(&id), "{listing}");
    assert!(listing.contains("FINISHED"), "{listing}");
    let show = pretext(run_root.path()).args(["runs", "show", &id[..8]]).output().unwrap();
    let (show, _) = text(&show);
    for expected in [
        "status: FINISHED",
        "trainer.lr = 0.001",
        "pretext.plugin.encoder.sha256",
        "pretext.libtorch",
        "pretext.spec_hash",
        "linear_probe/accuracy",
    ] {
        assert!(show.contains(expected), "`{expected}` missing in:\n{show}");
    }
}

fn python() -> Option<String> {
    std::env::var("PRETEXT_PYTHON").ok().filter(|path| Path::new(path).exists())
}

#[test]
fn pixel_baseline_matches_scikit_learn() {
    let Some(python) = python() else {
        println!("skipped: PRETEXT_PYTHON is not set (run scripts/setup.sh)");
        return;
    };
    let run_root = tempfile::tempdir().unwrap();
    let spec = repo_root().join("experiments/digits-pixels-baseline.toml");
    let output = pretext(run_root.path()).arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let ours = metric(&run_summary(&stdout), "linear_probe/accuracy");
    let id = run_id(&stdout);

    let data = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let out = data.path().join(format!("{split}.npy"));
        let labels = data.path().join(format!("{split}_labels.npy"));
        let status = pretext(run_root.path())
            .args(["embed", &id, "--split", split, "--out"])
            .arg(&out)
            .arg("--labels-out")
            .arg(&labels)
            .status()
            .unwrap();
        assert!(status.success(), "embed {split}");
    }
    let script = repo_root().join("tests/reference/probe_check.py");
    let output = Command::new(python).arg(script).arg(data.path()).output().unwrap();
    let (reference, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let reference: serde_json::Value = serde_json::from_str(reference.trim()).unwrap();
    let sklearn = reference["accuracy"].as_f64().unwrap();
    println!("pixel baseline: pretext {ours:.4}, scikit-learn {sklearn:.4}");
    assert!((ours - sklearn).abs() <= 0.01, "pretext {ours} vs scikit-learn {sklearn}");
}

#[test]
fn same_seed_gives_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    let mut summaries = Vec::new();
    for _ in 0..2 {
        let output = pretext(dir.path()).arg("run").arg(&spec).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stderr}");
        summaries.push(run_summary(&stdout)["metrics"].clone());
    }
    assert_eq!(summaries[0], summaries[1]);
    assert!(summaries[0].as_object().unwrap().len() >= 5, "{}", summaries[0]);
}

#[test]
fn panicking_plugin_fails_the_run() {
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
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("objective `panicking_objective` panicked in `loss`"), "{stderr}");
    assert!(stderr.contains("deliberate panic at step 3"), "{stderr}");
    let id = run_id(&stdout);
    let show = pretext(dir.path()).args(["runs", "show", &id]).output().unwrap();
    let (show, _) = text(&show);
    assert!(show.contains("status: FAILED"), "{show}");
    assert!(show.contains("deliberate panic at step 3"), "{show}");
}

#[test]
fn failing_evaluator_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        library("libfixture_panicking_plugin.so"),
        plugins.path().join("libfixture_panicking_plugin.so"),
    )
    .unwrap();
    let spec = write_spec(
        dir.path(),
        "fails.toml",
        "[dataset]\nplugin = \"digits\"\n[encoder]\nplugin = \"identity\"\n[evaluate.failing_evaluator]\n",
    );
    let output = pretext(dir.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "evaluator `failing_evaluator` failed in `evaluate`: deliberate failure in evaluate"
        ),
        "{stderr}"
    );
}

#[test]
fn interrupt_marks_run_killed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "long.toml", SMALL_AUTOENCODER);
    let child = pretext(dir.path())
        .arg("run")
        .arg(&spec)
        .arg("trainer.epochs=100000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: `kill` with a valid pid of our own child and a standard signal has no memory effects.
    let sent = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(sent, 0);
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("KILLED"), "{stdout}");
    let id = run_id(&stdout);
    let show = pretext(dir.path()).args(["runs", "show", &id]).output().unwrap();
    let (show, _) = text(&show);
    assert!(show.contains("status: KILLED"), "{show}");
    assert!(show.contains("end:"), "{show}");
}

#[test]
fn moons_run_writes_latent_plot() {
    let run_root = tempfile::tempdir().unwrap();
    let spec = repo_root().join("experiments/moons-autoencoder.toml");
    let output =
        pretext(run_root.path()).arg("run").arg(&spec).arg("trainer.epochs=5").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let id = run_id(&stdout);
    assert!(run_root.path().join(&id).join("artifacts/latent_plot/latent.png").exists());
}

fn nan_spec(dir: &Path, on_nan: &str) -> std::path::PathBuf {
    write_spec(
        dir,
        &format!("nan-{on_nan}.toml"),
        &format!(
            "[dataset]\nplugin = \"digits\"\n[encoder]\nplugin = \"mlp\"\n[objective]\nplugin = \"nan_objective\"\nnan_steps = [2, 5]\n[trainer]\nepochs = 1\non_nan = \"{on_nan}\"\n"
        ),
    )
}

#[test]
fn nan_loss_fails_run_naming_step() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        library("libfixture_panicking_plugin.so"),
        plugins.path().join("libfixture_panicking_plugin.so"),
    )
    .unwrap();
    let output = pretext(dir.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("run")
        .arg(nan_spec(dir.path(), "fail"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("loss is NaN at step 2"), "{stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn nan_loss_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        library("libfixture_panicking_plugin.so"),
        plugins.path().join("libfixture_panicking_plugin.so"),
    )
    .unwrap();
    let output = pretext(dir.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("run")
        .arg(nan_spec(dir.path(), "skip_batch"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let id = run_id(&stdout);
    let show = pretext(dir.path()).args(["runs", "show", &id]).output().unwrap();
    let (show, _) = text(&show);
    assert!(show.contains("train/skipped_batches = 2"), "{show}");
}

#[test]
fn checkpoint_and_embeddings_load_in_python() {
    let Some(python) = python() else {
        println!("skipped: PRETEXT_PYTHON is not set (run scripts/setup.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    let output = pretext(dir.path()).arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let id = run_id(&stdout);
    let embeddings = dir.path().join("test.npy");
    let status = pretext(dir.path())
        .args(["embed", &id, "--split", "test", "--out"])
        .arg(&embeddings)
        .status()
        .unwrap();
    assert!(status.success());

    let checkpoint = dir.path().join(&id).join("checkpoint.safetensors");
    let script = format!(
        "import json, numpy, safetensors.torch\n\
         tensors = safetensors.torch.load_file({checkpoint:?})\n\
         codes = numpy.load({embeddings:?})\n\
         print(json.dumps({{'names': {{k: list(v.shape) for k, v in tensors.items()}}, 'codes': list(codes.shape), 'dtype': str(codes.dtype)}}))\n",
        checkpoint = checkpoint.display().to_string(),
        embeddings = embeddings.display().to_string(),
    );
    let output = Command::new(python).arg("-c").arg(script).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["names"]["encoder.layer0.weight"], serde_json::json!([32, 64]), "{report}");
    assert_eq!(report["names"]["encoder.layer1.weight"], serde_json::json!([8, 32]), "{report}");
    assert!(
        report["names"]
            .as_object()
            .unwrap()
            .keys()
            .any(|name| name.starts_with("objective.decoder.")),
        "{report}"
    );
    assert_eq!(report["codes"][1], 8, "{report}");
    assert_eq!(report["dtype"], "float32", "{report}");
}

#[test]
fn plugins_in_working_directory_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        library("libfixture_panicking_plugin.so"),
        dir.path().join("libpretext_extra.so"),
    )
    .unwrap();
    let output = pretext(dir.path()).arg("plugins").current_dir(dir.path()).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains("panicking_objective"), "{stdout}");
}
