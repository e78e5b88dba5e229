//! Training: the host owns the loop, the optimizers and the parameters' checkpoint.

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
}

fn phase_key(phases: &[Phase], phase: &Phase, name: &str) -> String {
    if phases.len() == 1 { format!("train/{name}") } else { format!("train/{}/{name}", phase.name) }
}

/// Trains the pipeline's encoder and objective, evaluating every `eval_every` epochs.
///
/// Stops between steps, with `killed` set, as soon as `stop` becomes true.
pub fn train(
    pipeline: &mut Pipeline,
    config: &TrainerConfig,
    observer: &mut dyn TrainObserver,
    stop: &AtomicBool,
) -> Result<TrainSummary, TrainError> {
    let Some((groups, phases)) = pipeline.training_plan()? else {
        return Ok(TrainSummary { steps: 0, epochs_done: 0, train_seconds: 0.0, killed: false });
    };
    let mut optimizers = Vec::new();
    for group in groups {
        optimizers.push(GroupOptimizer::new(&group.name, group.tensors, config)?);
    }
    let phase_groups = resolve_phase_groups(&phases, &optimizers)?;

    let train_len = pipeline.data_info.train_len;
    let steps_per_epoch =
        loader::batches(&vec![0; train_len], config.batch_size, config.drop_last).len() as u64;
    let progress = progress_bar(config.epochs * steps_per_epoch);
    let mut step = 0u64;
    let mut train_time = Duration::ZERO;
    let mut pending = Vec::new();
    let mut checked_keys = std::collections::HashSet::new();
    let mut total_skipped = 0u64;

    for epoch in 0..config.epochs {
        let started = Instant::now();
        let order = loader::epoch_order(train_len, pipeline.seed, epoch, config.shuffle);
        let batches = loader::batches(&order, config.batch_size, config.drop_last);
        let mut loss_sum = 0.0;
        let mut loss_count = 0u64;
        let mut skipped = 0u64;
        let dataset = std::sync::Arc::clone(&pipeline.dataset);
        let outcome = std::thread::scope(|scope| -> Result<bool, TrainError> {
            let (receiver, _handle) = loader::prefetch(scope, &dataset, batches);
            for batch in receiver {
                if stop.load(Ordering::Relaxed) {
                    return Ok(true);
                }
                let batch = batch?;
                let batch = pretext_plugin_api::Batch {
                    inputs: batch.inputs.to_device(pipeline.device),
                    labels: batch.labels.map(|labels| labels.to_device(pipeline.device)),
                };
                let info = StepInfo { step, epoch };
                let log_now = step.is_multiple_of(config.log_every);
                for (phase, group_indices) in phases.iter().zip(&phase_groups) {
                    for optimizer in &optimizers {
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
                        if !config.skip_non_finite {
                            return Err(TrainError::NonFiniteLoss {
                                value,
                                step,
                                epoch,
                                phase: phase.name.clone(),
                            });
                        }
                        tracing::warn!(step, epoch, phase = %phase.name, loss = value, "skipping a batch with a non-finite loss");
                        skipped += 1;
                        break;
                    }
                    output.loss.f_backward()?;
                    if let Some(max_norm) = config.grad_clip {
                        let tensors: Vec<&tch::Tensor> = group_indices
                            .iter()
                            .flat_map(|index| optimizers[*index].tensors())
                            .collect();
                        clip_grad_norm(&tensors, max_norm);
                    }
                    for index in group_indices {
                        optimizers[*index].step()?;
                    }
                    if phase_groups.len() == 1 || phase.name == phases[0].name {
                        loss_sum += value;
                        loss_count += 1;
                    }
                    if log_now {
                        for (name, _) in &output.metrics {
                            check_metric_name(&mut checked_keys, &phases, phase, name)?;
                        }
                        let timestamp = now_millis();
                        pending.push(MetricPoint {
                            key: phase_key(&phases, phase, "loss"),
                            value,
                            step,
                            timestamp,
                        });
                        for (name, metric) in output.metrics {
                            pending.push(MetricPoint {
                                key: phase_key(&phases, phase, &name),
                                value: metric,
                                step,
                                timestamp,
                            });
                        }
                    }
                }
                step += 1;
                progress.inc(1);
                if log_now {
                    progress.set_message(format!(
                        "epoch {}/{} loss {:.5}",
                        epoch + 1,
                        config.epochs,
                        loss_sum / loss_count.max(1) as f64
                    ));
                    observer.metrics(std::mem::take(&mut pending));
                }
            }
            Ok(false)
        })?;
        train_time += started.elapsed();
        if outcome {
            progress.abandon();
            return Ok(TrainSummary {
                steps: step,
                epochs_done: epoch,
                train_seconds: train_time.as_secs_f64(),
                killed: true,
            });
        }
        let mean_loss = loss_sum / loss_count.max(1) as f64;
        tracing::info!(epoch = epoch + 1, step, loss = mean_loss, "epoch finished");
        pending.push(MetricPoint {
            key: "train/epoch_loss".into(),
            value: mean_loss,
            step,
            timestamp: now_millis(),
        });
        if config.skip_non_finite {
            total_skipped += skipped;
            pending.push(MetricPoint {
                key: "train/skipped_batches".into(),
                value: total_skipped as f64,
                step,
                timestamp: now_millis(),
            });
        }
        observer.metrics(std::mem::take(&mut pending));
        let is_last = epoch + 1 == config.epochs;
        if !is_last && config.eval_every > 0 && (epoch + 1) % config.eval_every == 0 {
            progress
                .suspend(|| observer.evaluate(pipeline, epoch + 1, step))
                .map_err(TrainError::Invalid)?;
        }
    }
    progress.finish_and_clear();
    Ok(TrainSummary {
        steps: step,
        epochs_done: config.epochs,
        train_seconds: train_time.as_secs_f64(),
        killed: false,
    })
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
