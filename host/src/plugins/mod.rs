//! Plugin discovery, loading and the calls into plugins.
//!
//! `registry` finds and checks plugin libraries; `instance` holds constructed plugin objects and
//! is the only module that calls into a plugin.

mod bridge;
pub mod instance;
pub mod registry;

pub use bridge::{CallbackError, EvalSource};
pub use instance::BuildInputs;
pub use instance::{
    DatasetInstance, EncoderInstance, EvaluatorInstance, ObjectiveInstance, PluginCallError,
    PluginId,
};
pub use registry::{LibraryInfo, LoadedPlugin, PluginSource, Registry};
