//! Built-in training objectives: `autoencoder` and `denoising_autoencoder` (reconstruction
//! through a mirrored decoder), `vae` (variational autoencoder), `simclr` (contrastive views),
//! `masked_modeling` (masked tokens or masked features) and `gan` (adversarial training with the
//! encoder as the discriminator's backbone).
#![forbid(unsafe_code)]

mod autoencoder;
mod corruption;
mod decoder;
mod denoising;
mod gan;
mod masked;
mod simclr;
#[cfg(test)]
mod testing;
mod vae;

pub use autoencoder::Autoencoder;
pub use denoising::DenoisingAutoencoder;
pub use gan::Gan;
pub use masked::MaskedModeling;
pub use simclr::SimClr;
pub use vae::Vae;

pretext_plugin_api::export_plugins![
    objective(Autoencoder),
    objective(DenoisingAutoencoder),
    objective(Vae),
    objective(SimClr),
    objective(MaskedModeling),
    objective(Gan)
];
