//! One run from start to end: record it, compose the plugins, train, evaluate, store, summarise.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use pretext_plugin_api::EvalReport;

use crate::device::{device_name, libtorch_build, resolve};
use crate::plugins::Registry;
use crate::spec::Experiment;
use crate::spec::keys::check_key;
use crate::spec::resolve::{flat_params, resolved_toml, spec_hash};
use crate::store::{MetricPoint, RunStatus, Store, now_millis};
use crate::tracking::sync::mark_stale_runs;
use crate::tracking::writer::RunStart;
use crate::tracking::{
    LocalTracker, MlflowTracker, Relogged, Tracker, Trackers, WriterReport, resolve_target,
    system_tags,
};
use crate::train::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::train::evaluate::{artifact_path, run_evaluators};
use crate::train::{Pipeline, Resume, TrainObserver, TrainState, TrainSummary, train_from};

/// Exit code of `pretext run` when training finished but the MLflow delivery is incomplete: records
/// wait in the spool for `pretext sync`, or the server rejected some of them.
pub const EXIT_TRACKING_INCOMPLETE: u8 = 3;

/// How a run ended, for the summary and the exit code.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub error: Option<String>,
    pub metrics: Vec<(String, f64)>,
    pub seconds: f64,
    pub train: Option<TrainSummary>,
    /// What the MLflow writer delivered, when the run went to a server too.
    pub tracking: Option<WriterReport>,
}

impl RunOutcome {
    /// Returns whether the run went to an MLflow server that did not receive all of it.
    pub fn tracking_incomplete(&self) -> bool {
        self.tracking.as_ref().is_some_and(|report| !crate::tracking::fully_delivered(report))
    }
}

/// Errors that stop a run before it is recorded (exit code 2) or while recording it.
#[derive(Debug, thiserror::Error)]
pub enum RunSetupError {
    #[error("{0}")]
    Device(String),
    /// The `[tracking]` settings or the MLflow environment variables are not usable.
    #[error("{0}")]
    Tracking(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A run cannot be resumed: finished already, still running, or its spec no longer loads.
    #[error("{0}")]
    Resume(String),
}

struct Recorder<'a, 'store> {
    trackers: &'a mut Trackers<'store>,
    run_id: String,
    run_dir: PathBuf,
    keep_checkpoints: usize,
    best_metric: Option<String>,
    best_is_max: bool,
    artifact_dir: PathBuf,
    latest: Vec<(String, f64)>,
    error: Option<String>,
}

impl Recorder<'_, '_> {
    fn record(&mut self, points: Vec<MetricPoint>) {
        if points.is_empty() || self.error.is_some() {
            return;
        }
        if let Err(error) = self.trackers.log_metrics(&points) {
            tracing::error!(run = %self.run_id, "recording metrics failed: {error}");
            self.error = Some(error.to_string());
        }
    }

    fn record_reports(
        &mut self,
        reports: Vec<(String, EvalReport)>,
        step: u64,
    ) -> Result<(), String> {
        let timestamp = now_millis();
        let mut points = Vec::new();
        for (label, report) in reports {
            for (name, value) in report.metrics {
                let key = format!("{label}/{name}");
                check_key(&key).map_err(|message| {
                    format!("evaluator `{label}` returned an invalid metric key: {message}")
                })?;
                points.push(MetricPoint { key: key.clone(), value, step, timestamp });
                match self.latest.iter_mut().find(|(existing, _)| *existing == key) {
                    Some(entry) => entry.1 = value,
                    None => self.latest.push((key, value)),
                }
            }
            for artifact in report.artifacts {
                let relative = format!("{label}/{}", artifact.path);
                let path = artifact_path(&self.artifact_dir, &relative)
                    .map_err(|message| format!("evaluator `{label}`: {message}"))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
                }
                std::fs::write(&path, &artifact.bytes)
                    .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
                tracing::info!(path = %path.display(), "wrote artifact");
                self.artifact(&path, &format!("artifacts/{relative}"));
            }
        }
        self.record(points);
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Copies `saved` to `checkpoints/best` when the chosen metric's latest value beats the best
    /// recorded so far.
    fn keep_if_best(&mut self, saved: &Checkpoint) -> Result<(), String> {
        let Some(metric) = &self.best_metric else {
            return Ok(());
        };
        let latest = self.latest.iter().find(|(key, _)| key == metric).map(|(_, value)| *value);
        let Some(value) = latest else {
            return Ok(());
        };
        let better = match checkpoint::best_value(&self.run_dir) {
            None => value.is_finite(),
            Some(best) if self.best_is_max => value > best,
            Some(best) => value < best,
        };
        if better {
            checkpoint::save_best(&self.run_dir, saved, metric, value)?;
            tracing::info!(metric = %metric, value, step = saved.meta.state.step, "kept the best checkpoint");
        }
        Ok(())
    }

    fn artifact(&mut self, path: &Path, artifact_path: &str) {
        if let Err(error) = self.trackers.log_artifact(path, artifact_path) {
            tracing::error!(run = %self.run_id, "recording artifact {artifact_path} failed: {error}");
        }
    }
}

impl TrainObserver for Recorder<'_, '_> {
    fn metrics(&mut self, points: Vec<MetricPoint>) {
        self.record(points);
    }

    fn evaluate(&mut self, pipeline: &mut Pipeline, _epoch: u64, step: u64) -> Result<(), String> {
        let reports = run_evaluators(pipeline).map_err(|error| error.to_string())?;
        self.record_reports(reports, step)
    }

    fn checkpoint(
        &mut self,
        pipeline: &Pipeline,
        state: &TrainState,
        optimizer_state: Vec<(String, tch::Tensor)>,
    ) -> Result<(), String> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let store = &self.trackers.local.store;
        // The checkpoint names the last metric row it covers, so that row must be on disk first.
        store.sync().map_err(|error| error.to_string())?;
        let metric_row = store.last_metric_row(&self.run_id).map_err(|error| error.to_string())?;
        let parameters = pipeline.named_parameters().map_err(|error| error.to_string())?;
        let meta = CheckpointMeta { state: state.clone(), metric_row };
        let saved = checkpoint::save(
            &self.run_dir,
            parameters,
            optimizer_state,
            &meta,
            self.keep_checkpoints,
        )?;
        tracing::info!(step = state.step, path = %saved.tensors.display(), "saved checkpoint");
        self.keep_if_best(&saved)
    }
}

fn git_tags(spec_dir: &Path) -> Vec<(String, String)> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(spec_dir)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let mut tags = Vec::new();
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        tags.push(("pretext.git_commit".to_owned(), commit));
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|text| !text.is_empty());
        tags.push(("pretext.git_dirty".to_owned(), dirty.to_string()));
    }
    tags
}

fn plugin_tags(experiment: &Experiment, registry: &Registry) -> Vec<(String, String)> {
    use pretext_plugin_api::PluginKind;
    let mut uses = vec![
        (PluginKind::Dataset, "dataset".to_owned(), &experiment.dataset),
        (PluginKind::Encoder, "encoder".to_owned(), &experiment.encoder),
    ];
    if let Some(objective) = &experiment.objective {
        uses.push((PluginKind::Objective, "objective".to_owned(), objective));
    }
    for evaluator in &experiment.evaluators {
        uses.push((PluginKind::Evaluator, format!("evaluate.{}", evaluator.label), evaluator));
    }
    let mut tags = Vec::new();
    for (kind, prefix, use_) in uses {
        if let Some(plugin) = registry.find(kind, &use_.plugin) {
            tags.push((format!("pretext.plugin.{prefix}.name"), plugin.name.clone()));
            tags.push((format!("pretext.plugin.{prefix}.version"), plugin.version.clone()));
            tags.push((format!("pretext.plugin.{prefix}.sha256"), plugin.library.sha256.clone()));
        }
    }
    tags
}

/// Runs an experiment and records it under `run_root`.
///
/// # Errors
///
/// Returns [`RunSetupError`] when the run cannot start (no such device, store not writable); any
/// failure after the run is recorded is reported in the outcome with status FAILED instead.
pub fn execute(
    experiment: &Experiment,
    registry: &Registry,
    run_root: &Path,
    stop: &AtomicBool,
) -> Result<RunOutcome, RunSetupError> {
    let device = resolve(&experiment.trainer.device).map_err(RunSetupError::Device)?;
    let target = resolve_target(experiment).map_err(RunSetupError::Tracking)?;
    if experiment.trainer.threads > 0 {
        tch::set_num_threads(experiment.trainer.threads as i32);
    }
    let mut store = Store::open(run_root)?;
    for line in mark_stale_runs(&store)? {
        tracing::warn!("{line}");
    }
    let (run_id, run_dir) = store.create_run(&experiment.name, &experiment.name)?;
    store.record_process(&run_id)?;
    let relogged = Relogged::default();
    drive(experiment, registry, &mut store, run_id, run_dir, device, target, stop, None, relogged)
}

/// Continues a FAILED or KILLED run from its latest checkpoint, under the same run id.
///
/// The run's recorded spec is loaded again, metrics recorded after the checkpoint are deleted
/// (they are recorded again as training repeats those steps), and training continues with the
/// saved parameters, optimizer state and data position. Without a checkpoint the run restarts.
pub fn resume(run_root: &Path, run: &str, stop: &AtomicBool) -> Result<RunOutcome, RunSetupError> {
    let mut store = Store::open(run_root)?;
    for line in mark_stale_runs(&store)? {
        tracing::warn!("{line}");
    }
    let row = store.find_run(run)?;
    match row.status.as_str() {
        "FINISHED" => {
            return Err(RunSetupError::Resume(format!(
                "run {} has already finished; start a new run instead",
                row.id
            )));
        }
        "RUNNING" => {
            return Err(RunSetupError::Resume(format!(
                "run {} is still running in another process",
                row.id
            )));
        }
        _ => {}
    }
    let mut registry = Registry::discover();
    let spec_path = row.dir.join("spec.toml");
    let experiment = crate::spec::load(&spec_path, &[], &mut registry).map_err(|errors| {
        RunSetupError::Resume(format!(
            "the spec recorded with run {} no longer validates:\n{errors}",
            row.id
        ))
    })?;
    let device = resolve(&experiment.trainer.device).map_err(RunSetupError::Device)?;
    let target = resolve_target(&experiment).map_err(RunSetupError::Tracking)?;
    if experiment.trainer.threads > 0 {
        tch::set_num_threads(experiment.trainer.threads as i32);
    }
    let latest = checkpoint::latest(&row.dir);
    let keep_row = latest.as_ref().map_or(0, |checkpoint| checkpoint.meta.metric_row);
    let before = store.metrics(&row.id)?;
    let removed = store.truncate_metrics(&row.id, keep_row)?;
    let relogged = match &target {
        Some(target) if sent_to(&row.dir, &target.uri) => {
            let after = store.metrics(&row.id)?;
            // Earlier attempts may have sent steps that a later truncation already deleted from
            // the store, so what was sent is read from the spool and the server. The deleted
            // points stand in when those cannot be read.
            let keys = before.iter().map(|point| point.key.clone()).collect();
            match crate::tracking::backfill::sent_steps(&row.dir, target, &keys) {
                Ok(sent) => Relogged::after_sent(sent, &after),
                Err(message) => {
                    tracing::warn!(run = %row.id, "{message}; judging what MLflow has from the local store");
                    Relogged::between(&before, &after)
                }
            }
        }
        _ => Relogged::default(),
    };
    drop(before);
    store.reopen_run(&row.id)?;
    store.record_process(&row.id)?;
    match &latest {
        Some(found) => {
            tracing::info!(run = %row.id, step = found.meta.state.step, removed, "resuming from a checkpoint")
        }
        None => tracing::warn!(run = %row.id, removed, "no checkpoint found; the run starts over"),
    }
    if !relogged.is_empty() {
        tracing::info!(
            run = %row.id,
            points = relogged.len(),
            "the MLflow run has the steps after the checkpoint; they are not sent again"
        );
    }
    drive(
        &experiment,
        &registry,
        &mut store,
        row.id,
        row.dir,
        device,
        target,
        stop,
        latest,
        relogged,
    )
}

/// Returns whether an earlier attempt of the run in `run_dir` sent records to the server `uri`,
/// so that the points deleted at a resume are on the server or in the spool.
///
/// NOTE: a point lost in the writer's channel at a SIGKILL is in neither. When the server is
/// reachable at the resume, its history shows that, and the resumed run sends the step. When it
/// is not, the resume falls back to the deleted points, and the step is left out.
fn sent_to(run_dir: &Path, uri: &str) -> bool {
    let state_uri = crate::tracking::spool::read_state(run_dir).map(|state| state.uri);
    let spool_uri = crate::tracking::sync::spool_uri(run_dir);
    state_uri.as_deref() == Some(uri) || spool_uri.as_deref() == Some(uri)
}

/// Records and runs a run whose store entry exists.
#[allow(clippy::too_many_arguments)]
fn drive(
    experiment: &Experiment,
    registry: &Registry,
    store: &mut Store,
    run_id: String,
    run_dir: PathBuf,
    device: tch::Device,
    target: Option<crate::tracking::MlflowTarget>,
    stop: &AtomicBool,
    resume_from: Option<Checkpoint>,
    relogged: Relogged,
) -> Result<RunOutcome, RunSetupError> {
    let started = Instant::now();
    let git = git_tags(
        experiment
            .spec_path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let mlflow = match &target {
        Some(target) => {
            let commit = git.iter().find(|(key, _)| key == "pretext.git_commit");
            let run = RunStart {
                local_run_id: run_id.clone(),
                run_name: experiment.name.clone(),
                start_time: now_millis(),
                tags: system_tags(
                    &run_id,
                    &experiment.spec_path.display().to_string(),
                    commit.map(|(_, value)| value.as_str()),
                ),
            };
            match MlflowTracker::start(target, &run_dir, run) {
                Ok(tracker) => Some(tracker),
                Err(message) => {
                    let _ = store.finish_run(&run_id, RunStatus::Failed, Some(&message));
                    return Err(RunSetupError::Tracking(message));
                }
            }
        }
        None => None,
    };
    let local = LocalTracker { store, run_id: run_id.clone() };
    let mut trackers = Trackers { local, mlflow, relogged };
    let prepared = prepare_run(experiment, registry, &mut trackers, git, &run_id, &run_dir, device);
    if let Err(error) = prepared {
        let message = error.to_string();
        let _ = trackers.end(RunStatus::Failed, Some(&message));
        return Err(error);
    }

    let artifact_dir = run_dir.join("artifacts");
    let mut recorder = Recorder {
        trackers: &mut trackers,
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        keep_checkpoints: experiment.trainer.keep_checkpoints,
        best_metric: experiment.trainer.best_metric.clone(),
        best_is_max: experiment.trainer.best_is_max,
        artifact_dir,
        latest: Vec::new(),
        error: None,
    };
    let result = run_body(experiment, registry, device, &run_dir, &mut recorder, stop, resume_from);
    recorder.artifact(&run_dir.join("run.log"), "run.log");
    let latest = std::mem::take(&mut recorder.latest);
    let (status, error, train) = match result {
        Ok(summary) if summary.killed => {
            (RunStatus::Killed, Some("interrupted by a signal".to_owned()), Some(summary))
        }
        Ok(summary) => (RunStatus::Finished, None, Some(summary)),
        Err(message) => (RunStatus::Failed, Some(message), None),
    };
    if let Some(message) = &error {
        tracing::error!(run = %run_id, status = status.as_str(), "{message}");
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(run = %run_id, status = status.as_str(), seconds, "run ended");
    let tracking = trackers.end(status, error.as_deref())?;
    write_summary(&run_dir, &run_id, status, &latest, train.as_ref());
    crate::logging::detach_run_log();
    Ok(RunOutcome { run_id, run_dir, status, error, metrics: latest, seconds, train, tracking })
}

/// Writes the resolved spec, opens the run log and records params and tags.
fn prepare_run(
    experiment: &Experiment,
    registry: &Registry,
    tracker: &mut dyn Tracker,
    git: Vec<(String, String)>,
    run_id: &str,
    run_dir: &Path,
    device: tch::Device,
) -> Result<(), RunSetupError> {
    let resolved = resolved_toml(experiment);
    let spec_path = run_dir.join("spec.toml");
    std::fs::write(&spec_path, &resolved)
        .map_err(|source| RunSetupError::Io { path: spec_path.clone(), source })?;
    tracker.log_artifact(&spec_path, "spec.toml")?;
    if let Err(error) = crate::logging::attach_run_log(&run_dir.join("run.log")) {
        tracing::warn!("cannot open the run log in {}: {error}", run_dir.display());
    }
    tracing::info!(run = %run_id, experiment = %experiment.name, device = %device_name(device), "run started");

    let mut tags = vec![
        ("pretext.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("pretext.libtorch".to_owned(), libtorch_build().to_owned()),
        ("pretext.device".to_owned(), device_name(device)),
        ("pretext.spec_hash".to_owned(), spec_hash(&resolved)),
        ("pretext.spec_path".to_owned(), experiment.spec_path.display().to_string()),
    ];
    tags.extend(git);
    tags.extend(plugin_tags(experiment, registry));
    tracker.log_params(&flat_params(experiment))?;
    tracker.set_tags(&tags)?;

    Ok(())
}

fn run_body(
    experiment: &Experiment,
    registry: &Registry,
    device: tch::Device,
    run_dir: &Path,
    recorder: &mut Recorder<'_, '_>,
    stop: &AtomicBool,
    resume_from: Option<Checkpoint>,
) -> Result<TrainSummary, String> {
    let mut pipeline =
        Pipeline::compose(experiment, registry, device).map_err(|error| error.to_string())?;
    let resume = match resume_from {
        Some(found) => {
            let (parameters, optimizer_state) = checkpoint::read(&found)?;
            load_parameters(&pipeline, &parameters, &found.tensors)?;
            Some(Resume { state: found.meta.state, optimizer_state })
        }
        None => None,
    };
    // A resumed encoder's fitted state is part of its checkpointed parameters.
    if pipeline.encoder_info.needs_fit && resume.is_none() {
        tracing::info!(encoder = %pipeline.encoder.id.name, "fitting the encoder on the train split");
        let dataset = std::sync::Arc::clone(&pipeline.dataset);
        pipeline.encoder.fit(&dataset).map_err(|error| error.to_string())?;
    }
    let summary = train_from(&mut pipeline, &experiment.trainer, recorder, stop, resume)
        .map_err(|error| error.to_string())?;
    if summary.killed {
        return Ok(summary);
    }
    if summary.steps > 0 {
        recorder.record(vec![MetricPoint {
            key: "train/steps_per_second".into(),
            value: summary.steps_per_second(),
            step: summary.steps,
            timestamp: now_millis(),
        }]);
    }
    // Saved before evaluating, so that a failing evaluator does not lose the trained weights.
    let checkpoint = run_dir.join("checkpoint.safetensors");
    save_checkpoint(&pipeline, &checkpoint)?;
    recorder.artifact(&checkpoint, "checkpoint.safetensors");
    let reports = run_evaluators(&mut pipeline).map_err(|error| error.to_string())?;
    recorder.record_reports(reports, summary.steps)?;
    let killed = stop.load(std::sync::atomic::Ordering::Relaxed);
    Ok(TrainSummary { killed, ..summary })
}

/// Writes every trainable tensor, by name, as safetensors.
pub fn save_checkpoint(pipeline: &Pipeline, path: &Path) -> Result<(), String> {
    let named = pipeline.named_parameters().map_err(|error| error.to_string())?;
    let tensors: Vec<(String, tch::Tensor)> = named
        .into_iter()
        .map(|(name, tensor)| (name, tensor.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    let temporary = path.with_extension("safetensors.tmp");
    tch::Tensor::write_safetensors(&tensors, &temporary)
        .map_err(|error| format!("cannot write checkpoint {}: {error}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .map_err(|error| format!("cannot move checkpoint to {}: {error}", path.display()))
}

/// Loads a checkpoint written by [`save_checkpoint`] into the pipeline's parameters.
pub fn load_checkpoint(pipeline: &Pipeline, path: &Path) -> Result<(), String> {
    let saved = tch::Tensor::read_safetensors(path)
        .map_err(|error| format!("cannot read checkpoint {}: {error}", path.display()))?;
    load_parameters(pipeline, &saved, path)
}

/// Copies saved tensors into the pipeline's parameters, by name; `source` is for messages.
fn load_parameters(
    pipeline: &Pipeline,
    saved: &[(String, tch::Tensor)],
    source: &Path,
) -> Result<(), String> {
    let _guard = tch::no_grad_guard();
    for (name, mut tensor) in pipeline.named_parameters().map_err(|error| error.to_string())? {
        let Some((_, stored)) = saved.iter().find(|(saved_name, _)| *saved_name == name) else {
            return Err(format!("checkpoint {} has no tensor `{name}`", source.display()));
        };
        if stored.size() != tensor.size() {
            return Err(format!(
                "checkpoint tensor `{name}` has shape {:?}, the model expects {:?}",
                stored.size(),
                tensor.size()
            ));
        }
        tensor.f_copy_(stored).map_err(|error| format!("cannot load `{name}`: {error}"))?;
    }
    Ok(())
}

fn write_summary(
    run_dir: &Path,
    run_id: &str,
    status: RunStatus,
    metrics: &[(String, f64)],
    train: Option<&TrainSummary>,
) {
    let metrics: serde_json::Map<String, serde_json::Value> = metrics
        .iter()
        .map(|(key, value)| {
            (
                key.clone(),
                serde_json::Number::from_f64(*value).map_or_else(
                    || serde_json::Value::String(value.to_string()),
                    serde_json::Value::Number,
                ),
            )
        })
        .collect();
    let summary = serde_json::json!({
        "run_id": run_id,
        "status": status.as_str(),
        "metrics": metrics,
        "train_steps": train.map(|summary| summary.steps),
        "train_steps_per_second": train.map(TrainSummary::steps_per_second),
    });
    let path = run_dir.join("metrics.json");
    if let Err(error) =
        std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap_or_default())
    {
        tracing::warn!("cannot write {}: {error}", path.display());
    }
}
