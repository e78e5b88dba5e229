//! K-means clustering with greedy k-means++ seeding and Lloyd iterations, the algorithm of
//! scikit-learn 1.x's `KMeans(init="k-means++", algorithm="lloyd")`, in float64.
//!
//! The result depends only on the data, the options and the seed. It need not match
//! scikit-learn's clustering, because the two draw different random numbers.

use pretext_plugin_api::{Result, ensure};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Settings of [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansOptions {
    pub clusters: usize,
    /// Number of seedings; the run with the lowest inertia wins.
    pub n_init: usize,
    pub max_iter: usize,
    /// Convergence threshold on the total squared centre shift, relative to the mean
    /// per-feature variance of the data, as scikit-learn's `tol`.
    pub tol: f64,
    pub seed: u64,
}

/// A finished clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// Cluster index of each row.
    pub assignments: Vec<usize>,
    /// `clusters x dim`, row-major.
    pub centres: Vec<f64>,
    /// Sum of squared distances from each row to its centre.
    pub inertia: f64,
}

/// Rows of equal width, stored row-major.
#[derive(Debug, Clone, Copy)]
pub struct Points<'a> {
    pub values: &'a [f64],
    pub dim: usize,
}

impl Points<'_> {
    fn len(&self) -> usize {
        self.values.len() / self.dim
    }

    fn row(&self, index: usize) -> &[f64] {
        &self.values[index * self.dim..(index + 1) * self.dim]
    }
}

/// Clusters `points` into `options.clusters` groups, keeping the best of `n_init` runs.
///
/// # Errors
///
/// Fails when there are fewer points than clusters, or when `clusters`, `n_init` or `max_iter`
/// is 0.
pub fn kmeans(points: Points, options: &KMeansOptions) -> Result<Clustering> {
    ensure!(points.dim > 0, "k-means needs embeddings with at least one column");
    ensure!(options.clusters >= 1, "the number of clusters must be at least 1");
    ensure!(options.n_init >= 1, "n_init must be at least 1, found {}", options.n_init);
    ensure!(options.max_iter >= 1, "max_iter must be at least 1, found {}", options.max_iter);
    ensure!(
        points.len() >= options.clusters,
        "k-means with {} clusters needs at least as many samples, found {}",
        options.clusters,
        points.len()
    );

    let threshold = options.tol * mean_variance(points);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..options.n_init {
        let centres = seed_centres(points, options.clusters, &mut rng);
        let clustering = lloyd(points, centres, options.max_iter, threshold);
        if best.as_ref().is_none_or(|best| clustering.inertia < best.inertia) {
            best = Some(clustering);
        }
    }
    Ok(best.expect("n_init is at least 1"))
}

/// Mean over features of the population variance.
fn mean_variance(points: Points) -> f64 {
    let rows = points.len() as f64;
    let mut total = 0.0;
    for column in 0..points.dim {
        let mean = (0..points.len()).map(|row| points.row(row)[column]).sum::<f64>() / rows;
        let squares: f64 =
            (0..points.len()).map(|row| (points.row(row)[column] - mean).powi(2)).sum();
        total += squares / rows;
    }
    total / points.dim as f64
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Picks initial centres by greedy k-means++: each new centre is the best of
/// `2 + floor(ln k)` candidates drawn with probability proportional to the squared distance to
/// the nearest centre so far, judged by the total squared distance it leaves.
fn seed_centres(points: Points, clusters: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let trials = 2 + (clusters as f64).ln().floor() as usize;
    let first = rng.random_range(0..points.len());
    let mut centres = points.row(first).to_vec();
    let mut closest: Vec<f64> =
        (0..points.len()).map(|row| squared_distance(points.row(row), points.row(first))).collect();

    for _ in 1..clusters {
        let potential: f64 = closest.iter().sum();
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let candidate = draw_weighted(&closest, potential, rng);
            let distances: Vec<f64> = (0..points.len())
                .map(|row| {
                    closest[row].min(squared_distance(points.row(row), points.row(candidate)))
                })
                .collect();
            let total: f64 = distances.iter().sum();
            if best.as_ref().is_none_or(|(best_total, _, _)| total < *best_total) {
                best = Some((total, candidate, distances));
            }
        }
        let (_, chosen, distances) = best.expect("there is at least one trial");
        centres.extend_from_slice(points.row(chosen));
        closest = distances;
    }
    centres
}

/// Draws an index with probability proportional to its weight, or uniformly when every weight
/// is 0 (all points coincide with a centre).
fn draw_weighted(weights: &[f64], total: f64, rng: &mut ChaCha8Rng) -> usize {
    if total <= 0.0 {
        return rng.random_range(0..weights.len());
    }
    let mut target = rng.random::<f64>() * total;
    for (index, &weight) in weights.iter().enumerate() {
        if target < weight {
            return index;
        }
        target -= weight;
    }
    weights.iter().rposition(|&weight| weight > 0.0).unwrap_or(0)
}

/// Assigns each point to its nearest centre, returning the assignments and the inertia.
fn assign(points: Points, centres: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let clusters = centres.len() / points.dim;
    let mut assignments = Vec::with_capacity(points.len());
    let mut distances = Vec::with_capacity(points.len());
    for row in 0..points.len() {
        let mut best = (0, f64::INFINITY);
        for cluster in 0..clusters {
            let centre = &centres[cluster * points.dim..(cluster + 1) * points.dim];
            let distance = squared_distance(points.row(row), centre);
            if distance < best.1 {
                best = (cluster, distance);
            }
        }
        assignments.push(best.0);
        distances.push(best.1);
    }
    (assignments, distances)
}

/// Runs Lloyd iterations from `centres` until the total squared centre shift is at most
/// `threshold` or `max_iter` updates have run, then assigns the points to the final centres.
///
/// An empty cluster moves to the point farthest from its own centre, so that every cluster
/// keeps at least one point.
fn lloyd(points: Points, mut centres: Vec<f64>, max_iter: usize, threshold: f64) -> Clustering {
    let dim = points.dim;
    let clusters = centres.len() / dim;
    for _ in 0..max_iter {
        let (assignments, mut distances) = assign(points, &centres);

        let mut sums = vec![0.0; centres.len()];
        let mut counts = vec![0usize; clusters];
        for (row, &cluster) in assignments.iter().enumerate() {
            counts[cluster] += 1;
            for (sum, value) in
                sums[cluster * dim..(cluster + 1) * dim].iter_mut().zip(points.row(row))
            {
                *sum += value;
            }
        }

        let mut shift = 0.0;
        for cluster in 0..clusters {
            let updated: Vec<f64> = if counts[cluster] == 0 {
                let farthest = (0..distances.len())
                    .max_by(|a, b| distances[*a].total_cmp(&distances[*b]).then(b.cmp(a)))
                    .unwrap_or(0);
                distances[farthest] = 0.0;
                points.row(farthest).to_vec()
            } else {
                let count = counts[cluster] as f64;
                sums[cluster * dim..(cluster + 1) * dim].iter().map(|sum| sum / count).collect()
            };
            let old = &mut centres[cluster * dim..(cluster + 1) * dim];
            shift += squared_distance(old, &updated);
            old.copy_from_slice(&updated);
        }
        if shift <= threshold {
            break;
        }
    }

    let (assignments, distances) = assign(points, &centres);
    Clustering { assignments, centres, inertia: distances.iter().sum() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(clusters: usize, seed: u64) -> KMeansOptions {
        KMeansOptions { clusters, n_init: 4, max_iter: 300, tol: 1e-4, seed }
    }

    /// Three tight groups of four points around (0, 0), (10, 0) and (0, 10).
    fn groups() -> Vec<f64> {
        let mut values = Vec::new();
        for centre in [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]] {
            for offset in [[0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]] {
                values.extend([centre[0] + offset[0], centre[1] + offset[1]]);
            }
        }
        values
    }

    #[test]
    fn kmeans_finds_separated_groups() {
        let values = groups();

        let clustering = kmeans(Points { values: &values, dim: 2 }, &options(3, 0)).unwrap();

        for group in clustering.assignments.chunks(4) {
            assert!(group.iter().all(|&cluster| cluster == group[0]), "{group:?}");
        }
        let mut firsts: Vec<usize> = clustering.assignments.chunks(4).map(|g| g[0]).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, [0, 1, 2]);
        assert!((clustering.inertia - 12.0 * 0.01).abs() < 1e-9, "{}", clustering.inertia);
    }

    #[test]
    fn kmeans_is_deterministic_per_seed() {
        let values = groups();
        let points = Points { values: &values, dim: 2 };

        let first = kmeans(points, &options(2, 5)).unwrap();
        let again = kmeans(points, &options(2, 5)).unwrap();

        assert_eq!(first, again);
    }

    #[test]
    fn kmeans_handles_duplicate_points() {
        let values = vec![1.0; 10];

        let clustering = kmeans(Points { values: &values, dim: 2 }, &options(3, 0)).unwrap();

        assert_eq!(clustering.inertia, 0.0);
        assert_eq!(clustering.assignments.len(), 5);
    }

    #[test]
    fn kmeans_rejects_too_few_points() {
        let values = [0.0, 1.0];

        let error = kmeans(Points { values: &values, dim: 1 }, &options(3, 0)).unwrap_err();

        assert_eq!(
            error.message(),
            "k-means with 3 clusters needs at least as many samples, found 2"
        );
    }

    #[test]
    fn weighted_draw_skips_zero_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);

        for _ in 0..100 {
            assert_eq!(draw_weighted(&[0.0, 2.0, 0.0], 2.0, &mut rng), 1);
        }
    }
}
