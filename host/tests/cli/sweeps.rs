//! `pretext sweep`: grids from the command line, quoting, resume after SIGKILL, crashing trials,
//! pruning, TPE against random search, and the Slurm launcher.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pretext::sweep::config::Strategy;
use pretext::sweep::journal::{Trial, TrialStatus};
use pretext::sweep::search::optimize;
use pretext::sweep::space::{Dimension, Domain, Space};

use crate::common::{library, pretext, text, write_spec};

/// A digits autoencoder of one short epoch, with the reconstruction MSE as the target.
const TINY: &str = r#"
name = "tiny"
seed = 3

[dataset]
plugin = "digits"

[encoder]
plugin = "mlp"
hidden = [16]
latent = 4

[objective]
plugin = "autoencoder"

[trainer]
epochs = 1
batch_size = 128
threads = 1

[evaluate.reconstruction]

[sweep]
metric = "reconstruction/mse"
"#;

fn trials(dir: &Path) -> Vec<Trial> {
    pretext::sweep::read(dir).expect("the sweep folder has a journal").1
}

fn count(trials: &[Trial], status: TrialStatus) -> usize {
    trials.iter().filter(|trial| trial.status == status).count()
}

fn sweep(root: &Path) -> Command {
    let mut command = pretext(root);
    command.arg("sweep");
    command
}

#[test]
fn grid_of_four_with_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    let sweep_dir = dir.path().join("sweep");
    let output = sweep(dir.path())
        .arg(&spec)
        .args(["trainer.lr=1e-3,3e-3", "encoder.latent=4,8", "--max-parallel", "2", "--dir"])
        .arg(&sweep_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let ranks: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("rank"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(ranks.len(), 4, "{stdout}");
    assert!(ranks.iter().all(|line| line.contains("finished")), "{stdout}");
    let journal = trials(&sweep_dir);
    assert_eq!(count(&journal, TrialStatus::Finished), 4);
    assert!(journal.iter().all(|trial| trial.value.is_some_and(f64::is_finite)));
    assert!(sweep_dir.join("results.csv").exists());
    assert!(sweep_dir.join("results.png").exists());

    let csv = std::fs::read_to_string(sweep_dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let show = sweep(dir.path()).arg("show").arg(&sweep_dir).output().unwrap();
    let (shown, _) = text(&show);
    assert!(shown.contains("4 trials: 4 finished"), "{shown}");
}

fn dry_run(root: &Path, spec: &Path, arguments: &[&str]) -> (Option<i32>, String, String) {
    let output = sweep(root).arg(spec).args(arguments).arg("--dry-run").output().unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}

#[test]
fn quoted_comma_is_one_trial() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    for quoted in ["name='a,b'", "name=\"a,b\""] {
        let (code, stdout, stderr) = dry_run(dir.path(), &spec, &[quoted]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains("1 trials passed the preflight"), "{stdout}");
    }
}

#[test]
fn list_values_give_two_trials() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    let (code, stdout, stderr) = dry_run(dir.path(), &spec, &["encoder.hidden=[16,8],[32,8]"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("2 trials passed the preflight"), "{stdout}");
    assert!(stdout.contains("trial 1: encoder.hidden=[32,8]"), "{stdout}");
}

#[test]
fn repeated_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    let (code, _, stderr) =
        dry_run(dir.path(), &spec, &["trainer.lr=1e-3", "trainer.lr=2e-3,3e-3"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("key `trainer.lr` is given twice"), "{stderr}");
}

#[test]
fn bad_point_fails_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    let sweep_dir = dir.path().join("sweep");
    let output = sweep(dir.path())
        .arg(&spec)
        .args(["trainer.lr=1e-3,-1.0", "--dir"])
        .arg(&sweep_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("trial 1 (trainer.lr=-1.0)"), "{stderr}");
    assert!(stderr.contains("no trial was started"), "{stderr}");
    assert!(!stdout.contains("started"), "{stdout}");
}

#[test]
fn resume_after_sigkill_runs_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", &TINY.replace("epochs = 1", "epochs = 3"));
    let sweep_dir = dir.path().join("sweep");
    let mut child = sweep(dir.path())
        .arg(&spec)
        .args(["trainer.lr=1e-3,2e-3,3e-3,4e-3,5e-3", "--dir"])
        .arg(&sweep_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "two trials did not finish in time");
        // The journal may exist before the sweep has written its plan.
        let finished = pretext::sweep::read(&sweep_dir)
            .map_or(0, |(_, trials)| count(&trials, TrialStatus::Finished));
        if finished >= 2 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = trials(&sweep_dir);
    assert_eq!(count(&before, TrialStatus::Finished), 2, "{before:?}");

    let output = sweep(dir.path()).arg("--resume").arg(&sweep_dir).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let started: Vec<&str> = stdout.lines().filter(|line| line.contains(" started: ")).collect();
    assert_eq!(started.len(), 3, "{stdout}");
    let after = trials(&sweep_dir);
    assert_eq!(count(&after, TrialStatus::Finished), 5, "{after:?}");
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.id, new.id);
        assert_eq!(old.dir, new.dir);
        assert_eq!(old.overrides, new.overrides);
        if old.status == TrialStatus::Finished {
            assert_eq!(old.run_id, new.run_id, "finished trial {} ran again", old.id);
            assert_eq!(new.attempts, 1);
            assert!(!stdout.contains(&format!("trial {} started", old.id)), "{stdout}");
        }
    }
}

#[test]
fn aborting_trial_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        library("libfixture_panicking_plugin.so"),
        plugins.path().join("libfixture_panicking_plugin.so"),
    )
    .unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    let sweep_dir = dir.path().join("sweep");
    let output = sweep(dir.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg(&spec)
        .args(["objective.plugin=autoencoder,aborting_objective", "encoder.latent=4,8"])
        .args(["--max-parallel", "2", "--dir"])
        .arg(&sweep_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let journal = trials(&sweep_dir);
    for trial in &journal {
        let aborting = trial.overrides.iter().any(|text| text.contains("aborting_objective"));
        if aborting {
            assert_eq!(trial.status, TrialStatus::Failed, "{trial:?}");
            let error = trial.error.as_deref().unwrap_or_default();
            assert!(error.contains("SIGABRT"), "{error}");
        } else {
            assert_eq!(trial.status, TrialStatus::Finished, "{trial:?}");
        }
    }
    assert_eq!(count(&journal, TrialStatus::Failed), 2);
}

#[test]
fn median_rule_prunes_a_worse_trial() {
    let dir = tempfile::tempdir().unwrap();
    let body = TINY.replace("epochs = 1", "epochs = 30\neval_every = 1")
        + "[sweep.prune]\nrule = \"median\"\nwarmup = 1\nmin_trials = 2\n";
    let spec = write_spec(dir.path(), "tiny.toml", &body);
    let sweep_dir = dir.path().join("sweep");
    let output = sweep(dir.path())
        .arg(&spec)
        .args(["trainer.lr=1e-2,5e-3,1e-7", "--dir"])
        .arg(&sweep_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let journal = trials(&sweep_dir);
    assert_eq!(journal[0].status, TrialStatus::Finished, "{journal:?}");
    assert_eq!(journal[0].reports.len(), 30);
    let worst = &journal[2];
    assert_eq!(worst.status, TrialStatus::Pruned, "{journal:?}");
    assert!(worst.reports.len() < 30, "pruned after {} reports", worst.reports.len());
    println!("trial with lr=1e-7 pruned after {} of 30 reports", worst.reports.len());
}

/// A cheap objective with its minimum at x = 0.7, y = -1.2 and the third choice.
fn synthetic(point: &[f64]) -> f64 {
    let offsets = [0.5, 0.2, 0.0, 0.3];
    (point[0] - 0.7).powi(2) + (point[1] + 1.2).powi(2) + offsets[point[2] as usize]
}

#[test]
fn tpe_beats_random_search() {
    let space = Space {
        dimensions: vec![
            Dimension {
                key: "x".into(),
                domain: Domain::Float { low: -5.0, high: 5.0, step: None, log: false },
            },
            Dimension {
                key: "y".into(),
                domain: Domain::Float { low: -5.0, high: 5.0, step: None, log: false },
            },
            Dimension {
                key: "c".into(),
                domain: Domain::Choice(vec!["0".into(), "1".into(), "2".into(), "3".into()]),
            },
        ],
    };
    let (seeds, trials, startup) = (20u64, 40u64, 10u64);
    let mut totals = [0.0f64; 2];
    for seed in 0..seeds {
        for (index, strategy) in [Strategy::Random, Strategy::Tpe].into_iter().enumerate() {
            let losses = optimize(&space, strategy, trials, seed, startup, synthetic).unwrap();
            totals[index] += losses.iter().copied().fold(f64::INFINITY, f64::min);
        }
    }
    let random = totals[0] / seeds as f64;
    let tpe = totals[1] / seeds as f64;
    println!(
        "best after {trials} trials, mean over {seeds} seeds: random {random:.4}, tpe {tpe:.4}"
    );
    assert!(tpe < random, "tpe {tpe} is not better than random {random}");
}

/// Whether a Slurm controller responds and has a node that can run jobs.
fn slurm_ready() -> Result<(), String> {
    let output = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map_err(|error| format!("cannot run sinfo: {error}"))?;
    if !output.status.success() {
        return Err(format!("sinfo failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let states = String::from_utf8_lossy(&output.stdout).into_owned();
    if !states.lines().any(|state| {
        state.starts_with("idle") || state.starts_with("mix") || state.starts_with("alloc")
    }) {
        return Err(format!("no usable Slurm node; node states: {}", states.trim()));
    }
    Ok(())
}

#[test]
fn slurm_grid_of_four() {
    if let Err(reason) = slurm_ready() {
        // The skip is printed so that it shows in the test output (run with --no-capture).
        println!("SKIPPED slurm_grid_of_four: {reason}; start Slurm with scripts/slurm-up.sh");
        eprintln!("SKIPPED slurm_grid_of_four: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny.toml", TINY);
    let sweep_dir = dir.path().join("sweep");
    let output = sweep(dir.path())
        .arg(&spec)
        .args(["trainer.lr=1e-3,3e-3", "encoder.latent=4,8", "--launcher", "slurm"])
        .args(["--max-parallel", "2", "--dir"])
        .arg(&sweep_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("submitted job array"), "{stdout}");
    let journal = trials(&sweep_dir);
    assert_eq!(count(&journal, TrialStatus::Finished), 4, "{journal:?}");
    assert!(journal.iter().all(|trial| trial.slurm_job.is_some()));
}

#[test]
fn sweep_nests_trials_under_mlflow_parent() {
    let Some(server) = crate::mlflow_server::MlflowServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = TINY.replace(
        "[sweep]",
        &format!(
            "[tracking]\nbackend = \"mlflow\"\nuri = \"{}\"\nexperiment = \"nested\"\n\n[sweep]",
            server.uri
        ),
    );
    let spec = write_spec(dir.path(), "tracked.toml", &spec);
    let sweep_dir = dir.path().join("sweep");
    let output = sweep(dir.path())
        .arg(&spec)
        .args(["trainer.lr=1e-3,3e-3", "--max-parallel", "2", "--dir"])
        .arg(&sweep_dir)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let client = server.client();
    let experiment = client.experiment_id("nested").unwrap();
    let found = client.search_runs(&experiment, "").unwrap();
    let runs = found["runs"].as_array().cloned().unwrap_or_default();
    let tag = |run: &serde_json::Value, key: &str| {
        run["data"]["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|tag| tag["key"] == key))
            .and_then(|tag| tag["value"].as_str().map(str::to_owned))
    };
    let parents: Vec<&serde_json::Value> =
        runs.iter().filter(|run| tag(run, "pretext.sweep").is_some()).collect();
    assert_eq!(parents.len(), 1, "{found}");
    let parent_id = parents[0]["info"]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(parents[0]["info"]["status"], "FINISHED", "{found}");
    let children: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|run| tag(run, "mlflow.parentRunId").as_deref() == Some(parent_id.as_str()))
        .collect();
    assert_eq!(children.len(), 2, "{found}");
    let best = client.metric_history(&parent_id, "best/reconstruction/mse").unwrap();
    assert_eq!(best.len(), 1);
    let journal = trials(&sweep_dir);
    let lowest = journal.iter().filter_map(|trial| trial.value).fold(f64::INFINITY, f64::min);
    assert_eq!(best[0].value, lowest);
}
