//! The `denoising_autoencoder` objective: reconstructs clean inputs from corrupted copies.

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::{
    Batch, BuildContext, Description, EncoderHandle, LossOutput, Objective, ObjectivePlugin, Param,
    ParamGroup, Params, Result, StepInfo, bail, ensure,
};

use crate::autoencoder::{Autoencoder, reconstruction_params};
use crate::corruption::{gaussian_noise, mask_values};

/// The names that the `noise` parameter accepts.
const NOISES: [&str; 2] = ["gaussian", "masking"];

/// How the input is corrupted before it is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Noise {
    /// Adds Gaussian noise of this standard deviation.
    Gaussian(f64),
    /// Sets each value to zero with this probability.
    Masking(f64),
}

impl Noise {
    fn apply(self, inputs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gaussian(std) => gaussian_noise(inputs, std),
            Self::Masking(fraction) => mask_values(inputs, fraction),
        }
    }
}

/// An autoencoder whose encoder sees a corrupted input while the loss compares the decoder's
/// output with the clean input.
///
/// The decoder, the loss and their parameters are those of `autoencoder`. Reconstructions for
/// evaluators are computed from clean inputs.
pub struct DenoisingAutoencoder {
    inner: Autoencoder,
    noise: Noise,
}

impl ObjectivePlugin for DenoisingAutoencoder {
    fn describe() -> Description {
        let summary = "reconstructs clean inputs from noisy or masked copies";
        let description =
            Description::new("denoising_autoencoder", env!("CARGO_PKG_VERSION"), summary);
        reconstruction_params(description)
            .param(Param::string("noise", "gaussian", "corruption of the input").choices(&NOISES))
            .param(
                Param::float("noise_std", 0.2, "standard deviation of the gaussian noise").min(0.0),
            )
            .param(
                Param::float("mask_fraction", 0.25, "probability of zeroing a value (masking)")
                    .range(0.0, 1.0),
            )
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let noise = match params.string("noise")?.as_str() {
            "gaussian" => Noise::Gaussian(params.float("noise_std")?),
            "masking" => {
                let fraction = params.float("mask_fraction")?;
                ensure!(
                    fraction < 1.0,
                    "mask_fraction {fraction} is invalid, expected a probability in [0, 1)"
                );
                Noise::Masking(fraction)
            }
            other => bail!("noise `{other}` is invalid, expected one of {NOISES:?}"),
        };
        let inner = Autoencoder::create(params, context)?;
        Ok(Self { inner, noise })
    }
}

impl Objective for DenoisingAutoencoder {
    fn parameter_groups(&self) -> Vec<ParamGroup> {
        self.inner.parameter_groups()
    }

    fn loss(
        &mut self,
        _step: StepInfo,
        _phase: &str,
        batch: &Batch,
        encoder: &dyn EncoderHandle,
    ) -> Result<LossOutput> {
        self.inner.check_sample_size(&batch.inputs)?;
        let target = batch.inputs.f_flatten(1, -1)?;
        let corrupted = self.noise.apply(&batch.inputs)?;
        let logits = self.inner.decode_logits(&corrupted, encoder, true)?;
        let loss = self.inner.reconstruction_loss(&logits, &target)?;

        let value = loss.f_double_value(&[])?;
        Ok(LossOutput { loss, metrics: vec![("reconstruction_loss".to_owned(), value)] })
    }

    fn reconstruct(&self, inputs: &Tensor, encoder: &dyn EncoderHandle) -> Result<Option<Tensor>> {
        self.inner.reconstruct(inputs, encoder)
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::{self, Device, Kind};

    use super::*;
    use crate::testing::{LinearEncoder, adam, features_context, params_with};

    fn build(overrides: &[(&str, ParamValue)]) -> DenoisingAutoencoder {
        let params = params_with(DenoisingAutoencoder::describe(), overrides);
        DenoisingAutoencoder::create(&params, &features_context(&[8], 3)).expect("objective builds")
    }

    fn step(step: u64) -> StepInfo {
        StepInfo { step, epoch: 0 }
    }

    #[test]
    fn loss_targets_clean_inputs() {
        tch::manual_seed(0);
        let mut objective = build(&[("noise_std", ParamValue::Float(0.0))]);
        let encoder = LinearEncoder::new(8, 3);
        let inputs = Tensor::rand([16, 8], (Kind::Float, Device::Cpu));
        let batch = Batch { inputs: inputs.shallow_clone(), labels: None };

        // With no noise the loss is the plain autoencoder's.
        let output = objective.loss(step(0), "main", &batch, &encoder).unwrap();
        let codes = encoder.forward(&inputs, true).unwrap().features;
        let expected = objective.inner.reconstruction_loss(
            &objective.inner.decode_logits(&inputs, &encoder, true).unwrap(),
            &inputs,
        );
        assert_eq!(codes.size(), [16, 3]);
        let expected = expected.unwrap().double_value(&[]);
        assert!((output.loss.double_value(&[]) - expected).abs() < 1e-6);
    }

    #[test]
    fn noise_changes_the_loss() {
        let encoder = LinearEncoder::new(8, 3);
        let inputs = Tensor::rand([16, 8], (Kind::Float, Device::Cpu));
        let batch = Batch { inputs, labels: None };
        for noise in NOISES {
            tch::manual_seed(0);
            let mut clean = build(&[
                ("noise", ParamValue::Str(noise.into())),
                ("noise_std", ParamValue::Float(0.0)),
                ("mask_fraction", ParamValue::Float(0.0)),
            ]);
            tch::manual_seed(0);
            let mut noisy = build(&[
                ("noise", ParamValue::Str(noise.into())),
                ("noise_std", ParamValue::Float(1.0)),
                ("mask_fraction", ParamValue::Float(0.5)),
            ]);

            let clean_loss = clean.loss(step(0), "main", &batch, &encoder).unwrap().loss;
            let noisy_loss = noisy.loss(step(0), "main", &batch, &encoder).unwrap().loss;
            assert_ne!(clean_loss.double_value(&[]), noisy_loss.double_value(&[]), "{noise}");
        }
    }

    #[test]
    fn training_reduces_the_loss() {
        tch::manual_seed(0);
        let mut objective = build(&[("noise_std", ParamValue::Float(0.05))]);
        let encoder = LinearEncoder::new(8, 3);
        let codes = Tensor::rand([64, 3], (Kind::Float, Device::Cpu));
        let mixing = Tensor::rand([3, 8], (Kind::Float, Device::Cpu));
        let batch = Batch { inputs: codes.matmul(&mixing), labels: None };
        let mut tensors: Vec<Tensor> =
            objective.parameter_groups()[0].params.iter().map(|(_, t)| t.shallow_clone()).collect();
        tensors.extend(encoder.vs.trainable_variables());
        let optimizer = adam(&tensors, 1e-2);

        let mut losses = Vec::new();
        for index in 0..300 {
            optimizer.zero_grad().unwrap();
            let output = objective.loss(step(index), "main", &batch, &encoder).unwrap();
            output.loss.backward();
            optimizer.step().unwrap();
            losses.push(output.loss.double_value(&[]));
        }
        assert!(losses[299] < 0.2 * losses[0], "loss went from {} to {}", losses[0], losses[299]);
    }

    #[test]
    fn mask_fraction_of_one_is_rejected() {
        let params = params_with(
            DenoisingAutoencoder::describe(),
            &[
                ("noise", ParamValue::Str("masking".into())),
                ("mask_fraction", ParamValue::Float(1.0)),
            ],
        );

        let error = DenoisingAutoencoder::create(&params, &features_context(&[8], 3))
            .err()
            .expect("create fails");
        assert!(error.message().contains("mask_fraction 1 is invalid"), "{error}");
    }
}
