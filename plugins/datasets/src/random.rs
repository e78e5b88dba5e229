//! Normal draws from a seeded ChaCha generator, shared by the synthetic datasets.

use std::f64::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Draws two independent standard normal values with the Box–Muller transform.
pub fn standard_normal_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    // `random` lies in [0, 1), so `1 - random` lies in (0, 1] and its logarithm is finite.
    let radius_draw = 1.0 - rng.random::<f64>();
    let angle = 2.0 * PI * rng.random::<f64>();
    let radius = (-2.0 * radius_draw.ln()).sqrt();
    (radius * angle.cos(), radius * angle.sin())
}
