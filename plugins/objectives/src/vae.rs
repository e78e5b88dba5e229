//! The `vae` objective: a variational autoencoder trained on the evidence lower bound (ELBO).

use pretext_plugin_api::tch::{self, Kind, Reduction, Tensor};
use pretext_plugin_api::{
    Batch, BuildContext, Description, EncoderHandle, Error, InputKind, LossOutput, Objective,
    ObjectivePlugin, Param, ParamGroup, Params, Result, StepInfo, bail, ensure,
};

use crate::decoder::Decoder;

/// The names that the `loss` parameter accepts.
const LOSSES: [&str; 2] = ["bce", "mse"];

/// The reconstruction term of the ELBO, summed over the values of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Likelihood {
    /// Bernoulli likelihood: binary cross-entropy on the decoder's logits; inputs in [0, 1].
    Bernoulli,
    /// Gaussian likelihood of unit variance, up to constants: the squared error.
    Gaussian,
}

/// A variational autoencoder whose encoder outputs the mean and log-variance of the code.
///
/// The encoder's output of width `2 z` is split into the mean (the first `z` columns) and the
/// log-variance (the last `z`). A code drawn by the reparameterisation `mean + exp(logvar / 2) *
/// eps` goes through the decoder. The loss is the negative ELBO, `reconstruction + beta * kl`,
/// each summed over a sample's values and averaged over the batch. Evaluators see the mean.
pub struct Vae {
    decoder: Decoder,
    likelihood: Likelihood,
    beta: f64,
    code_dim: i64,
    sample_shape: Vec<i64>,
}

impl ObjectivePlugin for Vae {
    fn describe() -> Description {
        let summary = "variational autoencoder: ELBO with a beta-weighted KL term";
        Description::new("vae", env!("CARGO_PKG_VERSION"), summary)
            .param(
                Param::int_list(
                    "decoder_hidden",
                    &[],
                    "decoder hidden widths, code side first (empty: the encoder's, reversed)",
                )
                .min(1.0),
            )
            .param(
                Param::string("loss", "bce", "reconstruction term; bce expects inputs in [0, 1]")
                    .choices(&LOSSES),
            )
            .param(Param::float("beta", 1.0, "weight of the KL term").min(0.0))
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let likelihood = match params.string("loss")?.as_str() {
            "bce" => Likelihood::Bernoulli,
            "mse" => Likelihood::Gaussian,
            other => bail!("loss `{other}` is invalid, expected one of {LOSSES:?}"),
        };
        let beta = params.float("beta")?;
        let encoder = context.encoder.as_ref().ok_or_else(|| {
            Error::msg("vae needs the encoder's description, but the build context has none")
        })?;
        ensure!(
            encoder.output_dim >= 2 && encoder.output_dim % 2 == 0,
            "vae needs an encoder output of even width 2 * z (the mean and the log-variance of a \
             z-dimensional code), but the encoder reports {}; set the encoder's latent width to \
             twice the code size",
            encoder.output_dim
        );
        let dataset = context.dataset.as_ref().ok_or_else(|| {
            Error::msg("vae needs the dataset's description, but the build context has none")
        })?;
        ensure!(
            dataset.input_kind == InputKind::Features && dataset.sample_numel() >= 1,
            "vae needs float features, but the dataset has {:?} inputs of shape {:?}",
            dataset.input_kind,
            dataset.sample_shape
        );

        let code_dim = encoder.output_dim / 2;
        let mut hidden = params.int_list("decoder_hidden")?;
        if hidden.is_empty() {
            hidden = encoder.hidden_sizes.iter().rev().copied().collect();
        }
        let decoder = Decoder::new(context.device, code_dim, &hidden, dataset.sample_numel());
        Ok(Self { decoder, likelihood, beta, code_dim, sample_shape: dataset.sample_shape.clone() })
    }
}

impl Vae {
    /// Splits encoder features `[batch, 2 z]` into the mean and the log-variance.
    fn split(&self, features: &Tensor) -> Result<(Tensor, Tensor)> {
        let size = features.size();
        ensure!(
            size.len() == 2 && size[1] == 2 * self.code_dim,
            "encoder features of shape {size:?} are invalid, expected [batch, {}]",
            2 * self.code_dim
        );
        let mean = features.f_narrow(1, 0, self.code_dim)?;
        let log_variance = features.f_narrow(1, self.code_dim, self.code_dim)?;
        Ok((mean, log_variance))
    }

    /// Maps decoder logits to values in the data's range.
    fn activate(&self, logits: &Tensor) -> Result<Tensor> {
        match self.likelihood {
            Likelihood::Bernoulli => Ok(logits.f_sigmoid()?),
            Likelihood::Gaussian => Ok(logits.shallow_clone()),
        }
    }

    /// Computes the reconstruction term, summed over values and averaged over the batch.
    fn reconstruction(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        let batch = target.size()[0] as f64;
        let summed = match self.likelihood {
            Likelihood::Bernoulli => logits.f_binary_cross_entropy_with_logits(
                target,
                None::<Tensor>,
                None::<Tensor>,
                Reduction::Sum,
            )?,
            Likelihood::Gaussian => logits.f_mse_loss(target, Reduction::Sum)?,
        };
        Ok(summed.f_div_scalar(batch)?)
    }

    /// Reshapes flat decoder outputs to the dataset's sample shape.
    fn to_samples(&self, flat: &Tensor) -> Result<Tensor> {
        let mut shape = vec![flat.size()[0]];
        shape.extend(&self.sample_shape);
        Ok(flat.f_reshape(shape)?)
    }
}

/// Computes `KL(N(mean, exp(log_variance)) || N(0, 1))`, summed over the code and averaged over
/// the batch.
fn kl_divergence(mean: &Tensor, log_variance: &Tensor) -> Result<Tensor> {
    let batch = mean.size()[0] as f64;
    let terms =
        log_variance.f_add_scalar(1.0)?.f_sub(&mean.f_square()?)?.f_sub(&log_variance.f_exp()?)?;
    Ok(terms.f_sum(Kind::Float)?.f_mul_scalar(-0.5 / batch)?)
}

impl Objective for Vae {
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
        let features = encoder.forward(&batch.inputs, true)?.features;
        let (mean, log_variance) = self.split(&features)?;
        let noise = mean.f_randn_like()?;
        let code = mean.f_add(&log_variance.f_mul_scalar(0.5)?.f_exp()?.f_mul(&noise)?)?;

        let target = batch.inputs.f_flatten(1, -1)?;
        let reconstruction = self.reconstruction(&self.decoder.forward(&code)?, &target)?;
        let kl = kl_divergence(&mean, &log_variance)?;
        let loss = reconstruction.f_add(&kl.f_mul_scalar(self.beta)?)?;

        let metrics = vec![
            ("reconstruction".to_owned(), reconstruction.f_double_value(&[])?),
            ("kl".to_owned(), kl.f_double_value(&[])?),
        ];
        Ok(LossOutput { loss, metrics })
    }

    fn representation(&self, features: &Tensor) -> Result<Tensor> {
        Ok(self.split(features)?.0)
    }

    fn reconstruct(&self, inputs: &Tensor, encoder: &dyn EncoderHandle) -> Result<Option<Tensor>> {
        tch::no_grad(|| {
            let features = encoder.forward(inputs, false)?.features;
            let (mean, _) = self.split(&features)?;
            let outputs = self.activate(&self.decoder.forward(&mean)?)?;
            Ok(Some(outputs.f_reshape(inputs.size())?))
        })
    }

    fn sample(&self, count: i64) -> Result<Option<Tensor>> {
        tch::no_grad(|| {
            let device = self.decoder.device();
            let code = Tensor::f_randn([count, self.code_dim], (Kind::Float, device))?;
            let outputs = self.activate(&self.decoder.forward(&code)?)?;
            Ok(Some(self.to_samples(&outputs)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::{LinearEncoder, adam, features_context, params_with};

    fn build(overrides: &[(&str, ParamValue)], latent: i64) -> Vae {
        let params = params_with(Vae::describe(), overrides);
        Vae::create(&params, &features_context(&[1, 2, 4], latent)).expect("vae builds")
    }

    fn step(step: u64) -> StepInfo {
        StepInfo { step, epoch: 0 }
    }

    #[test]
    fn odd_encoder_width_is_rejected() {
        let params = params_with(Vae::describe(), &[]);

        let error = Vae::create(&params, &features_context(&[8], 5)).err().expect("create fails");
        assert!(error.message().contains("even width 2 * z"), "{error}");
        assert!(error.message().contains("reports 5"), "{error}");
    }

    #[test]
    fn representation_is_the_mean_half() {
        let vae = build(&[], 6);
        let features = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([2, 6]);

        let representation = vae.representation(&features).unwrap();
        let expected = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 6.0, 7.0, 8.0]).view([2, 3]);
        assert!(representation.equal(&expected));
    }

    #[test]
    fn kl_matches_closed_form() {
        let mean = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let log_variance = Tensor::from_slice(&[0.0f32, 2.0f32.ln()]).view([1, 2]);

        // 0.5 * (mu^2 + sigma^2 - 1 - ln sigma^2) per dimension.
        let expected = 0.5 * (1.0 + 0.0) + 0.5 * (2.0 - 1.0 - 2.0f64.ln());
        let kl = kl_divergence(&mean, &log_variance).unwrap().double_value(&[]);
        assert!((kl - expected).abs() < 1e-6, "kl {kl}, expected {expected}");
    }

    #[test]
    fn loss_logs_both_terms() {
        tch::manual_seed(0);
        let mut vae = build(&[("beta", ParamValue::Float(0.5))], 4);
        let encoder = LinearEncoder::new(8, 4);
        let batch =
            Batch { inputs: Tensor::rand([16, 1, 2, 4], (Kind::Float, Device::Cpu)), labels: None };

        let output = vae.loss(step(0), "main", &batch, &encoder).unwrap();
        let names: Vec<&str> = output.metrics.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["reconstruction", "kl"]);
        let total = output.metrics[0].1 + 0.5 * output.metrics[1].1;
        assert!((output.loss.double_value(&[]) - total).abs() < 1e-4);
    }

    #[test]
    fn training_reduces_the_loss() {
        tch::manual_seed(0);
        let mut vae = build(&[], 4);
        let encoder = LinearEncoder::new(8, 4);
        let batch = Batch {
            inputs: Tensor::rand([64, 1, 2, 4], (Kind::Float, Device::Cpu)).round(),
            labels: None,
        };
        let mut tensors: Vec<Tensor> =
            vae.parameter_groups()[0].params.iter().map(|(_, t)| t.shallow_clone()).collect();
        tensors.extend(encoder.vs.trainable_variables());
        let optimizer = adam(&tensors, 1e-2);

        let mut losses = Vec::new();
        for index in 0..300 {
            optimizer.zero_grad().unwrap();
            let output = vae.loss(step(index), "main", &batch, &encoder).unwrap();
            output.loss.backward();
            optimizer.step().unwrap();
            losses.push(output.loss.double_value(&[]));
        }
        assert!(losses[299] < 0.8 * losses[0], "loss went from {} to {}", losses[0], losses[299]);
    }

    #[test]
    fn reconstruct_and_sample_keep_sample_shape() {
        let vae = build(&[], 4);
        let encoder = LinearEncoder::new(8, 4);
        let inputs = Tensor::rand([3, 1, 2, 4], (Kind::Float, Device::Cpu));

        let reconstruction = vae.reconstruct(&inputs, &encoder).unwrap().unwrap();
        assert_eq!(reconstruction.size(), [3, 1, 2, 4]);
        let samples = vae.sample(5).unwrap().unwrap();
        assert_eq!(samples.size(), [5, 1, 2, 4]);
        let max = samples.max().double_value(&[]);
        assert!(max <= 1.0, "bce samples go up to {max}");
    }
}
