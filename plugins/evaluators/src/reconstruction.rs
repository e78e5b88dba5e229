//! The `reconstruction` evaluator: mean squared error of the objective's decoder on the test
//! split.

use pretext_plugin_api::tch::{self, Kind, Tensor};
use pretext_plugin_api::{
    BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin, InputKind,
    Params, Result, Split, bail, ensure,
};

/// Number of test samples reconstructed per call to the objective.
const BATCH_SIZE: usize = 256;

/// Scores how closely the model reconstructs its inputs.
pub struct Reconstruction;

impl EvaluatorPlugin for Reconstruction {
    fn describe() -> Description {
        Description::new(
            "reconstruction",
            env!("CARGO_PKG_VERSION"),
            "mean squared error between test inputs and their reconstructions",
        )
    }

    fn create(_params: &Params, _context: &BuildContext) -> Result<Self> {
        Ok(Self)
    }
}

impl Evaluator for Reconstruction {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let info = context.dataset();
        ensure!(
            info.input_kind == InputKind::Features,
            "the dataset's inputs are tokens; reconstruction measures squared error on float features"
        );
        ensure!(
            info.test_len > 0,
            "the test split is empty; reconstruction needs at least one sample"
        );

        let _no_grad = tch::no_grad_guard();
        let mut squared_error = 0.0;
        let mut elements = 0i64;
        let indices: Vec<i64> = (0..info.test_len as i64).collect();
        for chunk in indices.chunks(BATCH_SIZE) {
            let inputs =
                context.inputs(Split::Test, chunk)?.inputs.f_to_device(context.device())?;
            let Some(outputs) = context.reconstruct(&inputs)? else {
                bail!(
                    "the objective has no decoder; reconstruction needs one that reconstructs its \
                     inputs (such as `autoencoder`)"
                );
            };
            let (sum, count) = squared_error_sum(&inputs, &outputs)?;
            squared_error += sum;
            elements += count;
        }

        let mse = squared_error / elements as f64;
        Ok(EvalReport { metrics: vec![("mse".to_owned(), mse)], artifacts: Vec::new() })
    }
}

/// Returns the sum of squared differences, in float64, and the number of elements compared.
///
/// Both tensors must have one row per sample and the same number of values per row. The shape
/// beyond the first dimension may differ, because a decoder may return flat vectors for images.
fn squared_error_sum(inputs: &Tensor, outputs: &Tensor) -> Result<(f64, i64)> {
    let (input_size, output_size) = (inputs.size(), outputs.size());
    let rows = input_size.first().copied().unwrap_or(0);
    ensure!(
        output_size.first() == Some(&rows) && outputs.numel() == inputs.numel(),
        "reconstructions have shape {output_size:?} but the inputs have shape {input_size:?}"
    );

    let inputs = inputs.f_to_kind(Kind::Double)?.f_reshape([rows, -1])?;
    let outputs =
        outputs.f_to_device(inputs.device())?.f_to_kind(Kind::Double)?.f_reshape([rows, -1])?;
    let difference = outputs - inputs;
    let sum = (&difference * &difference).sum(Kind::Double).double_value(&[]);
    Ok((sum, difference.numel() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeContext, matrix};

    fn context(test_rows: usize) -> FakeContext {
        let rows: Vec<Vec<f64>> = (0..test_rows).map(|i| vec![i as f64, 1.0, -2.0]).collect();
        let mut context =
            FakeContext::labelled(&rows, &vec![0; test_rows], &rows, &vec![0; test_rows]);
        context.train_labels = None;
        context.test_labels = None;
        context
    }

    fn mse(report: &EvalReport) -> f64 {
        assert_eq!(report.metrics.len(), 1);
        assert_eq!(report.metrics[0].0, "mse");
        report.metrics[0].1
    }

    #[test]
    fn mse_of_known_offsets() {
        // Every reconstruction is off by (0.5, 0, -1): mean of (0.25, 0, 1) is 1.25 / 3.
        let mut context = context(600);
        let offset = matrix(&[vec![0.5, 0.0, -1.0]]).to_kind(Kind::Float);
        context.decoder = Some(Box::new(move |inputs: &Tensor| inputs + &offset));

        let report = Reconstruction.evaluate(&context).unwrap();

        assert!((mse(&report) - 1.25 / 3.0).abs() < 1e-12, "mse {}", mse(&report));
    }

    #[test]
    fn mse_of_zero_decoder_is_mean_square() {
        // Rows (i, 1, -2) for i < 10: sum of i^2 is 285, plus 5 per row.
        let mut context = context(10);
        context.decoder = Some(Box::new(|inputs: &Tensor| inputs.zeros_like()));

        let report = Reconstruction.evaluate(&context).unwrap();

        assert!((mse(&report) - (285.0 + 50.0) / 30.0).abs() < 1e-12);
    }

    #[test]
    fn mse_accepts_flat_reconstructions() {
        let mut context = context(4);
        context.test = context.test.view([4, 3, 1]);
        context.decoder = Some(Box::new(|inputs: &Tensor| inputs.flatten(1, -1)));

        let report = Reconstruction.evaluate(&context).unwrap();

        assert_eq!(mse(&report), 0.0);
    }

    #[test]
    fn reconstruction_rejects_missing_decoder() {
        let error = Reconstruction.evaluate(&context(3)).err().unwrap();

        assert_eq!(
            error.message(),
            "the objective has no decoder; reconstruction needs one that reconstructs its inputs \
             (such as `autoencoder`)"
        );
    }

    #[test]
    fn reconstruction_rejects_wrong_shape() {
        let mut context = context(3);
        context.decoder = Some(Box::new(|inputs: &Tensor| inputs.narrow(1, 0, 2)));

        let error = Reconstruction.evaluate(&context).err().unwrap();

        assert_eq!(
            error.message(),
            "reconstructions have shape [3, 2] but the inputs have shape [3, 3]"
        );
    }
}
