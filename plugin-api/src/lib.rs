//! The stable interface between the pretext host and its plugins.
//!
//! A plugin library is a `cdylib` that implements one or more of the four traits
//! ([`Dataset`], [`Encoder`], [`Objective`], [`Evaluator`]) together with the matching
//! `*Plugin` trait (description and constructor), and lists them with [`export_plugins!`]:
//!
//! ```ignore
//! pretext_plugin_api::export_plugins![dataset(Digits), encoder(Mlp)];
//! ```
//!
//! The macro generates the `abi_stable` root module. The host checks its layout, this crate's
//! version and the libtorch version at load time. Tensors cross as `tch::Tensor` handles with their
//! autograd graph intact, and panics are caught on the plugin side and reported as errors.

pub mod compat;
pub mod convert;
pub mod error;
pub mod ffi;
#[doc(hidden)]
pub mod glue;
pub mod params;
pub mod plugin;
pub mod tensor;

pub use abi_stable;
pub use tch;

pub use error::{Error, Result};
pub use ffi::{InputKind, ParamType, ParamValue, PluginKind, Split};
pub use glue::{API_VERSION, LIBTORCH_CXX11_ABI, LIBTORCH_LIB_DIR, LIBTORCH_VERSION};
pub use params::{Description, Param, Params};
pub use plugin::*;

/// Exports the listed plugins from this library as its `abi_stable` root module.
///
/// Each item is `kind(Type)` with kind one of `dataset`, `encoder`, `objective`, `evaluator`, and
/// `Type` implementing the matching `*Plugin` trait. A library calls this once.
#[macro_export]
macro_rules! export_plugins {
    ($($kind:ident($plugin:ty)),+ $(,)?) => {
        extern "C" fn __pretext_plugin_entries() -> $crate::ffi::FfiResult<
            $crate::abi_stable::std_types::RVec<$crate::ffi::FfiPluginEntry>,
        > {
            $crate::glue::collect_entries(|| vec![$($crate::glue::$kind::<$plugin>()),+])
        }

        #[$crate::abi_stable::export_root_module]
        fn __pretext_root_module() -> $crate::ffi::PluginLibraryRef {
            $crate::glue::library(__pretext_plugin_entries)
        }
    };
}
