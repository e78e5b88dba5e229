//! The `identity` encoder: raw features, flattened to vectors.

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::{
    BuildContext, Description, Encoder, EncoderInfo, EncoderOutput, EncoderPlugin, Params, Result,
};

/// Passes raw features through unchanged, flattened to vectors.
pub struct Identity {
    dim: i64,
}

impl EncoderPlugin for Identity {
    fn describe() -> Description {
        Description::new("identity", env!("CARGO_PKG_VERSION"), "raw features, flattened")
    }

    fn create(_params: &Params, context: &BuildContext) -> Result<Self> {
        let dim = context.dataset.as_ref().map(|info| info.sample_numel()).unwrap_or(0);
        Ok(Self { dim })
    }
}

impl Encoder for Identity {
    fn info(&self) -> EncoderInfo {
        EncoderInfo { output_dim: self.dim, ..EncoderInfo::default() }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn forward(&self, inputs: &Tensor, _train: bool) -> Result<EncoderOutput> {
        Ok(EncoderOutput { features: inputs.flatten(1, -1), tokens: None })
    }
}
