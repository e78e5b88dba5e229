//! The decoder of the `autoencoder` objective: a ReLU multilayer perceptron.

use pretext_plugin_api::tch::nn::{self, Init, LinearConfig, VarStore};
use pretext_plugin_api::tch::{Device, Tensor};
use pretext_plugin_api::{Result, ensure};

/// Builds a linear layer configuration that reproduces PyTorch's `nn.Linear` initialisation.
///
/// PyTorch draws weights with `kaiming_uniform_(a=sqrt(5))`, which is uniform on
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`. The default of tch 0.24 uses the ReLU gain instead and
/// draws from a range `sqrt(6)` times wider, so the weight range is set here. The bias default of
/// tch is already PyTorch's, uniform on the same range.
fn torch_linear_config(fan_in: i64) -> LinearConfig {
    let bound = 1.0 / (fan_in as f64).sqrt();
    LinearConfig { ws_init: Init::Uniform { lo: -bound, up: bound }, ..LinearConfig::default() }
}

/// `Linear(latent, h1) relu ... Linear(h_last, output)`, with no activation on the output.
///
/// Parameters live in the decoder's own var store under `decoder.layer0`, `decoder.layer1`, and
/// so on.
pub struct Decoder {
    vs: VarStore,
    layers: Vec<nn::Linear>,
    latent: i64,
}

impl Decoder {
    /// Builds a decoder with layer widths `latent`, `hidden...`, `output` on `device`.
    pub fn new(device: Device, latent: i64, hidden: &[i64], output: i64) -> Self {
        Self::named(device, "decoder", latent, hidden, output)
    }

    /// Builds the same ReLU network with its parameters under `name` instead of `decoder`, for
    /// the other modules that objectives own (projection heads, prediction heads, generators).
    pub fn named(device: Device, name: &str, latent: i64, hidden: &[i64], output: i64) -> Self {
        let vs = VarStore::new(device);
        let widths: Vec<i64> =
            std::iter::once(latent).chain(hidden.iter().copied()).chain([output]).collect();
        let root = vs.root() / name;
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(index, pair)| {
                nn::linear(
                    &root / format!("layer{index}"),
                    pair[0],
                    pair[1],
                    torch_linear_config(pair[0]),
                )
            })
            .collect();
        Self { vs, layers, latent }
    }

    /// Lists the `(in, out)` widths of every layer, code side first.
    #[cfg(test)]
    pub fn layer_shapes(&self) -> Vec<(i64, i64)> {
        self.layers
            .iter()
            .map(|layer| {
                let size = layer.ws.size();
                (size[1], size[0])
            })
            .collect()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Trainable tensors by name, sorted by name so that optimizers see a stable order.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|(left, _), (right, _)| left.cmp(right));
        named
    }

    /// Maps codes `[batch, latent]` to output logits `[batch, output]`.
    pub fn forward(&self, codes: &Tensor) -> Result<Tensor> {
        let size = codes.size();
        ensure!(
            size.len() == 2 && size[1] == self.latent,
            "network input of shape {size:?} is invalid, expected [batch, {}]",
            self.latent
        );

        let mut xs = codes.shallow_clone();
        let last = self.layers.len() - 1;
        for (index, layer) in self.layers.iter().enumerate() {
            xs = xs.f_linear(&layer.ws, layer.bs.as_ref())?;
            if index < last {
                xs = xs.f_relu()?;
            }
        }
        Ok(xs)
    }
}
