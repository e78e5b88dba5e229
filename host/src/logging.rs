//! Logging setup: warnings and errors on stderr, and a log file per run.
//!
//! `RUST_LOG` overrides both filters. The run file is attached once the run folder exists, so
//! everything the host logs during a run is in `RUN_DIR/run.log`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static RUN_FILE: OnceLock<Arc<Mutex<Option<File>>>> = OnceLock::new();

fn run_file() -> Arc<Mutex<Option<File>>> {
    Arc::clone(RUN_FILE.get_or_init(|| Arc::new(Mutex::new(None))))
}

/// Writes to the current run's log file, or nowhere before a run starts.
#[derive(Clone)]
struct RunFileWriter(Arc<Mutex<Option<File>>>);

impl Write for RunFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().map(|mut file| file.as_mut().map(|file| file.write(buf))) {
            Ok(Some(result)) => result,
            _ => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().map(|mut file| file.as_mut().map(File::flush)) {
            Ok(Some(result)) => result,
            _ => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for RunFileWriter {
    type Writer = RunFileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global subscriber; call once at startup.
pub fn init() {
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let file_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(stderr_filter);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(RunFileWriter(run_file()))
        .with_ansi(false)
        .with_filter(file_filter);
    let _ = tracing_subscriber::registry().with(stderr_layer).with(file_layer).try_init();
}

use tracing_subscriber::Layer;

/// Sends log lines to `path` from now on.
pub fn attach_run_log(path: &Path) -> std::io::Result<()> {
    let file = File::options().create(true).append(true).open(path)?;
    if let Ok(mut slot) = run_file().lock() {
        *slot = Some(file);
    }
    Ok(())
}

/// Stops writing to the run log.
pub fn detach_run_log() {
    if let Ok(mut slot) = run_file().lock() {
        if let Some(file) = slot.as_mut() {
            let _ = file.flush();
        }
        *slot = None;
    }
}
