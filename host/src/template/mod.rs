//! `pretext plugins new`: writes an out-of-tree plugin crate that builds against `plugin-api`.

use std::path::{Path, PathBuf};

use pretext_plugin_api::PluginKind;

const CARGO_TOML: &str = include_str!("Cargo.toml.in");
const README: &str = include_str!("README.md.in");
const DATASET: &str = include_str!("dataset.rs.in");
const ENCODER: &str = include_str!("encoder.rs.in");
const OBJECTIVE: &str = include_str!("objective.rs.in");
const EVALUATOR: &str = include_str!("evaluator.rs.in");

/// Where the new crate gets `pretext-plugin-api` from.
pub fn default_api_dependency() -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
    match source.canonicalize() {
        Ok(path) => format!("{{ path = \"{}\" }}", path.display()),
        Err(_) => format!("\"{}\"", pretext_plugin_api::API_VERSION),
    }
}

/// Build settings that point the new crate at the libtorch this host was built with.
fn cargo_config() -> String {
    let lib = Path::new(pretext_plugin_api::LIBTORCH_LIB_DIR);
    let root = lib.parent().unwrap_or(lib);
    format!(
        "# The libtorch this pretext host was built with; a plugin must use the same one.\n\
         [env]\nLIBTORCH = \"{}\"\nLIBTORCH_CXX11_ABI = \"{}\"\n\n\
         [target.x86_64-unknown-linux-gnu]\nrustflags = [\"-C\", \"link-arg=-Wl,-rpath,{}\"]\n",
        root.display(),
        pretext_plugin_api::LIBTORCH_CXX11_ABI,
        lib.display()
    )
}

/// Converts `my_plugin` to `MyPlugin`.
fn type_name(name: &str) -> String {
    name.split(['_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Checks a plugin name: lowercase letters, digits and `_`, starting with a letter.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = name.chars().next().is_some_and(|first| first.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `_`, starting with a letter"
        ))
    }
}

/// Writes the crate into `dir`, which must not exist yet or be empty; returns the files written.
pub fn write_plugin_crate(
    dir: &Path,
    name: &str,
    kind: PluginKind,
    api_dependency: &str,
) -> Result<Vec<PathBuf>, String> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_some()) {
        return Err(format!(
            "{} already exists and is not empty; choose another folder",
            dir.display()
        ));
    }
    let source = match kind {
        PluginKind::Dataset => DATASET,
        PluginKind::Encoder => ENCODER,
        PluginKind::Objective => OBJECTIVE,
        PluginKind::Evaluator => EVALUATOR,
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{type}}", &type_name(name))
            .replace("{{kind}}", kind.as_str())
            .replace("{{api}}", api_dependency)
            .replace("{{abi_stable}}", "0.11.3")
    };
    let files = [
        (dir.join(".cargo/config.toml"), cargo_config()),
        (dir.join("Cargo.toml"), fill(CARGO_TOML)),
        (dir.join("README.md"), fill(README)),
        (dir.join("src/lib.rs"), fill(source)),
    ];
    let mut written = Vec::new();
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
        }
        std::fs::write(&path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_name_is_camel_case() {
        assert_eq!(type_name("my_plugin"), "MyPlugin");
        assert_eq!(type_name("pca2"), "Pca2");
    }

    #[test]
    fn invalid_names_rejected() {
        for name in ["", "Upper", "1abc", "has-dash", "has space"] {
            assert!(check_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn non_empty_folder_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        assert!(write_plugin_crate(dir.path(), "demo", PluginKind::Encoder, "\"1\"").is_err());
    }
}
