//! Full-batch L-BFGS minimisation of a smooth function of one float64 tensor.
//!
//! The line search only backtracks until the Armijo (sufficient decrease) condition holds. It
//! does not enforce the Wolfe curvature condition. That is enough for the strictly convex
//! objectives this crate minimises, because there every step along a descent direction gives
//! `s·y > 0`, which keeps the inverse-Hessian estimate positive definite. On other functions a
//! pair with `s·y` too small is skipped rather than stored.

use std::collections::VecDeque;

use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{Result, ensure};

/// Stopping rules and memory of [`minimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsOptions {
    /// Maximum number of iterations, each one a search direction and a line search.
    pub max_iter: usize,
    /// Stop once the largest absolute entry of the gradient is at most this.
    pub gradient_tolerance: f64,
    /// Stop once one iteration lowers the value by at most this, relative to
    /// `max(|f_old|, |f_new|, 1)`.
    pub value_tolerance: f64,
    /// Number of recent (step, gradient change) pairs kept for the inverse-Hessian estimate.
    pub memory: usize,
    /// Maximum number of objective evaluations in one line search.
    pub max_line_search: usize,
}

impl Default for LbfgsOptions {
    /// Uses the settings of scikit-learn 1.7.2's lbfgs call (memory 10, SciPy's default
    /// `maxcor`, at most 50 line-search steps, value tolerance 64 machine epsilons), but a
    /// gradient tolerance of 1e-6 in place of its `tol = 1e-4`, so that the fit lands closer to
    /// the exact minimum.
    fn default() -> Self {
        Self {
            max_iter: 1000,
            gradient_tolerance: 1e-6,
            value_tolerance: 64.0 * f64::EPSILON,
            memory: 10,
            max_line_search: 50,
        }
    }
}

/// Condition that ended a [`minimize`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    GradientTolerance,
    ValueTolerance,
    MaxIterations,
    /// No step along the search direction lowered the value enough.
    LineSearchFailed,
}

/// The point where [`minimize`] stopped, with its value.
#[derive(Debug)]
pub struct LbfgsOutcome {
    pub x: Tensor,
    pub value: f64,
    pub iterations: usize,
    pub stop: StopReason,
}

impl LbfgsOutcome {
    /// True when a tolerance, rather than a limit or a failed line search, ended the run.
    pub fn converged(&self) -> bool {
        matches!(self.stop, StopReason::GradientTolerance | StopReason::ValueTolerance)
    }
}

/// Sufficient-decrease constant of the Armijo condition.
const ARMIJO: f64 = 1e-4;

/// Minimises `objective`, which returns the value and the gradient (same shape as its argument)
/// at a point, starting from `start`.
///
/// # Errors
///
/// Fails when `objective` fails, or when its value or gradient at `start` is not finite.
pub fn minimize<F>(mut objective: F, start: &Tensor, options: &LbfgsOptions) -> Result<LbfgsOutcome>
where
    F: FnMut(&Tensor) -> Result<(f64, Tensor)>,
{
    let mut x = start.to_kind(Kind::Double);
    let (mut value, mut gradient) = objective(&x)?;
    ensure!(value.is_finite(), "objective is not finite at the starting point, found {value}");
    ensure!(max_abs(&gradient).is_finite(), "gradient is not finite at the starting point");

    let mut history: VecDeque<CurvaturePair> = VecDeque::with_capacity(options.memory);
    for iteration in 0..options.max_iter {
        if max_abs(&gradient) <= options.gradient_tolerance {
            return Ok(LbfgsOutcome {
                x,
                value,
                iterations: iteration,
                stop: StopReason::GradientTolerance,
            });
        }

        // Fall back to steepest descent when rounding makes the estimate point uphill.
        let mut direction = search_direction(&gradient, &history);
        let mut slope = dot(&gradient, &direction);
        if slope >= 0.0 {
            history.clear();
            direction = -&gradient;
            slope = dot(&gradient, &direction);
        }

        // Without curvature pairs the direction is the raw gradient, whose length is unrelated to
        // a good step length, so the first trial moves a distance of at most 1.
        let first_step = if history.is_empty() { (1.0 / norm(&direction)).min(1.0) } else { 1.0 };
        let Some(accepted) =
            backtrack(&mut objective, &x, value, &direction, slope, first_step, options)?
        else {
            return Ok(LbfgsOutcome {
                x,
                value,
                iterations: iteration,
                stop: StopReason::LineSearchFailed,
            });
        };

        let step = &accepted.x - &x;
        let gradient_change = &accepted.gradient - &gradient;
        let curvature = dot(&step, &gradient_change);
        if curvature > 1e-10 * dot(&gradient_change, &gradient_change) {
            history.push_back(CurvaturePair { step, gradient_change, rho: 1.0 / curvature });
            while history.len() > options.memory {
                history.pop_front();
            }
        }

        let decrease = (value - accepted.value) / value.abs().max(accepted.value.abs()).max(1.0);
        x = accepted.x;
        value = accepted.value;
        gradient = accepted.gradient;
        if decrease <= options.value_tolerance {
            return Ok(LbfgsOutcome {
                x,
                value,
                iterations: iteration + 1,
                stop: StopReason::ValueTolerance,
            });
        }
    }

    let stop = if max_abs(&gradient) <= options.gradient_tolerance {
        StopReason::GradientTolerance
    } else {
        StopReason::MaxIterations
    };
    Ok(LbfgsOutcome { x, value, iterations: options.max_iter, stop })
}

/// One stored pair `s = x_new - x`, `y = g_new - g`, with `rho = 1 / (s·y)`.
struct CurvaturePair {
    step: Tensor,
    gradient_change: Tensor,
    rho: f64,
}

/// A point the line search accepted.
struct Trial {
    x: Tensor,
    value: f64,
    gradient: Tensor,
}

/// Computes `-H g` with the two-loop recursion, `H` being the L-BFGS inverse-Hessian estimate
/// scaled by `s·y / y·y` of the newest pair.
fn search_direction(gradient: &Tensor, history: &VecDeque<CurvaturePair>) -> Tensor {
    let mut q = gradient.copy();
    let mut alphas = Vec::with_capacity(history.len());
    for pair in history.iter().rev() {
        let alpha = pair.rho * dot(&pair.step, &q);
        q -= &pair.gradient_change * alpha;
        alphas.push(alpha);
    }

    if let Some(newest) = history.back() {
        let scale = 1.0 / (newest.rho * dot(&newest.gradient_change, &newest.gradient_change));
        q *= scale;
    }

    for (pair, alpha) in history.iter().zip(alphas.iter().rev()) {
        let beta = pair.rho * dot(&pair.gradient_change, &q);
        q += &pair.step * (alpha - beta);
    }
    -q
}

/// Shrinks the step along `direction` until the Armijo condition holds, each time to the minimum
/// of the quadratic through the known values, kept within [0.1, 0.5] of the previous step.
/// Returns `None` when `max_line_search` evaluations find no such step.
fn backtrack<F>(
    objective: &mut F,
    x: &Tensor,
    value: f64,
    direction: &Tensor,
    slope: f64,
    first_step: f64,
    options: &LbfgsOptions,
) -> Result<Option<Trial>>
where
    F: FnMut(&Tensor) -> Result<(f64, Tensor)>,
{
    let mut step = first_step;
    for _ in 0..options.max_line_search {
        let candidate = x + direction * step;
        let (candidate_value, candidate_gradient) = objective(&candidate)?;
        if candidate_value.is_finite() && candidate_value <= value + ARMIJO * step * slope {
            return Ok(Some(Trial {
                x: candidate,
                value: candidate_value,
                gradient: candidate_gradient,
            }));
        }

        let quadratic_step = if candidate_value.is_finite() {
            -slope * step * step / (2.0 * (candidate_value - value - slope * step))
        } else {
            0.0
        };
        step = quadratic_step.clamp(0.1 * step, 0.5 * step);
    }
    Ok(None)
}

fn dot(left: &Tensor, right: &Tensor) -> f64 {
    (left * right).sum(Kind::Double).double_value(&[])
}

fn norm(tensor: &Tensor) -> f64 {
    dot(tensor, tensor).sqrt()
}

fn max_abs(tensor: &Tensor) -> f64 {
    tensor.abs().max().double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(point: &Tensor) -> Result<(f64, Tensor)> {
        let [x, y] = [point.double_value(&[0]), point.double_value(&[1])];
        let value = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
        let gradient = [-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)];
        Ok((value, Tensor::from_slice(&gradient)))
    }

    #[test]
    fn minimize_finds_quadratic_minimum() {
        // f(x) = 0.5 * sum(a_i * (x_i - b_i)^2) with very different curvatures.
        let curvature = Tensor::from_slice(&[1.0f64, 10.0, 100.0, 1000.0]);
        let centre = Tensor::from_slice(&[1.0f64, -2.0, 3.0, -4.0]);
        let objective = |x: &Tensor| {
            let offset = x - &centre;
            let value = 0.5 * (&curvature * &offset * &offset).sum(Kind::Double).double_value(&[]);
            Ok((value, &curvature * &offset))
        };

        let outcome = minimize(
            objective,
            &Tensor::zeros([4], (Kind::Double, centre.device())),
            &LbfgsOptions::default(),
        )
        .unwrap();

        assert_eq!(outcome.stop, StopReason::GradientTolerance);
        let error = max_abs(&(&outcome.x - &centre));
        assert!(error < 1e-6, "distance to the minimum {error}");
    }

    #[test]
    fn minimize_solves_rosenbrock() {
        let start = Tensor::from_slice(&[-1.2f64, 1.0]);

        let outcome = minimize(rosenbrock, &start, &LbfgsOptions::default()).unwrap();

        assert!(outcome.converged(), "stopped by {:?}", outcome.stop);
        assert!((outcome.x.double_value(&[0]) - 1.0).abs() < 1e-5);
        assert!((outcome.x.double_value(&[1]) - 1.0).abs() < 1e-5);
        assert!(outcome.iterations < 200, "took {} iterations", outcome.iterations);
    }

    #[test]
    fn minimize_stops_at_max_iter() {
        let start = Tensor::from_slice(&[-1.2f64, 1.0]);
        let options = LbfgsOptions { max_iter: 3, ..LbfgsOptions::default() };

        let outcome = minimize(rosenbrock, &start, &options).unwrap();

        assert_eq!(outcome.stop, StopReason::MaxIterations);
        assert_eq!(outcome.iterations, 3);
        assert!(outcome.value < 24.2, "value {} did not decrease", outcome.value);
    }

    #[test]
    fn minimize_rejects_non_finite_start() {
        let objective = |_: &Tensor| Ok((f64::NAN, Tensor::from_slice(&[0.0f64])));

        let error = minimize(objective, &Tensor::from_slice(&[0.0f64]), &LbfgsOptions::default())
            .unwrap_err();

        assert_eq!(error.message(), "objective is not finite at the starting point, found NaN");
    }
}
