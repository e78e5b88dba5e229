//! The `pca` encoder: principal components of the train split, the classical linear baseline.

use pretext_plugin_api::tch::{self, Kind, Tensor};
use pretext_plugin_api::{
    BuildContext, Description, Encoder, EncoderInfo, EncoderOutput, EncoderPlugin, Error, FitData,
    InputKind, Param, Params, Result, ensure,
};

/// Samples read per `FitData::batch` call while fitting.
const FIT_BATCH: usize = 1024;

/// Projects centred samples onto the leading principal components of the train split.
///
/// `fit` computes the mean and the top `components` right singular vectors of the centred train
/// matrix, in float64, as scikit-learn's `PCA` with the full SVD solver does. Before `fit`, the
/// mean is zero and the components are the first coordinate axes, so `forward` already returns
/// codes of the declared width. The fitted tensors are returned by `parameters` without
/// gradients, so that the checkpoint stores them and no optimizer changes them.
pub struct Pca {
    components: i64,
    input_dim: i64,
    whiten: bool,
    /// `[input_dim]`, the train-split mean.
    mean: Tensor,
    /// `[components, input_dim]`, one unit-length principal axis per row.
    axes: Tensor,
    /// `[components]`, the variance of the train split along each axis.
    variances: Tensor,
}

impl EncoderPlugin for Pca {
    fn describe() -> Description {
        Description::new(
            "pca",
            env!("CARGO_PKG_VERSION"),
            "principal components fitted on the train split (no gradient training)",
        )
        .param(Param::int("components", 16, "number of principal components kept").min(1.0))
        .param(Param::bool(
            "whiten",
            false,
            "divide each component by its standard deviation on the train split",
        ))
    }

    fn create(params: &Params, context: &BuildContext) -> Result<Self> {
        let components = params.int("components")?;
        let whiten = params.bool("whiten")?;
        let dataset = context.dataset.as_ref().ok_or_else(|| {
            Error::msg(
                "pca encoder needs the dataset's description, but the build context has none",
            )
        })?;
        ensure!(
            dataset.input_kind == InputKind::Features,
            "pca encoder needs float features, but the dataset has token inputs"
        );
        let input_dim = dataset.sample_numel();
        ensure!(
            (1..=input_dim).contains(&components),
            "components {components} is invalid, expected 1 to {input_dim} (the values per sample)"
        );

        let options = (Kind::Float, context.device);
        let mean = Tensor::f_zeros([input_dim], options)?;
        let axes = Tensor::f_eye_m(components, input_dim, options)?;
        let variances = Tensor::f_ones([components], options)?;
        Ok(Self { components, input_dim, whiten, mean, axes, variances })
    }
}

/// Reads the whole train split as a `[len, input_dim]` float64 matrix on the CPU.
fn read_train_matrix(data: &dyn FitData, input_dim: i64) -> Result<Tensor> {
    let len = data.len();
    let mut rows = Vec::new();
    for start in (0..len).step_by(FIT_BATCH) {
        let end = (start + FIT_BATCH).min(len);
        let indices: Vec<i64> = (start as i64..end as i64).collect();
        let batch = data.batch(&indices)?;
        let flat = batch.inputs.f_to_kind(Kind::Double)?.f_reshape([indices.len() as i64, -1])?;
        ensure!(
            flat.size()[1] == input_dim,
            "pca fit batch has {} values per sample, expected {input_dim}",
            flat.size()[1]
        );
        rows.push(flat.f_to_device(tch::Device::Cpu)?);
    }
    Ok(Tensor::f_cat(&rows, 0)?)
}

impl Encoder for Pca {
    fn info(&self) -> EncoderInfo {
        EncoderInfo { output_dim: self.components, needs_fit: true, ..EncoderInfo::default() }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("axes".to_owned(), self.axes.shallow_clone()),
            ("mean".to_owned(), self.mean.shallow_clone()),
            ("variances".to_owned(), self.variances.shallow_clone()),
        ]
    }

    fn fit(&mut self, data: &dyn FitData) -> Result<()> {
        let samples = data.len() as i64;
        ensure!(
            samples > self.components,
            "pca needs more train samples than components, found {samples} samples for {} \
             components",
            self.components
        );

        let matrix = read_train_matrix(data, self.input_dim)?;
        let mean = matrix.f_mean_dim(0, false, Kind::Double)?;
        let centred = matrix.f_sub(&mean)?;
        // `svd` returns V rather than V^T, with `centred = U diag(S) V^T`.
        let (_, singular, right) = centred.f_svd(true, true)?;
        let axes = right.f_transpose(0, 1)?.f_narrow(0, 0, self.components)?;
        let variances =
            singular.f_narrow(0, 0, self.components)?.f_square()?.f_div_scalar(samples - 1)?;

        let device = self.mean.device();
        tch::no_grad(|| -> Result<()> {
            self.mean.f_copy_(&mean.f_to_kind(Kind::Float)?.f_to_device(device)?)?;
            self.axes.f_copy_(&axes.f_to_kind(Kind::Float)?.f_to_device(device)?)?;
            self.variances.f_copy_(&variances.f_to_kind(Kind::Float)?.f_to_device(device)?)?;
            Ok(())
        })
    }

    fn forward(&self, inputs: &Tensor, _train: bool) -> Result<EncoderOutput> {
        let size = inputs.size();
        let sample_numel: i64 = size.iter().skip(1).product();
        ensure!(
            size.len() >= 2 && sample_numel == self.input_dim,
            "pca input of shape {size:?} is invalid, expected {} values per sample",
            self.input_dim
        );

        let centred = inputs.f_flatten(1, -1)?.f_sub(&self.mean)?;
        let mut codes = centred.f_matmul(&self.axes.f_transpose(0, 1)?)?;
        if self.whiten {
            // The floor keeps a component of zero variance from dividing by zero.
            codes = codes.f_div(&self.variances.f_clamp_min(1e-12)?.f_sqrt()?)?;
        }
        Ok(EncoderOutput { features: codes, tokens: None })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::tch::Device;
    use pretext_plugin_api::{Batch, ParamValue};

    use super::*;
    use crate::testing::{features_context, params_with};

    /// Train data held in memory, as the host's `FitData` would serve it.
    struct Matrix(Tensor);

    impl FitData for Matrix {
        fn len(&self) -> usize {
            self.0.size()[0] as usize
        }

        fn batch(&self, indices: &[i64]) -> Result<Batch> {
            let index = Tensor::from_slice(indices);
            Ok(Batch { inputs: self.0.f_index_select(0, &index)?, labels: None })
        }
    }

    fn build(components: i64, whiten: bool, sample_shape: &[i64]) -> Pca {
        let overrides =
            [("components", ParamValue::Int(components)), ("whiten", ParamValue::Bool(whiten))];
        let params = params_with(Pca::describe(), &overrides);
        Pca::create(&params, &features_context(sample_shape)).expect("pca builds")
    }

    /// 2000 samples in 3-d with standard deviations 3, 1 and 0.1 along rotated axes, shifted by 5.
    fn stretched_cloud() -> Tensor {
        tch::manual_seed(0);
        let scales = Tensor::from_slice(&[3.0f32, 1.0, 0.1]);
        let latent = Tensor::randn([2000, 3], (Kind::Float, Device::Cpu)) * scales;
        let random = Tensor::randn([3, 3], (Kind::Float, Device::Cpu));
        let (rotation, _) = Tensor::linalg_qr(&random, "reduced");
        latent.matmul(&rotation) + 5.0
    }

    #[test]
    fn unfitted_pca_has_declared_shape() {
        let pca = build(4, false, &[1, 8, 8]);
        let inputs = Tensor::rand([5, 1, 8, 8], (Kind::Float, Device::Cpu));

        let output = pca.forward(&inputs, false).unwrap();
        assert_eq!(output.features.size(), [5, 4]);
        assert!(pca.info().needs_fit);
        assert_eq!(pca.info().output_dim, 4);
    }

    #[test]
    fn fit_recovers_component_variances() {
        let mut pca = build(2, false, &[3]);
        pca.fit(&Matrix(stretched_cloud())).unwrap();

        let variances: Vec<f32> = Vec::try_from(&pca.variances).unwrap();
        assert!((variances[0] - 9.0).abs() < 0.8, "first variance {}", variances[0]);
        assert!((variances[1] - 1.0).abs() < 0.15, "second variance {}", variances[1]);
        let mean: Vec<f32> = Vec::try_from(&pca.mean).unwrap();
        assert!(mean.iter().all(|value| (value - 5.0).abs() < 0.3), "mean {mean:?}");
    }

    #[test]
    fn fitted_codes_are_centred_and_ordered() {
        let cloud = stretched_cloud();
        let mut pca = build(3, false, &[3]);
        pca.fit(&Matrix(cloud.shallow_clone())).unwrap();

        let codes = pca.forward(&cloud, false).unwrap().features;
        let means: Vec<f32> = Vec::try_from(codes.mean_dim(0, false, Kind::Float)).unwrap();
        assert!(means.iter().all(|value| value.abs() < 1e-3), "code means {means:?}");
        let spread: Vec<f64> = Vec::try_from(codes.var_dim(0, true, false)).unwrap();
        assert!(spread[0] > spread[1] && spread[1] > spread[2], "code variances {spread:?}");
    }

    #[test]
    fn whitened_codes_have_unit_variance() {
        let cloud = stretched_cloud();
        let mut pca = build(3, true, &[3]);
        pca.fit(&Matrix(cloud.shallow_clone())).unwrap();

        let codes = pca.forward(&cloud, false).unwrap().features;
        let spread: Vec<f64> = Vec::try_from(codes.var_dim(0, true, false)).unwrap();
        assert!(spread.iter().all(|value| (value - 1.0).abs() < 1e-3), "variances {spread:?}");
    }

    #[test]
    fn too_many_components_are_rejected() {
        let params = params_with(Pca::describe(), &[("components", ParamValue::Int(65))]);

        let error = Pca::create(&params, &features_context(&[64])).err().expect("create fails");
        assert!(error.message().contains("expected 1 to 64"), "{error}");
    }

    #[test]
    fn fit_rejects_too_few_samples() {
        let mut pca = build(3, false, &[3]);
        let error = pca.fit(&Matrix(Tensor::ones([3, 3], (Kind::Float, Device::Cpu)))).unwrap_err();
        assert!(error.message().contains("more train samples than components"), "{error}");
    }

    #[test]
    fn parameters_carry_no_gradient() {
        let pca = build(2, false, &[3]);
        for (name, tensor) in pca.parameters() {
            assert!(!tensor.requires_grad(), "{name} requires grad");
        }
    }
}
