//! Plugin loading: good libraries load, bad ones are skipped with one warning each.

use crate::common::{library, pretext, text};

#[test]
fn bad_libraries_skipped_good_ones_load() {
    let plugins = tempfile::tempdir().unwrap();
    let run_root = tempfile::tempdir().unwrap();
    for name in [
        "libfixture_future_api_plugin.so",
        "libfixture_foreign_torch_plugin.so",
        "libfixture_panicking_plugin.so",
    ] {
        std::fs::copy(library(name), plugins.path().join(name)).unwrap();
    }
    std::fs::write(plugins.path().join("libgarbage.so"), b"this is not an ELF file").unwrap();
    let unrelated = ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
    if let Some(path) = unrelated {
        std::fs::copy(path, plugins.path().join("libunrelated.so")).unwrap();
    }

    let output = pretext(run_root.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("plugins")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");

    let future =
        stderr.lines().filter(|line| line.contains("libfixture_future_api_plugin.so")).count();
    assert_eq!(future, 2, "one log warning and one listed warning:\n{stderr}");
    assert!(stderr.contains("built against plugin-api 2.0.0"), "{stderr}");
    assert!(stderr.contains("expected major version 1, found 2"), "{stderr}");
    assert!(stderr.contains("built against libtorch 1.13.1+cpu"), "{stderr}");
    assert!(stderr.contains("libgarbage.so"), "{stderr}");
    assert!(stderr.contains("expected a pretext plugin library"), "{stderr}");
    if unrelated.is_some() {
        assert!(stderr.contains("libunrelated.so"), "{stderr}");
    }

    assert!(!stdout.contains("future_encoder"), "{stdout}");
    assert!(!stdout.contains("foreign_torch_encoder"), "{stdout}");
    assert!(stdout.contains("panicking_objective"), "{stdout}");
    assert!(stdout.contains("PRETEXT_PLUGIN_PATH"), "{stdout}");
    for builtin in [
        "digits",
        "moons",
        "mlp",
        "identity",
        "autoencoder",
        "linear_probe",
        "reconstruction",
        "latent_plot",
    ] {
        assert!(stdout.contains(builtin), "{builtin} missing:\n{stdout}");
    }
}

#[test]
fn plugins_show_prints_schema() {
    let run_root = tempfile::tempdir().unwrap();
    let output = pretext(run_root.path()).args(["plugins", "show", "mlp"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("encoder `mlp`"), "{stdout}");
    for param in ["hidden", "latent", "activation"] {
        assert!(stdout.contains(param), "{param} missing:\n{stdout}");
    }
}

#[test]
fn plugins_show_unknown_name_fails() {
    let run_root = tempfile::tempdir().unwrap();
    let output = pretext(run_root.path()).args(["plugins", "show", "nope"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}
