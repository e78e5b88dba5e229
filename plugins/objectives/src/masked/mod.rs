//! The `masked_modeling` objective: hide part of each input and predict it, for token sequences
//! (BERT-style) or for float vectors (masked features).

mod features;
mod tokens;

use pretext_plugin_api::{
    Batch, BuildContext, Description, EncoderHandle, Error, InputKind, LossOutput, Objective,
    ObjectivePlugin, Param, ParamGroup, Params, Result, StepInfo, bail, ensure,
};

use crate::decoder::Decoder;
use features::MaskedFeatures;
use tokens::{MaskedTokens, TokenMasking};

/// The names that the `mode` parameter accepts.
const MODES: [&str; 3] = ["auto", "tokens", "features"];

/// The variant chosen for the dataset.
enum Variant {
    Tokens(MaskedTokens),
    Features(MaskedFeatures),
}

/// Masks a fraction of each input and trains the encoder and a prediction head to recover it.
///
/// With token inputs, the head reads the encoder's per-token outputs, and the chosen positions
/// follow BERT's rule: 80% become the mask id, 10% a random token and 10% stay unchanged (the
/// shares are parameters). With float inputs, masked values are set to `mask_value` and the head
/// reconstructs them from the pooled features.
pub struct MaskedModeling {
    variant: Variant,
}

impl ObjectivePlugin for MaskedModeling {
    fn describe() -> Description {
        let summary = "predicts masked tokens (BERT-style) or masked features from the rest";
        Description::new("masked_modeling", env!("CARGO_PKG_VERSION"), summary)
            .param(
                Param::string("mode", "auto", "tokens or features; auto follows the dataset")
                    .choices(&MODES),
            )
            .param(
                Param::float("mask_fraction", 0.15, "share of tokens or values to predict")
                    .range(0.0, 1.0),
            )
            .param(Param::int_list("head_hidden", &[], "hidden widths of the head").min(1.0))
            .param(
                Param::float("random_share", 0.1, "tokens: chosen positions given a random token")
                    .range(0.0, 1.0),
            )
            .param(
                Param::float("keep_share", 0.1, "tokens: chosen positions left unchanged")
                    .range(0.0, 1.0),
            )
            .param(
                Param::int(
                    "mask_token",
                    -1,
                    "tokens: the mask id; -1: vocab_size (one past the end)",
                )
                .min(-1.0),
            )
            .param(Param::int("pad_token", -1, "tokens: id never masked; -1: none").min(-1.0))
            .param(Param::float("mask_value", 0.0, "features: value written over masked inputs"))
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let fraction = params.float("mask_fraction")?;
        ensure!(
            fraction > 0.0 && fraction < 1.0,
            "mask_fraction {fraction} is invalid, expected a share strictly between 0 and 1"
        );
        let encoder = context.encoder.as_ref().ok_or_else(|| {
            Error::msg(
                "masked_modeling needs the encoder's description, but the build context has none",
            )
        })?;
        let dataset = context.dataset.as_ref().ok_or_else(|| {
            Error::msg(
                "masked_modeling needs the dataset's description, but the build context has none",
            )
        })?;
        let tokens = match params.string("mode")?.as_str() {
            "auto" => dataset.input_kind == InputKind::Tokens,
            "tokens" => true,
            "features" => false,
            other => bail!("mode `{other}` is invalid, expected one of {MODES:?}"),
        };
        let hidden = params.int_list("head_hidden")?;

        let variant = if tokens {
            ensure!(
                dataset.input_kind == InputKind::Tokens && dataset.vocab_size >= 1,
                "masked_modeling in tokens mode needs a token dataset with a vocabulary"
            );
            ensure!(
                encoder.has_token_output,
                "masked_modeling in tokens mode needs per-token outputs, but the encoder has none; \
                 use an encoder such as `transformer`, or mode = \"features\""
            );
            let masking = token_masking(params, dataset.vocab_size)?;
            // NOTE: the interface reports no width for per-token outputs, so the head assumes
            // that it equals the pooled width, as it does for `transformer`.
            let head = Decoder::named(
                context.device,
                "head",
                encoder.output_dim,
                &hidden,
                dataset.vocab_size,
            );
            Variant::Tokens(MaskedTokens::new(head, masking, dataset.vocab_size))
        } else {
            ensure!(
                dataset.input_kind == InputKind::Features,
                "masked_modeling in features mode needs float inputs, but the dataset has tokens"
            );
            let input_dim = dataset.sample_numel();
            let head =
                Decoder::named(context.device, "head", encoder.output_dim, &hidden, input_dim);
            let mask_value = params.float("mask_value")?;
            Variant::Features(MaskedFeatures::new(head, fraction, mask_value, input_dim))
        };
        Ok(Self { variant })
    }
}

/// Reads and checks the token-masking parameters.
fn token_masking(params: &Params, vocab_size: i64) -> Result<TokenMasking> {
    let random_share = params.float("random_share")?;
    let keep_share = params.float("keep_share")?;
    ensure!(
        random_share + keep_share <= 1.0,
        "random_share {random_share} and keep_share {keep_share} add up to more than 1"
    );
    let mask_token = match params.int("mask_token")? {
        -1 => vocab_size,
        id => id,
    };
    let pad_token = match params.int("pad_token")? {
        -1 => None,
        id => Some(id),
    };
    Ok(TokenMasking {
        fraction: params.float("mask_fraction")?,
        random_share,
        keep_share,
        mask_token,
        pad_token,
    })
}

impl Objective for MaskedModeling {
    fn parameter_groups(&self) -> Vec<ParamGroup> {
        let head = match &self.variant {
            Variant::Tokens(tokens) => &tokens.head,
            Variant::Features(features) => &features.head,
        };
        vec![ParamGroup {
            name: "main".to_owned(),
            params: head.parameters(),
            includes_encoder: true,
        }]
    }

    fn loss(
        &mut self,
        _step: StepInfo,
        _phase: &str,
        batch: &Batch,
        encoder: &dyn EncoderHandle,
    ) -> Result<LossOutput> {
        match &mut self.variant {
            Variant::Tokens(tokens) => tokens.loss(&batch.inputs, encoder),
            Variant::Features(features) => features.loss(&batch.inputs, encoder),
        }
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::{self, Device, Kind, Tensor};

    use super::*;
    use crate::testing::{
        LinearEncoder, TokenEncoder, adam, features_context, params_with, tokens_context,
    };

    fn step(step: u64) -> StepInfo {
        StepInfo { step, epoch: 0 }
    }

    fn train(
        objective: &mut MaskedModeling,
        encoder: &dyn EncoderHandle,
        extra: Vec<Tensor>,
        batch: &Batch,
        steps: u64,
    ) -> Vec<LossOutput> {
        let mut tensors: Vec<Tensor> =
            objective.parameter_groups()[0].params.iter().map(|(_, t)| t.shallow_clone()).collect();
        tensors.extend(extra);
        let optimizer = adam(&tensors, 1e-2);
        let mut outputs = Vec::new();
        for index in 0..steps {
            optimizer.zero_grad().unwrap();
            let output = objective.loss(step(index), "main", batch, encoder).unwrap();
            output.loss.backward();
            optimizer.step().unwrap();
            outputs.push(output);
        }
        outputs
    }

    /// Sequences where each token is its left neighbour plus one, modulo the vocabulary.
    fn counting_batch(vocab: i64) -> Batch {
        let starts = Tensor::randint(vocab, [64, 1], (Kind::Int64, Device::Cpu));
        let offsets = Tensor::arange(12, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        Batch { inputs: (starts + offsets).remainder(vocab), labels: None }
    }

    #[test]
    fn token_mode_learns_above_unigram_baseline() {
        tch::manual_seed(0);
        let params =
            params_with(MaskedModeling::describe(), &[("mask_fraction", ParamValue::Float(0.3))]);
        let mut objective = MaskedModeling::create(&params, &tokens_context(12, 10, 16)).unwrap();
        let encoder = TokenEncoder::new(11, 16);
        let batch = counting_batch(10);

        let outputs =
            train(&mut objective, &encoder, encoder.vs.trainable_variables(), &batch, 300);
        let last = outputs.last().unwrap();
        let names: Vec<&str> = last.metrics.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["masked_accuracy", "unigram_accuracy"]);
        assert!(last.metrics[0].1 > 0.6, "masked accuracy {}", last.metrics[0].1);
        assert!(last.metrics[1].1 < 0.4, "unigram accuracy {}", last.metrics[1].1);
    }

    #[test]
    fn padding_is_never_chosen() {
        tch::manual_seed(0);
        let params = params_with(
            MaskedModeling::describe(),
            &[("pad_token", ParamValue::Int(0)), ("mask_fraction", ParamValue::Float(0.9))],
        );
        let objective = MaskedModeling::create(&params, &tokens_context(12, 10, 16)).unwrap();
        let Variant::Tokens(tokens) = &objective.variant else { panic!("tokens mode expected") };
        let ids = Tensor::cat(
            &[
                Tensor::ones([8, 6], (Kind::Int64, Device::Cpu)),
                Tensor::zeros([8, 6], (Kind::Int64, Device::Cpu)),
            ],
            1,
        );

        let chosen = tokens.choose(&ids).unwrap();
        let chosen_padding = chosen.narrow(1, 6, 6).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(chosen_padding, 0);
        assert!(chosen.narrow(1, 0, 6).sum(Kind::Int64).int64_value(&[]) > 0);
    }

    #[test]
    fn encoder_without_tokens_is_rejected_in_token_mode() {
        let mut context = tokens_context(12, 10, 16);
        context.encoder.as_mut().unwrap().has_token_output = false;
        let params = params_with(MaskedModeling::describe(), &[]);

        let error = MaskedModeling::create(&params, &context).err().expect("create fails");
        assert!(error.message().contains("needs per-token outputs"), "{error}");
    }

    #[test]
    fn feature_mode_reduces_masked_error() {
        tch::manual_seed(0);
        let params =
            params_with(MaskedModeling::describe(), &[("mask_fraction", ParamValue::Float(0.25))]);
        let mut objective = MaskedModeling::create(&params, &features_context(&[8], 4)).unwrap();
        let encoder = LinearEncoder::new(8, 4);
        let codes = Tensor::rand([64, 2], (Kind::Float, Device::Cpu));
        let batch = Batch {
            inputs: codes.matmul(&Tensor::rand([2, 8], (Kind::Float, Device::Cpu))),
            labels: None,
        };

        let outputs =
            train(&mut objective, &encoder, encoder.vs.trainable_variables(), &batch, 300);
        let first = outputs[0].metrics[0].1;
        let last = outputs.last().unwrap().metrics[0].1;
        assert_eq!(outputs[0].metrics[0].0, "masked_mse");
        assert!(last < 0.5 * first, "masked MSE went from {first} to {last}");
    }
}
