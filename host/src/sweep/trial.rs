//! What the launchers share about one trial: its `pretext run` arguments, and reading its run
//! back from the trial's run store.

use std::path::Path;

use super::journal::{Trial, TrialStatus};
use super::plan::SweepPlan;
use super::{Sweep, SweepError};
use crate::run::EXIT_TRACKING_INCOMPLETE;
use crate::store::{RunRow, Store};

/// The arguments of the trial's `pretext` process: the trial folder as the run root, the spec,
/// the fixed and swept overrides, then `extra` (threads and device from the launcher).
pub fn arguments(plan: &SweepPlan, trial: &Trial, extra: &[String]) -> Vec<String> {
    let mut arguments = vec![
        "--run-root".to_owned(),
        trial.dir.display().to_string(),
        "run".to_owned(),
        plan.spec.display().to_string(),
    ];
    arguments.extend(plan.trial_overrides(&trial.overrides));
    arguments.extend(
        extra
            .iter()
            .filter(|text| {
                let key = text.split_once('=').map_or(text.as_str(), |(key, _)| key);
                !plan.sets(key)
            })
            .cloned(),
    );
    arguments
}

/// The newest run in the trial's run store that started no earlier than `since` (milliseconds;
/// one second of clock slack is allowed).
pub fn find_run(store: &Store, since: i64) -> Option<RunRow> {
    let runs = store.list_runs().ok()?;
    runs.into_iter().filter(|run| run.start_time >= since - 1000).max_by_key(|run| run.start_time)
}

/// The target metric's value at each evaluation of a run, in step order.
pub fn reports(store: &Store, run_id: &str, metric: &str) -> Vec<f64> {
    let mut points: Vec<_> = store
        .metrics(run_id)
        .unwrap_or_default()
        .into_iter()
        .filter(|point| point.key == metric)
        .collect();
    points.sort_by_key(|point| point.step);
    points.into_iter().map(|point| point.value).collect()
}

/// How a trial's process ended, as the launcher saw it.
#[derive(Debug, Clone)]
pub enum Exit {
    /// The process ended with this exit code.
    Code(i32),
    /// The process was ended by this signal.
    Signal(i32),
    /// The launcher stopped the trial because the pruning rule requested it.
    Pruned,
    /// The trial was cancelled or timed out outside pretext (Slurm), with the reason.
    Killed(String),
    /// The launcher reported a failure without an exit code (Slurm), with the reason.
    Failed(String),
}

/// The journal's view of an ended trial: status, target value and error.
pub struct Settled {
    pub status: TrialStatus,
    pub value: Option<f64>,
    pub error: Option<String>,
    pub run: Option<RunRow>,
    pub reports: Vec<f64>,
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

/// The last non-empty line of the trial's log, to explain a failure.
fn last_log_line(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("trial.log")).ok()?;
    text.lines().rev().find(|line| !line.trim().is_empty()).map(|line| line.trim().to_owned())
}

/// Returns whether a trial process's exit code means that training finished: 0, or
/// [`EXIT_TRACKING_INCOMPLETE`] when only its MLflow delivery is incomplete.
fn finished_exit(code: i32) -> bool {
    code == 0 || code == i32::from(EXIT_TRACKING_INCOMPLETE)
}

/// Returns the journal note of a finished trial whose MLflow delivery is incomplete.
fn undelivered_note(code: i32, trial: &Trial, run: &Option<RunRow>) -> Option<String> {
    if code != i32::from(EXIT_TRACKING_INCOMPLETE) {
        return None;
    }
    let run_id = run.as_ref().map_or("RUN", |run| run.id.as_str());
    Some(format!(
        "training finished but tracking delivery is incomplete; send it with `pretext --run-root \
         {} sync {run_id}`",
        trial.dir.display()
    ))
}

/// Reads the trial's run back and decides its status.
pub fn settle(plan: &SweepPlan, trial: &Trial, exit: Exit) -> Settled {
    let metric = plan.metric();
    let store = Store::open(&trial.dir).ok();
    let since = trial.started_at.unwrap_or(0);
    let run = store.as_ref().and_then(|store| find_run(store, since));
    let reports = match (&store, &run) {
        (Some(store), Some(run)) => reports(store, &run.id, metric),
        _ => Vec::new(),
    };
    let latest = store.as_ref().zip(run.as_ref()).and_then(|(store, run)| {
        store.latest_metrics(&run.id).ok().map(|metrics| {
            let found = metrics.iter().find(|(key, _)| key == metric).map(|(_, value)| *value);
            (found, metrics.into_iter().map(|(key, _)| key).collect::<Vec<_>>())
        })
    });
    let run_error = store
        .as_ref()
        .zip(run.as_ref())
        .and_then(|(store, run)| store.run_error(&run.id).ok().flatten());
    let run_status = run.as_ref().map(|run| run.status.clone());
    let failed = |error: String| (TrialStatus::Failed, None, Some(error));
    let (status, value, error) = match exit {
        Exit::Pruned => {
            let best = reports.iter().copied().min_by(|a, b| {
                plan.config.direction.loss(*a).total_cmp(&plan.config.direction.loss(*b))
            });
            (TrialStatus::Pruned, best, Some(format!("pruned after {} reports", reports.len())))
        }
        Exit::Killed(reason) => (TrialStatus::Killed, None, Some(reason)),
        Exit::Code(code) if finished_exit(code) && run_status.as_deref() == Some("FINISHED") => {
            match latest {
                Some((Some(value), _)) => {
                    (TrialStatus::Finished, Some(value), undelivered_note(code, trial, &run))
                }
                Some((None, keys)) => failed(format!(
                    "the run recorded no metric `{metric}`; it recorded: {}",
                    keys.join(", ")
                )),
                None => failed("the run's metrics cannot be read".to_owned()),
            }
        }
        Exit::Code(_) if run_status.as_deref() == Some("KILLED") => {
            (TrialStatus::Killed, None, Some("the run was interrupted by a signal".to_owned()))
        }
        Exit::Code(code) => failed(run_error.or_else(|| last_log_line(&trial.dir)).map_or_else(
            || format!("exit code {code}"),
            |text| format!("exit code {code}: {text}"),
        )),
        Exit::Signal(signal) => failed(format!(
            "the trial process was killed by {}{}",
            signal_name(signal),
            last_log_line(&trial.dir)
                .map(|line| format!("; last output: {line}"))
                .unwrap_or_default()
        )),
        Exit::Failed(reason) => failed(reason),
    };
    Settled { status, value, error, run, reports }
}

/// Records an ended trial in the journal and prints one line about it.
pub fn record_end(sweep: &Sweep, trial: &Trial, exit: Exit) -> Result<(), SweepError> {
    let settled = settle(&sweep.plan, trial, exit);
    if let Some(run) = &settled.run {
        sweep.journal.set_run(trial.id, &run.id, &run.dir)?;
    }
    sweep.journal.set_reports(trial.id, &settled.reports)?;
    sweep.journal.finish(trial.id, settled.status, settled.value, settled.error.as_deref())?;
    let value = settled.value.map(|value| format!(" {}={value:.6}", sweep.plan.metric()));
    let error = settled.error.map(|error| format!(": {error}")).unwrap_or_default();
    println!("trial {} {}{}{error}", trial.id, settled.status.as_str(), value.unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undelivered_tracking_counts_as_finished() {
        assert!(finished_exit(0));
        assert!(finished_exit(i32::from(EXIT_TRACKING_INCOMPLETE)));
        assert!(!finished_exit(1));
        assert!(!finished_exit(2));
    }
}
