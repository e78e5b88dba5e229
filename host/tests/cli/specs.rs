//! Spec and override errors: located messages, exit code 2, nothing written to the store.
//!
//! Each file under `tests/specs/invalid/` starts with `# error: TEXT` and `# at: LINE:COLUMN`;
//! each file under `tests/specs/valid/` must validate.

use std::path::Path;

use crate::common::{SMALL_AUTOENCODER, pretext, repo_root, text, write_spec};

fn expectations(path: &Path) -> (String, String) {
    let body = std::fs::read_to_string(path).unwrap();
    let mut lines = body.lines();
    let message = lines
        .next()
        .and_then(|line| line.strip_prefix("# error: "))
        .expect("first line `# error: ...`");
    let at =
        lines.next().and_then(|line| line.strip_prefix("# at: ")).expect("second line `# at: ...`");
    (message.to_owned(), at.to_owned())
}

#[test]
fn invalid_specs_give_located_errors() {
    let dir = repo_root().join("tests/specs/invalid");
    let mut cases: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 50, "expected the invalid-spec cases in {}", dir.display());
    for case in cases {
        let (message, at) = expectations(&case);
        for command in ["validate", "run"] {
            let run_root = tempfile::tempdir().unwrap();
            let output = pretext(run_root.path()).arg(command).arg(&case).output().unwrap();
            let (_, stderr) = text(&output);
            assert_eq!(output.status.code(), Some(2), "{command} {}:\n{stderr}", case.display());
            let located = format!("{}:{at}: ", case.display());
            assert!(
                stderr.contains(&located),
                "{command} {}: expected `{located}` in:\n{stderr}",
                case.display()
            );
            assert!(
                stderr.contains(&message),
                "{command} {}: expected `{message}` in:\n{stderr}",
                case.display()
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            let written: Vec<_> = std::fs::read_dir(run_root.path()).unwrap().collect();
            assert!(written.is_empty(), "{command} {} wrote to the run store", case.display());
        }
    }
}

#[test]
fn valid_specs_validate() {
    let dir = repo_root().join("tests/specs/valid");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let run_root = tempfile::tempdir().unwrap();
        let output = pretext(run_root.path()).arg("validate").arg(&case).output().unwrap();
        let (_, stderr) = text(&output);
        assert!(output.status.success(), "{}:\n{stderr}", case.display());
    }
}

#[test]
fn override_errors_name_the_override() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    let cases = [
        ("encoder.latnet=8", "override `encoder.latnet=8`: unknown key `latnet`"),
        (
            "trainer.lr=fast",
            "override `trainer.lr=fast`: `lr` must be a number, found the string \"fast\"",
        ),
        ("trainer.epochs", "expected `key=value`"),
        ("trainer..lr=1", "invalid key"),
    ];
    for (override_text, expected) in cases {
        let output =
            pretext(dir.path()).arg("validate").arg(&spec).arg(override_text).output().unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{override_text}: {stderr}");
        assert!(stderr.contains(expected), "{override_text}: expected `{expected}` in:\n{stderr}");
    }
}

#[test]
fn same_override_twice_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    let output = pretext(dir.path())
        .args(["validate"])
        .arg(&spec)
        .args(["trainer.lr=1e-3", "trainer.lr=1e-4"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("overridden twice"), "{stderr}");
}

#[test]
fn integer_override_for_float_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    let output =
        pretext(dir.path()).arg("validate").arg(&spec).arg("trainer.lr=1").output().unwrap();
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
}

#[test]
fn shape_mismatch_names_both_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::library("libfixture_panicking_plugin.so"),
        plugins.path().join("libfixture_panicking_plugin.so"),
    )
    .unwrap();
    let spec = write_spec(
        dir.path(),
        "broken.toml",
        "[dataset]\nplugin = \"digits\"\n[encoder]\nplugin = \"panicking_encoder\"\n[objective]\nplugin = \"autoencoder\"\n",
    );
    let output = pretext(dir.path())
        .env("PRETEXT_PLUGIN_PATH", plugins.path())
        .arg("validate")
        .arg(&spec)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "encoder `panicking_encoder` rejected a batch of shape [2, 64] from dataset `digits`"
        ),
        "{stderr}"
    );
}

#[test]
fn cuda_request_without_cuda_fails_before_training() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has CUDA, so the missing-CUDA error cannot occur");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "small.toml", SMALL_AUTOENCODER);
    for device in ["cuda", "cuda:1"] {
        let output = pretext(dir.path())
            .arg("run")
            .arg(&spec)
            .arg(format!("trainer.device={device}"))
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("no CUDA device is available"), "{stderr}");
        assert!(stderr.contains(pretext_plugin_api::LIBTORCH_VERSION), "{stderr}");
        assert!(!dir.path().join("pretext.db").exists(), "a run was recorded");
    }
}
