//! Masked-feature modelling for vectors: reconstruct masked input values from the pooled code.

use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{EncoderHandle, LossOutput, Result, ensure};

use crate::corruption::bernoulli_mask;
use crate::decoder::Decoder;

/// Masks input values and predicts them from the encoder's features with a head owned by the
/// objective. The loss is the mean squared error over the masked values only.
pub struct MaskedFeatures {
    pub head: Decoder,
    fraction: f64,
    mask_value: f64,
    input_dim: i64,
}

impl MaskedFeatures {
    /// Creates the variant for samples of `input_dim` values.
    pub fn new(head: Decoder, fraction: f64, mask_value: f64, input_dim: i64) -> Self {
        Self { head, fraction, mask_value, input_dim }
    }

    /// Computes the loss of one batch of float samples.
    pub fn loss(&self, inputs: &Tensor, encoder: &dyn EncoderHandle) -> Result<LossOutput> {
        let size = inputs.size();
        let sample_numel: i64 = size.iter().skip(1).product();
        ensure!(
            size.len() >= 2 && sample_numel == self.input_dim,
            "masked_modeling input of shape {size:?} is invalid, expected {} values per sample",
            self.input_dim
        );

        // At least one masked value per batch, so that the loss is defined.
        let mut mask = bernoulli_mask(inputs, self.fraction)?;
        let any_masked = mask.f_any()?.f_int64_value(&[])? != 0;
        if !any_masked {
            let first = Tensor::from_slice(&[0i64]).f_to_device(inputs.device())?;
            mask = mask.f_index_fill(0, &first, 1)?;
        }
        let corrupted = inputs.f_masked_fill(&mask, self.mask_value)?;
        let features = encoder.forward(&corrupted, true)?.features;
        let predicted = self.head.forward(&features)?;

        let weights = mask.f_flatten(1, -1)?.f_to_kind(Kind::Float)?;
        let errors = predicted.f_sub(&inputs.f_flatten(1, -1)?)?.f_square()?.f_mul(&weights)?;
        let loss = errors.f_sum(Kind::Float)?.f_div(&weights.f_sum(Kind::Float)?)?;
        let value = loss.f_double_value(&[])?;
        Ok(LossOutput { loss, metrics: vec![("masked_mse".to_owned(), value)] })
    }
}
