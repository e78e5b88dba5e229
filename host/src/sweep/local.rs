//! The local launcher: up to `max_parallel` trial processes on this machine, CPU threads divided
//! between them, CUDA devices handed out round-robin, and pruning by SIGTERM.
//!
//! Every trial process is spawned from the sweep's main thread with `PR_SET_PDEATHSIG`, so when
//! the sweep process dies, even by SIGKILL, its trials get SIGTERM and record their runs as
//! KILLED; the journal still shows them running, and `--resume` runs them again.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::PruneRule;
use super::journal::{Trial, TrialStatus};
use super::prune::should_prune;
use super::trial::{self, Exit};
use super::{Sweep, SweepError, SweepSummary};
use crate::spec::DeviceRequest;
use crate::store::Store;

/// How often running trials are checked.
const POLL: Duration = Duration::from_millis(100);
/// How long trials get to stop after SIGTERM when the sweep is interrupted.
const STOP_GRACE: Duration = Duration::from_secs(20);

struct Running {
    trial: Trial,
    child: Child,
    slot: usize,
    store: Option<Store>,
    run_id: Option<String>,
    pruned: bool,
}

/// The per-trial overrides that the launcher adds: threads and, with several GPUs, a device.
fn launcher_overrides(sweep: &Sweep, slot: usize, cuda_devices: i64) -> Vec<String> {
    let config = &sweep.plan.config;
    let threads = if config.threads_per_trial > 0 {
        config.threads_per_trial
    } else {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        (cores / config.max_parallel).max(1)
    };
    let mut extra = vec![format!("trainer.threads={threads}")];
    if cuda_devices > 1 {
        extra.push(format!("trainer.device=\"cuda:{}\"", slot as i64 % cuda_devices));
    }
    extra
}

/// Whether trials should be spread over the CUDA devices: the first trial's spec asks for
/// `auto` or `cuda` without an index, and the sweep does not set the device itself.
fn cuda_devices(sweep: &mut Sweep) -> i64 {
    if sweep.plan.sets("trainer.device") {
        return 0;
    }
    let Ok(experiment) =
        crate::spec::load(&sweep.plan.spec, &sweep.plan.fixed, &mut sweep.registry)
    else {
        return 0;
    };
    match experiment.trainer.device {
        DeviceRequest::Auto | DeviceRequest::Cuda(None) => tch::Cuda::device_count(),
        _ => 0,
    }
}

fn spawn(sweep: &Sweep, trial: &Trial, extra: &[String]) -> Result<Child, SweepError> {
    std::fs::create_dir_all(&trial.dir).map_err(|error| super::io_error(&trial.dir, &error))?;
    let log_path = trial.dir.join("trial.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|error| super::io_error(&log_path, &error))?;
    let log_err = log.try_clone().map_err(|error| super::io_error(&log_path, &error))?;
    let mut command = Command::new(&sweep.binary);
    command
        .args(trial::arguments(&sweep.plan, trial, extra))
        .env_remove("PRETEXT_RUN_ROOT")
        .env_remove(super::parent::PARENT_RUN_VARIABLE)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(parent) = &sweep.parent {
        command.env(super::parent::PARENT_RUN_VARIABLE, &parent.run_id);
    }
    // SAFETY: the closure runs in the forked child before exec and calls only prctl, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|error| {
        SweepError::Failed(format!("cannot start {}: {error}", sweep.binary.display()))
    })
}

fn terminate(child: &Child) {
    // SAFETY: kill only sends a signal; the pid is our own child, which has not been reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Runs the pending trials and returns when every one has ended or `stop` was set.
pub fn run(sweep: &mut Sweep, stop: &AtomicBool) -> Result<SweepSummary, SweepError> {
    let cuda = cuda_devices(sweep);
    let max_parallel = sweep.plan.config.max_parallel;
    let mut running: Vec<Running> = Vec::new();
    let mut started = 0;
    let mut exhausted = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            stop_all(sweep, &mut running)?;
            return Ok(SweepSummary { started, interrupted: true });
        }
        while !exhausted && running.len() < max_parallel {
            let Some(trial) = sweep.next_trial()? else {
                exhausted = true;
                break;
            };
            let slot = (0..max_parallel)
                .find(|slot| running.iter().all(|other| other.slot != *slot))
                .expect("a slot is free");
            let extra = launcher_overrides(sweep, slot, cuda);
            let child = spawn(sweep, &trial, &extra)?;
            sweep.journal.mark_running(trial.id, Some(child.id()), None)?;
            let trial = sweep.journal.trial(trial.id)?.expect("the trial was just updated");
            println!("trial {} started: {}", trial.id, trial.overrides.join(" "));
            started += 1;
            running.push(Running { trial, child, slot, store: None, run_id: None, pruned: false });
        }
        if running.is_empty() && exhausted {
            return Ok(SweepSummary { started, interrupted: false });
        }
        poll(sweep, &mut running)?;
        std::thread::sleep(POLL);
    }
}

/// Collects ended trials and applies the pruning rule to the running ones.
fn poll(sweep: &Sweep, running: &mut Vec<Running>) -> Result<(), SweepError> {
    let mut index = 0;
    while index < running.len() {
        let entry = &mut running[index];
        let status = entry.child.try_wait().map_err(|error| {
            SweepError::Failed(format!("cannot wait for trial {}: {error}", entry.trial.id))
        })?;
        match status {
            Some(status) => {
                let exit = if entry.pruned {
                    Exit::Pruned
                } else if let Some(signal) = status.signal() {
                    Exit::Signal(signal)
                } else {
                    Exit::Code(status.code().unwrap_or(-1))
                };
                let entry = running.swap_remove(index);
                trial::record_end(sweep, &entry.trial, exit)?;
            }
            None => {
                track(sweep, entry)?;
                index += 1;
            }
        }
    }
    if sweep.plan.config.prune.rule != PruneRule::None {
        prune(sweep, running)?;
    }
    Ok(())
}

/// Finds the trial's run and records its reports of the target metric so far.
fn track(sweep: &Sweep, entry: &mut Running) -> Result<(), SweepError> {
    if entry.store.is_none() {
        entry.store = Store::open(&entry.trial.dir).ok();
    }
    let Some(store) = &entry.store else {
        return Ok(());
    };
    if entry.run_id.is_none()
        && let Some(run) = trial::find_run(store, entry.trial.started_at.unwrap_or(0))
    {
        sweep.journal.set_run(entry.trial.id, &run.id, &run.dir)?;
        entry.run_id = Some(run.id);
    }
    if sweep.plan.config.prune.rule == PruneRule::None {
        return Ok(());
    }
    if let Some(run_id) = &entry.run_id {
        let reports = trial::reports(store, run_id, sweep.plan.metric());
        if reports.len() > entry.trial.reports.len() {
            sweep.journal.set_reports(entry.trial.id, &reports)?;
            entry.trial.reports = reports;
        }
    }
    Ok(())
}

fn prune(sweep: &Sweep, running: &mut [Running]) -> Result<(), SweepError> {
    let direction = sweep.plan.config.direction;
    let trials = sweep.journal.trials()?;
    let losses =
        |reports: &[f64]| reports.iter().map(|value| direction.loss(*value)).collect::<Vec<_>>();
    for entry in running.iter_mut().filter(|entry| !entry.pruned) {
        let mine = losses(&entry.trial.reports);
        let others: Vec<Vec<f64>> = trials
            .iter()
            .filter(|trial| trial.id != entry.trial.id && trial.status != TrialStatus::Pending)
            .map(|trial| losses(&trial.reports))
            .collect();
        let others: Vec<&[f64]> = others.iter().map(Vec::as_slice).collect();
        if should_prune(&sweep.plan.config.prune, &mine, &others) {
            println!("trial {} pruned after {} reports", entry.trial.id, mine.len());
            tracing::info!(trial = entry.trial.id, reports = mine.len(), "pruning a trial");
            terminate(&entry.child);
            entry.pruned = true;
        }
    }
    Ok(())
}

/// Sends SIGTERM to every running trial, waits for them, and records them as KILLED.
fn stop_all(sweep: &Sweep, running: &mut Vec<Running>) -> Result<(), SweepError> {
    for entry in running.iter() {
        terminate(&entry.child);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for mut entry in running.drain(..) {
        while entry.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if entry.child.try_wait().ok().flatten().is_none() {
            let _ = entry.child.kill();
            let _ = entry.child.wait();
        }
        let exit = Exit::Killed("the sweep was interrupted".to_owned());
        trial::record_end(sweep, &entry.trial, exit)?;
    }
    Ok(())
}
