//! The `gan` objective: a generative adversarial network whose discriminator is the encoder plus a
//! one-logit head, so that the encoder learns features that tell real samples from generated ones.

use pretext_plugin_api::tch::{self, Kind, Reduction, Tensor};
use pretext_plugin_api::{
    Batch, BuildContext, Description, EncoderHandle, Error, InputKind, LossOutput, Objective,
    ObjectivePlugin, Param, ParamGroup, Params, Phase, Result, StepInfo, bail,
};

use crate::decoder::Decoder;

/// The names that the `generator_output` parameter accepts.
const GENERATOR_OUTPUTS: [&str; 2] = ["sigmoid", "none"];

/// A GAN trained with the non-saturating loss of Goodfellow et al. (2014) and the R1 penalty of
/// Mescheder et al. (2018) on the discriminator.
///
/// Each training step has two phases. `discriminator` updates the encoder and the head
/// (parameter group `discriminator`) on real samples labelled 1 and detached generated samples
/// labelled 0, plus `(r1_weight / 2) * |grad_x D(x)|^2` on the real samples. `generator` updates
/// only the generator (group `generator`) so that its samples are scored as real. Evaluators see
/// the encoder's features.
pub struct Gan {
    generator: Decoder,
    head: Decoder,
    noise_dim: i64,
    sigmoid_output: bool,
    r1_weight: f64,
    sample_shape: Vec<i64>,
}

impl ObjectivePlugin for Gan {
    fn describe() -> Description {
        let summary = "adversarial training: the encoder is the discriminator's backbone";
        Description::new("gan", env!("CARGO_PKG_VERSION"), summary)
            .param(Param::int("noise_dim", 16, "width of the generator's input noise").min(1.0))
            .param(
                Param::int_list("generator_hidden", &[64, 128], "hidden widths of the generator")
                    .min(1.0),
            )
            .param(
                Param::int_list("head_hidden", &[], "hidden widths of the discriminator head")
                    .min(1.0),
            )
            .param(
                Param::string(
                    "generator_output",
                    "sigmoid",
                    "applied to generated values; sigmoid matches data in [0, 1]",
                )
                .choices(&GENERATOR_OUTPUTS),
            )
            .param(
                Param::float(
                    "r1_weight",
                    10.0,
                    "gamma of the R1 penalty (gamma / 2) * |grad_x D(x)|^2 on real samples; \
                     0 turns it off",
                )
                .min(0.0),
            )
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let sigmoid_output = match params.string("generator_output")?.as_str() {
            "sigmoid" => true,
            "none" => false,
            other => bail!(
                "generator_output `{other}` is invalid, expected one of {GENERATOR_OUTPUTS:?}"
            ),
        };
        let encoder = context.encoder.as_ref().ok_or_else(|| {
            Error::msg("gan needs the encoder's description, but the build context has none")
        })?;
        let dataset = context.dataset.as_ref().ok_or_else(|| {
            Error::msg("gan needs the dataset's description, but the build context has none")
        })?;
        pretext_plugin_api::ensure!(
            dataset.input_kind == InputKind::Features,
            "gan generates float samples, but the dataset has token inputs"
        );

        let noise_dim = params.int("noise_dim")?;
        let generator = Decoder::named(
            context.device,
            "generator",
            noise_dim,
            &params.int_list("generator_hidden")?,
            dataset.sample_numel(),
        );
        let head = Decoder::named(
            context.device,
            "head",
            encoder.output_dim,
            &params.int_list("head_hidden")?,
            1,
        );
        Ok(Self {
            generator,
            head,
            noise_dim,
            sigmoid_output,
            r1_weight: params.float("r1_weight")?,
            sample_shape: dataset.sample_shape.clone(),
        })
    }
}

impl Gan {
    /// Draws `count` generated samples of the dataset's sample shape, with gradients.
    fn generate(&self, count: i64) -> Result<Tensor> {
        let device = self.generator.device();
        let noise = Tensor::f_randn([count, self.noise_dim], (Kind::Float, device))?;
        let mut flat = self.generator.forward(&noise)?;
        if self.sigmoid_output {
            flat = flat.f_sigmoid()?;
        }
        let mut shape = vec![count];
        shape.extend(&self.sample_shape);
        Ok(flat.f_reshape(shape)?)
    }

    /// Returns the discriminator's logits for `inputs`, `[batch]`.
    fn logits(&self, inputs: &Tensor, encoder: &dyn EncoderHandle) -> Result<Tensor> {
        let features = encoder.forward(inputs, true)?.features;
        Ok(self.head.forward(&features)?.f_squeeze_dim(1)?)
    }
}

/// Computes the binary cross-entropy of `logits` against a constant `target`.
fn bce(logits: &Tensor, target: f64) -> Result<Tensor> {
    let targets = logits.f_full_like(target)?;
    Ok(logits.f_binary_cross_entropy_with_logits(
        &targets,
        None::<Tensor>,
        None::<Tensor>,
        Reduction::Mean,
    )?)
}

/// Computes the batch mean of `|grad_x D(x)|^2`, the squared norm of the gradient of the logits
/// with respect to the inputs that produced them, keeping the graph for the backward pass.
fn r1_penalty(real_logits: &Tensor, real: &Tensor) -> Result<Tensor> {
    let summed = real_logits.f_sum(Kind::Float)?;
    let mut gradients = Tensor::f_run_backward(&[summed], &[real], true, true)?;
    let squared = gradients.remove(0).f_square()?.f_flatten(1, -1)?;
    Ok(squared.f_sum_dim_intlist(1, false, Kind::Float)?.f_mean(Kind::Float)?)
}

/// Returns the mean probability that the discriminator gives to "real".
fn mean_probability(logits: &Tensor) -> Result<f64> {
    Ok(logits.f_sigmoid()?.f_mean(Kind::Float)?.f_double_value(&[])?)
}

impl Objective for Gan {
    fn parameter_groups(&self) -> Vec<ParamGroup> {
        vec![
            ParamGroup {
                name: "discriminator".to_owned(),
                params: self.head.parameters(),
                includes_encoder: true,
            },
            ParamGroup {
                name: "generator".to_owned(),
                params: self.generator.parameters(),
                includes_encoder: false,
            },
        ]
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase::new("discriminator", &["discriminator"]),
            Phase::new("generator", &["generator"]),
        ]
    }

    fn loss(
        &mut self,
        _step: StepInfo,
        phase: &str,
        batch: &Batch,
        encoder: &dyn EncoderHandle,
    ) -> Result<LossOutput> {
        let count = batch.inputs.size()[0];
        match phase {
            "discriminator" => {
                // Detached, so that this phase's backward pass stops at the generated samples.
                let fake = self.generate(count)?.f_detach()?;
                // The R1 penalty differentiates with respect to the real inputs, so they need a
                // gradient of their own.
                let real = batch.inputs.f_detach()?.f_set_requires_grad(self.r1_weight > 0.0)?;
                let real_logits = self.logits(&real, encoder)?;
                let fake_logits = self.logits(&fake, encoder)?;
                let mut loss = bce(&real_logits, 1.0)?.f_add(&bce(&fake_logits, 0.0)?)?;
                let mut metrics = vec![
                    ("real_probability".to_owned(), mean_probability(&real_logits)?),
                    ("fake_probability".to_owned(), mean_probability(&fake_logits)?),
                ];
                if self.r1_weight > 0.0 {
                    let penalty = r1_penalty(&real_logits, &real)?;
                    metrics.push(("r1_penalty".to_owned(), penalty.f_double_value(&[])?));
                    loss = loss.f_add(&penalty.f_mul_scalar(self.r1_weight / 2.0)?)?;
                }
                Ok(LossOutput { loss, metrics })
            }
            "generator" => {
                // Gradients reach the encoder and the head too, but this phase steps only the
                // generator, and the host zeroes every group before the next phase.
                let fake_logits = self.logits(&self.generate(count)?, encoder)?;
                let metrics =
                    vec![("fake_probability".to_owned(), mean_probability(&fake_logits)?)];
                Ok(LossOutput { loss: bce(&fake_logits, 1.0)?, metrics })
            }
            other => bail!("phase `{other}` is unknown, expected `discriminator` or `generator`"),
        }
    }

    fn sample(&self, count: i64) -> Result<Option<Tensor>> {
        tch::no_grad(|| Ok(Some(self.generate(count)?)))
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::tch::Device;

    use super::*;
    use pretext_plugin_api::ParamValue;

    use crate::testing::{LinearEncoder, adam, features_context, params_with};

    fn build() -> Gan {
        Gan::create(&params_with(Gan::describe(), &[]), &features_context(&[1, 2, 4], 4)).unwrap()
    }

    fn step(step: u64) -> StepInfo {
        StepInfo { step, epoch: 0 }
    }

    #[test]
    fn groups_and_phases_alternate() {
        let gan = build();

        let groups = gan.parameter_groups();
        let names: Vec<&str> = groups.iter().map(|group| group.name.as_str()).collect();
        assert_eq!(names, ["discriminator", "generator"]);
        assert!(groups[0].includes_encoder);
        assert!(!groups[1].includes_encoder);
        assert_eq!(gan.phases().len(), 2);
        assert_eq!(gan.phases()[0].groups, ["discriminator"]);
        assert_eq!(gan.phases()[1].groups, ["generator"]);
    }

    #[test]
    fn samples_have_sample_shape() {
        let gan = build();

        let samples = gan.sample(6).unwrap().unwrap();
        assert_eq!(samples.size(), [6, 1, 2, 4]);
        assert!(!samples.requires_grad());
    }

    #[test]
    fn discriminator_phase_leaves_generator_without_gradient() {
        let mut gan = build();
        let encoder = LinearEncoder::new(8, 4);
        let batch =
            Batch { inputs: Tensor::rand([8, 1, 2, 4], (Kind::Float, Device::Cpu)), labels: None };

        let output = gan.loss(step(0), "discriminator", &batch, &encoder).unwrap();
        output.loss.backward();
        for (name, tensor) in gan.generator.parameters() {
            assert!(!tensor.grad().defined(), "{name} got a gradient");
        }
        for (name, tensor) in gan.head.parameters() {
            assert!(tensor.grad().defined(), "{name} got no gradient");
        }
    }

    #[test]
    fn discriminator_learns_to_separate() {
        tch::manual_seed(0);
        // The R1 penalty is off, because it flattens the logits around this batch's one real sample.
        let params = params_with(Gan::describe(), &[("r1_weight", ParamValue::Float(0.0))]);
        let mut gan = Gan::create(&params, &features_context(&[1, 2, 4], 4)).unwrap();
        let encoder = LinearEncoder::new(8, 4);
        // Real samples are near 1, and the untrained generator's sigmoid output is near 0.5.
        let batch = Batch {
            inputs: Tensor::ones([32, 1, 2, 4], (Kind::Float, Device::Cpu)) * 0.95,
            labels: None,
        };
        let mut tensors: Vec<Tensor> = gan.head.parameters().into_iter().map(|(_, t)| t).collect();
        tensors.extend(encoder.vs.trainable_variables());
        let optimizer = adam(&tensors, 1e-2);

        let mut last = None;
        for index in 0..300 {
            optimizer.zero_grad().unwrap();
            let output = gan.loss(step(index), "discriminator", &batch, &encoder).unwrap();
            output.loss.backward();
            optimizer.step().unwrap();
            last = Some(output);
        }
        let metrics = last.unwrap().metrics;
        assert!(metrics[0].1 > 0.9, "real probability {}", metrics[0].1);
        assert!(metrics[1].1 < 0.1, "fake probability {}", metrics[1].1);
    }

    #[test]
    fn r1_penalty_is_added_and_logged() {
        let encoder = LinearEncoder::new(8, 4);
        let batch =
            Batch { inputs: Tensor::rand([8, 1, 2, 4], (Kind::Float, Device::Cpu)), labels: None };
        let context = features_context(&[1, 2, 4], 4);
        let mut losses = Vec::new();
        for weight in [0.0, 10.0] {
            let params = params_with(Gan::describe(), &[("r1_weight", ParamValue::Float(weight))]);
            tch::manual_seed(0);
            let mut gan = Gan::create(&params, &context).unwrap();
            let output = gan.loss(step(0), "discriminator", &batch, &encoder).unwrap();
            let logged = output.metrics.iter().find(|(name, _)| name == "r1_penalty");
            assert_eq!(logged.is_some(), weight > 0.0, "r1_weight {weight}: {:?}", output.metrics);
            output.loss.backward();
            losses.push((output.loss.double_value(&[]), logged.map(|(_, value)| *value)));
        }

        let (without, _) = losses[0];
        let (with, penalty) = losses[1];
        let penalty = penalty.unwrap();
        assert!(penalty > 0.0, "penalty {penalty}");
        assert!(
            (with - without - 5.0 * penalty).abs() < 1e-5,
            "{with} - {without} != 5 * {penalty}"
        );
    }

    #[test]
    fn unknown_phase_is_rejected() {
        let mut gan = build();
        let encoder = LinearEncoder::new(8, 4);
        let batch =
            Batch { inputs: Tensor::rand([2, 1, 2, 4], (Kind::Float, Device::Cpu)), labels: None };

        let error = gan.loss(step(0), "main", &batch, &encoder).unwrap_err();
        assert!(error.message().contains("phase `main` is unknown"), "{error}");
    }
}
