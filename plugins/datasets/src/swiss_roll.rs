//! The 3-D swiss roll of scikit-learn's `make_swiss_roll`, labelled by bins of its position.
//!
//! NOTE: the plugin interface carries only integer class labels, so the continuous position `t`
//! along the roll cannot reach evaluators. The labels are `bins` equal-width bins of `t` instead,
//! which probes and k-means can score; [`make_swiss_roll`] still returns `t` for tests.

use std::f64::consts::PI;

use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Param, Params, Result,
    Split, ensure,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::random::standard_normal_pair;
use crate::samples::{Samples, SplitSamples};
use crate::split::SplitOptions;

/// Largest accepted `n`. At this size the samples and labels take about 200 MB.
const MAX_SAMPLES: f64 = 10_000_000.0;

/// ChaCha stream of the data generator, so that it differs from the split's generator (stream 0).
const DATA_STREAM: u64 = 1;

/// Smallest position on the roll.
const T_MIN: f64 = 1.5 * PI;

/// Largest position on the roll, three times the smallest.
const T_MAX: f64 = 4.5 * PI;

/// Height of the roll along its axis, as in `make_swiss_roll`.
const HEIGHT: f64 = 21.0;

/// The swiss roll, split into train and test.
pub struct SwissRoll {
    data: SplitSamples,
}

impl DatasetPlugin for SwissRoll {
    fn describe() -> Description {
        let description = Description::new(
            "swiss_roll",
            env!("CARGO_PKG_VERSION"),
            "3-D swiss roll; labels are equal-width bins of the position t along the roll",
        )
        .param(Param::int("n", 1000, "number of samples").range(2.0, MAX_SAMPLES))
        .param(Param::float("noise", 0.0, "standard deviation of the Gaussian noise").min(0.0))
        .param(
            Param::int(
                "bins",
                6,
                "number of equal-width bins of t over [1.5 pi, 4.5 pi], the classes",
            )
            .range(1.0, 1000.0),
        )
        .param(Param::int("seed", 0, "seed of the points and of the train/test split").min(0.0))
        .param(
            Param::float("test_fraction", 0.2, "share of each bin put in the test split")
                .range(0.0, 1.0),
        );
        description.param(SplitOptions::declare_holdout())
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let n = params.int("n")?;
        let noise = params.float("noise")?;
        let bins = params.int("bins")?;
        ensure!(n >= 2, "n must be at least 2, found {n}");
        ensure!(
            noise.is_finite() && noise >= 0.0,
            "noise must be a finite value of at least 0, found {noise}"
        );
        ensure!(bins >= 1, "bins must be at least 1, found {bins}");
        let options = SplitOptions::with_seed_param(params, "seed")?;

        let (samples, _positions) = make_swiss_roll(n as usize, noise, bins as usize, options.seed);
        let width = (T_MAX - T_MIN) / bins as f64;
        let class_names = (0..bins)
            .map(|bin| {
                let low = T_MIN + bin as f64 * width;
                format!("t {low:.2}..{:.2}", low + width)
            })
            .collect();
        let data = SplitSamples::split(&samples, vec![3], class_names, &options)?;
        Ok(Self { data })
    }
}

impl Dataset for SwissRoll {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// Draws `n` points `(t cos t, h, t sin t)` with `t = 1.5 pi (1 + 2u)` and `h = 21 v` for
/// uniform `u` and `v`, plus normal noise of standard deviation `noise` on every coordinate.
///
/// Returns the samples, labelled by the one of `bins` equal-width bins of `[1.5 pi, 4.5 pi]` that
/// contains `t`, and the position `t` of each sample.
pub fn make_swiss_roll(n: usize, noise: f64, bins: usize, seed: u64) -> (Samples, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(DATA_STREAM);

    let mut samples = Samples::new(3);
    let mut positions = Vec::with_capacity(n);
    for _ in 0..n {
        let t = T_MIN + (T_MAX - T_MIN) * rng.random::<f64>();
        let height = HEIGHT * rng.random::<f64>();
        let (dx, dy) = standard_normal_pair(&mut rng);
        let (dz, _) = standard_normal_pair(&mut rng);
        let point = [t * t.cos() + noise * dx, height + noise * dy, t * t.sin() + noise * dz];

        let bin = (((t - T_MIN) / (T_MAX - T_MIN)) * bins as f64) as usize;
        samples.push(&point.map(|value| value as f32), bin.min(bins - 1) as i64);
        positions.push(t);
    }
    (samples, positions)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    #[test]
    fn swiss_roll_without_noise_lies_on_spiral() {
        let (samples, positions) = make_swiss_roll(500, 0.0, 4, 2);

        for (index, &t) in positions.iter().enumerate() {
            let row = samples.row(index);
            let radius = ((row[0] as f64).powi(2) + (row[2] as f64).powi(2)).sqrt();
            assert!((radius - t).abs() < 1e-4, "sample {index}: radius {radius}, t {t}");
            assert!((T_MIN..T_MAX).contains(&t));
            assert!((0.0..HEIGHT as f32).contains(&row[1]));
        }
    }

    #[test]
    fn swiss_roll_labels_are_bins_of_t() {
        let (samples, positions) = make_swiss_roll(2000, 0.1, 3, 0);

        let width = (T_MAX - T_MIN) / 3.0;
        for (&label, &t) in samples.labels().iter().zip(&positions) {
            let low = T_MIN + label as f64 * width;
            assert!((low..low + width).contains(&t), "t {t} in bin {label}");
        }
        for bin in 0..3 {
            assert!(samples.labels().contains(&bin), "bin {bin} is empty");
        }
    }

    #[test]
    fn swiss_roll_plugin_shape_and_classes() {
        let params = Params::new(vec![
            ("n".into(), ParamValue::Int(600)),
            ("noise".into(), ParamValue::Float(0.05)),
            ("bins".into(), ParamValue::Int(6)),
            ("seed".into(), ParamValue::Int(4)),
            ("test_fraction".into(), ParamValue::Float(0.25)),
            ("holdout_classes".into(), ParamValue::IntList(Default::default())),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };

        let roll = SwissRoll::create(&params, &context).unwrap();

        let info = roll.info();
        assert_eq!(info.sample_shape, [3]);
        assert_eq!(info.num_classes, Some(6));
        assert_eq!(info.class_names[0], "t 4.71..6.28");
        assert_eq!(info.train_len + info.test_len, 600);
    }
}
