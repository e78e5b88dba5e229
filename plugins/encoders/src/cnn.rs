//! The `cnn` encoder: a small convolutional network for images given as channels x height x width.

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::tch::nn::{self, BatchNormConfig, ModuleT, VarStore};
use pretext_plugin_api::{
    BuildContext, Description, Encoder, EncoderInfo, EncoderOutput, EncoderPlugin, Error,
    InputKind, Param, Params, Result, ensure,
};

use crate::init::{torch_conv_config, torch_linear_config};

/// One convolution block: `conv [batch norm] relu [max-pool 2x2]`.
struct Block {
    conv: nn::Conv2D,
    norm: Option<nn::BatchNorm>,
    pool: bool,
}

/// Convolution blocks followed by one linear layer to the code.
///
/// Each block keeps the spatial size (padding `kernel_size / 2`) and then halves it with a 2x2
/// max-pool while both sides are at least 2, so 8x8 digits become 4x4 and then 2x2. Parameters
/// are stored under `block0.conv`, `block0.norm`, ..., and `head`. Batch-norm running statistics
/// are returned by `parameters` too (without gradients), so that the checkpoint keeps them.
pub struct Cnn {
    vs: VarStore,
    blocks: Vec<Block>,
    head: nn::Linear,
    sample_shape: [i64; 3],
    flat_dim: i64,
    latent: i64,
}

impl EncoderPlugin for Cnn {
    fn describe() -> Description {
        Description::new(
            "cnn",
            env!("CARGO_PKG_VERSION"),
            "small convolutional network on [channels, height, width] images",
        )
        .param(
            Param::int_list("channels", &[16, 32], "output channels of each convolution block")
                .min(1.0),
        )
        .param(Param::int("kernel_size", 3, "side of the square convolution kernels").min(1.0))
        .param(Param::bool("batch_norm", false, "batch normalisation after each convolution"))
        .param(Param::int("latent", 16, "width of the output code").min(1.0))
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let channels = params.int_list("channels")?;
        let kernel_size = params.int("kernel_size")?;
        let batch_norm = params.bool("batch_norm")?;
        let latent = params.int("latent")?;
        ensure!(!channels.is_empty(), "channels is empty, expected at least one block");
        ensure!(
            channels.iter().all(|&width| width >= 1),
            "channels {channels:?} are invalid, expected every count to be at least 1"
        );
        ensure!(
            kernel_size % 2 == 1,
            "kernel_size {kernel_size} is invalid, expected an odd size so that padding keeps the \
             image size"
        );
        ensure!(latent >= 1, "latent width {latent} is invalid, expected at least 1");
        let sample_shape = image_shape(context)?;

        let vs = VarStore::new(context.device);
        let root = vs.root();
        let mut blocks = Vec::new();
        let [mut in_channels, mut height, mut width] = sample_shape;
        for (index, &out_channels) in channels.iter().enumerate() {
            let path = &root / format!("block{index}");
            let config = torch_conv_config(in_channels, kernel_size, kernel_size / 2);
            let conv = nn::conv2d(&path / "conv", in_channels, out_channels, kernel_size, config);
            let norm = batch_norm.then(|| {
                nn::batch_norm2d(&path / "norm", out_channels, BatchNormConfig::default())
            });
            let pool = height >= 2 && width >= 2;
            if pool {
                height /= 2;
                width /= 2;
            }
            blocks.push(Block { conv, norm, pool });
            in_channels = out_channels;
        }
        let flat_dim = in_channels * height * width;
        let head = nn::linear(&root / "head", flat_dim, latent, torch_linear_config(flat_dim));

        Ok(Self { vs, blocks, head, sample_shape, flat_dim, latent })
    }
}

/// Reads `[channels, height, width]` from the dataset's description.
fn image_shape(context: &BuildContext) -> Result<[i64; 3]> {
    let dataset = context.dataset.as_ref().ok_or_else(|| {
        Error::msg("cnn encoder needs the dataset's description, but the build context has none")
    })?;
    ensure!(
        dataset.input_kind == InputKind::Features,
        "cnn encoder needs float images, but the dataset has token inputs"
    );
    match dataset.sample_shape[..] {
        [channels, height, width] if channels >= 1 && height >= 1 && width >= 1 => {
            Ok([channels, height, width])
        }
        _ => pretext_plugin_api::bail!(
            "cnn encoder needs images of shape [channels, height, width], but the dataset's sample \
             shape is {:?}; for digits, set `shape = \"image\"` in [dataset]",
            dataset.sample_shape
        ),
    }
}

impl Encoder for Cnn {
    fn info(&self) -> EncoderInfo {
        EncoderInfo {
            output_dim: self.latent,
            hidden_sizes: vec![self.flat_dim],
            ..EncoderInfo::default()
        }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|(left, _), (right, _)| left.cmp(right));
        named
    }

    fn forward(&self, inputs: &Tensor, train: bool) -> Result<EncoderOutput> {
        let size = inputs.size();
        ensure!(
            size.len() == 4 && size[1..] == self.sample_shape,
            "cnn input of shape {size:?} is invalid, expected [batch, {}, {}, {}]",
            self.sample_shape[0],
            self.sample_shape[1],
            self.sample_shape[2]
        );

        let mut xs = inputs.shallow_clone();
        for block in &self.blocks {
            xs = xs.apply(&block.conv);
            if let Some(norm) = &block.norm {
                xs = norm.forward_t(&xs, train);
            }
            xs = xs.f_relu()?;
            if block.pool {
                xs = xs.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?;
            }
        }
        let features = xs.f_flatten(1, -1)?.f_linear(&self.head.ws, self.head.bs.as_ref())?;
        Ok(EncoderOutput { features, tokens: None })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::{Device, Kind};

    use super::*;
    use crate::testing::{features_context, params_with};

    fn build(overrides: &[(&str, ParamValue)], sample_shape: &[i64]) -> Cnn {
        let params = params_with(Cnn::describe(), overrides);
        Cnn::create(&params, &features_context(sample_shape)).expect("cnn builds")
    }

    #[test]
    fn digits_image_gives_latent_codes() {
        let cnn = build(&[], &[1, 8, 8]);
        let inputs = Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu));

        let output = cnn.forward(&inputs, true).unwrap();
        assert_eq!(output.features.size(), [4, 16]);
        assert_eq!(cnn.info().hidden_sizes, [32 * 2 * 2]);
    }

    #[test]
    fn mnist_sized_image_gives_latent_codes() {
        let overrides = [("channels", ParamValue::IntList(vec![8, 16, 32].into()))];
        let cnn = build(&overrides, &[1, 28, 28]);
        let inputs = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu));

        let output = cnn.forward(&inputs, false).unwrap();
        assert_eq!(output.features.size(), [2, 16]);
        assert_eq!(cnn.info().hidden_sizes, [32 * 3 * 3]);
    }

    #[test]
    fn batch_norm_differs_between_train_and_eval() {
        let cnn = build(&[("batch_norm", ParamValue::Bool(true))], &[1, 8, 8]);
        let inputs = Tensor::rand([8, 1, 8, 8], (Kind::Float, Device::Cpu));

        let names: Vec<String> = cnn.parameters().into_iter().map(|(name, _)| name).collect();
        assert!(names.contains(&"block0.norm.running_mean".to_owned()), "{names:?}");
        let eval_before = cnn.forward(&inputs, false).unwrap().features;
        let train = cnn.forward(&inputs, true).unwrap().features;
        let eval_after = cnn.forward(&inputs, false).unwrap().features;
        assert!(!train.allclose(&eval_before, 1e-5, 1e-6, false));
        // The training pass updated the running statistics that evaluation uses.
        assert!(!eval_after.allclose(&eval_before, 1e-5, 1e-6, false));
    }

    #[test]
    fn flat_samples_are_rejected() {
        let params = params_with(Cnn::describe(), &[]);

        let error = Cnn::create(&params, &features_context(&[64])).err().expect("create fails");
        assert!(error.message().contains("shape = \"image\""), "{error}");
    }

    #[test]
    fn even_kernel_is_rejected() {
        let params = params_with(Cnn::describe(), &[("kernel_size", ParamValue::Int(4))]);

        let error =
            Cnn::create(&params, &features_context(&[1, 8, 8])).err().expect("create fails");
        assert!(error.message().contains("kernel_size 4 is invalid"), "{error}");
    }

    #[test]
    fn wrong_input_shape_is_rejected() {
        let cnn = build(&[], &[1, 8, 8]);
        let inputs = Tensor::rand([2, 64], (Kind::Float, Device::Cpu));

        let error = cnn.forward(&inputs, false).unwrap_err();
        assert!(error.message().contains("expected [batch, 1, 8, 8]"), "{error}");
    }
}
