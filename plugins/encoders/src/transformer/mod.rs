//! The `transformer` encoder: token and learned position embeddings, pre-norm encoder layers,
//! a mean-pooled sequence code and per-token outputs.

mod layer;

use pretext_plugin_api::tch::nn::{self, Init, LayerNormConfig, VarStore};
use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{
    BuildContext, Description, Encoder, EncoderInfo, EncoderOutput, EncoderPlugin, Error,
    InputKind, Param, Params, Result, ensure,
};

use layer::EncoderLayer;

/// Standard deviation of the token and position embeddings at initialisation, as in BERT.
const EMBEDDING_STD: f64 = 0.02;

/// A transformer encoder over int64 token sequences `[batch, length]`.
///
/// The embedding table has `vocab_size + extra_tokens` rows. The rows past the dataset's
/// vocabulary are ids that objectives may add, such as the `[MASK]` id `vocab_size` that
/// `masked_modeling` uses. `features` is the mean of the final, layer-normed token outputs over
/// the tokens that are not `pad_token`, and `tokens` is every token's output.
pub struct Transformer {
    vs: VarStore,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_norm: nn::LayerNorm,
    dim: i64,
    table_size: i64,
    max_length: i64,
    pad_token: Option<i64>,
    dropout: f64,
}

/// The values of the `transformer` parameters, checked.
struct Config {
    dim: i64,
    layers: i64,
    heads: i64,
    mlp_dim: i64,
    dropout: f64,
    max_length: i64,
    pad_token: Option<i64>,
    table_size: i64,
}

impl Config {
    fn read(params: &Params, context: &BuildContext) -> Result<Self> {
        let dim = params.int("dim")?;
        let heads = params.int("heads")?;
        let dropout = params.float("dropout")?;
        ensure!(
            dim >= 1 && heads >= 1,
            "dim {dim} and heads {heads} are invalid, expected both at least 1"
        );
        ensure!(
            dim % heads == 0,
            "dim {dim} is invalid, expected a multiple of heads ({heads}) so each head gets \
             dim / heads values"
        );
        ensure!(
            (0.0..1.0).contains(&dropout),
            "dropout {dropout} is invalid, expected a probability in [0, 1)"
        );

        let dataset = context.dataset.as_ref().ok_or_else(|| {
            Error::msg(
                "transformer encoder needs the dataset's description, but the build context has none",
            )
        })?;
        ensure!(
            dataset.input_kind == InputKind::Tokens && dataset.vocab_size >= 1,
            "transformer encoder needs token inputs with a vocabulary, but the dataset has {:?} \
             inputs with vocab_size {}",
            dataset.input_kind,
            dataset.vocab_size
        );
        let [length] = dataset.sample_shape[..] else {
            pretext_plugin_api::bail!(
                "transformer encoder needs samples of shape [length], found {:?}",
                dataset.sample_shape
            );
        };
        let max_length = match params.int("max_length")? {
            0 => length,
            value => value,
        };
        ensure!(
            max_length >= length,
            "max_length {max_length} is shorter than the dataset's sequences ({length} tokens)"
        );
        let table_size = dataset.vocab_size + params.int("extra_tokens")?;
        let pad_token = match params.int("pad_token")? {
            -1 => None,
            id => Some(id),
        };
        if let Some(id) = pad_token {
            ensure!(
                (0..table_size).contains(&id),
                "pad_token {id} is invalid, expected -1 (no padding) or an id below {table_size}"
            );
        }

        Ok(Self {
            dim,
            layers: params.int("layers")?,
            heads,
            mlp_dim: params.int("mlp_dim")?,
            dropout,
            max_length,
            pad_token,
            table_size,
        })
    }
}

impl EncoderPlugin for Transformer {
    fn describe() -> Description {
        Description::new(
            "transformer",
            env!("CARGO_PKG_VERSION"),
            "pre-norm transformer on token sequences: mean-pooled code and per-token outputs",
        )
        .param(Param::int("dim", 64, "width of the token representations").min(1.0))
        .param(Param::int("layers", 2, "number of encoder layers").min(0.0))
        .param(Param::int("heads", 4, "attention heads per layer; must divide dim").min(1.0))
        .param(Param::int("mlp_dim", 128, "hidden width of each layer's MLP").min(1.0))
        .param(Param::float("dropout", 0.0, "dropout probability in training").range(0.0, 1.0))
        .param(
            Param::int("max_length", 0, "rows of the position table; 0: the dataset's length")
                .min(0.0),
        )
        .param(
            Param::int("pad_token", -1, "id left out of attention and pooling; -1: none").min(-1.0),
        )
        .param(
            Param::int(
                "extra_tokens",
                1,
                "embedding rows past the dataset's vocabulary, such as the [MASK] id vocab_size",
            )
            .min(0.0),
        )
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let config = Config::read(params, context)?;
        let vs = VarStore::new(context.device);
        let root = vs.root();
        let init = Init::Randn { mean: 0.0, stdev: EMBEDDING_STD };
        let token_embedding = root.var("token_embedding", &[config.table_size, config.dim], init);
        let position_embedding =
            root.var("position_embedding", &[config.max_length, config.dim], init);
        let layers = (0..config.layers)
            .map(|index| {
                let path = &root / format!("layer{index}");
                EncoderLayer::new(&path, config.dim, config.heads, config.mlp_dim, config.dropout)
            })
            .collect();
        let final_norm =
            nn::layer_norm(&root / "final_norm", vec![config.dim], LayerNormConfig::default());

        Ok(Self {
            vs,
            token_embedding,
            position_embedding,
            layers,
            final_norm,
            dim: config.dim,
            table_size: config.table_size,
            max_length: config.max_length,
            pad_token: config.pad_token,
            dropout: config.dropout,
        })
    }
}

impl Transformer {
    /// Checks that `ids` is an int64 `[batch, length]` tensor of ids in the embedding table.
    fn check_ids(&self, ids: &Tensor) -> Result<()> {
        let size = ids.size();
        ensure!(
            size.len() == 2 && ids.kind() == Kind::Int64,
            "transformer input must be int64 token ids of shape [batch, length], found {:?} of \
             shape {size:?}",
            ids.kind()
        );
        ensure!(
            size[1] <= self.max_length,
            "transformer input has {} tokens, more than max_length {}",
            size[1],
            self.max_length
        );
        if ids.numel() > 0 {
            let low = ids.f_min()?.f_int64_value(&[])?;
            let high = ids.f_max()?.f_int64_value(&[])?;
            ensure!(
                low >= 0 && high < self.table_size,
                "token ids range from {low} to {high}, expected ids in [0, {})",
                self.table_size
            );
        }
        Ok(())
    }
}

impl Encoder for Transformer {
    fn info(&self) -> EncoderInfo {
        EncoderInfo { output_dim: self.dim, has_token_output: true, ..EncoderInfo::default() }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|(left, _), (right, _)| left.cmp(right));
        named
    }

    fn forward(&self, inputs: &Tensor, train: bool) -> Result<EncoderOutput> {
        self.check_ids(inputs)?;
        let length = inputs.size()[1];
        let keep = match self.pad_token {
            Some(id) => inputs.f_ne(id)?,
            None => inputs.f_ones_like()?.f_to_kind(Kind::Bool)?,
        };

        let positions = self.position_embedding.f_narrow(0, 0, length)?;
        let mut xs = Tensor::f_embedding(&self.token_embedding, inputs, -1, false, false)?;
        xs = xs.f_add(&positions)?.f_dropout(self.dropout, train)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &keep, train)?;
        }
        let tokens = xs.apply(&self.final_norm);

        let weights = keep.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?;
        let counts = weights.f_sum_dim_intlist(1, false, Kind::Float)?.f_clamp_min(1.0)?;
        let features = tokens.f_mul(&weights)?.f_sum_dim_intlist(1, false, Kind::Float)?;
        let features = features.f_div(&counts)?;
        Ok(EncoderOutput { features, tokens: Some(tokens) })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::{features_context, params_with, tokens_context};

    fn build(overrides: &[(&str, ParamValue)]) -> Transformer {
        let params = params_with(Transformer::describe(), overrides);
        Transformer::create(&params, &tokens_context(12, 30)).expect("transformer builds")
    }

    fn ids(batch: i64, length: i64, high: i64) -> Tensor {
        Tensor::randint(high, [batch, length], (Kind::Int64, Device::Cpu))
    }

    #[test]
    fn forward_gives_pooled_and_token_outputs() {
        let transformer = build(&[]);

        let output = transformer.forward(&ids(3, 12, 30), true).unwrap();
        assert_eq!(output.features.size(), [3, 64]);
        assert_eq!(output.tokens.expect("token output").size(), [3, 12, 64]);
        assert!(transformer.info().has_token_output);
    }

    #[test]
    fn mask_id_past_vocabulary_is_accepted() {
        let transformer = build(&[]);
        let inputs = Tensor::full([2, 12], 30, (Kind::Int64, Device::Cpu));

        assert!(transformer.forward(&inputs, false).is_ok());
    }

    #[test]
    fn out_of_table_ids_are_rejected() {
        let transformer = build(&[("extra_tokens", ParamValue::Int(0))]);
        let inputs = Tensor::full([2, 12], 30, (Kind::Int64, Device::Cpu));

        let error = transformer.forward(&inputs, false).unwrap_err();
        assert!(error.message().contains("expected ids in [0, 30)"), "{error}");
    }

    #[test]
    fn padding_does_not_change_pooled_code() {
        let transformer = build(&[("pad_token", ParamValue::Int(0))]);
        let short = ids(1, 6, 29) + 1;
        let padded = Tensor::cat(&[short.shallow_clone(), short.zeros_like()], 1);

        let short_code = transformer.forward(&short, false).unwrap().features;
        let padded_code = transformer.forward(&padded, false).unwrap().features;
        assert!(short_code.allclose(&padded_code, 1e-4, 1e-5, false));
    }

    #[test]
    fn gradient_reaches_every_parameter() {
        let transformer = build(&[]);
        let output = transformer.forward(&ids(2, 12, 30), true).unwrap();

        output.features.sum(Kind::Float).backward();
        for (name, tensor) in transformer.parameters() {
            assert!(tensor.grad().defined(), "{name} got no gradient");
        }
    }

    #[test]
    fn heads_must_divide_dim() {
        let params = params_with(Transformer::describe(), &[("heads", ParamValue::Int(5))]);

        let error =
            Transformer::create(&params, &tokens_context(12, 30)).err().expect("create fails");
        assert!(error.message().contains("expected a multiple of heads"), "{error}");
    }

    #[test]
    fn float_dataset_is_rejected() {
        let params = params_with(Transformer::describe(), &[]);

        let error =
            Transformer::create(&params, &features_context(&[12])).err().expect("create fails");
        assert!(error.message().contains("needs token inputs"), "{error}");
    }
}
