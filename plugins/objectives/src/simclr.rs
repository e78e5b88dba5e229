//! The `simclr` objective: contrastive learning with the NT-Xent (InfoNCE) loss over two augmented
//! views of each sample.

use pretext_plugin_api::tch::{Kind, Reduction, Tensor};
use pretext_plugin_api::{
    Batch, BuildContext, Description, EncoderHandle, Error, InputKind, LossOutput, Objective,
    ObjectivePlugin, Param, ParamGroup, Params, Result, StepInfo, bail, ensure,
};

use crate::corruption::{gaussian_noise, mask_values, random_shift};
use crate::decoder::Decoder;

/// The names that the `augment` parameter accepts.
const AUGMENTS: [&str; 3] = ["auto", "image", "vector"];

/// Similarity given to a sample with itself, so that it never counts as a candidate.
const SELF_SIMILARITY: f64 = -1e9;

/// The random augmentation that produces each view.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Augmentation {
    /// Random shift of up to this many pixels; `None` for vectors.
    max_shift: Option<i64>,
    noise_std: f64,
    mask_fraction: f64,
}

impl Augmentation {
    /// Draws one augmented view of `inputs`: shift (images only), then masking, then noise.
    fn apply(self, inputs: &Tensor) -> Result<Tensor> {
        let mut view = inputs.shallow_clone();
        if let Some(max_shift) = self.max_shift {
            view = random_shift(&view, max_shift)?;
        }
        view = mask_values(&view, self.mask_fraction)?;
        gaussian_noise(&view, self.noise_std)
    }
}

/// SimCLR: both views go through the encoder and a projection head, and the NT-Xent loss pulls
/// the two projections of each sample together against the other `2 * batch - 2` projections.
///
/// Evaluators see the encoder's features, before the projection head, as in the SimCLR paper
/// (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").
pub struct SimClr {
    head: Decoder,
    augmentation: Augmentation,
    temperature: f64,
}

impl ObjectivePlugin for SimClr {
    fn describe() -> Description {
        let summary = "contrastive NT-Xent loss over two augmented views, with a projection head";
        Description::new("simclr", env!("CARGO_PKG_VERSION"), summary)
            .param(
                Param::int_list(
                    "projection_hidden",
                    &[128],
                    "hidden widths of the projection head",
                )
                .min(1.0),
            )
            .param(Param::int("projection_dim", 64, "output width of the projection head").min(1.0))
            .param(Param::float("temperature", 0.5, "softmax temperature of NT-Xent").min(0.0))
            .param(
                Param::string(
                    "augment",
                    "auto",
                    "augmentations: image (shift, mask, noise) for [C, H, W] samples, vector \
                     (feature dropout, noise); auto picks by sample shape",
                )
                .choices(&AUGMENTS),
            )
            .param(Param::int("max_shift", 1, "largest random shift of images, in pixels").min(0.0))
            .param(Param::float("noise_std", 0.1, "standard deviation of the added noise").min(0.0))
            .param(
                Param::float(
                    "mask_fraction",
                    0.2,
                    "probability of zeroing a pixel or feature (masking, feature dropout)",
                )
                .range(0.0, 1.0),
            )
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let temperature = params.float("temperature")?;
        ensure!(temperature > 0.0, "temperature {temperature} is invalid, expected it above 0");
        let mask_fraction = params.float("mask_fraction")?;
        ensure!(
            mask_fraction < 1.0,
            "mask_fraction {mask_fraction} is invalid, expected a probability in [0, 1)"
        );
        let encoder = context.encoder.as_ref().ok_or_else(|| {
            Error::msg("simclr needs the encoder's description, but the build context has none")
        })?;
        let dataset = context.dataset.as_ref().ok_or_else(|| {
            Error::msg("simclr needs the dataset's description, but the build context has none")
        })?;
        ensure!(
            dataset.input_kind == InputKind::Features,
            "simclr augments float features, but the dataset has token inputs"
        );

        let image = match params.string("augment")?.as_str() {
            "auto" => dataset.sample_shape.len() == 3,
            "image" => {
                ensure!(
                    dataset.sample_shape.len() == 3,
                    "augment = \"image\" needs samples of shape [channels, height, width], found \
                     {:?}",
                    dataset.sample_shape
                );
                true
            }
            "vector" => false,
            other => bail!("augment `{other}` is invalid, expected one of {AUGMENTS:?}"),
        };
        let augmentation = Augmentation {
            max_shift: image.then_some(params.int("max_shift")?),
            noise_std: params.float("noise_std")?,
            mask_fraction,
        };
        let head = Decoder::named(
            context.device,
            "projection",
            encoder.output_dim,
            &params.int_list("projection_hidden")?,
            params.int("projection_dim")?,
        );
        Ok(Self { head, augmentation, temperature })
    }
}

/// Computes the NT-Xent loss of two views' projections `[batch, dim]`, and the share of samples
/// whose most similar other projection is their own second view.
fn nt_xent(first: &Tensor, second: &Tensor, temperature: f64) -> Result<(Tensor, f64)> {
    let batch = first.size()[0];
    let projections = Tensor::f_cat(&[first, second], 0)?;
    let norms = projections.f_norm_scalaropt_dim(2, [1], true)?.f_clamp_min(1e-12)?;
    let unit = projections.f_div(&norms)?;

    let device = unit.device();
    let similarity = unit.f_matmul(&unit.f_transpose(0, 1)?)?.f_div_scalar(temperature)?;
    let diagonal = Tensor::f_eye(2 * batch, (Kind::Bool, device))?;
    let logits = similarity.f_masked_fill(&diagonal, SELF_SIMILARITY)?;
    // Row i of the first view pairs with row i + batch, and row i + batch with row i.
    let targets = Tensor::f_arange(2 * batch, (Kind::Int64, device))?
        .f_add_scalar(batch)?
        .f_remainder(2 * batch)?;

    let loss = logits.f_cross_entropy_loss(&targets, None::<Tensor>, Reduction::Mean, -100, 0.0)?;
    let hits = logits.f_argmax(1, false)?.f_eq_tensor(&targets)?;
    let accuracy = hits.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?.f_double_value(&[])?;
    Ok((loss, accuracy))
}

impl Objective for SimClr {
    fn parameter_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup {
            name: "main".to_owned(),
            params: self.head.parameters(),
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
        let count = batch.inputs.size()[0];
        ensure!(count >= 2, "simclr needs at least 2 samples per batch, found {count}");
        let first = self.augmentation.apply(&batch.inputs)?;
        let second = self.augmentation.apply(&batch.inputs)?;

        // One encoder call on both views, so that both pass through the same batch statistics.
        let views = Tensor::f_cat(&[first, second], 0)?;
        let features = encoder.forward(&views, true)?.features;
        let projections = self.head.forward(&features)?;
        let (loss, accuracy) = nt_xent(
            &projections.f_narrow(0, 0, count)?,
            &projections.f_narrow(0, count, count)?,
            self.temperature,
        )?;
        Ok(LossOutput { loss, metrics: vec![("contrastive_accuracy".to_owned(), accuracy)] })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::{self, Device};

    use super::*;
    use crate::testing::{LinearEncoder, adam, features_context, params_with};

    fn step(step: u64) -> StepInfo {
        StepInfo { step, epoch: 0 }
    }

    #[test]
    fn nt_xent_matches_hand_computation() {
        // Two samples in 2-d: views of sample 0 agree, views of sample 1 are orthogonal.
        let first = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let second = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).view([2, 2]);

        let (loss, accuracy) = nt_xent(&first, &second, 1.0).unwrap();
        // Rows: a0=(1,0), a1=(0,1), b0=(1,0), b1=(1,0). Positives: a0-b0, a1-b1, b0-a0, b1-a1.
        let e = std::f64::consts::E;
        let row_a0 = -(e / (1.0 + e + e)).ln(); // others: a1 (0), b0 (1), b1 (1)
        let row_a1 = -(1.0f64 / 3.0).ln(); // others: a0 (0), b0 (0), b1 (0)
        let row_b0 = -(e / (e + 1.0 + e)).ln(); // others: a0 (1), a1 (0), b1 (1)
        let row_b1 = -(1.0 / (e + 1.0 + e)).ln(); // others: a0 (1), a1 (0), b0 (1)
        let expected = (row_a0 + row_a1 + row_b0 + row_b1) / 4.0;
        assert!((loss.double_value(&[]) - expected).abs() < 1e-5);
        assert!((0.0..=1.0).contains(&accuracy));
    }

    #[test]
    fn image_views_differ_and_keep_shape() {
        tch::manual_seed(0);
        let params = params_with(SimClr::describe(), &[]);
        let objective = SimClr::create(&params, &features_context(&[1, 8, 8], 4)).unwrap();
        let inputs = Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu));

        assert_eq!(objective.augmentation.max_shift, Some(1));
        let first = objective.augmentation.apply(&inputs).unwrap();
        let second = objective.augmentation.apply(&inputs).unwrap();
        assert_eq!(first.size(), [4, 1, 8, 8]);
        assert!(!first.equal(&second));
    }

    #[test]
    fn image_augment_on_vectors_is_rejected() {
        let params =
            params_with(SimClr::describe(), &[("augment", ParamValue::Str("image".into()))]);

        let error = SimClr::create(&params, &features_context(&[64], 4)).err().expect("fails");
        assert!(error.message().contains("[channels, height, width]"), "{error}");
    }

    #[test]
    fn training_raises_contrastive_accuracy() {
        tch::manual_seed(0);
        let overrides =
            [("mask_fraction", ParamValue::Float(0.0)), ("noise_std", ParamValue::Float(0.05))];
        let params = params_with(SimClr::describe(), &overrides);
        let mut objective = SimClr::create(&params, &features_context(&[16], 8)).unwrap();
        let encoder = LinearEncoder::new(16, 8);
        let batch =
            Batch { inputs: Tensor::rand([32, 16], (Kind::Float, Device::Cpu)), labels: None };
        let mut tensors: Vec<Tensor> =
            objective.parameter_groups()[0].params.iter().map(|(_, t)| t.shallow_clone()).collect();
        tensors.extend(encoder.vs.trainable_variables());
        let optimizer = adam(&tensors, 1e-2);

        let mut losses = Vec::new();
        let mut accuracies = Vec::new();
        for index in 0..200 {
            optimizer.zero_grad().unwrap();
            let output = objective.loss(step(index), "main", &batch, &encoder).unwrap();
            output.loss.backward();
            optimizer.step().unwrap();
            losses.push(output.loss.double_value(&[]));
            accuracies.push(output.metrics[0].1);
        }
        assert!(losses[199] < losses[0], "loss went from {} to {}", losses[0], losses[199]);
        assert!(accuracies[199] > 0.8, "contrastive accuracy {}", accuracies[199]);
    }
}
