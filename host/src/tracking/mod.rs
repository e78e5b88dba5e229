//! Where a run is recorded: the local store always, and an MLflow server when the spec or the
//! environment names one.
//!
//! [`Tracker`] is what `run.rs` records through. [`LocalTracker`] writes the embedded store
//! synchronously. [`MlflowTracker`] hands everything to a background [`writer`] thread, which
//! appends each request to a spool in the run folder before sending it, so the training loop never
//! waits on the network and nothing is lost while the server is down. `pretext sync` delivers what
//! a run left in its spool, or sends a run that was only recorded locally ([`sync`]).

pub mod backfill;
pub mod client;
pub mod records;
pub mod spool;
pub mod sync;
pub mod target;
pub mod writer;

use std::collections::HashMap;
use std::path::Path;

use crate::store::{MetricPoint, RunStatus, Store, StoreError};

pub use target::{Credentials, MlflowTarget, resolve_target};
pub use writer::{MlflowTracker, WriterReport};

/// A sink for one run's params, tags, metrics and artifacts.
///
/// Only the local store can fail here: the MLflow tracker queues everything and reports delivery
/// problems when the run ends.
pub trait Tracker {
    /// Records parameters; a key given again keeps its first value, as in MLflow.
    fn log_params(&mut self, params: &[(String, String)]) -> Result<(), StoreError>;
    /// Sets tags, replacing earlier values.
    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<(), StoreError>;
    /// Appends metric points.
    fn log_metrics(&mut self, points: &[MetricPoint]) -> Result<(), StoreError>;
    /// Records a file of the run folder as an artifact at `artifact_path` (relative, `/`-separated).
    fn log_artifact(&mut self, file: &Path, artifact_path: &str) -> Result<(), StoreError>;
}

/// The embedded store as a tracker. Artifacts already sit in the run folder, so it records none.
pub struct LocalTracker<'a> {
    pub store: &'a mut Store,
    pub run_id: String,
}

impl Tracker for LocalTracker<'_> {
    fn log_params(&mut self, params: &[(String, String)]) -> Result<(), StoreError> {
        self.store.log_params(&self.run_id, params)
    }

    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<(), StoreError> {
        self.store.set_tags(&self.run_id, tags)
    }

    fn log_metrics(&mut self, points: &[MetricPoint]) -> Result<(), StoreError> {
        self.store.log_metrics(&self.run_id, points)
    }

    fn log_artifact(&mut self, _file: &Path, _artifact_path: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The metric points that a resumed run records again and that its MLflow run already has.
///
/// A resume deletes the local points recorded after the checkpoint, and training records those
/// steps again, bit for bit the same but with new timestamps. MLflow cannot delete points, so the
/// repeated ones are kept off the MLflow path. Each (key, step) counts how many more of its points
/// to leave out.
#[derive(Debug, Default)]
pub struct Relogged {
    remaining: HashMap<(String, u64), usize>,
}

impl Relogged {
    /// Builds the filter from the run's local points before and after the resume deleted some.
    pub fn between(before: &[MetricPoint], after: &[MetricPoint]) -> Self {
        let mut sent: HashMap<(String, u64), usize> = HashMap::new();
        for point in before {
            *sent.entry((point.key.clone(), point.step)).or_default() += 1;
        }
        Self::after_sent(sent, after)
    }

    /// Builds the filter from what the MLflow side already has, counted per key and step by
    /// [`backfill::sent_steps`], less the points the resumed run keeps in its local store.
    pub fn after_sent(sent: HashMap<(String, u64), usize>, after: &[MetricPoint]) -> Self {
        let mut remaining = sent;
        for point in after {
            if let Some(count) = remaining.get_mut(&(point.key.clone(), point.step)) {
                *count = count.saturating_sub(1);
            }
        }
        remaining.retain(|_, count| *count > 0);
        Self { remaining }
    }

    /// Returns the number of points still to be left out.
    pub fn len(&self) -> usize {
        self.remaining.values().sum()
    }

    /// Returns whether no point is left out any more.
    pub fn is_empty(&self) -> bool {
        self.remaining.is_empty()
    }

    /// Returns the points of `points` that the MLflow run does not have yet.
    fn new_points(&mut self, points: &[MetricPoint]) -> Vec<MetricPoint> {
        let mut unsent = Vec::with_capacity(points.len());
        for point in points {
            let key = (point.key.clone(), point.step);
            match self.remaining.get_mut(&key) {
                Some(count) => {
                    *count -= 1;
                    if *count == 0 {
                        self.remaining.remove(&key);
                    }
                }
                None => unsent.push(point.clone()),
            }
        }
        unsent
    }
}

/// The local store plus, when configured, an MLflow server.
pub struct Trackers<'a> {
    pub local: LocalTracker<'a>,
    pub mlflow: Option<MlflowTracker>,
    /// Points of a resumed run that the MLflow run already has.
    pub relogged: Relogged,
}

impl Trackers<'_> {
    /// Marks the run as ended in the local store, then waits for the MLflow writer to deliver
    /// what it can within its retry budget.
    ///
    /// # Errors
    ///
    /// Returns the local store's error; MLflow delivery problems are in the report.
    pub fn end(
        &mut self,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<Option<WriterReport>, StoreError> {
        self.local.store.finish_run(&self.local.run_id, status, error)?;
        let Some(mlflow) = self.mlflow.take() else {
            return Ok(None);
        };
        let report = mlflow.finish(status, crate::store::now_millis());
        // Recorded when incomplete too, so that a resumed run's spool is not taken as delivered.
        if let Some(remote_id) = &report.remote_run_id {
            let run_id = &self.local.run_id;
            self.local.store.record_mlflow_run(run_id, &report.uri, remote_id, report.complete)?;
        }
        Ok(Some(report))
    }
}

impl Tracker for Trackers<'_> {
    fn log_params(&mut self, params: &[(String, String)]) -> Result<(), StoreError> {
        self.local.log_params(params)?;
        if let Some(mlflow) = &mut self.mlflow {
            mlflow.log_params(params)?;
        }
        Ok(())
    }

    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<(), StoreError> {
        self.local.set_tags(tags)?;
        if let Some(mlflow) = &mut self.mlflow {
            mlflow.set_tags(tags)?;
        }
        Ok(())
    }

    fn log_metrics(&mut self, points: &[MetricPoint]) -> Result<(), StoreError> {
        self.local.log_metrics(points)?;
        let Some(mlflow) = &mut self.mlflow else {
            return Ok(());
        };
        if self.relogged.is_empty() {
            return mlflow.log_metrics(points);
        }
        let new_points = self.relogged.new_points(points);
        if new_points.is_empty() {
            return Ok(());
        }
        mlflow.log_metrics(&new_points)
    }

    fn log_artifact(&mut self, file: &Path, artifact_path: &str) -> Result<(), StoreError> {
        self.local.log_artifact(file, artifact_path)?;
        if let Some(mlflow) = &mut self.mlflow {
            mlflow.log_artifact(file, artifact_path)?;
        }
        Ok(())
    }
}

/// Returns whether a writer or sync delivered everything: nothing waits in the spool and the server
/// rejected no record.
pub fn fully_delivered(report: &WriterReport) -> bool {
    report.complete && report.errors.is_empty()
}

/// MLflow's system tags for a run, plus `pretext.run_id`, which lets a retried creation or a
/// later `pretext sync` find the run instead of creating a second one.
pub fn system_tags(
    local_run_id: &str,
    spec_path: &str,
    git_commit: Option<&str>,
) -> Vec<(String, String)> {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    let mut tags = vec![
        ("mlflow.user".to_owned(), user),
        ("mlflow.source.name".to_owned(), spec_path.to_owned()),
        ("mlflow.source.type".to_owned(), "LOCAL".to_owned()),
        ("pretext.run_id".to_owned(), local_run_id.to_owned()),
    ];
    if let Some(commit) = git_commit {
        tags.push(("mlflow.source.git.commit".to_owned(), commit.to_owned()));
    }
    // Set by `pretext sweep` for its trials, so that they nest under the sweep's run.
    let parent = std::env::var(crate::sweep::parent::PARENT_RUN_VARIABLE).ok();
    if let Some(parent) = parent.filter(|id| !id.trim().is_empty()) {
        tags.push(("mlflow.parentRunId".to_owned(), parent));
    }
    tags
}

/// The files of a run folder that go to MLflow as artifacts, as (file, artifact path) pairs:
/// the resolved spec, the checkpoint, the run log and everything under `artifacts/`.
pub fn run_artifacts(run_dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    for name in ["spec.toml", "checkpoint.safetensors", "run.log"] {
        let path = run_dir.join(name);
        if path.is_file() {
            found.push((path, name.to_owned()));
        }
    }
    let mut folders = vec![run_dir.join("artifacts")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
        entries.sort();
        for path in entries {
            // Symbolic links are skipped: evaluators never write them.
            let Ok(kind) = std::fs::symlink_metadata(&path).map(|meta| meta.file_type()) else {
                continue;
            };
            if kind.is_dir() {
                folders.push(path);
            } else if kind.is_file()
                && let Ok(relative) = path.strip_prefix(run_dir)
            {
                found.push((path.clone(), relative.display().to_string()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(key: &str, step: u64, timestamp: i64) -> MetricPoint {
        MetricPoint { key: key.to_owned(), value: 0.5, step, timestamp }
    }

    #[test]
    fn relogged_points_left_out_once() {
        let before = [point("loss", 1, 10), point("loss", 2, 20), point("acc", 2, 21)];
        let after = [point("loss", 1, 10)];
        let mut relogged = Relogged::between(&before, &after);
        assert_eq!(relogged.len(), 2);

        let again = [point("loss", 2, 50), point("acc", 2, 51), point("loss", 3, 60)];
        assert_eq!(relogged.new_points(&again), vec![point("loss", 3, 60)]);
        assert!(relogged.is_empty());
        assert_eq!(relogged.new_points(&[point("loss", 2, 70)]), vec![point("loss", 2, 70)]);
    }
}
