//! Checkpoints and `pretext run --resume`: a run killed with SIGKILL at random moments and
//! resumed each time ends with the same metrics and history as a run that was never stopped.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::{pretext, run_summary, text, write_spec};

const SPEC: &str = r#"
name = "resume"
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
epochs = 900
checkpoint_every = 9
keep_checkpoints = 2
log_every = 1
threads = 1

[evaluate.linear_probe]
plots = false
[evaluate.reconstruction]
"#;

/// `(key, step, value bits)` of every recorded metric point except timings, in a stable order.
fn history(run_root: &Path) -> Vec<(String, i64, Option<u64>, Option<String>)> {
    let connection = rusqlite::Connection::open(run_root.join("pretext.db")).unwrap();
    let mut statement = connection
        .prepare(
            "SELECT key, step, value, special FROM metrics
             WHERE key != 'train/steps_per_second' ORDER BY key, step, rowid",
        )
        .unwrap();
    statement
        .query_map([], |row| {
            let value: Option<f64> = row.get(2)?;
            Ok((row.get(0)?, row.get(1)?, value.map(f64::to_bits), row.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The id of the only run in the store, once the run has been created.
fn only_run_id(run_root: &Path) -> Option<String> {
    let connection = rusqlite::Connection::open(run_root.join("pretext.db")).ok()?;
    connection.query_row("SELECT id FROM runs", [], |row| row.get(0)).ok()
}

fn kill(child: &mut Child) {
    // SAFETY: `kill` with the pid of our own child and a standard signal has no memory effects.
    let sent = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(sent, 0);
    child.wait().unwrap();
}

#[test]
fn sigkill_and_resume_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "resume.toml", SPEC);

    let straight_root = dir.path().join("straight");
    let output = pretext(&straight_root).arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let expected = run_summary(&stdout)["metrics"].clone();
    let expected_history = history(&straight_root);

    let killed_root = dir.path().join("killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let mut kills = 0;
    let mut run_id: Option<String> = None;
    let final_output = loop {
        let mut command: Command = pretext(&killed_root);
        match &run_id {
            None => command.arg("run").arg(&spec),
            Some(id) => command.args(["run", "--resume", id]),
        };
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if kills < 20 {
            std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
            if child.try_wait().unwrap().is_none() {
                kill(&mut child);
                kills += 1;
                if run_id.is_none() {
                    run_id = only_run_id(&killed_root);
                }
                continue;
            }
        }
        let output = child.wait_with_output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "after {kills} kills:\n{stdout}\n{stderr}");
        break stdout;
    };
    println!("killed {kills} times before the run finished");
    assert!(kills >= 5, "the run finished too early to be killed often ({kills} kills)");

    let resumed = run_summary(&final_output)["metrics"].clone();
    assert_eq!(resumed, expected, "final metrics differ after {kills} kills");
    let resumed_history = history(&killed_root);
    let mut keys: Vec<(&str, i64)> =
        resumed_history.iter().map(|(key, step, _, _)| (key.as_str(), *step)).collect();
    let total = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), total, "a metric step was recorded twice");
    assert_eq!(resumed_history.len(), expected_history.len());
    assert_eq!(resumed_history, expected_history);
}

#[test]
fn resume_of_finished_run_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "short.toml", &SPEC.replace("epochs = 900", "epochs = 1"));
    let output = pretext(dir.path()).arg("run").arg(&spec).output().unwrap();
    assert!(output.status.success());
    let id = only_run_id(dir.path()).expect("the run was recorded");
    let output = pretext(dir.path()).args(["run", "--resume", &id]).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has already finished"), "{stderr}");
}

#[test]
fn best_checkpoint_follows_chosen_metric() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SPEC
        .replace(
            "epochs = 900",
            "epochs = 6\neval_every = 1\nbest_metric = \"linear_probe/accuracy\"",
        )
        .replace("checkpoint_every = 9", "checkpoint_every = 1000");
    let spec = write_spec(dir.path(), "best.toml", &spec);
    let output = pretext(dir.path()).arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let id = only_run_id(dir.path()).unwrap();

    let best: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(&id).join("checkpoints/best.json")).unwrap(),
    )
    .unwrap();
    assert!(dir.path().join(&id).join("checkpoints/best.safetensors").exists());
    // Epoch-end checkpoints follow the evaluations of epochs 1 to 5; the last epoch has none.
    let connection = rusqlite::Connection::open(dir.path().join("pretext.db")).unwrap();
    let final_step: i64 = connection
        .query_row("SELECT MAX(step) FROM metrics WHERE key = 'linear_probe/accuracy'", [], |row| {
            row.get(0)
        })
        .unwrap();
    let best_seen: f64 = connection
        .query_row(
            "SELECT MAX(value) FROM metrics WHERE key = 'linear_probe/accuracy' AND step < ?1",
            [final_step],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(best["metric"], "linear_probe/accuracy");
    assert_eq!(best["value"].as_f64().unwrap(), best_seen, "{best}");
}

#[test]
fn best_metric_must_name_an_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "bad.toml",
        &SPEC.replace("epochs = 900", "epochs = 1\nbest_metric = \"knn/accuracy\""),
    );
    let output = pretext(dir.path()).arg("validate").arg(&spec).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("names no evaluator of this spec"), "{stderr}");
}
