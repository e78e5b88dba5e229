//! Training: the host owns the loop, the optimizers and the parameters' checkpoint.

pub mod checkpoint;
pub mod evaluate;
pub mod loader;
pub mod optim;
pub mod pipeline;
pub mod preflight;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pretext_plugin_api::{Phase, StepInfo};

use crate::plugins::PluginCallError;
use crate::spec::TrainerConfig;
use crate::store::{MetricPoint, now_millis};
use optim::{GroupOptimizer, clip_grad_norm};
pub use pipeline::Pipeline;

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Plugin(#[from] PluginCallError),
    #[error("optimizer error: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Invalid(String),
    #[error("loss is {value} at step {step} (epoch {epoch}, phase `{phase}`)")]
    NonFiniteLoss { value: f64, step: u64, epoch: u64, phase: String },
}

/// How training ended.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub epochs_done: u64,
    pub train_seconds: f64,
    pub killed: bool,
}

impl TrainSummary {
    /// Optimizer steps per second of training time (evaluation excluded).
    pub fn steps_per_second(&self) -> f64 {
        if self.train_seconds > 0.0 { self.steps as f64 / self.train_seconds } else { 0.0 }
    }
}

/// Callbacks the trainer reports to.
pub trait TrainObserver {
    /// Records metric points (flushed in batches).
    fn metrics(&mut self, points: Vec<MetricPoint>);
    /// Runs the evaluators after `epoch` (1-based) at optimizer step `step`.
    fn evaluate(&mut self, pipeline: &mut Pipeline, epoch: u64, step: u64) -> Result<(), String>;
    /// Saves a checkpoint: the pipeline's parameters, `state` and the optimizers' state. The
    /// default keeps nothing, for callers that do not resume.
    fn checkpoint(
        &mut self,
        pipeline: &Pipeline,
        state: &TrainState,
        optimizer_state: Vec<(String, tch::Tensor)>,
    ) -> Result<(), String> {
        let _ = (pipeline, state, optimizer_state);
        Ok(())
    }
}

fn phase_key(phases: &[Phase], phase: &Phase, name: &str) -> String {
    if phases.len() == 1 { format!("train/{name}") } else { format!("train/{}/{name}", phase.name) }
}

/// Where training stands; saved with every checkpoint so that a resumed run continues exactly.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The epoch in progress (0-based).
    pub epoch: u64,
    /// Batches of `epoch` completed.
    pub batch_index: u64,
    /// Sum and count of the first phase's losses in `epoch`, for the epoch's mean loss.
    pub loss_sum: f64,
    pub loss_count: u64,
    /// Batches skipped for a non-finite loss: in `epoch`, and in the whole run.
    pub skipped: u64,
    pub total_skipped: u64,
}

/// A checkpoint to restore before training continues.
pub struct Resume {
    pub state: TrainState,
    /// Optimizer state tensors, as [`GroupOptimizer::state_tensors`] names them.
    pub optimizer_state: Vec<(String, tch::Tensor)>,
}

/// Derives the libtorch seed of one step from the experiment seed, so that the random numbers a
/// step draws (dropout, augmentations, noise) do not depend on whether the run was resumed.
fn step_seed(seed: u64, step: u64) -> i64 {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (mixed >> 1) as i64
}

/// Trains the pipeline's encoder and objective from the start; see [`train_from`].
pub fn train(
    pipeline: &mut Pipeline,
    config: &TrainerConfig,
    observer: &mut dyn TrainObserver,
    stop: &AtomicBool,
) -> Result<TrainSummary, TrainError> {
    train_from(pipeline, config, observer, stop, None)
}

/// Trains the pipeline's encoder and objective, evaluating every `eval_every` epochs and asking
/// the observer to checkpoint every `checkpoint_every` steps; starts from `resume` when given.
///
/// Stops between steps, with `killed` set, as soon as `stop` becomes true.
pub fn train_from(
    pipeline: &mut Pipeline,
    config: &TrainerConfig,
    observer: &mut dyn TrainObserver,
    stop: &AtomicBool,
    resume: Option<Resume>,
) -> Result<TrainSummary, TrainError> {
    let Some((groups, phases)) = pipeline.training_plan()? else {
        return Ok(TrainSummary { steps: 0, epochs_done: 0, train_seconds: 0.0, killed: false });
    };
    let mut optimizers = Vec::new();
    for group in groups {
        optimizers.push(GroupOptimizer::new(&group.name, group.tensors, config)?);
    }
    let mut state = TrainState::default();
    if let Some(resume) = resume {
        for optimizer in &mut optimizers {
            optimizer.load_state(&resume.optimizer_state).map_err(TrainError::Invalid)?;
        }
        state = resume.state;
        tracing::info!(step = state.step, epoch = state.epoch, "resuming training");
    }
    let phase_groups = resolve_phase_groups(&phases, &optimizers)?;
    let mut trainer = Trainer {
        config,
        phases: &phases,
        phase_groups: &phase_groups,
        optimizers,
        state,
        pending: Vec::new(),
        checked_keys: std::collections::HashSet::new(),
    };

    let train_len = pipeline.data_info.train_len;
    let steps_per_epoch =
        loader::batches(&vec![0; train_len], config.batch_size, config.drop_last).len() as u64;
    let progress = progress_bar(config.epochs * steps_per_epoch);
    progress.set_position(trainer.state.step);
    let mut train_time = Duration::ZERO;

    while trainer.state.epoch < config.epochs {
        let epoch = trainer.state.epoch;
        let started = Instant::now();
        let order = loader::epoch_order(train_len, pipeline.seed, epoch, config.shuffle);
        let mut batches = loader::batches(&order, config.batch_size, config.drop_last);
        batches.drain(..(trainer.state.batch_index as usize).min(batches.len()));
        let dataset = std::sync::Arc::clone(&pipeline.dataset);
        let killed = std::thread::scope(|scope| -> Result<bool, TrainError> {
            let source = loader::BatchSource::new(scope, &dataset, batches, config.prefetch);
            for batch in source {
                if stop.load(Ordering::Relaxed) {
                    return Ok(true);
                }
                trainer.step(pipeline, batch?)?;
                progress.inc(1);
                if trainer.state.step.is_multiple_of(config.log_every) {
                    let mean = trainer.state.loss_sum / trainer.state.loss_count.max(1) as f64;
                    progress.set_message(format!(
                        "epoch {}/{} loss {mean:.5}",
                        epoch + 1,
                        config.epochs
                    ));
                }
                observer.metrics(std::mem::take(&mut trainer.pending));
                if config.checkpoint_every > 0
                    && trainer.state.step.is_multiple_of(config.checkpoint_every)
                {
                    trainer.checkpoint(pipeline, observer)?;
                }
            }
            Ok(false)
        })?;
        train_time += started.elapsed();
        if killed {
            progress.abandon();
            let state = &trainer.state;
            return Ok(TrainSummary {
                steps: state.step,
                epochs_done: epoch,
                train_seconds: train_time.as_secs_f64(),
                killed: true,
            });
        }
        trainer.finish_epoch();
        observer.metrics(std::mem::take(&mut trainer.pending));
        let step = trainer.state.step;
        let finished = trainer.state.epoch;
        let is_last = finished == config.epochs;
        if !is_last && config.eval_every > 0 && finished.is_multiple_of(config.eval_every) {
            progress
                .suspend(|| observer.evaluate(pipeline, finished, step))
                .map_err(TrainError::Invalid)?;
        }
        if !is_last && config.checkpoint_every > 0 {
            trainer.checkpoint(pipeline, observer)?;
        }
    }
    progress.finish_and_clear();
    Ok(TrainSummary {
        steps: trainer.state.step,
        epochs_done: config.epochs,
        train_seconds: train_time.as_secs_f64(),
        killed: false,
    })
}

/// The mutable state of one training run.
struct Trainer<'a> {
    config: &'a TrainerConfig,
    phases: &'a [Phase],
    phase_groups: &'a [Vec<usize>],
    optimizers: Vec<GroupOptimizer>,
    state: TrainState,
    pending: Vec<MetricPoint>,
    checked_keys: std::collections::HashSet<String>,
}

impl Trainer<'_> {
    /// Runs every phase of one step on `batch`.
    fn step(
        &mut self,
        pipeline: &mut Pipeline,
        batch: pretext_plugin_api::Batch,
    ) -> Result<(), TrainError> {
        let batch = pretext_plugin_api::Batch {
            inputs: batch.inputs.to_device(pipeline.device),
            labels: batch.labels.map(|labels| labels.to_device(pipeline.device)),
        };
        let (step, epoch) = (self.state.step, self.state.epoch);
        tch::manual_seed(step_seed(pipeline.seed, step));
        let info = StepInfo { step, epoch };
        let log_now = step.is_multiple_of(self.config.log_every);
        for (phase_index, (phase, group_indices)) in
            self.phases.iter().zip(self.phase_groups).enumerate()
        {
            for optimizer in &self.optimizers {
                optimizer.zero_grad()?;
            }
            let objective =
                pipeline.objective.as_mut().expect("a training plan needs an objective");
            let output = objective.loss(info, &phase.name, &batch, &pipeline.encoder)?;
            let value = output.loss.f_double_value(&[]).map_err(|error| {
                TrainError::Invalid(format!(
                    "objective `{}` returned a loss that is not a scalar in phase `{}`: {error}",
                    objective.id.name, phase.name
                ))
            })?;
            if !value.is_finite() {
                if !self.config.skip_non_finite {
                    return Err(TrainError::NonFiniteLoss {
                        value,
                        step,
                        epoch,
                        phase: phase.name.clone(),
                    });
                }
                tracing::warn!(step, epoch, phase = %phase.name, loss = value, "skipping a batch with a non-finite loss");
                self.state.skipped += 1;
                break;
            }
            output.loss.f_backward()?;
            if let Some(max_norm) = self.config.grad_clip {
                let tensors: Vec<&tch::Tensor> = group_indices
                    .iter()
                    .flat_map(|index| self.optimizers[*index].tensors())
                    .collect();
                clip_grad_norm(&tensors, max_norm);
            }
            for index in group_indices {
                self.optimizers[*index].step()?;
            }
            if phase_index == 0 {
                self.state.loss_sum += value;
                self.state.loss_count += 1;
            }
            if log_now {
                self.record_step_metrics(phase, value, output.metrics)?;
            }
        }
        self.state.step += 1;
        self.state.batch_index += 1;
        Ok(())
    }

    fn record_step_metrics(
        &mut self,
        phase: &Phase,
        loss: f64,
        metrics: Vec<(String, f64)>,
    ) -> Result<(), TrainError> {
        for (name, _) in &metrics {
            check_metric_name(&mut self.checked_keys, self.phases, phase, name)?;
        }
        let step = self.state.step;
        let timestamp = now_millis();
        self.pending.push(MetricPoint {
            key: phase_key(self.phases, phase, "loss"),
            value: loss,
            step,
            timestamp,
        });
        for (name, value) in metrics {
            self.pending.push(MetricPoint {
                key: phase_key(self.phases, phase, &name),
                value,
                step,
                timestamp,
            });
        }
        Ok(())
    }

    /// Records the epoch's metrics and moves the state to the next epoch.
    fn finish_epoch(&mut self) {
        let state = &mut self.state;
        let mean_loss = state.loss_sum / state.loss_count.max(1) as f64;
        tracing::info!(
            epoch = state.epoch + 1,
            step = state.step,
            loss = mean_loss,
            "epoch finished"
        );
        let timestamp = now_millis();
        self.pending.push(MetricPoint {
            key: "train/epoch_loss".into(),
            value: mean_loss,
            step: state.step,
            timestamp,
        });
        state.total_skipped += state.skipped;
        if self.config.skip_non_finite {
            self.pending.push(MetricPoint {
                key: "train/skipped_batches".into(),
                value: state.total_skipped as f64,
                step: state.step,
                timestamp,
            });
        }
        state.epoch += 1;
        state.batch_index = 0;
        state.loss_sum = 0.0;
        state.loss_count = 0;
        state.skipped = 0;
    }

    fn checkpoint(
        &mut self,
        pipeline: &Pipeline,
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        let optimizer_state: Vec<(String, tch::Tensor)> =
            self.optimizers.iter().flat_map(GroupOptimizer::state_tensors).collect();
        observer.checkpoint(pipeline, &self.state, optimizer_state).map_err(TrainError::Invalid)
    }
}

/// Checks an objective's metric key against the key rule, once per distinct key.
fn check_metric_name(
    checked: &mut std::collections::HashSet<String>,
    phases: &[Phase],
    phase: &Phase,
    name: &str,
) -> Result<(), TrainError> {
    let key = phase_key(phases, phase, name);
    if checked.contains(&key) {
        return Ok(());
    }
    crate::spec::keys::check_key(&key).map_err(|message| {
        TrainError::Invalid(format!("the objective returned an invalid metric key: {message}"))
    })?;
    checked.insert(key);
    Ok(())
}

fn resolve_phase_groups(
    phases: &[Phase],
    optimizers: &[GroupOptimizer],
) -> Result<Vec<Vec<usize>>, TrainError> {
    let mut resolved = Vec::new();
    for phase in phases {
        let mut indices = Vec::new();
        for group in &phase.groups {
            let Some(index) = optimizers.iter().position(|optimizer| &optimizer.name == group)
            else {
                let names: Vec<&str> =
                    optimizers.iter().map(|optimizer| optimizer.name.as_str()).collect();
                return Err(TrainError::Invalid(format!(
                    "phase `{}` updates group `{group}`, but the objective declares only: {}",
                    phase.name,
                    names.join(", ")
                )));
            };
            indices.push(index);
        }
        resolved.push(indices);
    }
    if resolved.is_empty() {
        return Err(TrainError::Invalid("the objective declares no training phases".into()));
    }
    Ok(resolved)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar
}
