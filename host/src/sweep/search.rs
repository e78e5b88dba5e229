//! Search strategies: the grid, random sampling and TPE (the `tpe` crate, one estimator per
//! dimension). Everything here works on points and numbers, without training, so that the
//! strategies can be compared on cheap objectives.

use rand_tpe::rngs::StdRng;
use rand_tpe::{RngExt, SeedableRng};

use super::config::Strategy;
use super::space::{Domain, Space};

/// A finished trial as the strategies see it: lower `loss` is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub point: Vec<f64>,
    pub loss: f64,
}

/// Every combination of the space's values, the first dimension varying slowest.
///
/// # Errors
///
/// Returns an error naming the first continuous dimension, which has no grid.
pub fn grid(space: &Space) -> Result<Vec<Vec<f64>>, String> {
    let mut points = vec![Vec::new()];
    for dimension in &space.dimensions {
        let Some(values) = dimension.domain.grid() else {
            return Err(format!(
                "`{}` is a continuous range, which grid search cannot enumerate; give a list of \
                 values or a `step`, or use strategy \"random\" or \"tpe\"",
                dimension.key
            ));
        };
        points = points
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |value| {
                    let mut next = point.clone();
                    next.push(*value);
                    next
                })
            })
            .collect();
    }
    Ok(points)
}

/// The random generator of trial `index`: the same seed and index give the same point, so a
/// resumed sweep proposes what the interrupted one would have.
fn trial_rng(seed: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index)
}

/// A uniform sample of the space.
pub fn random_point(space: &Space, rng: &mut StdRng) -> Vec<f64> {
    space
        .dimensions
        .iter()
        .map(|dimension| match &dimension.domain {
            Domain::Float { low, high, step: None, log: true } => {
                rng.random_range(low.ln()..high.ln()).exp()
            }
            Domain::Float { low, high, step: None, log: false } => rng.random_range(*low..*high),
            domain => {
                let values = domain.grid().expect("every other domain has a grid");
                values[rng.random_range(0..values.len())]
            }
        })
        .collect()
}

/// How TPE sees one dimension: the estimator's range and the map to and from coordinates.
enum Axis {
    /// A list of grid values, modelled as categories by index.
    Categorical(Vec<f64>),
    /// A grid of ordered values, modelled by index with a Parzen estimator.
    Ordinal(Vec<f64>),
    Linear(f64, f64),
    Log(f64, f64),
}

impl Axis {
    fn of(domain: &Domain) -> Self {
        match domain {
            Domain::Choice(_) => Axis::Categorical(domain.grid().expect("a choice has a grid")),
            Domain::Float { low, high, step: None, log: true } => Axis::Log(low.ln(), high.ln()),
            Domain::Float { low, high, step: None, log: false } => Axis::Linear(*low, *high),
            _ => Axis::Ordinal(domain.grid().expect("a stepped range has a grid")),
        }
    }

    fn range(&self) -> tpe::range::Range {
        let range = match self {
            Axis::Categorical(values) => tpe::categorical_range(values.len()),
            Axis::Ordinal(values) => tpe::range(0.0, values.len() as f64),
            Axis::Linear(low, high) | Axis::Log(low, high) => tpe::range(*low, *high),
        };
        range.expect("domains are checked to be non-empty and ordered")
    }

    /// The estimator's parameter for a coordinate.
    fn encode(&self, coordinate: f64) -> f64 {
        let index_of = |values: &[f64]| {
            values
                .iter()
                .position(|value| (value - coordinate).abs() <= 1e-9 * value.abs().max(1.0))
                .unwrap_or(0) as f64
        };
        match self {
            Axis::Categorical(values) => index_of(values),
            // The estimator's range is half-open, so index k is told as the middle of [k, k + 1).
            Axis::Ordinal(values) => index_of(values) + 0.5,
            Axis::Linear(low, high) => coordinate.clamp(*low, high - (high - low) * 1e-12),
            Axis::Log(low, high) => coordinate.ln().clamp(*low, high - (high - low) * 1e-12),
        }
    }

    /// The coordinate for a parameter the estimator proposed.
    fn decode(&self, parameter: f64) -> f64 {
        let pick = |values: &[f64]| values[(parameter.max(0.0) as usize).min(values.len() - 1)];
        match self {
            Axis::Categorical(values) | Axis::Ordinal(values) => pick(values),
            Axis::Linear(..) => parameter,
            Axis::Log(..) => parameter.exp(),
        }
    }
}

/// The next point TPE proposes from the observations, one independent estimator per dimension.
pub fn tpe_point(space: &Space, history: &[Observation], rng: &mut StdRng) -> Vec<f64> {
    let mut point = Vec::with_capacity(space.dimensions.len());
    for (index, dimension) in space.dimensions.iter().enumerate() {
        let axis = Axis::of(&dimension.domain);
        let mut optimizer = match axis {
            Axis::Categorical(_) => {
                tpe::TpeOptimizer::new(tpe::histogram_estimator(), axis.range())
            }
            _ => tpe::TpeOptimizer::new(tpe::parzen_estimator(), axis.range()),
        };
        for observation in history.iter().filter(|observation| observation.loss.is_finite()) {
            let parameter = axis.encode(observation.point[index]);
            // Points outside today's range (a space edited between runs) are left out.
            let _ = optimizer.tell(parameter, observation.loss);
        }
        let parameter = optimizer.ask(rng).unwrap_or_else(|_| random_parameter(&axis, rng));
        point.push(axis.decode(parameter));
    }
    point
}

fn random_parameter(axis: &Axis, rng: &mut StdRng) -> f64 {
    let range = axis.range();
    rng.random_range(range.start()..range.end())
}

/// The point of trial `index` (counted from 0). Grid search has no proposals of its own; use
/// [`grid`].
pub fn propose(
    space: &Space,
    strategy: Strategy,
    seed: u64,
    startup_trials: u64,
    index: u64,
    history: &[Observation],
) -> Vec<f64> {
    let mut rng = trial_rng(seed, index);
    match strategy {
        Strategy::Tpe if history.len() as u64 >= startup_trials => {
            tpe_point(space, history, &mut rng)
        }
        _ => random_point(space, &mut rng),
    }
}

/// Runs a whole search on `objective` (lower is better) and returns the loss of each trial in
/// order; grid search tries every point, up to `trials` of them.
///
/// # Errors
///
/// Returns an error when grid search meets a continuous dimension.
pub fn optimize(
    space: &Space,
    strategy: Strategy,
    trials: u64,
    seed: u64,
    startup_trials: u64,
    mut objective: impl FnMut(&[f64]) -> f64,
) -> Result<Vec<f64>, String> {
    if strategy == Strategy::Grid {
        let points = grid(space)?;
        return Ok(points.iter().take(trials as usize).map(|point| objective(point)).collect());
    }
    let mut history = Vec::new();
    for index in 0..trials {
        let point = propose(space, strategy, seed, startup_trials, index, &history);
        let loss = objective(&point);
        history.push(Observation { point, loss });
    }
    Ok(history.into_iter().map(|observation| observation.loss).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::space::Dimension;

    fn space() -> Space {
        Space {
            dimensions: vec![
                Dimension { key: "a".into(), domain: Domain::Choice(vec!["1".into(), "2".into()]) },
                Dimension { key: "b".into(), domain: Domain::Int { low: 0, high: 4, step: 2 } },
                Dimension {
                    key: "c".into(),
                    domain: Domain::Float { low: 1e-4, high: 1e-1, step: None, log: true },
                },
            ],
        }
    }

    #[test]
    fn grid_is_cartesian_product() {
        let mut space = space();
        space.dimensions.pop();
        let points = grid(&space).unwrap();
        assert_eq!(points.len(), 6);
        assert_eq!(points[1], [0.0, 2.0]);
    }

    #[test]
    fn grid_rejects_continuous_range() {
        assert!(grid(&space()).unwrap_err().contains("`c`"));
    }

    #[test]
    fn random_points_stay_in_domain() {
        for index in 0..50 {
            let point = propose(&space(), Strategy::Random, 7, 0, index, &[]);
            assert!(point[0] == 0.0 || point[0] == 1.0);
            assert!([0.0, 2.0, 4.0].contains(&point[1]));
            assert!((1e-4..1e-1).contains(&point[2]), "{point:?}");
        }
    }

    #[test]
    fn proposals_repeat_for_same_seed() {
        let first = propose(&space(), Strategy::Random, 3, 0, 5, &[]);
        assert_eq!(first, propose(&space(), Strategy::Random, 3, 0, 5, &[]));
    }

    #[test]
    fn tpe_points_stay_in_domain() {
        let history: Vec<Observation> = (0..10)
            .map(|index| {
                let point = propose(&space(), Strategy::Random, 1, 0, index, &[]);
                Observation { loss: point[2], point }
            })
            .collect();
        for index in 10..30 {
            let point = propose(&space(), Strategy::Tpe, 1, 5, index, &history);
            assert!([0.0, 2.0, 4.0].contains(&point[1]), "{point:?}");
            assert!((1e-4..=1e-1).contains(&point[2]), "{point:?}");
        }
    }
}
