//! L2-penalised logistic regression, the model of scikit-learn's `LogisticRegression` with the
//! lbfgs solver, fitted with this crate's own L-BFGS.
//!
//! The fit minimises `mean_i CE(x_i, y_i) + 0.5 / (C n) * ||W||^2`, which is scikit-learn's
//! `sum_i CE + 0.5 / C * ||W||^2` divided by `n`, with the same minimum. The intercepts are not
//! penalised. With more than two classes each class has its own weight vector (multinomial
//! softmax). With two classes there is a single vector for the second class, as in
//! scikit-learn, whose binary problems use the binomial loss. A softmax over two free vectors
//! would halve the effective penalty.
//!
//! L-BFGS rather than Newton: a Newton step needs the `(D+1)K x (D+1)K` Hessian, which grows too
//! fast with the embedding width, while L-BFGS costs two matrix products per evaluation.

use pretext_plugin_api::tch::{Device, Kind, Tensor};
use pretext_plugin_api::{Result, ensure};

use crate::lbfgs::{LbfgsOptions, LbfgsOutcome, minimize};

/// Settings of [`LogisticRegression::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Inverse of the L2 penalty strength, as scikit-learn's `C`.
    pub c: f64,
    pub max_iter: usize,
}

/// A fitted classifier.
#[derive(Debug)]
pub struct LogisticRegression {
    /// `[D, M]`, where `M` is 1 for two classes and the class count otherwise.
    weights: Tensor,
    /// `[M]`.
    intercepts: Tensor,
    /// The distinct train labels in ascending order. Column `k` of the logits scores `classes[k]`.
    classes: Vec<i64>,
}

/// Facts about a finished fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSummary {
    pub iterations: usize,
    pub converged: bool,
    /// Final value of the mean objective.
    pub objective: f64,
}

impl LogisticRegression {
    /// Fits the model on `features` (`[N, D]`, float64 on the CPU) and one label per row.
    ///
    /// # Errors
    ///
    /// Fails when the shapes disagree, when the labels hold fewer than two distinct classes, or
    /// when `c` is not positive.
    pub fn fit(
        features: &Tensor,
        labels: &[i64],
        options: &FitOptions,
    ) -> Result<(Self, FitSummary)> {
        ensure!(
            options.c > 0.0 && options.c.is_finite(),
            "c must be a positive number, found {}",
            options.c
        );
        let (rows, dim) = matrix_shape(features)?;
        ensure!(
            rows == labels.len() as i64,
            "features have {rows} rows but there are {} labels",
            labels.len()
        );

        let mut classes = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        ensure!(
            classes.len() >= 2,
            "the train split has a single class ({}); a classifier needs at least two",
            classes.first().map_or("none".to_owned(), |label| label.to_string())
        );

        let targets: Vec<i64> =
            labels.iter().map(|label| classes.binary_search(label).unwrap_or(0) as i64).collect();
        let problem = Problem::new(features, &targets, classes.len() as i64, options.c);
        let start = Tensor::zeros([(dim + 1) * problem.columns], (Kind::Double, Device::Cpu));
        let lbfgs = LbfgsOptions { max_iter: options.max_iter, ..LbfgsOptions::default() };
        let outcome = minimize(|theta| Ok(problem.value_and_gradient(theta)), &start, &lbfgs)?;

        let summary = summarize(&outcome);
        let theta = outcome.x.reshape([dim + 1, problem.columns]);
        let model = Self {
            weights: theta.narrow(0, 0, dim).copy(),
            intercepts: theta.get(dim).copy(),
            classes,
        };
        Ok((model, summary))
    }

    /// Predicts the label of each row of `features` (`[N, D]`, float64 on the CPU).
    ///
    /// # Errors
    ///
    /// Fails when `features` is not a matrix with the width the model was fitted on.
    pub fn predict(&self, features: &Tensor) -> Result<Vec<i64>> {
        let (_, dim) = matrix_shape(features)?;
        let expected = self.weights.size()[0];
        ensure!(
            dim == expected,
            "features have {dim} columns, but the model was fitted on {expected}"
        );

        let scores = features.mm(&self.weights) + &self.intercepts;
        let columns = full_logits(&scores).argmax(1, false);
        let columns = Vec::<i64>::try_from(&columns)?;
        Ok(columns.iter().map(|&column| self.classes[column as usize]).collect())
    }

    /// Returns the weights, `[D, M]`, which are the transpose of scikit-learn's `coef_`.
    pub fn weights(&self) -> &Tensor {
        &self.weights
    }

    /// Returns the intercepts, `[M]`.
    pub fn intercepts(&self) -> &Tensor {
        &self.intercepts
    }
}

/// The data of one fit, laid out for fast evaluation of the objective.
struct Problem {
    /// Features with a trailing column of ones for the intercepts, `[N, D + 1]`.
    augmented: Tensor,
    /// One-hot targets over all classes, `[N, K]`.
    one_hot: Tensor,
    /// 1 for the weight rows, 0 for the intercept row, `[D + 1, 1]`.
    penalty_mask: Tensor,
    /// Number of free weight vectors, `M`.
    columns: i64,
    /// `1 / (C n)`.
    penalty: f64,
}

impl Problem {
    fn new(features: &Tensor, targets: &[i64], classes: i64, c: f64) -> Self {
        let rows = features.size()[0];
        let dim = features.size()[1];
        let options = (Kind::Double, Device::Cpu);
        let augmented =
            Tensor::cat(&[features.shallow_clone(), Tensor::ones([rows, 1], options)], 1);
        let one_hot = Tensor::from_slice(targets).one_hot(classes).to_kind(Kind::Double);
        let penalty_mask =
            Tensor::cat(&[Tensor::ones([dim, 1], options), Tensor::zeros([1, 1], options)], 0);
        let columns = if classes == 2 { 1 } else { classes };
        Self { augmented, one_hot, penalty_mask, columns, penalty: 1.0 / (c * rows as f64) }
    }

    /// Returns the mean objective and its gradient at the flattened parameters `theta`.
    fn value_and_gradient(&self, theta: &Tensor) -> (f64, Tensor) {
        let rows = self.augmented.size()[0] as f64;
        let parameters = theta.reshape([-1, self.columns]);
        let log_probabilities =
            full_logits(&self.augmented.mm(&parameters)).log_softmax(1, Kind::Double);
        let cross_entropy =
            -(&log_probabilities * &self.one_hot).sum(Kind::Double).double_value(&[]) / rows;

        let penalised = &parameters * &self.penalty_mask;
        let squared_norm = (&penalised * &penalised).sum(Kind::Double).double_value(&[]);
        let value = cross_entropy + 0.5 * self.penalty * squared_norm;

        // d CE / d logits = softmax - one_hot. With one free column, its logits are column 1.
        let mut residual = log_probabilities.exp() - &self.one_hot;
        if self.columns == 1 {
            residual = residual.narrow(1, 1, 1);
        }
        let gradient = self.augmented.tr().mm(&residual) / rows + penalised * self.penalty;
        (value, gradient.flatten(0, -1))
    }
}

/// Turns `[N, M]` scores into `[N, K]` logits: a single column gets a zero column for the first
/// class beside it.
fn full_logits(scores: &Tensor) -> Tensor {
    if scores.size()[1] == 1 {
        Tensor::cat(&[scores.zeros_like(), scores.shallow_clone()], 1)
    } else {
        scores.shallow_clone()
    }
}

fn summarize(outcome: &LbfgsOutcome) -> FitSummary {
    FitSummary {
        iterations: outcome.iterations,
        converged: outcome.converged(),
        objective: outcome.value,
    }
}

/// Returns `(rows, columns)` of a matrix.
fn matrix_shape(features: &Tensor) -> Result<(i64, i64)> {
    let size = features.size();
    ensure!(size.len() == 2, "features must be a matrix [N, D], found shape {size:?}");
    Ok((size[0], size[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[[f64; 2]]) -> Tensor {
        let values: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&values).view([rows.len() as i64, 2])
    }

    fn options() -> FitOptions {
        FitOptions { c: 1.0, max_iter: 1000 }
    }

    #[test]
    fn fit_separates_three_clusters() {
        let features =
            matrix(&[[0.0, 0.0], [0.2, 0.1], [5.0, 5.0], [5.1, 4.9], [0.0, 6.0], [0.2, 5.8]]);
        let labels = [3, 3, 7, 7, 9, 9];

        let (model, summary) = LogisticRegression::fit(&features, &labels, &options()).unwrap();

        assert!(summary.converged, "{summary:?}");
        assert_eq!(model.predict(&features).unwrap(), labels);
        assert_eq!(model.weights().size(), [2, 3]);
    }

    #[test]
    fn fit_binary_uses_one_weight_vector() {
        let features = matrix(&[[-2.0, 0.0], [-1.0, 0.5], [1.0, 0.0], [2.0, -0.5]]);
        let labels = [0, 0, 1, 1];

        let (model, _) = LogisticRegression::fit(&features, &labels, &options()).unwrap();

        assert_eq!(model.weights().size(), [2, 1]);
        assert_eq!(model.predict(&features).unwrap(), labels);
    }

    /// Ten points that no line separates, shared by the golden-value tests.
    fn golden_features() -> Tensor {
        matrix(&[
            [0.0, 1.0],
            [1.0, 0.5],
            [2.0, -1.0],
            [-1.0, 0.3],
            [0.5, 2.0],
            [-2.0, -1.0],
            [1.5, 1.5],
            [-0.5, -0.5],
            [0.2, -0.3],
            [-0.7, 1.2],
        ])
    }

    fn assert_parameters(model: &LogisticRegression, coef: &[&[f64]], intercept: &[f64]) {
        let weights = Vec::<Vec<f64>>::try_from(&model.weights().tr().contiguous()).unwrap();
        let intercepts = Vec::<f64>::try_from(model.intercepts()).unwrap();
        for (row, expected_row) in weights.iter().zip(coef) {
            for (value, expected) in row.iter().zip(expected_row.iter()) {
                assert!((value - expected).abs() < 1e-6, "weight {value} vs {expected}");
            }
        }
        for (value, expected) in intercepts.iter().zip(intercept) {
            assert!((value - expected).abs() < 1e-6, "intercept {value} vs {expected}");
        }
    }

    // The expected values below are `coef_` and `intercept_` of scikit-learn 1.7.2's
    // `LogisticRegression(tol=1e-12, max_iter=100000)` fitted on `golden_features()`.

    #[test]
    fn binary_fit_matches_sklearn_coefficients() {
        let labels = [0, 1, 1, 0, 0, 0, 1, 0, 1, 1];

        let (model, summary) =
            LogisticRegression::fit(&golden_features(), &labels, &options()).unwrap();

        assert!(summary.converged, "{summary:?}");
        assert_parameters(&model, &[&[0.95723931, -0.15934824]], &[-0.01814725]);
    }

    #[test]
    fn multinomial_fit_matches_sklearn_coefficients() {
        let labels = [0, 1, 1, 2, 2, 0, 1, 0, 2, 2];

        let (model, summary) =
            LogisticRegression::fit(&golden_features(), &labels, &options()).unwrap();

        assert!(summary.converged, "{summary:?}");
        let coef: [&[f64]; 3] =
            [&[-0.64770641, -0.37778673], &[1.13021152, -0.04582762], &[-0.48250511, 0.42361436]];
        assert_parameters(&model, &coef, &[0.19573033, -0.48183875, 0.28610842]);
    }

    #[test]
    fn fit_gradient_matches_finite_differences() {
        let features = matrix(&[[0.5, -1.0], [1.5, 2.0], [-0.3, 0.7], [2.2, -0.4], [0.1, 0.1]]);
        let problem = Problem::new(&features, &[0, 1, 2, 1, 0], 3, 0.7);
        let theta = Tensor::from_slice(&[0.1f64, -0.2, 0.3, 0.05, 0.4, -0.1, 0.2, 0.0, -0.3]);

        let (_, gradient) = problem.value_and_gradient(&theta);

        for index in 0..9 {
            let mut shifted = Vec::<f64>::try_from(&theta).unwrap();
            shifted[index] += 1e-6;
            let (plus, _) = problem.value_and_gradient(&Tensor::from_slice(&shifted));
            shifted[index] -= 2e-6;
            let (minus, _) = problem.value_and_gradient(&Tensor::from_slice(&shifted));
            let numeric = (plus - minus) / 2e-6;
            let analytic = gradient.double_value(&[index as i64]);
            assert!((numeric - analytic).abs() < 1e-7, "entry {index}: {numeric} vs {analytic}");
        }
    }

    #[test]
    fn fit_rejects_single_class() {
        let features = matrix(&[[0.0, 1.0], [1.0, 0.0]]);

        let error = LogisticRegression::fit(&features, &[4, 4], &options()).unwrap_err();

        assert_eq!(
            error.message(),
            "the train split has a single class (4); a classifier needs at least two"
        );
    }

    #[test]
    fn fit_rejects_label_count_mismatch() {
        let features = matrix(&[[0.0, 1.0], [1.0, 0.0]]);

        let error = LogisticRegression::fit(&features, &[0, 1, 1], &options()).unwrap_err();

        assert_eq!(error.message(), "features have 2 rows but there are 3 labels");
    }

    #[test]
    fn predict_rejects_wrong_width() {
        let features = matrix(&[[0.0, 1.0], [1.0, 0.0]]);
        let (model, _) = LogisticRegression::fit(&features, &[0, 1], &options()).unwrap();

        let error = model.predict(&Tensor::zeros([1, 3], (Kind::Double, Device::Cpu))).unwrap_err();

        assert_eq!(error.message(), "features have 3 columns, but the model was fitted on 2");
    }
}
