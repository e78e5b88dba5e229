//! The `autoencoder` objective: encodes a batch, decodes it with a decoder that mirrors the
//! encoder, and minimises the reconstruction loss.

use pretext_plugin_api::tch::{self, Reduction, Tensor};
use pretext_plugin_api::{
    Batch, BuildContext, Description, EncoderHandle, Error, InputKind, LossOutput, Objective,
    ObjectivePlugin, Param, ParamGroup, Params, Result, StepInfo, bail, ensure,
};

use crate::decoder::Decoder;

/// The names that the `loss` parameter accepts.
const LOSSES: [&str; 2] = ["mse", "bce"];

/// The names that the `output_activation` parameter accepts.
const OUTPUT_ACTIVATIONS: [&str; 2] = ["none", "sigmoid"];

/// The reconstruction loss, averaged over every element of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReconstructionLoss {
    /// Mean squared error between the activated output and the input, as `F.mse_loss`.
    Mse,
    /// Binary cross-entropy on the decoder's logits, as `F.binary_cross_entropy_with_logits`.
    Bce,
}

impl ReconstructionLoss {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "mse" => Ok(Self::Mse),
            "bce" => Ok(Self::Bce),
            other => bail!("loss `{other}` is invalid, expected one of {LOSSES:?}"),
        }
    }
}

/// The function applied to the decoder's logits to produce a reconstruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputActivation {
    None,
    Sigmoid,
}

impl OutputActivation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "sigmoid" => Ok(Self::Sigmoid),
            other => {
                bail!(
                    "output activation `{other}` is invalid, expected one of {OUTPUT_ACTIVATIONS:?}"
                )
            }
        }
    }

    fn apply(self, logits: &Tensor) -> Result<Tensor> {
        match self {
            Self::None => Ok(logits.shallow_clone()),
            Self::Sigmoid => Ok(logits.f_sigmoid()?),
        }
    }
}

/// An autoencoder objective that owns the decoder and trains it together with the encoder.
pub struct Autoencoder {
    decoder: Decoder,
    loss: ReconstructionLoss,
    output_activation: OutputActivation,
    input_dim: i64,
}

impl ObjectivePlugin for Autoencoder {
    fn describe() -> Description {
        let summary = "reconstructs inputs through a decoder";
        reconstruction_params(Description::new("autoencoder", env!("CARGO_PKG_VERSION"), summary))
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let loss = ReconstructionLoss::parse(&params.string("loss")?)?;
        let output_activation = OutputActivation::parse(&params.string("output_activation")?)?;
        let mut hidden = params.int_list("decoder_hidden")?;
        ensure!(
            hidden.iter().all(|&width| width >= 1),
            "decoder_hidden widths {hidden:?} are invalid, expected every width to be at least 1"
        );

        let encoder = context.encoder.as_ref().ok_or_else(|| {
            Error::msg(
                "autoencoder needs the encoder's description, but the build context has none",
            )
        })?;
        ensure!(
            encoder.output_dim >= 1,
            "autoencoder needs an encoder output of width at least 1, but the encoder reports {}",
            encoder.output_dim
        );
        if hidden.is_empty() {
            hidden = encoder.hidden_sizes.iter().rev().copied().collect();
        }

        let input_dim = flat_input_dim(context)?;
        let decoder = Decoder::new(context.device, encoder.output_dim, &hidden, input_dim);
        Ok(Self { decoder, loss, output_activation, input_dim })
    }
}

/// Adds the decoder and reconstruction-loss parameters that every reconstructing objective shares.
pub(crate) fn reconstruction_params(description: Description) -> Description {
    description
        .param(
            Param::int_list(
                "decoder_hidden",
                &[],
                "decoder hidden widths, code side first (empty: the encoder's, reversed)",
            )
            .min(1.0),
        )
        .param(
            Param::string("loss", "mse", "reconstruction loss; bce expects inputs in [0, 1]")
                .choices(&LOSSES),
        )
        .param(
            Param::string(
                "output_activation",
                "none",
                "applied to decoder output for mse and reconstructions (bce uses logits)",
            )
            .choices(&OUTPUT_ACTIVATIONS),
        )
}

/// Reads the number of values per sample from the dataset's description.
fn flat_input_dim(context: &BuildContext) -> Result<i64> {
    let dataset = context.dataset.as_ref().ok_or_else(|| {
        Error::msg("autoencoder needs the dataset's description, but the build context has none")
    })?;
    ensure!(
        dataset.input_kind == InputKind::Features,
        "autoencoder needs float features, but the dataset has token inputs"
    );
    let numel = dataset.sample_numel();
    ensure!(
        numel >= 1,
        "autoencoder needs at least one value per sample, but the sample shape is {:?}",
        dataset.sample_shape
    );
    Ok(numel)
}

impl Autoencoder {
    /// Encodes `inputs` as the dataset shapes them and decodes the codes to flat logits.
    pub(crate) fn decode_logits(
        &self,
        inputs: &Tensor,
        encoder: &dyn EncoderHandle,
        train: bool,
    ) -> Result<Tensor> {
        let features = encoder.forward(inputs, train)?.features;
        self.decoder.forward(&features)
    }

    /// Checks that `inputs` is `[batch, ...]` with the dataset's number of values per sample.
    pub(crate) fn check_sample_size(&self, inputs: &Tensor) -> Result<()> {
        let size = inputs.size();
        let sample_numel: i64 = size.iter().skip(1).product();
        ensure!(
            size.len() >= 2 && sample_numel == self.input_dim,
            "autoencoder input of shape {size:?} is invalid, expected {} values per sample",
            self.input_dim
        );
        Ok(())
    }

    /// Computes the configured loss between decoder `logits` and the flat `target`.
    pub(crate) fn reconstruction_loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        let loss = match self.loss {
            ReconstructionLoss::Mse => {
                self.output_activation.apply(logits)?.f_mse_loss(target, Reduction::Mean)?
            }
            ReconstructionLoss::Bce => logits.f_binary_cross_entropy_with_logits(
                target,
                None::<Tensor>,
                None::<Tensor>,
                Reduction::Mean,
            )?,
        };
        Ok(loss)
    }
}

impl Objective for Autoencoder {
    fn parameter_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup {
            name: "main".to_owned(),
            params: self.decoder.parameters(),
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
        self.check_sample_size(&batch.inputs)?;
        let target = batch.inputs.f_flatten(1, -1)?;
        let logits = self.decode_logits(&batch.inputs, encoder, true)?;
        let loss = self.reconstruction_loss(&logits, &target)?;

        let value = loss.f_double_value(&[])?;
        Ok(LossOutput { loss, metrics: vec![("reconstruction_loss".to_owned(), value)] })
    }

    fn reconstruct(&self, inputs: &Tensor, encoder: &dyn EncoderHandle) -> Result<Option<Tensor>> {
        self.check_sample_size(inputs)?;
        tch::no_grad(|| {
            let logits = self.decode_logits(inputs, encoder, false)?;
            let outputs = self.output_activation.apply(&logits)?;
            Ok(Some(outputs.f_reshape(inputs.size())?))
        })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::tch::nn::{self, VarStore};
    use pretext_plugin_api::tch::{COptimizer, Device, Kind};
    use pretext_plugin_api::{DatasetInfo, EncoderInfo, EncoderOutput, ParamValue, PluginKind};

    use super::*;

    /// Builds the parameters the host would pass: schema defaults, then `overrides`.
    fn params_with(overrides: &[(&str, ParamValue)]) -> Params {
        let info = Autoencoder::describe().into_info(PluginKind::Objective);
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

    fn context(sample_shape: &[i64], latent: i64, hidden: &[i64]) -> BuildContext {
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
            encoder: Some(EncoderInfo {
                output_dim: latent,
                hidden_sizes: hidden.to_vec(),
                ..EncoderInfo::default()
            }),
        }
    }

    fn build(overrides: &[(&str, ParamValue)], context: &BuildContext) -> Autoencoder {
        Autoencoder::create(&params_with(overrides), context).expect("autoencoder builds")
    }

    /// A single linear layer standing in for the encoder plugin that the host would route to.
    struct LinearEncoder {
        vs: VarStore,
        layer: nn::Linear,
    }

    impl LinearEncoder {
        fn new(input_dim: i64, latent: i64) -> Self {
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

    /// 32 samples of 8 values that lie in a 3-dimensional subspace, so a 3-d code can fit them.
    fn low_rank_batch() -> Batch {
        let rows = Tensor::arange(32, (Kind::Float, Device::Cpu)).unsqueeze(1);
        let factors = Tensor::arange(3, (Kind::Float, Device::Cpu)).unsqueeze(0) + 1.0;
        let codes = (rows * factors * 0.37).sin();
        let columns = Tensor::arange(8, (Kind::Float, Device::Cpu)).unsqueeze(0) + 1.0;
        let basis = (Tensor::arange(3, (Kind::Float, Device::Cpu)).unsqueeze(1) + 1.0) * columns;
        let mixing = (basis * 0.5).cos();
        Batch { inputs: codes.matmul(&mixing), labels: None }
    }

    fn step(step: u64) -> StepInfo {
        StepInfo { step, epoch: 0 }
    }

    #[test]
    fn default_decoder_mirrors_encoder() {
        let objective = build(&[], &context(&[1, 8, 8], 16, &[128, 64]));

        assert_eq!(objective.decoder.layer_shapes(), [(16, 64), (64, 128), (128, 64)]);
    }

    #[test]
    fn decoder_hidden_overrides_mirror() {
        let overrides = [("decoder_hidden", ParamValue::IntList(vec![32].into()))];
        let objective = build(&overrides, &context(&[64], 16, &[128, 64]));

        assert_eq!(objective.decoder.layer_shapes(), [(16, 32), (32, 64)]);
    }

    #[test]
    fn encoder_without_hidden_gives_linear_decoder() {
        let objective = build(&[], &context(&[8], 3, &[]));

        assert_eq!(objective.decoder.layer_shapes(), [(3, 8)]);
    }

    #[test]
    fn parameter_group_lists_decoder_sorted() {
        let objective = build(&[], &context(&[64], 16, &[128, 64]));

        let groups = objective.parameter_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, "main");
        assert!(groups[0].includes_encoder);
        let names: Vec<&str> = groups[0].params.iter().map(|(name, _)| name.as_str()).collect();
        let expected = [
            "decoder.layer0.bias",
            "decoder.layer0.weight",
            "decoder.layer1.bias",
            "decoder.layer1.weight",
            "decoder.layer2.bias",
            "decoder.layer2.weight",
        ];
        assert_eq!(names, expected);
        assert_eq!(objective.phases(), [pretext_plugin_api::Phase::new("main", &["main"])]);
    }

    #[test]
    fn missing_encoder_info_is_rejected() {
        let context = BuildContext { encoder: None, ..context(&[64], 16, &[]) };

        let error = Autoencoder::create(&params_with(&[]), &context).err().expect("create fails");
        assert!(error.message().contains("needs the encoder's description"), "{error}");
    }

    #[test]
    fn mse_loss_matches_pytorch_formula() {
        let overrides = [("output_activation", ParamValue::Str("sigmoid".into()))];
        let mut objective = build(&overrides, &context(&[8], 3, &[]));
        let encoder = LinearEncoder::new(8, 3);
        let batch = low_rank_batch();

        let output = objective.loss(step(0), "main", &batch, &encoder).unwrap();
        let codes = encoder.forward(&batch.inputs, true).unwrap().features;
        let reconstruction = objective.decoder.forward(&codes).unwrap().sigmoid();
        let expected = (reconstruction - &batch.inputs).square().mean(Kind::Float);
        let loss = output.loss.double_value(&[]);
        assert!((loss - expected.double_value(&[])).abs() < 1e-6);
        assert_eq!(output.metrics, [("reconstruction_loss".to_owned(), loss)]);
    }

    #[test]
    fn bce_loss_uses_logits_despite_sigmoid() {
        let overrides = [
            ("loss", ParamValue::Str("bce".into())),
            ("output_activation", ParamValue::Str("sigmoid".into())),
        ];
        let mut objective = build(&overrides, &context(&[8], 3, &[]));
        let encoder = LinearEncoder::new(8, 3);
        let batch = Batch { inputs: low_rank_batch().inputs.sigmoid(), labels: None };

        let output = objective.loss(step(0), "main", &batch, &encoder).unwrap();
        let codes = encoder.forward(&batch.inputs, true).unwrap().features;
        let logits = objective.decoder.forward(&codes).unwrap();
        let probabilities = logits.sigmoid();
        let positive = &batch.inputs * probabilities.log();
        let negative = batch.inputs.ones_like().g_sub(&batch.inputs) * probabilities.neg().log1p();
        let expected = (positive + negative).neg().mean(Kind::Float);
        assert!((output.loss.double_value(&[]) - expected.double_value(&[])).abs() < 1e-5);
    }

    #[test]
    fn adam_steps_reduce_loss() {
        let mut objective = build(&[], &context(&[8], 3, &[]));
        let encoder = LinearEncoder::new(8, 3);
        let batch = low_rank_batch();
        let mut optimizer = COptimizer::adam(1e-2, 0.9, 0.999, 0.0, 1e-8, false).unwrap();
        for (_, tensor) in &objective.parameter_groups()[0].params {
            optimizer.add_parameters(tensor, 0).unwrap();
        }
        for tensor in encoder.vs.trainable_variables() {
            optimizer.add_parameters(&tensor, 0).unwrap();
        }

        let mut losses = Vec::new();
        for index in 0..300 {
            optimizer.zero_grad().unwrap();
            let output = objective.loss(step(index), "main", &batch, &encoder).unwrap();
            output.loss.backward();
            optimizer.step().unwrap();
            losses.push(output.loss.double_value(&[]));
        }

        let first = losses[0];
        let last = losses[losses.len() - 1];
        assert!(last < 0.1 * first, "loss went from {first} to {last}");
    }

    #[test]
    fn reconstruct_keeps_input_shape() {
        let overrides = [("output_activation", ParamValue::Str("sigmoid".into()))];
        let objective = build(&overrides, &context(&[1, 2, 4], 3, &[]));
        let encoder = LinearEncoder::new(8, 3);
        let inputs = Tensor::rand([5, 1, 2, 4], (Kind::Float, Device::Cpu));

        let reconstruction = objective.reconstruct(&inputs, &encoder).unwrap().unwrap();
        assert_eq!(reconstruction.size(), [5, 1, 2, 4]);
        assert!(!reconstruction.requires_grad());
        let min = reconstruction.min().double_value(&[]);
        let max = reconstruction.max().double_value(&[]);
        assert!(min >= 0.0, "sigmoid output min {min} is below 0");
        assert!(max <= 1.0, "sigmoid output max {max} is above 1");
    }

    #[test]
    fn loss_rejects_wrong_sample_size() {
        let mut objective = build(&[], &context(&[8], 3, &[]));
        let encoder = LinearEncoder::new(6, 3);
        let batch =
            Batch { inputs: Tensor::zeros([2, 6], (Kind::Float, Device::Cpu)), labels: None };

        let error = objective.loss(step(0), "main", &batch, &encoder).expect_err("loss fails");
        assert!(error.message().contains("expected 8 values per sample"), "{error}");
    }
}
