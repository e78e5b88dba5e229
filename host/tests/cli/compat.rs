//! A plugin built against the previous plugin-api minor version still loads and runs, and a method
//! added since reports that the plugin does not implement it.

use std::path::PathBuf;
use std::process::Command;

use pretext::plugins::{BuildInputs, DatasetInstance, EncoderInstance, Registry};
use pretext_plugin_api::PluginKind;

use crate::common::{library, pretext, repo_root, run_summary, target_dir, text, write_spec};

/// Builds `tests/fixtures/older-minor-plugin` (against the frozen plugin-api 1.0.0) in the shared
/// out-of-workspace target folder, and returns the folder holding the library.
fn build_older_minor_plugin() -> PathBuf {
    let build_dir = target_dir().parent().unwrap().join("plugin-template");
    let crate_dir = repo_root().join("tests/fixtures/older-minor-plugin");
    let output = Command::new(env!("CARGO"))
        .arg("build")
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &build_dir)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "building the fixture failed:\n{stderr}");
    let plugin_dir = build_dir.join("debug");
    assert!(plugin_dir.join("libfixture_older_minor_plugin.so").exists());
    plugin_dir
}

#[test]
fn older_minor_plugin_loads_and_runs() {
    let plugin_dir = build_older_minor_plugin();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        plugin_dir.join("libfixture_older_minor_plugin.so"),
        plugins.path().join("libfixture_older_minor_plugin.so"),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();

    let output = pretext(work.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .args(["plugins", "show", "older_minor_encoder"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("built against plugin-api 1.0.0"), "{stdout}");
    assert!(!stderr.contains("skipping"), "{stderr}");

    let spec = write_spec(
        work.path(),
        "older.toml",
        "[dataset]\nplugin = \"digits\"\n[encoder]\nplugin = \"older_minor_encoder\"\n[evaluate.linear_probe]\nplots = false\n",
    );
    let output = pretext(work.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let accuracy = run_summary(&stdout)["metrics"]["linear_probe/accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "raw pixels through the older plugin scored {accuracy}");
}

#[test]
fn newer_method_reports_not_implemented() {
    let plugin_dir = build_older_minor_plugin();
    let mut registry = Registry::default();
    registry.load_spec_paths(&[
        plugin_dir.join("libfixture_older_minor_plugin.so"),
        library("libpretext_datasets.so"),
    ]);
    assert!(registry.warnings().is_empty(), "{:?}", registry.warnings());

    let mut inputs =
        BuildInputs { device: tch::Device::Cpu, seed: 0, dataset: None, encoder: None };
    let digits = registry.find(PluginKind::Dataset, "digits").unwrap();
    let defaults: Vec<_> = digits
        .params
        .iter()
        .map(|spec| (spec.name.to_string(), spec.default.clone().into_option().unwrap()))
        .collect();
    let dataset = DatasetInstance::create(digits, &defaults, &inputs).unwrap();
    inputs.dataset = Some(dataset.info().unwrap());
    let older = registry.find(PluginKind::Encoder, "older_minor_encoder").unwrap();
    assert_eq!(older.library.api_version, "1.0.0");
    let encoder = EncoderInstance::create(older, &[], &inputs).unwrap();

    let error = encoder.buffers().unwrap_err();
    let message = error.to_string();
    assert!(EncoderInstance::is_not_implemented(&error), "{message}");
    assert!(message.contains("encoder `older_minor_encoder`"), "{message}");
    assert!(message.contains("`buffers`"), "{message}");
    assert!(message.contains("plugin-api 1.0.0"), "{message}");
}

#[test]
fn current_plugin_implements_newer_method() {
    let mut registry = Registry::default();
    registry
        .load_spec_paths(&[library("libpretext_encoders.so"), library("libpretext_datasets.so")]);
    let mut inputs =
        BuildInputs { device: tch::Device::Cpu, seed: 0, dataset: None, encoder: None };
    let digits = registry.find(PluginKind::Dataset, "digits").unwrap();
    let defaults: Vec<_> = digits
        .params
        .iter()
        .map(|spec| (spec.name.to_string(), spec.default.clone().into_option().unwrap()))
        .collect();
    let dataset = DatasetInstance::create(digits, &defaults, &inputs).unwrap();
    inputs.dataset = Some(dataset.info().unwrap());
    let identity = registry.find(PluginKind::Encoder, "identity").unwrap();
    let encoder = EncoderInstance::create(identity, &[], &inputs).unwrap();
    assert!(encoder.buffers().unwrap().is_empty());
}
