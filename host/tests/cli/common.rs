//! Shared setup: the built binary, the plugin folder next to it, temporary run roots.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `pretext` binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pretext"))
}

/// The folder holding the binary and the built plugin libraries.
pub fn target_dir() -> PathBuf {
    binary().parent().expect("the binary has a folder").to_path_buf()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the repository")
        .to_path_buf()
}

/// A built library from the target folder, such as `libfixture_panicking_plugin.so`.
pub fn library(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(path.exists(), "{} is missing; build the workspace first", path.display());
    path
}

/// A `pretext` command with a clean plugin path and the given run root.
pub fn pretext(run_root: &Path) -> Command {
    let mut command = Command::new(binary());
    command
        .env_remove("PRETEXT_PLUGIN_PATH")
        .env_remove("RUST_LOG")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_EXPERIMENT_NAME")
        .env("PRETEXT_RUN_ROOT", run_root);
    command
}

/// Output as text, for assertions.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes a spec into `dir` and returns its path.
pub fn write_spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write spec");
    path
}

/// A short digits autoencoder spec.
pub const SMALL_AUTOENCODER: &str = r#"
name = "small"
seed = 3

[dataset]
plugin = "digits"

[encoder]
plugin = "mlp"
hidden = [32]
latent = 8

[objective]
plugin = "autoencoder"

[trainer]
epochs = 2
batch_size = 64
threads = 1

[evaluate.linear_probe]
[evaluate.reconstruction]
"#;

/// Reads `metrics.json` of the run folder printed in the summary.
pub fn run_summary(stdout: &str) -> serde_json::Value {
    let folder = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("folder: "))
        .expect("the summary names the run folder");
    let text =
        std::fs::read_to_string(Path::new(folder).join("metrics.json")).expect("metrics.json");
    serde_json::from_str(&text).expect("valid json")
}
