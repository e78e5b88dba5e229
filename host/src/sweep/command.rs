//! `pretext sweep` and `pretext sweep show`: what the command line runs, with the exit codes of
//! the binary (0 every trial finished or was pruned, 1 a trial failed or the sweep was
//! interrupted, 2 invalid input).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::journal::TrialStatus;
use super::report::table;
use super::{Sweep, SweepError, SweepRequest, default_dir, plan, read};

const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;

fn exit_code(error: &SweepError) -> u8 {
    match error {
        SweepError::Invalid(_) => EXIT_INVALID,
        _ => EXIT_FAILED,
    }
}

/// Installs SIGINT and SIGTERM handlers that set the returned flag; a second signal while the
/// first is handled ends the process at once.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let installed =
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)));
        if let Err(error) = installed {
            tracing::warn!("cannot install the handler for signal {signal}: {error}");
        }
    }
    stop
}

/// Starts a sweep (`request`) or resumes the one in `resume`, and prints the ranked table.
/// With `dry_run`, preflights and lists the trials of a new sweep without running them.
pub fn sweep_command(
    request: Option<SweepRequest>,
    resume: Option<&Path>,
    dir: Option<PathBuf>,
    dry_run: bool,
) -> u8 {
    match start_or_resume(request, resume, dir, dry_run) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            exit_code(&error)
        }
    }
}

fn start_or_resume(
    request: Option<SweepRequest>,
    resume: Option<&Path>,
    dir: Option<PathBuf>,
    dry_run: bool,
) -> Result<u8, SweepError> {
    let mut sweep = match (request, resume) {
        (_, Some(dir)) => {
            let sweep = Sweep::open(dir)?;
            println!("resuming sweep {}", dir.display());
            sweep
        }
        (Some(request), None) => {
            let plan = plan::plan(&request)?;
            if dry_run {
                return dry_run_list(&plan);
            }
            let dir = dir.unwrap_or_else(|| default_dir(&request.spec));
            println!("sweep {}", dir.display());
            Sweep::create(&dir, plan)?
        }
        (None, None) => {
            return Err(SweepError::Invalid(
                "give a spec to start a sweep, or --resume DIR to continue one".to_owned(),
            ));
        }
    };
    let stop = stop_flag();
    let summary = sweep.run(&stop)?;
    let trials = sweep.journal.trials()?;
    println!("\n{}", table(&sweep.plan, &trials));
    println!("results: {}", sweep.dir.join("results.csv").display());
    if summary.interrupted {
        eprintln!(
            "sweep interrupted; continue it with `pretext sweep --resume {}`",
            sweep.dir.display()
        );
        return Ok(EXIT_FAILED);
    }
    let failed = trials.iter().filter(|trial| !trial.status.is_done()).count();
    if failed > 0 {
        eprintln!(
            "{failed} of {} trials did not finish; rerun them with `pretext sweep --resume {}`",
            trials.len(),
            sweep.dir.display()
        );
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

/// Preflights every trial of a plan and prints them, without creating a sweep folder.
fn dry_run_list(plan: &super::SweepPlan) -> Result<u8, SweepError> {
    let config = &plan.config;
    let points = super::initial_points(config)?;
    let trials: Vec<(u64, Vec<String>)> = points
        .iter()
        .enumerate()
        .map(|(id, point)| (id as u64, config.space.overrides(point)))
        .collect();
    let mut registry = crate::plugins::Registry::discover();
    plan::preflight_all(plan, &trials, &mut registry)?;
    println!("{} trials passed the preflight", trials.len());
    for (id, overrides) in &trials {
        println!("trial {id}: {}", overrides.join(" "));
    }
    Ok(EXIT_OK)
}

/// Prints the ranked table of a sweep folder and writes its CSV and plot again.
pub fn show_command(dir: &Path) -> u8 {
    let result = read(dir).and_then(|(plan, trials)| {
        print!("{}", table(&plan, &trials));
        let csv = super::report::csv(&plan, &trials);
        let path = dir.join("results.csv");
        std::fs::write(&path, csv).map_err(|error| super::io_error(&path, &error))?;
        match super::report::plot(&plan, &trials) {
            Ok(png) => {
                let path = dir.join("results.png");
                std::fs::write(&path, png).map_err(|error| super::io_error(&path, &error))?;
            }
            Err(message) => eprintln!("warning: cannot draw the plot: {message}"),
        }
        let counts: Vec<String> = [
            TrialStatus::Finished,
            TrialStatus::Pruned,
            TrialStatus::Failed,
            TrialStatus::Killed,
            TrialStatus::Running,
            TrialStatus::Pending,
        ]
        .iter()
        .map(|status| {
            let count = trials.iter().filter(|trial| trial.status == *status).count();
            format!("{count} {}", status.as_str())
        })
        .collect();
        println!("\n{} trials: {}", trials.len(), counts.join(", "));
        Ok(())
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            eprintln!("error: {error}");
            exit_code(&error)
        }
    }
}
