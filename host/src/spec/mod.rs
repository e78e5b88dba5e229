//! Experiment specs: TOML files plus command-line overrides, read in two phases.
//!
//! [`raw`] turns text into a tree that remembers file, line and column; [`validate`] checks that
//! tree against the host's schemas and the plugins' parameter schemas and produces an
//! [`Experiment`]. No data is read until both phases pass.

pub mod diagnostic;
pub mod keys;
pub mod overrides;
pub mod raw;
pub mod resolve;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use diagnostic::{SpecError, SpecErrors};
pub use validate::{DeviceRequest, Experiment, OptimizerKind, PluginUse, TrainerConfig};

use crate::plugins::Registry;

/// Reads a spec file, applies overrides, loads the spec's extra plugin folders into `registry`,
/// and validates the result.
///
/// # Errors
///
/// Returns every located problem found: TOML syntax, unknown keys, wrong types, values out of
/// range, unknown plugins, and parameter or metric keys that a tracking server would reject.
pub fn load(
    path: &Path,
    override_texts: &[String],
    registry: &mut Registry,
) -> Result<Experiment, SpecErrors> {
    let (source, mut root) = raw::parse_file(path)?;
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for text in override_texts {
        match overrides::parse_override(text) {
            Ok(item) => parsed.push(item),
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    overrides::apply(&mut root, &parsed)?;

    let spec_dir = path.parent().unwrap_or(Path::new("."));
    let plugin_paths = validate::plugin_paths(&root, spec_dir)?;
    registry.load_spec_paths(&plugin_paths);

    let experiment = validate::validate(&root, &source, registry)?;
    keys::check_experiment_keys(&experiment)?;
    Ok(experiment)
}
