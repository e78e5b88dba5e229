//! `pretext sync` and the repair of runs left RUNNING by a killed process.
//!
//! A run that has a spool is delivered from it, from the first record the server did not
//! acknowledge. A run recorded only in the local store first gets a spool built from the store,
//! so an interrupted sync resumes where it stopped. A run delivered completely is recorded in the
//! store's `mlflow_runs` table and is skipped by later syncs to the same server.

use std::path::Path;
use std::time::Duration;

use super::backfill::{Backfill, missing_records};
use super::records::{BatchBuilder, Metric, Pair, Record};
use super::spool::{Spool, read_state};
use super::target::{Credentials, MlflowTarget, check_uri};
use super::writer::{Delivery, WriterReport};
use super::{run_artifacts, system_tags};
use crate::store::{RunRow, RunStatus, Store, StoreError};

/// Settings of `pretext sync` for runs that have no spool yet.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Server for runs without a spool; each spooled run goes to the server it names.
    pub uri: Option<String>,
    /// Experiment for runs without a spool; by default the run's `tracking.experiment` param,
    /// then `MLFLOW_EXPERIMENT_NAME`, then the run's experiment name.
    pub experiment: Option<String>,
    pub retry_budget: Duration,
    pub request_timeout: Duration,
}

/// The result of syncing one run.
#[derive(Debug)]
pub enum SyncOutcome {
    /// Delivered earlier; nothing was sent.
    AlreadySynced { uri: String, remote_run_id: String },
    /// Sent now (complete or not: see the report).
    Sent(WriterReport),
    /// Not sent, with the reason.
    Skipped(String),
}

fn target(uri: &str, experiment: &str, options: &SyncOptions) -> MlflowTarget {
    MlflowTarget {
        uri: uri.to_owned(),
        experiment: experiment.to_owned(),
        credentials: Credentials::from_env(),
        retry_budget: options.retry_budget,
        request_timeout: options.request_timeout,
    }
}

/// The server a run's spool names: its `state.json`, or its first (creation) record.
pub(crate) fn spool_uri(run_dir: &Path) -> Option<String> {
    if let Some(state) = read_state(run_dir) {
        return Some(state.uri);
    }
    let text = std::fs::read_to_string(Spool::folder(run_dir).join("spool.jsonl")).ok()?;
    let entry: super::spool::Entry = serde_json::from_str(text.lines().next()?).ok()?;
    match entry.record {
        Record::Start { uri, .. } => Some(uri),
        _ => None,
    }
}

fn param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// Sends one run to MLflow, from its spool or from the local store.
///
/// # Errors
///
/// Returns the store's error; delivery problems are in the outcome.
pub fn sync_run(
    store: &Store,
    run: &RunRow,
    options: &SyncOptions,
) -> Result<SyncOutcome, StoreError> {
    if run.status == "RUNNING" {
        return Ok(SyncOutcome::Skipped("the run is still running".to_owned()));
    }
    let params = store.params(&run.id)?;
    let spooled = Spool::exists(&run.dir).then(|| spool_uri(&run.dir)).flatten();
    // A spooled run goes where it was recorded for; any other run to the server asked for, or
    // else the one it was delivered to before, or else the one its spec named.
    let uri = spooled
        .clone()
        .or_else(|| options.uri.clone())
        .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok().filter(|uri| !uri.is_empty()))
        .or_else(|| read_state(&run.dir).map(|state| state.uri))
        .or_else(|| param(&params, "tracking.uri"));
    let uri = match uri {
        Some(uri) => match check_uri(&uri) {
            Ok(uri) => uri,
            Err(message) => return Ok(SyncOutcome::Skipped(message)),
        },
        None => {
            return Ok(SyncOutcome::Skipped(
                "no MLflow server: pass --uri or set MLFLOW_TRACKING_URI".to_owned(),
            ));
        }
    };
    // A spool left by a resumed run is sent even when an earlier attempt was delivered.
    if let Some((remote_run_id, true)) = store.mlflow_run(&run.id, &uri)?
        && spooled.is_none()
    {
        return Ok(SyncOutcome::AlreadySynced { uri, remote_run_id });
    }
    let experiment = options
        .experiment
        .clone()
        .or_else(|| param(&params, "tracking.experiment"))
        .or_else(|| std::env::var("MLFLOW_EXPERIMENT_NAME").ok().filter(|name| !name.is_empty()))
        .unwrap_or_else(|| run.experiment.clone());
    let target = target(&uri, &experiment, options);
    let mut delivery = match Delivery::open(&run.dir, &target) {
        Ok(delivery) => delivery,
        Err(message) => return Ok(SyncOutcome::Skipped(message)),
    };
    let records = match spooled {
        None => records_from_store(store, run, &uri, &experiment)?,
        Some(_) => {
            let end = Record::End {
                status: run.status.clone(),
                end_time: run.end_time.unwrap_or(run.start_time),
            };
            backfill_before_end(store, run, &target, end)?
        }
    };
    if let Err(error) = delivery.enqueue(records) {
        return Ok(SyncOutcome::Skipped(format!("cannot write the spool: {error}")));
    }
    delivery.deliver_all();
    let report = delivery.report();
    if let Some(remote_run_id) = &report.remote_run_id {
        store.record_mlflow_run(&run.id, &uri, remote_run_id, report.complete)?;
    }
    Ok(SyncOutcome::Sent(report))
}

/// Returns the local records that a spooled run's spool and server lack, followed by `end` when
/// there are any or the spool has no end record yet. When the comparison is deferred, the result
/// is `end` alone if the spool has none, so that the run still ends on the server. A later sync
/// compares again.
fn backfill_before_end(
    store: &Store,
    run: &RunRow,
    target: &MlflowTarget,
    end: Record,
) -> Result<Vec<Record>, StoreError> {
    match missing_records(store, run, target)? {
        Backfill::Ready { mut records, points, has_end } => {
            if !records.is_empty() {
                tracing::info!(
                    run = %run.id,
                    records = records.len(),
                    points,
                    "queued local records that the MLflow spool lacks"
                );
            }
            if !records.is_empty() || !has_end {
                records.push(end);
            }
            Ok(records)
        }
        Backfill::Deferred(message) => {
            tracing::warn!(
                run = %run.id,
                "cannot compare the local records with the MLflow run yet: {message}"
            );
            let has_end = super::spool::read_records(&run.dir)
                .map(|records| records.iter().any(|record| matches!(record, Record::End { .. })))
                .unwrap_or(false);
            Ok(if has_end { Vec::new() } else { vec![end] })
        }
    }
}

/// Every record of a run recorded only locally, in the order a live run sends them.
fn records_from_store(
    store: &Store,
    run: &RunRow,
    uri: &str,
    experiment: &str,
) -> Result<Vec<Record>, StoreError> {
    let tags = store.tags(&run.id)?;
    let tag = |key: &str| tags.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone());
    let system = system_tags(
        &run.id,
        &tag("pretext.spec_path").unwrap_or_default(),
        tag("pretext.git_commit").as_deref(),
    );
    let mut builder = BatchBuilder::default();
    builder.other(Record::Start {
        uri: uri.to_owned(),
        experiment: experiment.to_owned(),
        run_name: run.name.clone(),
        local_run_id: run.id.clone(),
        start_time: run.start_time,
        tags: system.into_iter().map(|(key, value)| Pair { key, value }).collect(),
    });
    for (key, value) in store.params(&run.id)? {
        builder.param(Pair { key, value });
    }
    for (key, value) in tags {
        builder.tag(Pair { key, value });
    }
    for point in store.metrics(&run.id)? {
        builder.metric(Metric::from(&point));
    }
    for (file, path) in run_artifacts(&run.dir) {
        let file = file.strip_prefix(&run.dir).unwrap_or(&file).display().to_string();
        builder.other(Record::Artifact { file, path });
    }
    builder.other(Record::End {
        status: run.status.clone(),
        end_time: run.end_time.unwrap_or(run.start_time),
    });
    Ok(builder.finish())
}

/// Marks runs whose recording process died without ending them (SIGKILL, a crash, a power loss)
/// as FAILED, locally and on the MLflow server their spool names; returns one line per run.
///
/// FAILED rather than KILLED: KILLED means the run was stopped on request and ended cleanly, and
/// from the outside a SIGKILL cannot be told from a crash. The end time is the run's last
/// recorded metric, the last moment it is known to have been alive.
///
/// # Errors
///
/// Returns the store's error.
pub fn mark_stale_runs(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut lines = Vec::new();
    for (run, process) in store.stale_runs()? {
        let end_time = store.last_activity(&run.id)?;
        let message = format!(
            "the pretext process (pid {}) ended without recording the run's end; it was killed \
             (for example with SIGKILL) or crashed",
            process.pid
        );
        store.finish_run_at(&run.id, RunStatus::Failed, Some(&message), end_time)?;
        tracing::warn!(run = %run.id, pid = process.pid, "marked a stale RUNNING run as FAILED");
        let mut line = format!("marked run {} FAILED: {message}", run.id);
        if let Some(uri) = Spool::exists(&run.dir).then(|| spool_uri(&run.dir)).flatten() {
            line.push_str(&end_on_server(store, &run, &uri, end_time)?);
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Appends the run's end to its spool and tries, briefly, to deliver the spool.
fn end_on_server(
    store: &Store,
    run: &RunRow,
    uri: &str,
    end_time: i64,
) -> Result<String, StoreError> {
    let options = SyncOptions {
        uri: None,
        experiment: None,
        retry_budget: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    };
    let target = target(uri, &run.experiment, &options);
    let mut delivery = match Delivery::open(&run.dir, &target) {
        Ok(delivery) => delivery,
        Err(message) => return Ok(format!("; its MLflow spool cannot be opened: {message}")),
    };
    let end = Record::End { status: RunStatus::Failed.as_str().to_owned(), end_time };
    let records = backfill_before_end(store, run, &target, end)?;
    if let Err(error) = delivery.enqueue(records) {
        return Ok(format!("; cannot append to its MLflow spool: {error}"));
    }
    delivery.deliver_all();
    let report = delivery.report();
    if let Some(remote_run_id) = &report.remote_run_id {
        store.record_mlflow_run(&run.id, uri, remote_run_id, report.complete)?;
    }
    Ok(if report.complete {
        format!(" (also on {uri})")
    } else {
        format!("; {uri} not updated yet, run `pretext sync {}`", run.id)
    })
}
