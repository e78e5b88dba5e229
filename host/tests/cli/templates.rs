//! `pretext plugins new`: each generated crate builds outside the workspace and loads.

use std::process::Command;

use crate::common::{pretext, run_summary, target_dir, text, write_spec};

#[test]
fn generated_plugins_build_and_run() {
    let work = tempfile::tempdir().unwrap();
    // A target folder of its own, kept between runs, so only the first build compiles libtorch's
    // bindings; the generated crates are separate workspaces with their own lock files.
    let build_dir = target_dir().parent().unwrap().join("plugin-template");
    let plugin_dir = build_dir.join("debug");
    for (name, kind) in [
        ("tpl_dataset", "dataset"),
        ("tpl_encoder", "encoder"),
        ("tpl_objective", "objective"),
        ("tpl_evaluator", "evaluator"),
    ] {
        let dir = work.path().join(name);
        let output = pretext(work.path())
            .args(["plugins", "new", name, "--kind", kind, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert!(output.status.success(), "{stderr}");
        assert!(dir.join("src/lib.rs").exists());

        let build = Command::new(env!("CARGO"))
            .arg("build")
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &build_dir)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        let (_, stderr) = text(&build);
        assert!(build.status.success(), "building the {kind} template failed:\n{stderr}");
        assert!(plugin_dir.join(format!("lib{name}.so")).exists());
    }

    let spec = write_spec(
        work.path(),
        "template.toml",
        "[dataset]\nplugin = \"tpl_dataset\"\n[encoder]\nplugin = \"tpl_encoder\"\ndim = 4\n\
         [objective]\nplugin = \"tpl_objective\"\n[trainer]\nepochs = 2\n\
         [evaluate.tpl_evaluator]\n[evaluate.linear_probe]\n",
    );
    let output = pretext(work.path())
        .env("PRETEXT_PLUGIN_PATH", &plugin_dir)
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let summary = run_summary(&stdout);
    assert!(summary["metrics"]["tpl_evaluator/mean_norm"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["metrics"]["linear_probe/accuracy"].as_f64().unwrap() > 0.5, "{summary}");

    let listing = pretext(work.path())
        .env("PRETEXT_PLUGIN_PATH", &plugin_dir)
        .arg("plugins")
        .output()
        .unwrap();
    let (listing, _) = text(&listing);
    for name in ["tpl_dataset", "tpl_encoder", "tpl_objective", "tpl_evaluator"] {
        let line = listing
            .lines()
            .find(|line| line.contains(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        assert!(line.contains("PRETEXT_PLUGIN_PATH"), "{line}");
    }
}

#[test]
fn plugins_new_rejects_bad_name() {
    let work = tempfile::tempdir().unwrap();
    let output = pretext(work.path())
        .args(["plugins", "new", "Bad-Name", "--kind", "encoder"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("invalid plugin name"), "{stderr}");
}
