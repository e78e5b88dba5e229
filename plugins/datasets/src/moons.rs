//! Two interleaving half circles with Gaussian noise, as scikit-learn's `make_moons` draws them.

use std::f64::consts::PI;

use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Param, Params, Result,
    Split,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::random::standard_normal_pair;
use crate::samples::{Samples, SplitSamples};
use crate::split::stratified_split;

/// Largest accepted `n`. At this size the split samples and labels take about 160 MB.
const MAX_SAMPLES: f64 = 10_000_000.0;

/// ChaCha stream of the noise generator, so that it differs from the split's generator (stream 0)
/// when both are seeded with `seed`.
const NOISE_STREAM: u64 = 1;

/// The two-moons dataset, split into train and test.
pub struct Moons {
    data: SplitSamples,
}

impl DatasetPlugin for Moons {
    fn describe() -> Description {
        Description::new(
            "moons",
            env!("CARGO_PKG_VERSION"),
            "two interleaving half circles in 2-D with Gaussian noise, 2 classes",
        )
        .param(
            Param::int("n", 1000, "number of samples, both classes together")
                .range(2.0, MAX_SAMPLES),
        )
        .param(Param::float("noise", 0.1, "standard deviation of the Gaussian noise").min(0.0))
        .param(Param::int("seed", 0, "seed of the noise and of the train/test split").min(0.0))
        .param(
            Param::float("test_fraction", 0.2, "share of each class put in the test split")
                .range(0.0, 1.0),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let n = params.int("n")?;
        let noise = params.float("noise")?;
        let seed = params.int("seed")? as u64;
        let test_fraction = params.float("test_fraction")?;
        pretext_plugin_api::ensure!(n >= 2, "n must be at least 2, found {n}");
        pretext_plugin_api::ensure!(
            noise >= 0.0 && noise.is_finite(),
            "noise must be a finite value of at least 0, found {noise}"
        );

        let samples = make_moons(n as usize, noise, seed);
        let split = stratified_split(samples.labels(), test_fraction, seed)?;
        let data = SplitSamples {
            sample_shape: vec![2],
            class_names: vec!["upper".into(), "lower".into()],
            train: samples.select(&split.train),
            test: samples.select(&split.test),
        };
        Ok(Self { data })
    }
}

impl Dataset for Moons {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// Draws `n` points: `n / 2` (rounded down) on the upper half circle with label 0, then the
/// rest on the lower one with label 1, each coordinate plus normal noise of standard deviation
/// `noise`.
///
/// The upper moon is `(cos t, sin t)` and the lower `(1 - cos t, 0.5 - sin t)` for `t` evenly
/// spaced over `[0, pi]`, as in scikit-learn's `make_moons`. Unlike it, the points are not
/// shuffled, because the split sorts them by index anyway.
pub fn make_moons(n: usize, noise: f64, seed: u64) -> Samples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(NOISE_STREAM);

    let upper = n / 2;
    let lower = n - upper;
    let mut samples = Samples::new(2);
    for (label, count) in [(0, upper), (1, lower)] {
        for step in 0..count {
            let angle = if count > 1 { PI * step as f64 / (count - 1) as f64 } else { 0.0 };
            let (x, y) = match label {
                0 => (angle.cos(), angle.sin()),
                _ => (1.0 - angle.cos(), 0.5 - angle.sin()),
            };
            let (dx, dy) = standard_normal_pair(&mut rng);
            samples.push(&[(x + noise * dx) as f32, (y + noise * dy) as f32], label);
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    fn build(n: i64, noise: f64, seed: i64) -> Result<Moons> {
        let params = Params::new(vec![
            ("n".into(), ParamValue::Int(n)),
            ("noise".into(), ParamValue::Float(noise)),
            ("seed".into(), ParamValue::Int(seed)),
            ("test_fraction".into(), ParamValue::Float(0.2)),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        Moons::create(&params, &context)
    }

    #[test]
    fn moons_without_noise_lie_on_circles() {
        let samples = make_moons(101, 0.0, 0);

        assert_eq!(samples.len(), 101);
        assert_eq!(samples.labels().iter().filter(|&&label| label == 0).count(), 50);
        for index in 0..samples.len() {
            let [x, y] = [samples.row(index)[0] as f64, samples.row(index)[1] as f64];
            let (centre_x, centre_y) =
                if samples.labels()[index] == 0 { (0.0, 0.0) } else { (1.0, 0.5) };
            let radius = ((x - centre_x).powi(2) + (y - centre_y).powi(2)).sqrt();
            assert!((radius - 1.0).abs() < 1e-6, "sample {index} at radius {radius}");
        }
    }

    #[test]
    fn moons_endpoints_match_make_moons() {
        let samples = make_moons(4, 0.0, 0);

        assert_eq!(samples.row(0), [1.0, 0.0]);
        assert_eq!(samples.row(1)[0], -1.0);
        assert_eq!(samples.row(2), [0.0, 0.5]);
        assert_eq!(samples.row(3)[0], 2.0);
    }

    #[test]
    fn moons_noise_has_requested_spread() {
        let clean = make_moons(20_000, 0.0, 0);
        let noisy = make_moons(20_000, 0.3, 0);

        let offsets: Vec<f64> = (0..clean.len())
            .flat_map(|i| [0, 1].map(|axis| (noisy.row(i)[axis] - clean.row(i)[axis]) as f64))
            .collect();
        let mean = offsets.iter().sum::<f64>() / offsets.len() as f64;
        let variance =
            offsets.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / offsets.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((variance.sqrt() - 0.3).abs() < 0.01, "standard deviation {}", variance.sqrt());
    }

    #[test]
    fn moons_shape_and_labels() {
        let moons = build(1000, 0.1, 0).unwrap();

        let info = moons.info();
        assert_eq!(info.sample_shape, [2]);
        assert_eq!(info.num_classes, Some(2));
        assert_eq!(info.train_len, 800);
        assert_eq!(info.test_len, 200);
        let batch = moons.batch(Split::Test, &[0, 199]).unwrap();
        assert_eq!(batch.inputs.size(), [2, 2]);
        let labels = Vec::<i64>::try_from(batch.labels.unwrap()).unwrap();
        assert!(labels.iter().all(|label| [0, 1].contains(label)));
    }

    #[test]
    fn moons_split_is_stratified() {
        let moons = build(1001, 0.1, 0).unwrap();

        let test = moons.data.test.labels();
        assert_eq!(test.iter().filter(|&&label| label == 0).count(), 100);
        assert_eq!(test.iter().filter(|&&label| label == 1).count(), 100);
        assert_eq!(moons.data.train.len(), 801);
    }

    #[test]
    fn moons_is_deterministic_per_seed() {
        let first = build(300, 0.2, 9).unwrap();
        let again = build(300, 0.2, 9).unwrap();
        let other = build(300, 0.2, 10).unwrap();

        assert_eq!(first.data.train, again.data.train);
        assert_eq!(first.data.test, again.data.test);
        assert_ne!(first.data.train, other.data.train);
    }

    #[test]
    fn moons_rejects_negative_noise() {
        let error = build(100, -0.5, 0).err().unwrap();

        assert_eq!(error.message(), "noise must be a finite value of at least 0, found -0.5");
    }

    #[test]
    fn moons_rejects_too_few_samples_for_split() {
        assert!(build(2, 0.1, 0).is_err());
    }
}
