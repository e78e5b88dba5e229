//! The `mlp` encoder: a multilayer perceptron over flattened samples.

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::tch::nn::{self, VarStore};
use pretext_plugin_api::{
    BuildContext, Description, Encoder, EncoderInfo, EncoderOutput, EncoderPlugin, Error,
    InputKind, Param, Params, Result, bail, ensure,
};

use crate::init::torch_linear_config;

/// The names that the `activation` parameter accepts.
const ACTIVATIONS: [&str; 5] = ["relu", "tanh", "gelu", "leaky_relu", "sigmoid"];

/// The nonlinearity applied after every hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    Tanh,
    Gelu,
    LeakyRelu,
    Sigmoid,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "relu" => Ok(Self::Relu),
            "tanh" => Ok(Self::Tanh),
            "gelu" => Ok(Self::Gelu),
            "leaky_relu" => Ok(Self::LeakyRelu),
            "sigmoid" => Ok(Self::Sigmoid),
            other => bail!("activation `{other}` is invalid, expected one of {ACTIVATIONS:?}"),
        }
    }

    /// Applies the activation with PyTorch's default settings (exact GELU, leaky slope 0.01).
    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        let ys = match self {
            Self::Relu => xs.f_relu()?,
            Self::Tanh => xs.f_tanh()?,
            Self::Gelu => xs.f_gelu("none")?,
            Self::LeakyRelu => xs.f_leaky_relu()?,
            Self::Sigmoid => xs.f_sigmoid()?,
        };
        Ok(ys)
    }
}

/// A multilayer perceptron: `Linear(numel, h1) act [dropout] ... Linear(h_last, latent)`.
///
/// The code layer has no activation. Layers are stored under `layer0`, `layer1`, and so on.
pub struct Mlp {
    vs: VarStore,
    layers: Vec<nn::Linear>,
    activation: Activation,
    dropout: f64,
    input_dim: i64,
    hidden: Vec<i64>,
    latent: i64,
}

impl EncoderPlugin for Mlp {
    fn describe() -> Description {
        Description::new("mlp", env!("CARGO_PKG_VERSION"), "multilayer perceptron on flat inputs")
            .param(
                Param::int_list(
                    "hidden",
                    &[128, 64],
                    "widths of the hidden layers, input side first",
                )
                .min(1.0),
            )
            .param(Param::int("latent", 16, "width of the output code").min(1.0))
            .param(
                Param::string("activation", "relu", "nonlinearity after each hidden layer")
                    .choices(&ACTIVATIONS),
            )
            .param(
                Param::float("dropout", 0.0, "dropout probability after each hidden activation")
                    .range(0.0, 1.0),
            )
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let hidden = params.int_list("hidden")?;
        let latent = params.int("latent")?;
        let activation = Activation::parse(&params.string("activation")?)?;
        let dropout = params.float("dropout")?;
        ensure!(latent >= 1, "latent width {latent} is invalid, expected at least 1");
        ensure!(
            hidden.iter().all(|&width| width >= 1),
            "hidden widths {hidden:?} are invalid, expected every width to be at least 1"
        );
        // The schema range is inclusive, but p = 1 would zero every hidden unit.
        ensure!(
            (0.0..1.0).contains(&dropout),
            "dropout {dropout} is invalid, expected a probability in [0, 1)"
        );

        let input_dim = flat_input_dim(context)?;
        let vs = VarStore::new(context.device);
        let widths: Vec<i64> =
            std::iter::once(input_dim).chain(hidden.iter().copied()).chain([latent]).collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(index, pair)| {
                let path = vs.root() / format!("layer{index}");
                nn::linear(path, pair[0], pair[1], torch_linear_config(pair[0]))
            })
            .collect();

        Ok(Self { vs, layers, activation, dropout, input_dim, hidden, latent })
    }
}

/// Reads the number of values per sample from the dataset's description.
fn flat_input_dim(context: &BuildContext) -> Result<i64> {
    let dataset = context.dataset.as_ref().ok_or_else(|| {
        Error::msg("mlp encoder needs the dataset's description, but the build context has none")
    })?;
    ensure!(
        dataset.input_kind == InputKind::Features,
        "mlp encoder needs float features, but the dataset has token inputs"
    );
    let numel = dataset.sample_numel();
    ensure!(
        numel >= 1,
        "mlp encoder needs at least one value per sample, but the sample shape is {:?}",
        dataset.sample_shape
    );
    Ok(numel)
}

impl Encoder for Mlp {
    fn info(&self) -> EncoderInfo {
        EncoderInfo {
            output_dim: self.latent,
            hidden_sizes: self.hidden.clone(),
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
        let sample_numel: i64 = size.iter().skip(1).product();
        ensure!(
            size.len() >= 2 && sample_numel == self.input_dim,
            "mlp input of shape {size:?} is invalid, expected {} values per sample",
            self.input_dim
        );

        let mut xs = inputs.f_flatten(1, -1)?;
        let last = self.layers.len() - 1;
        for (index, layer) in self.layers.iter().enumerate() {
            xs = xs.f_linear(&layer.ws, layer.bs.as_ref())?;
            if index == last {
                break;
            }
            xs = self.activation.apply(&xs)?;
            if train && self.dropout > 0.0 {
                xs = xs.f_dropout(self.dropout, true)?;
            }
        }

        Ok(EncoderOutput { features: xs, tokens: None })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::tch::{Device, Kind};
    use pretext_plugin_api::{DatasetInfo, ParamValue, PluginKind};

    use super::*;

    /// Builds the parameters the host would pass: schema defaults, then `overrides`.
    fn params_with(overrides: &[(&str, ParamValue)]) -> Params {
        let info = Mlp::describe().into_info(PluginKind::Encoder);
        let values = info
            .params
            .iter()
            .map(|spec| {
                let name = spec.name.to_string();
                let value = match overrides.iter().find(|(key, _)| *key == name) {
                    Some((_, value)) => value.clone(),
                    None => {
                        spec.default.clone().into_option().expect("every mlp param has a default")
                    }
                };
                (name, value)
            })
            .collect();
        Params::new(values)
    }

    fn image_context() -> BuildContext {
        BuildContext {
            device: Device::Cpu,
            seed: 0,
            dataset: Some(DatasetInfo {
                sample_shape: vec![1, 8, 8],
                input_kind: InputKind::Features,
                vocab_size: 0,
                num_classes: Some(10),
                class_names: Vec::new(),
                train_len: 10,
                test_len: 10,
            }),
            encoder: None,
        }
    }

    fn build(overrides: &[(&str, ParamValue)]) -> Mlp {
        Mlp::create(&params_with(overrides), &image_context()).expect("mlp builds")
    }

    #[test]
    fn default_mlp_is_64_128_64_16() {
        let mlp = build(&[]);

        let shapes: Vec<(String, Vec<i64>)> =
            mlp.parameters().iter().map(|(name, tensor)| (name.clone(), tensor.size())).collect();
        let expected = [
            ("layer0.bias", vec![128]),
            ("layer0.weight", vec![128, 64]),
            ("layer1.bias", vec![64]),
            ("layer1.weight", vec![64, 128]),
            ("layer2.bias", vec![16]),
            ("layer2.weight", vec![16, 64]),
        ];
        let expected: Vec<(String, Vec<i64>)> =
            expected.into_iter().map(|(name, size)| (name.to_owned(), size)).collect();
        assert_eq!(shapes, expected);
    }

    #[test]
    fn info_reports_latent_and_hidden() {
        let mlp = build(&[
            ("hidden", ParamValue::IntList(vec![32].into())),
            ("latent", ParamValue::Int(2)),
        ]);

        let info = mlp.info();
        assert_eq!(info.output_dim, 2);
        assert_eq!(info.hidden_sizes, vec![32]);
        assert!(!info.needs_fit);
        assert!(!info.has_token_output);
    }

    #[test]
    fn empty_hidden_gives_one_linear_layer() {
        let mlp = build(&[("hidden", ParamValue::IntList(Vec::new().into()))]);

        let names: Vec<String> = mlp.parameters().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["layer0.bias", "layer0.weight"]);
    }

    #[test]
    fn forward_flattens_image_batches() {
        let mlp = build(&[]);
        let inputs = Tensor::rand([5, 1, 8, 8], (Kind::Float, Device::Cpu));

        let output = mlp.forward(&inputs, false).expect("forward succeeds");
        assert_eq!(output.features.size(), [5, 16]);
        assert!(output.tokens.is_none());
    }

    #[test]
    fn forward_rejects_wrong_sample_size() {
        let mlp = build(&[]);
        let inputs = Tensor::zeros([2, 10], (Kind::Float, Device::Cpu));

        let error = mlp.forward(&inputs, false).expect_err("forward fails");
        assert!(error.message().contains("expected 64 values per sample"), "{error}");
    }

    #[test]
    fn weights_use_pytorch_linear_bounds() {
        let mlp = build(&[]);
        let bound = 1.0 / 64f64.sqrt();

        let parameters = mlp.parameters();
        let weight = &parameters.iter().find(|(name, _)| name == "layer0.weight").unwrap().1;
        let bias = &parameters.iter().find(|(name, _)| name == "layer0.bias").unwrap().1;
        let weight_max = weight.abs().max().double_value(&[]);
        let bias_max = bias.abs().max().double_value(&[]);
        // 8192 uniform draws reach within 1% of the bound with overwhelming probability, and
        // tch's default weight range is sqrt(6) times wider.
        assert!(weight_max <= bound, "weight max {weight_max} exceeds {bound}");
        assert!(weight_max > 0.99 * bound, "weight max {weight_max} is far below {bound}");
        assert!(bias_max <= bound, "bias max {bias_max} exceeds {bound}");
    }

    #[test]
    fn dropout_applies_only_in_training() {
        let mlp = build(&[("dropout", ParamValue::Float(0.5))]);
        let inputs = Tensor::rand([8, 64], (Kind::Float, Device::Cpu));

        let eval_first = mlp.forward(&inputs, false).unwrap().features;
        let eval_second = mlp.forward(&inputs, false).unwrap().features;
        let train = mlp.forward(&inputs, true).unwrap().features;
        assert!(eval_first.equal(&eval_second));
        assert!(!train.equal(&eval_first));
    }

    #[test]
    fn every_activation_choice_builds_and_runs() {
        let inputs = Tensor::rand([3, 64], (Kind::Float, Device::Cpu));
        for name in ACTIVATIONS {
            let mlp = build(&[("activation", ParamValue::Str(name.into()))]);
            let output = mlp.forward(&inputs, true).expect("forward succeeds");
            assert_eq!(output.features.size(), [3, 16], "activation {name}");
        }
    }

    #[test]
    fn dropout_of_one_is_rejected() {
        let params = params_with(&[("dropout", ParamValue::Float(1.0))]);

        let error = Mlp::create(&params, &image_context()).err().expect("create fails");
        assert!(error.message().contains("dropout 1 is invalid"), "{error}");
    }

    #[test]
    fn missing_dataset_is_rejected() {
        let context = BuildContext { dataset: None, ..image_context() };

        let error = Mlp::create(&params_with(&[]), &context).err().expect("create fails");
        assert!(error.message().contains("needs the dataset's description"), "{error}");
    }

    #[test]
    fn token_dataset_is_rejected() {
        let mut context = image_context();
        context.dataset.as_mut().unwrap().input_kind = InputKind::Tokens;

        let error = Mlp::create(&params_with(&[]), &context).err().expect("create fails");
        assert!(error.message().contains("token inputs"), "{error}");
    }
}
