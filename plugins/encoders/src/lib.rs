//! Built-in encoders: `identity` (raw features, flattened) and `mlp` (a multilayer perceptron).
#![forbid(unsafe_code)]

mod identity;
mod mlp;

pub use identity::Identity;
pub use mlp::Mlp;

pretext_plugin_api::export_plugins![encoder(Identity), encoder(Mlp)];
