//! Isotropic Gaussian clusters, drawn as scikit-learn's `make_blobs` draws them.

use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Param, Params, Result,
    Split, ensure,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::random::standard_normal_pair;
use crate::samples::{Samples, SplitSamples};
use crate::split::SplitOptions;

/// Largest accepted `n` times `dim`, about 40 MB of float32 values.
const MAX_VALUES: i64 = 10_000_000;

/// ChaCha stream of the data generator, so that it differs from the split's generator (stream 0)
/// when both are seeded with `seed`.
const DATA_STREAM: u64 = 1;

/// Settings of [`make_blobs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlobsOptions {
    pub n: usize,
    pub k: usize,
    pub dim: usize,
    pub cluster_std: f64,
    /// Half-width of the box from which the centres are drawn uniformly.
    pub center_box: f64,
    pub seed: u64,
}

/// The blobs dataset, split into train and test.
pub struct Blobs {
    data: SplitSamples,
}

impl DatasetPlugin for Blobs {
    fn describe() -> Description {
        let description = Description::new(
            "blobs",
            env!("CARGO_PKG_VERSION"),
            "k isotropic Gaussian clusters in `dim` dimensions, one class per cluster",
        )
        .param(Param::int("n", 1000, "number of samples, all clusters together").min(2.0))
        .param(Param::int("k", 3, "number of clusters (classes)").range(1.0, 1000.0))
        .param(Param::int("dim", 2, "number of features").range(1.0, 100_000.0))
        .param(Param::float("cluster_std", 1.0, "standard deviation of each cluster").min(0.0))
        .param(
            Param::float("center_box", 10.0, "centres are drawn uniformly from [-b, b] per axis")
                .min(0.0),
        )
        .param(Param::int("seed", 0, "seed of the centres, the points and the split").min(0.0))
        .param(
            Param::float("test_fraction", 0.2, "share of each class put in the test split")
                .range(0.0, 1.0),
        );
        description.param(SplitOptions::declare_holdout())
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let (n, k, dim) = (params.int("n")?, params.int("k")?, params.int("dim")?);
        let cluster_std = params.float("cluster_std")?;
        let center_box = params.float("center_box")?;
        ensure!(n >= k, "n must be at least k ({k}) so that every cluster has a sample, found {n}");
        ensure!(
            n.saturating_mul(dim) <= MAX_VALUES,
            "n * dim must be at most {MAX_VALUES} values, found {n} * {dim}"
        );
        ensure!(
            cluster_std.is_finite() && cluster_std >= 0.0,
            "cluster_std must be a finite value of at least 0, found {cluster_std}"
        );
        ensure!(center_box.is_finite(), "center_box must be finite, found {center_box}");
        let options = SplitOptions::with_seed_param(params, "seed")?;

        let blobs = BlobsOptions {
            n: n as usize,
            k: k as usize,
            dim: dim as usize,
            cluster_std,
            center_box,
            seed: options.seed,
        };
        let samples = make_blobs(&blobs);
        let class_names = (0..k).map(|label| format!("blob {label}")).collect();
        let data = SplitSamples::split(&samples, vec![dim], class_names, &options)?;
        Ok(Self { data })
    }
}

impl Dataset for Blobs {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// Draws `k` centres uniformly from `[-center_box, center_box]^dim`, then `n` points: cluster
/// `c` gets `n / k` points, plus one for each `c < n % k` as in `make_blobs`, each its centre
/// plus normal noise of standard deviation `cluster_std`. Points are ordered by cluster.
pub fn make_blobs(options: &BlobsOptions) -> Samples {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    rng.set_stream(DATA_STREAM);

    let box_width = 2.0 * options.center_box;
    let centres: Vec<Vec<f64>> = (0..options.k)
        .map(|_| {
            (0..options.dim).map(|_| rng.random::<f64>() * box_width - options.center_box).collect()
        })
        .collect();

    let mut samples = Samples::new(options.dim);
    let mut point = vec![0f32; options.dim];
    for (label, centre) in centres.iter().enumerate() {
        let count = options.n / options.k + usize::from(label < options.n % options.k);
        for _ in 0..count {
            for pair in (0..options.dim).step_by(2) {
                let (first, second) = standard_normal_pair(&mut rng);
                point[pair] = (centre[pair] + options.cluster_std * first) as f32;
                if pair + 1 < options.dim {
                    point[pair + 1] = (centre[pair + 1] + options.cluster_std * second) as f32;
                }
            }
            samples.push(&point, label as i64);
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    fn options(n: usize, k: usize, dim: usize, cluster_std: f64) -> BlobsOptions {
        BlobsOptions { n, k, dim, cluster_std, center_box: 10.0, seed: 3 }
    }

    fn build(n: i64, k: i64, holdout: &[i64]) -> Result<Blobs> {
        let params = Params::new(vec![
            ("n".into(), ParamValue::Int(n)),
            ("k".into(), ParamValue::Int(k)),
            ("dim".into(), ParamValue::Int(3)),
            ("cluster_std".into(), ParamValue::Float(0.5)),
            ("center_box".into(), ParamValue::Float(10.0)),
            ("seed".into(), ParamValue::Int(1)),
            ("test_fraction".into(), ParamValue::Float(0.2)),
            ("holdout_classes".into(), ParamValue::IntList(holdout.into())),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        Blobs::create(&params, &context)
    }

    #[test]
    fn blobs_counts_per_cluster() {
        let samples = make_blobs(&options(11, 3, 2, 1.0));

        let counts: Vec<usize> = (0..3)
            .map(|class| samples.labels().iter().filter(|&&label| label == class).count())
            .collect();
        assert_eq!(counts, [4, 4, 3]);
    }

    #[test]
    fn blobs_without_spread_sit_on_centres_in_box() {
        let samples = make_blobs(&options(30, 3, 5, 0.0));

        for index in 0..samples.len() {
            let first_of_class =
                samples.labels().iter().position(|&l| l == samples.labels()[index]);
            assert_eq!(samples.row(index), samples.row(first_of_class.unwrap()));
            assert!(samples.row(index).iter().all(|value| value.abs() <= 10.0));
        }
    }

    #[test]
    fn blobs_spread_matches_cluster_std() {
        let samples = make_blobs(&options(20_000, 1, 3, 2.0));

        let values: Vec<f64> = (0..samples.len()).map(|i| samples.row(i)[2] as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((variance.sqrt() - 2.0).abs() < 0.05, "standard deviation {}", variance.sqrt());
    }

    #[test]
    fn blobs_split_and_holdout() {
        let blobs = build(300, 3, &[2]).unwrap();

        let info = blobs.info();
        assert_eq!(info.sample_shape, [3]);
        assert_eq!(info.num_classes, Some(3));
        assert!(blobs.data.train.labels().iter().all(|&label| label != 2));
        assert_eq!(blobs.data.test.labels().iter().filter(|&&label| label == 2).count(), 100);
    }

    #[test]
    fn blobs_rejects_fewer_samples_than_clusters() {
        let error = build(2, 3, &[]).err().unwrap();

        assert_eq!(
            error.message(),
            "n must be at least k (3) so that every cluster has a sample, found 2"
        );
    }
}
