//! The pretext host: loads plugins, validates experiment specs, trains, evaluates and records runs.
//!
//! The `pretext` binary is a thin command-line layer over this library; see
//! `docs/ARCHITECTURE.md` for the map of modules and the invariants they keep.

pub mod device;
pub mod logging;
pub mod plugins;
pub mod run;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod template;
pub mod tracking;
pub mod train;
