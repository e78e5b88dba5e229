//! One pre-norm transformer encoder layer: multi-head self-attention, then a GELU MLP.

use pretext_plugin_api::Result;
use pretext_plugin_api::tch::nn::{self, LayerNormConfig, Path};
use pretext_plugin_api::tch::{Kind, Tensor};

use crate::init::torch_linear_config;

/// Score given to padded keys before the softmax. A finite value, unlike `-inf`, keeps a row whose
/// keys are all padding from turning into NaN.
const MASKED_SCORE: f64 = -1e9;

/// `x + attention(norm1(x))`, then `x + mlp(norm2(x))`, as `nn.TransformerEncoderLayer` with
/// `norm_first=True` and `activation="gelu"` computes it.
pub struct EncoderLayer {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    out: nn::Linear,
    norm2: nn::LayerNorm,
    mlp_in: nn::Linear,
    mlp_out: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl EncoderLayer {
    /// Creates the layer's parameters under `path`.
    pub fn new(path: &Path, dim: i64, heads: i64, mlp_dim: i64, dropout: f64) -> Self {
        let norm = || LayerNormConfig::default();
        Self {
            norm1: nn::layer_norm(path / "norm1", vec![dim], norm()),
            qkv: nn::linear(path / "qkv", dim, 3 * dim, torch_linear_config(dim)),
            out: nn::linear(path / "out", dim, dim, torch_linear_config(dim)),
            norm2: nn::layer_norm(path / "norm2", vec![dim], norm()),
            mlp_in: nn::linear(path / "mlp_in", dim, mlp_dim, torch_linear_config(dim)),
            mlp_out: nn::linear(path / "mlp_out", mlp_dim, dim, torch_linear_config(mlp_dim)),
            heads,
            dropout,
        }
    }

    /// Runs the layer on `[batch, length, dim]`; `keep` is `[batch, length]` with true for the
    /// tokens that other tokens may attend to.
    pub fn forward(&self, xs: &Tensor, keep: &Tensor, train: bool) -> Result<Tensor> {
        let attended = self.attention(&xs.apply(&self.norm1), keep, train)?;
        let xs = xs.f_add(&attended.f_dropout(self.dropout, train)?)?;

        let hidden = xs.apply(&self.norm2).apply(&self.mlp_in).f_gelu("none")?;
        let hidden = hidden.f_dropout(self.dropout, train)?.apply(&self.mlp_out);
        Ok(xs.f_add(&hidden.f_dropout(self.dropout, train)?)?)
    }

    /// Scaled dot-product attention over all heads, with padded keys masked out.
    fn attention(&self, xs: &Tensor, keep: &Tensor, train: bool) -> Result<Tensor> {
        let [batch, length, dim] = xs.size()[..] else {
            pretext_plugin_api::bail!("attention input must be [batch, length, dim]");
        };
        let head_dim = dim / self.heads;

        // [batch, length, 3 * dim] -> three [batch, heads, length, head_dim] tensors.
        let qkv = xs.apply(&self.qkv).f_reshape([batch, length, 3, self.heads, head_dim])?;
        let qkv = qkv.f_permute([2, 0, 3, 1, 4])?;
        let (query, key, value) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);

        let scores = query.f_matmul(&key.f_transpose(-2, -1)?)? / (head_dim as f64).sqrt();
        let padded = keep.f_logical_not()?.f_view([batch, 1, 1, length])?;
        let scores = scores.f_masked_fill(&padded, MASKED_SCORE)?;
        let weights = scores.f_softmax(-1, Kind::Float)?.f_dropout(self.dropout, train)?;

        let mixed = weights.f_matmul(&value)?.f_transpose(1, 2)?.f_reshape([batch, length, dim])?;
        Ok(mixed.apply(&self.out))
    }
}
