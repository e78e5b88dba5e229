//! Finds plugin libraries on disk, checks them, and lists the plugins they export.
//!
//! Search order: the built-in plugins next to the `pretext` binary (`libpretext_*.so` beside it
//! and every library in its `plugins/` folder), then each folder of `PRETEXT_PLUGIN_PATH`
//! (colon-separated), then the spec's `plugin_paths`. The working directory is never searched.
//! A library that fails a check is skipped with one warning; the others still load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::StableAbi;
use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{LibHeader, LibraryError, RootModule, lib_header_from_path};
use abi_stable::std_types::{RBox, RVec};
use pretext_plugin_api::ffi::{
    FfiBuildContext_TO, FfiInstance, FfiResult, NamedValue, ParamSpec, PluginInfo, PluginKind,
    PluginLibraryRef,
};
use sha2::{Digest, Sha256};

/// Origin of a plugin library: the search location it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    Builtin,
    EnvPath,
    SpecPath,
}

impl PluginSource {
    /// The label `pretext plugins` prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            PluginSource::Builtin => "built-in",
            PluginSource::EnvPath => "PRETEXT_PLUGIN_PATH",
            PluginSource::SpecPath => "plugin_paths",
        }
    }
}

/// A loaded plugin library.
#[derive(Debug)]
pub struct LibraryInfo {
    pub path: PathBuf,
    pub source: PluginSource,
    pub sha256: String,
    pub api_version: String,
    pub libtorch_version: String,
}

type Factory = extern "C" fn(
    RVec<NamedValue>,
    FfiBuildContext_TO<'static, RBox<()>>,
) -> FfiResult<FfiInstance>;

/// One plugin exported by a loaded library.
pub struct LoadedPlugin {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
    pub library: Arc<LibraryInfo>,
    pub(crate) factory: Factory,
}

impl LoadedPlugin {
    /// The schema entry for a parameter name.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|spec| spec.name.as_str() == name)
    }
}

/// A library that was skipped, and why.
#[derive(Debug, Clone)]
pub struct LoadWarning {
    pub path: PathBuf,
    pub message: String,
}

/// All plugins found, plus the libraries that were skipped.
#[derive(Default)]
pub struct Registry {
    plugins: Vec<LoadedPlugin>,
    warnings: Vec<LoadWarning>,
    searched: Vec<PathBuf>,
}

/// The plugin-api version this host was built with.
const HOST_API_VERSION: &str = pretext_plugin_api::API_VERSION;

impl Registry {
    /// Loads the built-in plugins and those in `PRETEXT_PLUGIN_PATH`.
    pub fn discover() -> Self {
        let mut registry = Registry::default();
        if let Some(dir) = builtin_dir() {
            registry.load_builtin(&dir);
        }
        if let Some(paths) = std::env::var_os("PRETEXT_PLUGIN_PATH") {
            for dir in std::env::split_paths(&paths) {
                if !dir.as_os_str().is_empty() {
                    registry.load_dir(&dir, PluginSource::EnvPath);
                }
            }
        }
        registry
    }

    /// Loads every library in the spec's `plugin_paths` (files or folders).
    pub fn load_spec_paths(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if path.is_dir() {
                self.load_dir(path, PluginSource::SpecPath);
            } else {
                self.load_file(path, PluginSource::SpecPath);
            }
        }
    }

    fn load_builtin(&mut self, exe_dir: &Path) {
        for path in library_files(exe_dir) {
            let is_builtin = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libpretext_"));
            if is_builtin {
                self.load_file(&path, PluginSource::Builtin);
            }
        }
        let plugin_dir = exe_dir.join("plugins");
        if plugin_dir.is_dir() {
            self.load_dir(&plugin_dir, PluginSource::Builtin);
        }
    }

    fn load_dir(&mut self, dir: &Path, source: PluginSource) {
        self.searched.push(dir.to_path_buf());
        if !dir.is_dir() {
            tracing::warn!(dir = %dir.display(), "plugin folder not found; skipping it");
            return;
        }
        for path in library_files(dir) {
            self.load_file(&path, source.clone());
        }
    }

    fn load_file(&mut self, path: &Path, source: PluginSource) {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.plugins.iter().any(|plugin| plugin.library.path == path) {
            return;
        }
        match load_library(&path, source) {
            Ok(plugins) => {
                for plugin in plugins {
                    self.add(plugin);
                }
            }
            Err(message) => {
                tracing::warn!("skipping plugin library {}: {message}", path.display());
                self.warnings.push(LoadWarning { path, message });
            }
        }
    }

    fn add(&mut self, plugin: LoadedPlugin) {
        if let Some(existing) = self.find(plugin.kind, &plugin.name) {
            let message = format!(
                "{} `{}` is already provided by {}; this copy is ignored",
                plugin.kind,
                plugin.name,
                existing.library.path.display()
            );
            tracing::warn!("{}: {message}", plugin.library.path.display());
            self.warnings.push(LoadWarning { path: plugin.library.path.clone(), message });
            return;
        }
        self.plugins.push(plugin);
    }

    /// The plugin of `kind` called `name`.
    pub fn find(&self, kind: PluginKind, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.iter().find(|plugin| plugin.kind == kind && plugin.name == name)
    }

    /// Every plugin called `name`, of any kind.
    pub fn find_any(&self, name: &str) -> Vec<&LoadedPlugin> {
        self.plugins.iter().filter(|plugin| plugin.name == name).collect()
    }

    /// The names of all plugins of `kind`, sorted.
    pub fn names(&self, kind: PluginKind) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .plugins
            .iter()
            .filter(|plugin| plugin.kind == kind)
            .map(|plugin| plugin.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// All plugins, sorted by kind and name.
    pub fn plugins(&self) -> Vec<&LoadedPlugin> {
        let mut plugins: Vec<&LoadedPlugin> = self.plugins.iter().collect();
        plugins.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        plugins
    }

    /// Libraries skipped while loading.
    pub fn warnings(&self) -> &[LoadWarning] {
        &self.warnings
    }

    /// Folders searched, in order.
    pub fn searched(&self) -> &[PathBuf] {
        &self.searched
    }
}

/// The folder of the running binary, where the built-in plugins are.
fn builtin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.parent().map(Path::to_path_buf)
}

/// Shared-library files in a folder, sorted by name so that load order is stable.
fn library_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.is_file()
                && path.extension().and_then(|ext| ext.to_str())
                    == Some(std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    files
}

/// Opens one library and checks it; the error is the warning text.
fn load_library(path: &Path, source: PluginSource) -> Result<Vec<LoadedPlugin>, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot read the file: {error}"))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));

    let header = lib_header_from_path(path).map_err(|error| {
        format!(
            "expected a pretext plugin library (an abi_stable root module named `{}`), found a \
             file that cannot be opened as one: {}",
            PluginLibraryRef::NAME,
            first_lines(&error.to_string(), 4)
        )
    })?;
    let module = root_module(header)?;

    let api_version = module.api_version().to_string();
    check_api_version(&api_version)?;
    let libtorch_version = module.libtorch_version().to_string();
    check_libtorch_version(&libtorch_version)?;

    let entries = (module.plugins())()
        .into_result()
        .map_err(|error| format!("listing its plugins failed: {}", error.message))?;
    let library = Arc::new(LibraryInfo {
        path: path.to_path_buf(),
        source,
        sha256,
        api_version,
        libtorch_version,
    });
    Ok(entries
        .into_iter()
        .map(|entry| plugin_from_entry(entry.info, entry.factory, &library))
        .collect())
}

/// Checks the library's version and layout and returns its root module.
///
/// A library built against an older minor version of plugin-api fails abi_stable's check against
/// the current layout as soon as a vtable has grown, because abi_stable accepts a library whose
/// prefix types have at least the host's fields. Such a library is checked against the frozen
/// layout of the minor version it declares instead.
fn root_module(header: &'static LibHeader) -> Result<PluginLibraryRef, String> {
    let error = match header.init_root_module::<PluginLibraryRef>() {
        Ok(module) => return Ok(module),
        Err(error) => error,
    };
    let mismatch = || {
        format!(
            "the library's interface does not match this host (expected plugin-api \
             {HOST_API_VERSION} or an earlier 1.x): {}",
            first_lines(&error.to_string(), 8)
        )
    };
    let (LibraryError::AbiInstability(_), Some(layout)) = (&error, header.layout()) else {
        return Err(mismatch());
    };
    let older = <pretext_plugin_api::compat::v1_0::PluginLibraryRef as StableAbi>::LAYOUT;
    if check_layout_compatibility(older, layout).is_err() {
        return Err(mismatch());
    }
    // SAFETY: the library's root module matches the plugin-api 1.0.0 layout, and every later 1.x
    // version only appends methods after `last_prefix_field` to vtables. abi_stable reads a
    // vtable's length from the vtable itself, so the current types reach the 1.0.0 methods and
    // find the appended ones missing, for which they run the methods' default bodies.
    let module = unsafe { header.unchecked_layout::<PluginLibraryRef>() }
        .map_err(|error| format!("the library's root module failed to initialise: {error}"))?;
    tracing::debug!("loaded a library with the plugin-api 1.0.0 layout");
    Ok(module)
}

fn plugin_from_entry(
    info: PluginInfo,
    factory: Factory,
    library: &Arc<LibraryInfo>,
) -> LoadedPlugin {
    LoadedPlugin {
        name: info.name.into_string(),
        kind: info.kind,
        version: info.version.into_string(),
        description: info.description.into_string(),
        params: info.params.into_vec(),
        library: Arc::clone(library),
        factory,
    }
}

fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.split(['+', '-']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// Accepts a library built against the same plugin-api major and a minor no newer than ours.
fn check_api_version(found: &str) -> Result<(), String> {
    let host = parse_version(HOST_API_VERSION).expect("the crate version is valid semver");
    let Some(plugin) = parse_version(found) else {
        return Err(format!(
            "expected a plugin-api version like {HOST_API_VERSION}, found `{found}`"
        ));
    };
    if plugin.0 != host.0 {
        return Err(format!(
            "built against plugin-api {found}, but this host supports plugin-api {}.x \
             (expected major version {}, found {}); rebuild the plugin against plugin-api {HOST_API_VERSION}",
            host.0, host.0, plugin.0
        ));
    }
    if plugin.1 > host.1 {
        return Err(format!(
            "built against plugin-api {found}, newer than this host's {HOST_API_VERSION}; \
             upgrade pretext or rebuild the plugin against plugin-api {HOST_API_VERSION}"
        ));
    }
    Ok(())
}

/// Accepts a library compiled against the same libtorch release as the host; the build suffix
/// (`+cpu`, `+cu130`) may differ because the C++ tensor type is the same across them.
fn check_libtorch_version(found: &str) -> Result<(), String> {
    let host = pretext_plugin_api::LIBTORCH_VERSION;
    let base = |text: &str| text.split('+').next().unwrap_or(text).to_owned();
    if base(found) != base(host) {
        return Err(format!(
            "built against libtorch {found}, but this host uses libtorch {host}; tensors cannot \
             cross between different libtorch versions, so rebuild the plugin against libtorch {}",
            base(host)
        ));
    }
    Ok(())
}

fn first_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let mut joined = lines.iter().take(count).copied().collect::<Vec<_>>().join(" ");
    if lines.len() > count {
        joined.push_str(" ...");
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_same_major_older_minor_accepted() {
        assert!(check_api_version("1.0.0").is_ok());
    }

    #[test]
    fn api_version_other_major_rejected() {
        let message = check_api_version("2.0.0").unwrap_err();
        assert!(message.contains("found 2"), "{message}");
    }

    #[test]
    fn api_version_newer_minor_rejected() {
        assert!(check_api_version("1.99.0").is_err());
    }

    #[test]
    fn libtorch_suffix_ignored() {
        let host = pretext_plugin_api::LIBTORCH_VERSION;
        let base = host.split('+').next().unwrap();
        assert!(check_libtorch_version(&format!("{base}+cpu")).is_ok());
        assert!(check_libtorch_version("1.13.1+cpu").is_err());
    }
}
