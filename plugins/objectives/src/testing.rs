//! Helpers for the unit tests: parameters as the host would pass them, build contexts, and small
//! encoders standing in for the encoder plugin that the host would route to.

use pretext_plugin_api::tch::nn::{self, VarStore};
use pretext_plugin_api::tch::{COptimizer, Device, Kind, Tensor};
use pretext_plugin_api::{
    BuildContext, DatasetInfo, Description, EncoderHandle, EncoderInfo, EncoderOutput, InputKind,
    ParamValue, Params, PluginKind, Result,
};

/// Builds the parameters the host would pass: the schema's defaults, then `overrides`.
pub fn params_with(description: Description, overrides: &[(&str, ParamValue)]) -> Params {
    let info = description.into_info(PluginKind::Objective);
    let values = info
        .params
        .iter()
        .map(|spec| {
            let name = spec.name.to_string();
            let value = match overrides.iter().find(|(key, _)| *key == name) {
                Some((_, value)) => value.clone(),
                None => spec.default.clone().into_option().expect("every param has a default"),
            };
            (name, value)
        })
        .collect();
    Params::new(values)
}

/// A CPU build context for float samples of `sample_shape` and an encoder of width `latent`.
pub fn features_context(sample_shape: &[i64], latent: i64) -> BuildContext {
    BuildContext {
        device: Device::Cpu,
        seed: 0,
        dataset: Some(DatasetInfo {
            sample_shape: sample_shape.to_vec(),
            input_kind: InputKind::Features,
            vocab_size: 0,
            num_classes: None,
            class_names: Vec::new(),
            train_len: 32,
            test_len: 0,
        }),
        encoder: Some(EncoderInfo { output_dim: latent, ..EncoderInfo::default() }),
    }
}

/// A CPU build context for token sequences and an encoder with per-token outputs.
pub fn tokens_context(length: i64, vocab_size: i64, dim: i64) -> BuildContext {
    let mut context = features_context(&[length], dim);
    let dataset = context.dataset.as_mut().expect("the context has a dataset");
    dataset.input_kind = InputKind::Tokens;
    dataset.vocab_size = vocab_size;
    context.encoder.as_mut().expect("the context has an encoder").has_token_output = true;
    context
}

/// One linear layer on flattened samples.
pub struct LinearEncoder {
    pub vs: VarStore,
    layer: nn::Linear,
}

impl LinearEncoder {
    pub fn new(input_dim: i64, latent: i64) -> Self {
        let vs = VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "encoder", input_dim, latent, Default::default());
        Self { vs, layer }
    }
}

impl EncoderHandle for LinearEncoder {
    fn output_dim(&self) -> i64 {
        self.layer.ws.size()[0]
    }

    fn forward(&self, inputs: &Tensor, _train: bool) -> Result<EncoderOutput> {
        let flat = inputs.f_flatten(1, -1)?;
        let features = flat.f_linear(&self.layer.ws, self.layer.bs.as_ref())?;
        Ok(EncoderOutput { features, tokens: None })
    }
}

/// A token embedding followed by a mix of each token with its left neighbour, so that a masked
/// token's output depends on its context.
pub struct TokenEncoder {
    pub vs: VarStore,
    embedding: Tensor,
    mix: nn::Linear,
}

impl TokenEncoder {
    pub fn new(table_size: i64, dim: i64) -> Self {
        let vs = VarStore::new(Device::Cpu);
        let embedding = vs.root().randn("embedding", &[table_size, dim], 0.0, 1.0);
        let mix = nn::linear(vs.root() / "mix", 2 * dim, dim, Default::default());
        Self { vs, embedding, mix }
    }
}

impl EncoderHandle for TokenEncoder {
    fn output_dim(&self) -> i64 {
        self.embedding.size()[1]
    }

    fn forward(&self, inputs: &Tensor, _train: bool) -> Result<EncoderOutput> {
        let own = Tensor::f_embedding(&self.embedding, inputs, -1, false, false)?;
        let left = own.f_roll([1], [1])?;
        let tokens =
            Tensor::f_cat(&[own, left], 2)?.f_linear(&self.mix.ws, self.mix.bs.as_ref())?;
        let features = tokens.f_mean_dim(1, false, Kind::Float)?;
        Ok(EncoderOutput { features, tokens: Some(tokens) })
    }
}

/// An Adam optimizer over `tensors` with learning rate `lr`.
pub fn adam(tensors: &[Tensor], lr: f64) -> COptimizer {
    let mut optimizer = COptimizer::adam(lr, 0.9, 0.999, 0.0, 1e-8, false).unwrap();
    for tensor in tensors {
        optimizer.add_parameters(tensor, 0).unwrap();
    }
    optimizer
}
