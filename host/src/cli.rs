//! Command-line parsing and the commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use pretext::device::resolve;
use pretext::plugins::Registry;
use pretext::run::{RunOutcome, execute};
use pretext::spec::{self, Experiment};
use pretext::store::{RunStatus, Store};
use pretext::train::Pipeline;
use pretext::train::preflight::check_shapes;

/// Exit code of a run that failed or was interrupted.
const EXIT_FAILED: u8 = 1;
/// Exit code of invalid input.
const EXIT_INVALID: u8 = 2;
/// Exit code of a finished run, or a `pretext sync`, that left MLflow records undelivered.
const EXIT_UNDELIVERED: u8 = pretext::run::EXIT_TRACKING_INCOMPLETE;

#[derive(Parser)]
#[command(
    name = "pretext",
    version,
    about = "Self-supervised representation learning from plugins"
)]
struct Cli {
    /// Folder of the run store (database and one folder per run).
    #[arg(long, global = true, env = "PRETEXT_RUN_ROOT", default_value = "runs")]
    run_root: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate the experiment in SPEC, recording the run.
    Run {
        /// Experiment spec (TOML).
        #[arg(required_unless_present = "resume")]
        spec: Option<PathBuf>,
        /// Overrides such as `trainer.lr=3e-4 encoder.latent=8`.
        overrides: Vec<String>,
        /// Continue the FAILED or KILLED run with this id (or unique prefix) from its latest
        /// checkpoint, with the spec it was started with.
        #[arg(long, conflicts_with_all = ["spec", "overrides"])]
        resume: Option<String>,
    },
    /// Check SPEC and run one tiny batch through the composed plugins, without recording a run.
    Validate { spec: PathBuf, overrides: Vec<String> },
    /// List the plugins found, or show one plugin's parameters.
    Plugins {
        #[command(subcommand)]
        command: Option<PluginsCommand>,
    },
    /// Write a finished run's embeddings of one split as a `.npy` file.
    Embed {
        /// Run id (or a unique prefix).
        run: String,
        /// Which split to embed.
        #[arg(long, value_parser = ["train", "test"], default_value = "test")]
        split: String,
        /// Output file for the `[samples, dim]` float32 array.
        #[arg(long)]
        out: PathBuf,
        /// Also write the split's int64 labels here.
        #[arg(long)]
        labels_out: Option<PathBuf>,
    },
    /// List recorded runs, or show one run.
    Runs {
        #[command(subcommand)]
        command: Option<RunsCommand>,
    },
    /// Send runs to an MLflow server: what their spool still holds, or, for runs recorded only
    /// locally, everything. A run already delivered to that server is not sent again.
    Sync {
        /// Run ids (or unique prefixes); all ended runs when none is given.
        runs: Vec<String>,
        /// MLflow server for runs without a spool (default MLFLOW_TRACKING_URI, then the run's
        /// `tracking.uri`). A spooled run goes to the server it was recorded for.
        #[arg(long)]
        uri: Option<String>,
        /// MLflow experiment for runs without a spool (default the run's `tracking.experiment`,
        /// then MLFLOW_EXPERIMENT_NAME, then the run's experiment name).
        #[arg(long)]
        experiment: Option<String>,
        /// Seconds one request may keep failing before the run is left for a later sync.
        #[arg(long, default_value_t = 60.0)]
        retry_seconds: f64,
    },
    /// Run a sweep of trials over SPEC, resume one, or show its results.
    Sweep(Box<SweepArgs>),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// Experiment spec (TOML), with an optional `[sweep]` table.
    #[arg(required_unless_present = "resume")]
    spec: Option<PathBuf>,
    /// Overrides; `key=a,b` sweeps `key` over the values (quote a value that contains a comma,
    /// as in `key='a,b'`), `key=a` sets it in every trial.
    overrides: Vec<String>,
    /// Continue the sweep in this folder: finished and pruned trials are kept, the others run.
    #[arg(long, conflicts_with_all = ["spec", "overrides"])]
    resume: Option<PathBuf>,
    /// Sweep folder (default: sweeps/SPEC-NAME-TIME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Target metric, such as `reconstruction/mse` (default: `[sweep] metric`).
    #[arg(long)]
    metric: Option<String>,
    /// Maximize the target metric instead of minimizing it.
    #[arg(long)]
    maximize: bool,
    /// Search strategy (default: `[sweep] strategy`, else grid).
    #[arg(long, value_parser = ["grid", "random", "tpe"])]
    strategy: Option<String>,
    /// Number of trials for random search and TPE.
    #[arg(long)]
    trials: Option<u64>,
    /// Trials that run at once.
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Where trials run.
    #[arg(long, value_parser = ["local", "slurm"])]
    launcher: Option<String>,
    /// Seed of random search and TPE.
    #[arg(long)]
    seed: Option<u64>,
    /// Preflight and list the trials without running them or creating a sweep folder.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Print the ranked trials of a sweep folder and write its CSV and plot again.
    Show { dir: PathBuf },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Show a plugin's description and parameter schema.
    Show { name: String },
    /// Write a new out-of-tree plugin crate that builds against plugin-api.
    New {
        /// Plugin name, as specs will write it (lowercase, digits and `_`).
        name: String,
        /// Plugin kind.
        #[arg(long, value_parser = ["dataset", "encoder", "objective", "evaluator"])]
        kind: String,
        /// Folder to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// `pretext-plugin-api` dependency as a TOML value, such as `{ path = "../plugin-api" }`.
        #[arg(long)]
        api_dependency: Option<String>,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Show a run's status, parameters, tags and latest metrics (ID may be a prefix).
    Show { id: String },
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_INVALID } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run { resume: Some(run), .. } => resume_command(&run, &cli.run_root),
        Command::Run { spec: Some(spec), overrides, resume: None } => {
            run_command(&spec, &overrides, &cli.run_root)
        }
        Command::Run { spec: None, resume: None, .. } => {
            eprintln!("error: give a spec to run, or --resume RUN");
            ExitCode::from(EXIT_INVALID)
        }
        Command::Validate { spec, overrides } => validate_command(&spec, &overrides),
        Command::Plugins { command } => plugins_command(command),
        Command::Runs { command } => runs_command(command, &cli.run_root),
        Command::Sync { runs, uri, experiment, retry_seconds } => {
            let options = pretext::tracking::sync::SyncOptions {
                uri,
                experiment,
                retry_budget: std::time::Duration::from_secs_f64(retry_seconds.max(0.0)),
                request_timeout: std::time::Duration::from_secs(30),
            };
            sync_command(&cli.run_root, &runs, &options)
        }
        Command::Embed { run, split, out, labels_out } => {
            embed_command(&cli.run_root, &run, &split, &out, labels_out.as_deref())
        }
        Command::Sweep(args) => ExitCode::from(sweep_command(*args)),
    }
}

fn load_experiment(
    spec_path: &Path,
    overrides: &[String],
) -> Result<(Experiment, Registry), ExitCode> {
    let mut registry = Registry::discover();
    match spec::load(spec_path, overrides, &mut registry) {
        Ok(experiment) => Ok((experiment, registry)),
        Err(errors) => {
            eprintln!("error: invalid spec\n{errors}");
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}

fn run_command(spec_path: &Path, overrides: &[String], run_root: &Path) -> ExitCode {
    let (experiment, registry) = match load_experiment(spec_path, overrides) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let stop = stop_flag();
    report_outcome(execute(&experiment, &registry, run_root, &stop))
}

fn resume_command(run: &str, run_root: &Path) -> ExitCode {
    let stop = stop_flag();
    report_outcome(pretext::run::resume(run_root, run, &stop))
}

/// A flag that the first SIGINT or SIGTERM sets, asking the run to stop and be recorded as
/// KILLED; a second signal, while the first is still being handled, exits at once.
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

fn report_outcome(result: Result<RunOutcome, pretext::run::RunSetupError>) -> ExitCode {
    match result {
        Ok(outcome) => {
            print_summary(&outcome);
            if outcome.status != RunStatus::Finished {
                ExitCode::from(EXIT_FAILED)
            } else if outcome.tracking_incomplete() {
                ExitCode::from(EXIT_UNDELIVERED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(
            pretext::run::RunSetupError::Device(message)
            | pretext::run::RunSetupError::Tracking(message)
            | pretext::run::RunSetupError::Resume(message),
        ) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn print_summary(outcome: &RunOutcome) {
    println!("run {} {} in {:.1} s", outcome.run_id, outcome.status.as_str(), outcome.seconds);
    println!("  folder: {}", outcome.run_dir.display());
    if let Some(train) = outcome.train.as_ref().filter(|train| train.steps > 0) {
        println!("  trained {} steps, {:.1} steps/s", train.steps, train.steps_per_second());
    }
    if let Some(error) = &outcome.error {
        eprintln!("error: {error}");
    }
    if let Some(report) = &outcome.tracking {
        print_delivery(&outcome.run_id, outcome.status, report);
    }
    if !outcome.metrics.is_empty() {
        let width = outcome.metrics.iter().map(|(key, _)| key.len()).max().unwrap_or(6).max(6);
        println!("\n{:<width$}  value", "metric");
        for (key, value) in &outcome.metrics {
            println!("{key:<width$}  {value:.4}");
        }
    }
}

/// Prints where the run went on MLflow and what did not arrive there. A finished run with an
/// incomplete delivery gets an `error:` line, because it exits with [`EXIT_UNDELIVERED`].
fn print_delivery(run_id: &str, status: RunStatus, report: &pretext::tracking::WriterReport) {
    if let Some(remote) = &report.remote_run_id {
        println!("  mlflow: run {remote} on {}", report.uri);
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    let Some(problem) = delivery_problem(run_id, report) else {
        return;
    };
    if status == RunStatus::Finished {
        eprintln!("error: training finished but tracking delivery is incomplete: {problem}");
    } else {
        eprintln!("warning: tracking delivery is incomplete: {problem}");
    }
}

/// Describes what of a run the MLflow server lacks, or `None` when it received everything.
fn delivery_problem(run_id: &str, report: &pretext::tracking::WriterReport) -> Option<String> {
    if !report.complete {
        return Some(format!(
            "{} records wait in the spool {}; send them with `pretext sync {run_id}`",
            report.pending,
            report.spool_dir.display()
        ));
    }
    if !report.errors.is_empty() {
        return Some(format!(
            "the MLflow server rejected {} requests (errors above), so their records are only \
             in the local store",
            report.errors.len()
        ));
    }
    None
}

fn sync_command(
    run_root: &Path,
    runs: &[String],
    options: &pretext::tracking::sync::SyncOptions,
) -> ExitCode {
    use pretext::tracking::sync::{SyncOutcome, mark_stale_runs, sync_run};
    let store = match Store::open(run_root) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match mark_stale_runs(&store) {
        Ok(lines) => lines.iter().for_each(|line| println!("{line}")),
        Err(error) => eprintln!("warning: cannot check for stale runs: {error}"),
    }
    let selected = if runs.is_empty() {
        store.list_runs().map(|mut all| {
            all.reverse();
            all
        })
    } else {
        runs.iter().map(|prefix| store.find_run(prefix)).collect()
    };
    let selected = match selected {
        Ok(selected) => selected,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // A store error wins over an incomplete delivery.
    let mut failed = false;
    let mut undelivered = false;
    for run in &selected {
        match sync_run(&store, run, options) {
            Ok(SyncOutcome::AlreadySynced { uri, remote_run_id }) => {
                println!("{}: already on {uri} as run {remote_run_id}; nothing sent", run.id);
            }
            Ok(SyncOutcome::Skipped(reason)) => {
                undelivered |= !runs.is_empty();
                println!("{}: skipped: {reason}", run.id);
            }
            Ok(SyncOutcome::Sent(report)) => {
                let remote = report.remote_run_id.as_deref().unwrap_or("-");
                let complete = pretext::tracking::fully_delivered(&report);
                println!(
                    "{}: {} requests sent to {} (run {remote}){}",
                    run.id,
                    report.sent,
                    report.uri,
                    if complete { "; complete" } else { "" }
                );
                for error in &report.errors {
                    eprintln!("error: {error}");
                }
                if let Some(problem) = delivery_problem(&run.id, &report) {
                    undelivered = true;
                    eprintln!("error: {}: tracking delivery is incomplete: {problem}", run.id);
                }
            }
            Err(error) => {
                failed = true;
                eprintln!("error: {}: {error}", run.id);
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else if undelivered {
        ExitCode::from(EXIT_UNDELIVERED)
    } else {
        ExitCode::SUCCESS
    }
}

fn validate_command(spec_path: &Path, overrides: &[String]) -> ExitCode {
    let (experiment, registry) = match load_experiment(spec_path, overrides) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let device = match resolve(&experiment.trainer.device) {
        Ok(device) => device,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut pipeline = match Pipeline::compose(&experiment, &registry, device) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if pipeline.encoder_info.needs_fit {
        let dataset = Arc::clone(&pipeline.dataset);
        if let Err(error) = pipeline.encoder.fit(&dataset) {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    match check_shapes(&mut pipeline) {
        Ok(()) => {
            println!("{}: valid; one batch ran through the pipeline", spec_path.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: shape check failed: {message}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn plugins_command(command: Option<PluginsCommand>) -> ExitCode {
    let registry = Registry::discover();
    match command {
        None => {
            println!("{:<10} {:<18} {:<8} {:<20} description", "kind", "name", "version", "source");
            for plugin in registry.plugins() {
                println!(
                    "{:<10} {:<18} {:<8} {:<20} {}",
                    plugin.kind.as_str(),
                    plugin.name,
                    plugin.version,
                    plugin.library.source.as_str(),
                    plugin.description
                );
            }
            for warning in registry.warnings() {
                eprintln!("warning: skipped {}: {}", warning.path.display(), warning.message);
            }
            ExitCode::SUCCESS
        }
        Some(PluginsCommand::New { name, kind, dir, api_dependency }) => {
            new_plugin(&name, &kind, dir, api_dependency)
        }
        Some(PluginsCommand::Show { name }) => {
            let found = registry.find_any(&name);
            if found.is_empty() {
                let names: Vec<&str> =
                    registry.plugins().iter().map(|plugin| plugin.name.as_str()).collect();
                eprintln!("error: no plugin named `{name}`; available: {}", names.join(", "));
                return ExitCode::from(EXIT_INVALID);
            }
            for plugin in found {
                println!(
                    "{} `{}` {} ({})",
                    plugin.kind, plugin.name, plugin.version, plugin.description
                );
                println!(
                    "  library: {} ({})",
                    plugin.library.path.display(),
                    plugin.library.source.as_str()
                );
                println!(
                    "  built against plugin-api {}, libtorch {}",
                    plugin.library.api_version, plugin.library.libtorch_version
                );
                if plugin.params.is_empty() {
                    println!("  no parameters");
                }
                for param in &plugin.params {
                    let default = match param.default.as_ref().into_option() {
                        Some(value) => pretext::spec::resolve::format_value(value),
                        None => "(required)".to_owned(),
                    };
                    println!(
                        "  {:<16} {:<18} default {:<12} {}",
                        param.name,
                        param.ty.as_str(),
                        default,
                        param.doc
                    );
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn format_time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn runs_command(command: Option<RunsCommand>, run_root: &Path) -> ExitCode {
    let store = match Store::open(run_root) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = match command {
        None => list_runs(&store),
        Some(RunsCommand::Show { id }) => show_run(&store, &id),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            error @ (pretext::store::StoreError::RunNotFound(_)
            | pretext::store::StoreError::AmbiguousRun { .. }),
        ) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn headline(metrics: &[(String, f64)]) -> String {
    metrics
        .iter()
        .filter(|(key, _)| !key.starts_with("train/"))
        .take(3)
        .map(|(key, value)| format!("{key}={value:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_runs(store: &Store) -> Result<(), pretext::store::StoreError> {
    println!(
        "{:<32}  {:<22} {:<9} {:<19} {:>9}  metrics",
        "id", "experiment", "status", "start", "duration"
    );
    for run in store.list_runs()? {
        let duration = run
            .end_time
            .map(|end| format!("{:.1}s", (end - run.start_time) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let metrics = store.latest_metrics(&run.id)?;
        println!(
            "{:<32}  {:<22} {:<9} {:<19} {:>9}  {}",
            run.id,
            run.experiment,
            run.status,
            format_time(run.start_time),
            duration,
            headline(&metrics)
        );
    }
    Ok(())
}

fn show_run(store: &Store, prefix: &str) -> Result<(), pretext::store::StoreError> {
    let run = store.find_run(prefix)?;
    println!("run {} ({})", run.id, run.experiment);
    println!("  status: {}", run.status);
    println!("  start:  {}", format_time(run.start_time));
    if let Some(end) = run.end_time {
        println!(
            "  end:    {} ({:.1} s)",
            format_time(end),
            (end - run.start_time) as f64 / 1000.0
        );
    }
    println!("  folder: {}", run.dir.display());
    if let Some(error) = store.run_error(&run.id)? {
        println!("  error:  {error}");
    }
    println!("\nparams");
    for (key, value) in store.params(&run.id)? {
        println!("  {key} = {value}");
    }
    println!("\ntags");
    for (key, value) in store.tags(&run.id)? {
        println!("  {key} = {value}");
    }
    println!("\nmetrics (latest value)");
    for (key, value) in store.latest_metrics(&run.id)? {
        println!("  {key} = {value}");
    }
    Ok(())
}

fn embed_command(
    run_root: &Path,
    run: &str,
    split: &str,
    out: &Path,
    labels_out: Option<&Path>,
) -> ExitCode {
    match embed(run_root, run, split, out, labels_out) {
        Ok(shape) => {
            println!("wrote {} ({} x {})", out.display(), shape.0, shape.1);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn embed(
    run_root: &Path,
    run: &str,
    split: &str,
    out: &Path,
    labels_out: Option<&Path>,
) -> Result<(i64, i64), String> {
    let store = Store::open(run_root).map_err(|error| error.to_string())?;
    let row = store.find_run(run).map_err(|error| error.to_string())?;
    let mut registry = Registry::discover();
    let experiment = spec::load(&row.dir.join("spec.toml"), &[], &mut registry)
        .map_err(|errors| format!("the run's spec no longer validates:\n{errors}"))?;
    let device = resolve(&experiment.trainer.device)?;
    let pipeline =
        Pipeline::compose(&experiment, &registry, device).map_err(|error| error.to_string())?;
    let checkpoint = row.dir.join("checkpoint.safetensors");
    if checkpoint.exists() {
        pretext::run::load_checkpoint(&pipeline, &checkpoint)?;
    } else if !pipeline.named_parameters().map_err(|error| error.to_string())?.is_empty() {
        return Err(format!(
            "run {} ({}) has no checkpoint at {}, so its trained weights are unknown",
            row.id,
            row.status,
            checkpoint.display()
        ));
    }
    let split = if split == "train" {
        pretext_plugin_api::Split::Train
    } else {
        pretext_plugin_api::Split::Test
    };
    let evaluation = pretext::train::evaluate::Evaluation::new(&pipeline);
    let (embeddings, labels) = evaluation.split(split).map_err(|error| error.to_string())?;
    embeddings
        .write_npy(out)
        .map_err(|error| format!("cannot write {}: {error}", out.display()))?;
    if let Some(path) = labels_out {
        let labels = labels.ok_or_else(|| "the dataset has no labels to write".to_owned())?;
        labels
            .write_npy(path)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    let size = embeddings.size();
    Ok((size[0], size.get(1).copied().unwrap_or(1)))
}

fn new_plugin(
    name: &str,
    kind: &str,
    dir: Option<PathBuf>,
    api_dependency: Option<String>,
) -> ExitCode {
    use pretext_plugin_api::PluginKind;
    let kind = match kind {
        "dataset" => PluginKind::Dataset,
        "encoder" => PluginKind::Encoder,
        "objective" => PluginKind::Objective,
        _ => PluginKind::Evaluator,
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let api = api_dependency.unwrap_or_else(pretext::template::default_api_dependency);
    match pretext::template::write_plugin_crate(&dir, name, kind, &api) {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            println!("build it with `cargo build --release` in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn sweep_command(args: SweepArgs) -> u8 {
    use pretext::sweep::{Direction, Launcher, Strategy, SweepRequest};
    if let Some(SweepCommand::Show { dir }) = &args.command {
        return pretext::sweep::show_command(dir);
    }
    let request = args.spec.map(|spec| SweepRequest {
        spec,
        arguments: args.overrides,
        metric: args.metric,
        direction: args.maximize.then_some(Direction::Maximize),
        strategy: args.strategy.as_deref().map(|name| match name {
            "random" => Strategy::Random,
            "tpe" => Strategy::Tpe,
            _ => Strategy::Grid,
        }),
        trials: args.trials,
        seed: args.seed,
        max_parallel: args.max_parallel,
        launcher: args
            .launcher
            .as_deref()
            .map(|name| if name == "slurm" { Launcher::Slurm } else { Launcher::Local }),
    });
    pretext::sweep::sweep_command(request, args.resume.as_deref(), args.dir, args.dry_run)
}
