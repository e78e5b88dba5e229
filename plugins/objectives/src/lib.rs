//! Built-in training objectives: `autoencoder` (reconstruction through a mirrored decoder).
#![forbid(unsafe_code)]

mod autoencoder;
mod decoder;

pub use autoencoder::Autoencoder;

pretext_plugin_api::export_plugins![objective(Autoencoder)];
