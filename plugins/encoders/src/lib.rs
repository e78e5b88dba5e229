//! Built-in encoders: `identity` (raw features, flattened), `mlp` (a multilayer perceptron),
//! `pca` (principal components of the train split), `cnn` (a small convolutional network) and
//! `transformer` (a pre-norm transformer over token sequences).
#![forbid(unsafe_code)]

mod cnn;
mod identity;
mod init;
mod mlp;
mod pca;
#[cfg(test)]
mod testing;
mod transformer;

pub use cnn::Cnn;
pub use identity::Identity;
pub use mlp::Mlp;
pub use pca::Pca;
pub use transformer::Transformer;

pretext_plugin_api::export_plugins![
    encoder(Identity),
    encoder(Mlp),
    encoder(Pca),
    encoder(Cnn),
    encoder(Transformer)
];
