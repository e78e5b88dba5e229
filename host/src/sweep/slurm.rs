//! The Slurm launcher: every pending trial becomes a task of one `sbatch` job array
//! (`--array=0-N%P`), and task states come from `squeue` while the job is queued or running, then
//! from `sacct`, or from `scontrol show job` where accounting is not configured.
//!
//! Each task runs `slurm/trial.sh`, which reads its arguments from `slurm/tasks/TASK.args` (one
//! argument per line; the first line is the trial folder) and runs one `pretext run`.
//! NOTE: the launcher assumes the sweep folder and the pretext binary are at the same paths on
//! the compute nodes (a shared file system), and it does not prune.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::journal::{Trial, TrialStatus};
use super::trial::{self, Exit};
use super::{Sweep, SweepError, SweepSummary};

const POLL: Duration = Duration::from_millis(500);

const TASK_SCRIPT: &str = r#"#!/bin/bash
# One trial of a pretext sweep, run as one task of a Slurm job array.
set -u
mapfile -t args < "$PRETEXT_SWEEP_TASKS/$SLURM_ARRAY_TASK_ID.args"
trial_dir=${args[0]}
mkdir -p "$trial_dir"
exec "$PRETEXT_BINARY" "${args[@]:1}" >>"$trial_dir/trial.log" 2>&1
"#;

fn output(program: &str, arguments: &[String]) -> Result<String, String> {
    let result = Command::new(program)
        .args(arguments)
        .output()
        .map_err(|error| format!("cannot run `{program}`: {error}"))?;
    if !result.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&result.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

fn write(path: &Path, text: &str) -> Result<(), SweepError> {
    std::fs::write(path, text).map_err(|error| super::io_error(path, &error))
}

/// The `sbatch` arguments for `count` tasks, before the script.
fn sbatch_arguments(sweep: &Sweep, count: usize) -> Vec<String> {
    let config = &sweep.plan.config;
    let slurm = &config.slurm;
    let slurm_dir = sweep.dir.join("slurm");
    let mut arguments = vec![
        "--parsable".to_owned(),
        "--job-name=pretext-sweep".to_owned(),
        format!("--array=0-{}%{}", count - 1, config.max_parallel),
        format!("--output={}/%A_%a.out", slurm_dir.display()),
        format!("--chdir={}", sweep.dir.display()),
        format!(
            "--export=ALL,PRETEXT_BINARY={},PRETEXT_SWEEP_TASKS={}{}",
            sweep.binary.display(),
            slurm_dir.join("tasks").display(),
            match &sweep.parent {
                Some(parent) =>
                    format!(",{}={}", super::parent::PARENT_RUN_VARIABLE, parent.run_id),
                None => String::new(),
            }
        ),
    ];
    let options = [
        ("--partition", slurm.partition.clone()),
        ("--time", slurm.time.clone()),
        ("--cpus-per-task", slurm.cpus_per_task.map(|cpus| cpus.to_string())),
        ("--mem", slurm.mem.clone()),
        ("--gpus", slurm.gpus.clone()),
    ];
    for (flag, value) in options {
        if let Some(value) = value {
            arguments.push(format!("{flag}={value}"));
        }
    }
    arguments.extend(slurm.extra_args.iter().cloned());
    arguments
}

/// Threads of each task: `--cpus-per-task`, else `threads_per_trial`, else 1.
fn threads(sweep: &Sweep) -> usize {
    let config = &sweep.plan.config;
    config.slurm.cpus_per_task.map_or(config.threads_per_trial.max(1), |cpus| cpus as usize)
}

/// Submits the pending trials as one job array and waits until every task has ended.
pub fn run(sweep: &mut Sweep, stop: &AtomicBool) -> Result<SweepSummary, SweepError> {
    cancel_stale_jobs(sweep)?;
    let pending: Vec<Trial> = sweep
        .journal
        .trials()?
        .into_iter()
        .filter(|trial| trial.status == TrialStatus::Pending)
        .collect();
    if pending.is_empty() {
        return Ok(SweepSummary { started: 0, interrupted: false });
    }
    let slurm_dir = sweep.dir.join("slurm");
    let tasks_dir = slurm_dir.join("tasks");
    std::fs::create_dir_all(&tasks_dir).map_err(|error| super::io_error(&tasks_dir, &error))?;
    let extra = vec![format!("trainer.threads={}", threads(sweep))];
    for (task, trial) in pending.iter().enumerate() {
        let mut lines = vec![trial.dir.display().to_string()];
        lines.extend(trial::arguments(&sweep.plan, trial, &extra));
        write(&tasks_dir.join(format!("{task}.args")), &(lines.join("\n") + "\n"))?;
    }
    let script = slurm_dir.join("trial.sh");
    write(&script, TASK_SCRIPT)?;
    let mut arguments = sbatch_arguments(sweep, pending.len());
    arguments.push(script.display().to_string());
    let submitted = output("sbatch", &arguments).map_err(SweepError::Failed)?;
    let job = submitted.trim().split(';').next().unwrap_or_default().to_owned();
    if job.is_empty() {
        return Err(SweepError::Failed(format!("sbatch printed no job id: {submitted}")));
    }
    println!("submitted job array {job} with {} tasks", pending.len());
    for (task, trial) in pending.iter().enumerate() {
        sweep.journal.mark_running(trial.id, None, Some(&format!("{job}_{task}")))?;
        println!("trial {} submitted as {job}_{task}: {}", trial.id, trial.overrides.join(" "));
    }

    let mut open: HashMap<usize, Trial> = HashMap::new();
    for (task, trial) in pending.iter().enumerate() {
        let trial = sweep.journal.trial(trial.id)?.expect("the trial was just updated");
        open.insert(task, trial);
    }
    while !open.is_empty() {
        if stop.load(Ordering::Relaxed) {
            let _ = output("scancel", std::slice::from_ref(&job));
            for trial in open.values() {
                trial::record_end(
                    sweep,
                    trial,
                    Exit::Killed("the sweep was interrupted".to_owned()),
                )?;
            }
            return Ok(SweepSummary { started: pending.len(), interrupted: true });
        }
        std::thread::sleep(POLL);
        let Some(queued) = queued_tasks(&job) else {
            continue;
        };
        let ended: Vec<usize> =
            open.keys().copied().filter(|task| !queued.contains(task)).collect();
        if ended.is_empty() {
            continue;
        }
        let states = final_states(&job);
        for task in ended {
            let trial = open.remove(&task).expect("listed above");
            let exit = match states.get(&task) {
                Some((state, code)) => exit_of(state, *code),
                None => Exit::Code(0),
            };
            trial::record_end(sweep, &trial, exit)?;
        }
    }
    Ok(SweepSummary { started: pending.len(), interrupted: false })
}

/// Maps a Slurm job state to how the trial ended.
fn exit_of(state: &str, code: i32) -> Exit {
    let state = state.split_whitespace().next().unwrap_or(state);
    match state {
        "COMPLETED" => Exit::Code(code),
        "CANCELLED" | "CANCELLED+" => Exit::Killed("cancelled in Slurm".to_owned()),
        "TIMEOUT" => Exit::Killed("timed out in Slurm (time limit reached)".to_owned()),
        "PREEMPTED" => Exit::Killed("preempted in Slurm".to_owned()),
        "FAILED" if code != 0 => Exit::Code(code),
        other => Exit::Failed(format!("Slurm job state {other}, exit code {code}")),
    }
}

/// Array task ids of `job` that `squeue` still lists (pending, running or completing), or
/// `None` when `squeue` fails, so that an unreachable controller never looks like ended tasks.
fn queued_tasks(job: &str) -> Option<Vec<usize>> {
    let arguments = ["-h", "-r", "-j", job, "-o", "%K"].map(str::to_owned);
    match output("squeue", &arguments) {
        Ok(text) => Some(text.lines().filter_map(|line| line.trim().parse().ok()).collect()),
        Err(message) => {
            tracing::warn!("{message}");
            None
        }
    }
}

/// Final state and exit code of each ended task: from `sacct`, else `scontrol show job`.
fn final_states(job: &str) -> HashMap<usize, (String, i32)> {
    let sacct = ["-n", "-P", "-X", "-j", job, "-o", "JobID,State,ExitCode"].map(str::to_owned);
    let mut states = HashMap::new();
    if let Ok(text) = output("sacct", &sacct) {
        for line in text.lines() {
            let fields: Vec<&str> = line.split('|').collect();
            let [id, state, code] = fields[..] else { continue };
            let Some(task) = id.rsplit_once('_').and_then(|(_, task)| task.parse().ok()) else {
                continue;
            };
            states.insert(task, (state.to_owned(), exit_code(code)));
        }
    }
    if !states.is_empty() {
        return states;
    }
    let scontrol = ["-o", "show", "job", job].map(str::to_owned);
    if let Ok(text) = output("scontrol", &scontrol) {
        for line in text.lines() {
            let field = |name: &str| {
                line.split_whitespace().find_map(|pair| pair.strip_prefix(name)).map(str::to_owned)
            };
            let Some(task) = field("ArrayTaskId=").and_then(|task| task.parse().ok()) else {
                continue;
            };
            let state = field("JobState=").unwrap_or_default();
            let code = field("ExitCode=").map_or(0, |code| exit_code(&code));
            states.insert(task, (state, code));
        }
    }
    states
}

/// The exit status of `CODE:SIGNAL`; a signal counts as failure code 128 + signal.
fn exit_code(text: &str) -> i32 {
    let (code, signal) = text.split_once(':').unwrap_or((text, "0"));
    let signal: i32 = signal.trim().parse().unwrap_or(0);
    if signal != 0 { 128 + signal } else { code.trim().parse().unwrap_or(0) }
}

/// Cancels the Slurm tasks of trials that an earlier sweep process left running, so that a
/// resumed sweep does not run them twice.
fn cancel_stale_jobs(sweep: &Sweep) -> Result<(), SweepError> {
    for trial in sweep.journal.trials()? {
        if trial.status == TrialStatus::Pending
            && let Some(job) = &trial.slurm_job
        {
            let _ = output("scancel", std::slice::from_ref(job));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_states_map_to_trial_ends() {
        assert!(matches!(exit_of("COMPLETED", 0), Exit::Code(0)));
        assert!(matches!(exit_of("TIMEOUT", 0), Exit::Killed(_)));
        assert!(matches!(exit_of("CANCELLED by 0", 0), Exit::Killed(_)));
        assert!(matches!(exit_of("FAILED", 1), Exit::Code(1)));
        assert!(matches!(exit_of("OUT_OF_MEMORY", 0), Exit::Failed(_)));
    }

    #[test]
    fn exit_code_counts_signals() {
        assert_eq!(exit_code("0:0"), 0);
        assert_eq!(exit_code("1:0"), 1);
        assert_eq!(exit_code("0:9"), 137);
    }
}
