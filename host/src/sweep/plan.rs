//! The sweep definition, merged from the spec's `[sweep]` table and the command line, and the
//! preflight that validates and shape-checks every trial's spec before any trial starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Direction, Launcher, Strategy, SweepConfig, read_sweep};
use super::space::parse_command_line;
use crate::device::resolve;
use crate::plugins::Registry;
use crate::spec::{self, Experiment, SpecErrors};
use crate::train::Pipeline;
use crate::train::preflight::check_shapes;

/// Errors of a sweep: invalid input (exit code 2) or a failure while running it (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Journal(#[from] super::journal::JournalError),
}

/// What the command line asks for, before it is merged with the spec's `[sweep]` table.
#[derive(Debug, Clone, Default)]
pub struct SweepRequest {
    pub spec: PathBuf,
    /// Overrides after the spec; a value with top-level commas sweeps its key.
    pub arguments: Vec<String>,
    pub metric: Option<String>,
    pub direction: Option<Direction>,
    pub strategy: Option<Strategy>,
    pub trials: Option<u64>,
    pub seed: Option<u64>,
    pub max_parallel: Option<usize>,
    pub launcher: Option<Launcher>,
}

/// A complete sweep definition, as the journal stores it for `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPlan {
    /// The spec, as an absolute path.
    pub spec: PathBuf,
    /// Overrides that every trial gets.
    pub fixed: Vec<String>,
    pub config: SweepConfig,
}

impl SweepPlan {
    /// The target metric.
    pub fn metric(&self) -> &str {
        self.config.metric.as_deref().unwrap_or_default()
    }

    /// Whether the fixed overrides or the space set `key`.
    pub fn sets(&self, key: &str) -> bool {
        self.config.space.contains(key)
            || self
                .fixed
                .iter()
                .any(|text| text.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    }

    /// Every override of a trial: the fixed ones, then the trial's own.
    pub fn trial_overrides(&self, overrides: &[String]) -> Vec<String> {
        self.fixed.iter().chain(overrides).cloned().collect()
    }
}

fn spec_errors(path: &Path, errors: &SpecErrors) -> SweepError {
    SweepError::Invalid(format!("invalid sweep in {}\n{errors}", path.display()))
}

/// Merges the spec's `[sweep]` table with the command line. A command-line key with several
/// values replaces the spec's domain for that key; one with a single value fixes the key.
///
/// # Errors
///
/// Returns [`SweepError::Invalid`] for an unreadable spec, an invalid `[sweep]` table, invalid
/// arguments (a key given twice among them), a missing target metric, or a strategy that does
/// not fit the space or the launcher.
pub fn plan(request: &SweepRequest) -> Result<SweepPlan, SweepError> {
    let spec = std::path::absolute(&request.spec).map_err(|error| {
        SweepError::Invalid(format!("invalid spec path {}: {error}", request.spec.display()))
    })?;
    let (_, root) = spec::raw::parse_file(&spec)
        .map_err(|error| spec_errors(&spec, &SpecErrors(vec![error])))?;
    let mut config = read_sweep(&root).map_err(|errors| spec_errors(&spec, &SpecErrors(errors)))?;
    let command_line = parse_command_line(&request.arguments).map_err(|errors| {
        SweepError::Invalid(format!("invalid sweep arguments:\n  {}", errors.join("\n  ")))
    })?;

    for text in &command_line.fixed {
        let key = text.split_once('=').map_or(text.as_str(), |(key, _)| key.trim());
        config.space.dimensions.retain(|dimension| dimension.key != key);
    }
    for dimension in command_line.swept {
        match config.space.dimensions.iter_mut().find(|existing| existing.key == dimension.key) {
            Some(existing) => *existing = dimension,
            None => config.space.dimensions.push(dimension),
        }
    }
    if let Some(metric) = &request.metric {
        config.metric = Some(metric.clone());
    }
    config.direction = request.direction.unwrap_or(config.direction);
    config.strategy = request.strategy.unwrap_or(config.strategy);
    config.trials = request.trials.unwrap_or(config.trials);
    config.seed = request.seed.unwrap_or(config.seed);
    config.max_parallel = request.max_parallel.unwrap_or(config.max_parallel).max(1);
    config.launcher = request.launcher.unwrap_or(config.launcher);

    if config.metric.is_none() {
        return Err(SweepError::Invalid(
            "no target metric: set `metric` in the spec's [sweep] table or pass --metric, such \
             as `--metric reconstruction/mse`"
                .to_owned(),
        ));
    }
    if config.strategy == Strategy::Grid {
        super::search::grid(&config.space).map_err(SweepError::Invalid)?;
    }
    if config.launcher == Launcher::Slurm && config.strategy == Strategy::Tpe {
        return Err(SweepError::Invalid(
            "the slurm launcher submits every trial at once as one job array, so it cannot run \
             TPE, which needs finished trials to propose new ones; use strategy \"grid\" or \
             \"random\""
                .to_owned(),
        ));
    }
    Ok(SweepPlan { spec, fixed: command_line.fixed, config })
}

/// Validates one trial's spec and runs one batch through its pipeline, as `pretext validate`
/// does, and returns the experiment.
///
/// # Errors
///
/// Returns the spec errors or the shape-check failure as text.
pub fn preflight_trial(
    plan: &SweepPlan,
    overrides: &[String],
    registry: &mut Registry,
) -> Result<Experiment, String> {
    let all = plan.trial_overrides(overrides);
    let experiment = spec::load(&plan.spec, &all, registry)
        .map_err(|errors| format!("invalid spec:\n{errors}"))?;
    let device = resolve(&experiment.trainer.device)?;
    let mut pipeline = Pipeline::compose(&experiment, registry, device)
        .map_err(|error| format!("cannot compose the plugins: {error}"))?;
    if pipeline.encoder_info.needs_fit {
        let dataset = std::sync::Arc::clone(&pipeline.dataset);
        pipeline.encoder.fit(&dataset).map_err(|error| format!("fit failed: {error}"))?;
    }
    check_shapes(&mut pipeline).map_err(|message| format!("shape check failed: {message}"))?;
    Ok(experiment)
}

/// Preflights every trial and returns the first trial's experiment.
///
/// # Errors
///
/// Returns [`SweepError::Invalid`] listing every bad trial with its id and values.
pub fn preflight_all(
    plan: &SweepPlan,
    trials: &[(u64, Vec<String>)],
    registry: &mut Registry,
) -> Result<Option<Experiment>, SweepError> {
    let mut first = None;
    let mut problems = Vec::new();
    for (id, overrides) in trials {
        match preflight_trial(plan, overrides, registry) {
            Ok(experiment) => {
                first.get_or_insert(experiment);
            }
            Err(message) => problems.push(format!(
                "trial {id} ({}): {}",
                if overrides.is_empty() {
                    "no swept values".to_owned()
                } else {
                    overrides.join(" ")
                },
                message.trim_end()
            )),
        }
    }
    if problems.is_empty() {
        Ok(first)
    } else {
        Err(SweepError::Invalid(format!(
            "{} of {} trials failed the preflight; no trial was started\n{}",
            problems.len(),
            trials.len(),
            problems.join("\n")
        )))
    }
}
