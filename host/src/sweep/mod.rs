//! Sweeps: a space of specs searched by grid, random sampling or TPE, each trial run as its own
//! `pretext run` process by a local or a Slurm launcher, and a journal that makes the sweep
//! resumable.
//!
//! A sweep folder contains `journal.db` (see [`journal`]), `sweep.lock`, one folder per trial
//! under `trials/` (each the run root of that trial's runs, with `trial.log`), and, once trials
//! have ended, `results.csv` and `results.png`.

mod command;
pub mod config;
pub mod journal;
mod local;
pub mod parent;
pub mod plan;
pub mod prune;
pub mod report;
pub mod search;
mod slurm;
pub mod space;
mod trial;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub use command::{show_command, sweep_command};
pub use config::{Direction, Launcher, Strategy, SweepConfig};
use journal::{Journal, Trial, TrialStatus};
pub use plan::{SweepError, SweepPlan, SweepRequest};
use search::Observation;

use crate::plugins::Registry;

/// Key of the sweep plan (JSON) in the journal's `meta` table.
const PLAN_KEY: &str = "plan";

/// An open sweep folder: its plan, journal and lock.
pub struct Sweep {
    pub dir: PathBuf,
    pub plan: SweepPlan,
    pub journal: Journal,
    /// The `pretext` binary that runs the trials.
    pub binary: PathBuf,
    registry: Registry,
    /// The sweep's MLflow run, when the spec tracks to MLflow; trials are nested under it.
    parent: Option<parent::ParentRun>,
    /// Held for the sweep's lifetime so that two processes never drive one sweep folder.
    _lock: File,
}

/// How a sweep ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    /// Trials this process started.
    pub started: usize,
    /// Whether a signal stopped the sweep before every trial ended.
    pub interrupted: bool,
}

fn io_error(path: &Path, error: &std::io::Error) -> SweepError {
    SweepError::Failed(format!("cannot write {}: {error}", path.display()))
}

fn lock(dir: &Path) -> Result<File, SweepError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("sweep.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| io_error(&path, &error))?;
    // SAFETY: `file` owns an open descriptor for the duration of the call; flock only reads it.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return Err(SweepError::Invalid(format!(
            "sweep {} is being run by another process; wait for it or stop it first",
            dir.display()
        )));
    }
    Ok(file)
}

impl Sweep {
    /// Creates a sweep folder for `plan`, writes the journal and adds the trials known up front.
    ///
    /// # Errors
    ///
    /// Fails when `dir` already contains a sweep, cannot be written, or a trial fails the preflight.
    pub fn create(dir: &Path, plan: SweepPlan) -> Result<Self, SweepError> {
        if Journal::path_in(dir).exists() {
            return Err(SweepError::Invalid(format!(
                "{} already contains a sweep; resume it with `pretext sweep --resume {}` or choose \
                 another --dir",
                dir.display(),
                dir.display()
            )));
        }
        let points = initial_points(&plan.config)?;
        let trials: Vec<(u64, Vec<String>)> = points
            .iter()
            .enumerate()
            .map(|(id, point)| (id as u64, plan.config.space.overrides(point)))
            .collect();
        // The preflight runs before the folder exists, so a rejected sweep leaves nothing behind.
        let mut registry = Registry::discover();
        plan::preflight_all(&plan, &trials, &mut registry)?;
        std::fs::create_dir_all(dir.join("trials")).map_err(|error| io_error(dir, &error))?;
        let sweep = Self::open_with(dir, plan, registry)?;
        let text = serde_json::to_string_pretty(&sweep.plan).expect("a plan serializes");
        sweep.journal.set_meta(PLAN_KEY, &text)?;
        for ((id, overrides), point) in trials.iter().zip(&points) {
            sweep.journal.add_trial(*id, overrides, point, &sweep.trial_dir(*id))?;
        }
        Ok(sweep)
    }

    /// Opens an existing sweep folder.
    ///
    /// # Errors
    ///
    /// Fails when `dir` contains no sweep journal or its plan cannot be read.
    pub fn open(dir: &Path) -> Result<Self, SweepError> {
        if !Journal::path_in(dir).exists() {
            return Err(SweepError::Invalid(format!(
                "{} contains no sweep (journal.db not found)",
                dir.display()
            )));
        }
        let (plan, _) = read(dir)?;
        Self::open_with(dir, plan, Registry::discover())
    }

    fn open_with(dir: &Path, plan: SweepPlan, registry: Registry) -> Result<Self, SweepError> {
        let lock = lock(dir)?;
        let journal = Journal::open(dir)?;
        let binary = std::env::current_exe().map_err(|error| {
            SweepError::Failed(format!("cannot find the pretext binary: {error}"))
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            plan,
            journal,
            binary,
            registry,
            parent: None,
            _lock: lock,
        })
    }

    /// The folder of trial `id`, stable across resumes.
    pub fn trial_dir(&self, id: u64) -> PathBuf {
        self.dir.join("trials").join(format!("{id:04}"))
    }

    /// The observations TPE learns from: finished trials, and pruned trials at their last report.
    fn history(&self, trials: &[Trial]) -> Vec<Observation> {
        trials
            .iter()
            .filter(|trial| trial.status.is_done())
            .filter_map(|trial| {
                let value = trial.value?;
                Some(Observation {
                    point: trial.point.clone(),
                    loss: self.plan.config.direction.loss(value),
                })
            })
            .collect()
    }

    /// The next trial to start: the pending trial with the lowest id, or for TPE a new point
    /// while fewer than `trials` exist. A new point that fails the preflight is recorded as
    /// FAILED and the next one is proposed.
    fn next_trial(&mut self) -> Result<Option<Trial>, SweepError> {
        loop {
            let trials = self.journal.trials()?;
            if let Some(trial) = trials.iter().find(|trial| trial.status == TrialStatus::Pending) {
                return Ok(Some(trial.clone()));
            }
            let config = &self.plan.config;
            if config.strategy != Strategy::Tpe || trials.len() as u64 >= config.trials {
                return Ok(None);
            }
            let id = trials.len() as u64;
            let history = self.history(&trials);
            let point = search::propose(
                &config.space,
                config.strategy,
                config.seed,
                config.startup_trials,
                id,
                &history,
            );
            let overrides = config.space.overrides(&point);
            let trial = self.journal.add_trial(id, &overrides, &point, &self.trial_dir(id))?;
            match plan::preflight_trial(&self.plan, &overrides, &mut self.registry) {
                Ok(_) => return Ok(Some(trial)),
                Err(message) => {
                    let message = format!("preflight failed: {message}");
                    eprintln!("trial {id} ({}): {message}", overrides.join(" "));
                    self.journal.finish(id, TrialStatus::Failed, None, Some(&message))?;
                }
            }
        }
    }

    /// Runs every trial that has not ended for good, with the plan's launcher.
    ///
    /// # Errors
    ///
    /// Fails when the journal cannot be written or the launcher cannot start trials at all.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<SweepSummary, SweepError> {
        let reset = self.journal.reset_unfinished()?;
        if reset > 0 {
            tracing::info!(sweep = %self.dir.display(), trials = reset, "trials to run again");
        }
        let name =
            self.dir.file_name().map_or_else(|| "sweep".into(), |name| name.to_string_lossy());
        let name = format!("sweep {name}");
        self.parent = parent::start(&self.plan, &self.journal, &mut self.registry, &name)
            .map_err(SweepError::Failed)?;
        let summary = match self.plan.config.launcher {
            Launcher::Local => local::run(self, stop)?,
            Launcher::Slurm => slurm::run(self, stop)?,
        };
        report::write_results(self)?;
        if let Some(parent) = &self.parent {
            let direction = self.plan.config.direction;
            let best = self
                .journal
                .trials()?
                .iter()
                .filter(|trial| trial.status == TrialStatus::Finished)
                .filter_map(|trial| trial.value)
                .min_by(|a, b| direction.loss(*a).total_cmp(&direction.loss(*b)));
            parent.finish(self.plan.metric(), best, summary.interrupted);
        }
        Ok(summary)
    }
}

/// The default sweep folder: `sweeps/NAME-YYYYmmdd-HHMMSS` in the working directory.
pub fn default_dir(spec: &Path) -> PathBuf {
    let stem = spec.file_stem().map_or_else(|| "sweep".into(), |stem| stem.to_string_lossy());
    let time = chrono::Local::now().format("%Y%m%d-%H%M%S");
    PathBuf::from("sweeps").join(format!("{stem}-{time}"))
}

/// Reads a sweep folder's plan and trials without taking its lock, so that a running sweep can
/// be inspected.
///
/// # Errors
///
/// Fails when `dir` contains no sweep journal or its plan cannot be read.
pub fn read(dir: &Path) -> Result<(SweepPlan, Vec<Trial>), SweepError> {
    if !Journal::path_in(dir).exists() {
        return Err(SweepError::Invalid(format!(
            "{} contains no sweep (journal.db not found)",
            dir.display()
        )));
    }
    let journal = Journal::open(dir)?;
    let text = journal.meta(PLAN_KEY)?.ok_or_else(|| {
        SweepError::Failed(format!("the journal in {} has no sweep plan", dir.display()))
    })?;
    let plan = serde_json::from_str(&text).map_err(|error| {
        SweepError::Failed(format!("invalid sweep plan in {}: {error}", dir.display()))
    })?;
    Ok((plan, journal.trials()?))
}

/// The points known before any trial runs: the whole grid, every random trial, or TPE's random
/// startup trials.
///
/// # Errors
///
/// Returns [`SweepError::Invalid`] when grid search meets a continuous dimension.
pub fn initial_points(config: &SweepConfig) -> Result<Vec<Vec<f64>>, SweepError> {
    let count = match config.strategy {
        Strategy::Grid => return search::grid(&config.space).map_err(SweepError::Invalid),
        Strategy::Random => config.trials,
        Strategy::Tpe => config.startup_trials.min(config.trials),
    };
    Ok((0..count)
        .map(|index| search::propose(&config.space, Strategy::Random, config.seed, 0, index, &[]))
        .collect())
}
