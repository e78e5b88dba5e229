//! Records the libtorch version that this build compiles against, so that a loaded plugin can be
//! compared with the host that loads it.

use std::path::Path;

fn main() {
    // torch-sys declares `links = "tch"` and publishes the directory it linked against.
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // A plugin and the host must agree on this version, so a build that cannot tell it fails here
    // rather than recording a placeholder that would match any other placeholder.
    let version = libtorch_version(Path::new(&lib_dir)).unwrap_or_else(|| {
        panic!(
            "cannot read the libtorch version next to `{lib_dir}` (expected version.py or \
             build-version one level up); run scripts/setup.sh"
        )
    });
    println!("cargo:rustc-env=PRETEXT_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=PRETEXT_LIBTORCH_LIB={lib_dir}");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    println!("cargo:rustc-env=PRETEXT_LIBTORCH_CXX11_ABI={cxx11_abi}");
}

/// Reads the version from a PyTorch wheel (`torch/version.py`) or a libtorch archive
/// (`build-version`), both of which sit one level above the `lib` directory.
fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        println!("cargo:rerun-if-changed={}", root.join("version.py").display());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                let value = rest.trim_start_matches([' ', '=']).trim();
                return Some(value.trim_matches(['\'', '"']).to_owned());
            }
        }
    }
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    Some(text.trim().to_owned())
}
