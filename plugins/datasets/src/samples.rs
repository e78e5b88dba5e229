//! In-memory labelled samples and the two splits that the datasets serve batches from.

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::{Batch, DatasetInfo, InputKind, Result, Split, bail};

use crate::split::SplitOptions;

/// Float32 samples stored row-major, with one int64 label per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Number of values in one sample.
    numel: usize,
    values: Vec<f32>,
    labels: Vec<i64>,
}

impl Samples {
    /// Creates an empty set of samples with `numel` values each.
    pub fn new(numel: usize) -> Self {
        Self { numel, values: Vec::new(), labels: Vec::new() }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of values in one sample.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Labels of all samples, in order.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Values of sample `index`.
    ///
    /// # Panics
    ///
    /// Panics when `index` is out of range.
    pub fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.numel..(index + 1) * self.numel]
    }

    /// Appends one sample.
    ///
    /// # Panics
    ///
    /// Panics when `values` does not hold exactly `numel` values.
    pub fn push(&mut self, values: &[f32], label: i64) {
        assert_eq!(values.len(), self.numel, "sample has the wrong number of values");
        self.values.extend_from_slice(values);
        self.labels.push(label);
    }

    /// Copies the samples at `indices` into a new set, in that order.
    ///
    /// # Panics
    ///
    /// Panics when an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Samples {
        let mut selected = Samples::new(self.numel);
        for &index in indices {
            selected.push(self.row(index), self.labels[index]);
        }
        selected
    }
}

/// A dataset held in memory: the train and test splits and what they look like.
#[derive(Debug, Clone)]
pub struct SplitSamples {
    /// Shape of one sample, whose product is the `numel` of both splits.
    pub sample_shape: Vec<i64>,
    /// Names of the classes; empty for an unlabelled dataset, whose stored labels are ignored.
    pub class_names: Vec<String>,
    pub train: Samples,
    pub test: Samples,
}

impl SplitSamples {
    /// Splits `samples` with `options` into a dataset of the given sample shape and class names.
    ///
    /// # Errors
    ///
    /// Fails when the split fails (see [`SplitOptions::split`]).
    pub fn split(
        samples: &Samples,
        sample_shape: Vec<i64>,
        class_names: Vec<String>,
        options: &SplitOptions,
    ) -> Result<Self> {
        let split = options.split(samples.labels())?;
        Ok(Self {
            sample_shape,
            class_names,
            train: samples.select(&split.train),
            test: samples.select(&split.test),
        })
    }

    /// True when the dataset has class labels.
    pub fn is_labelled(&self) -> bool {
        !self.class_names.is_empty()
    }

    /// Describes the samples for the host.
    pub fn info(&self) -> DatasetInfo {
        DatasetInfo {
            sample_shape: self.sample_shape.clone(),
            input_kind: InputKind::Features,
            vocab_size: 0,
            num_classes: self.is_labelled().then_some(self.class_names.len() as i64),
            class_names: self.class_names.clone(),
            train_len: self.train.len(),
            test_len: self.test.len(),
        }
    }

    /// Z-scores every feature of both splits with the train split's mean and population standard
    /// deviation, computed in float64. A constant feature keeps a divisor of 1, as in
    /// scikit-learn's `StandardScaler`.
    pub fn standardize(&mut self) {
        let numel = self.train.numel;
        let rows = self.train.len().max(1) as f64;
        let mut mean = vec![0f64; numel];
        for index in 0..self.train.len() {
            for (sum, &value) in mean.iter_mut().zip(self.train.row(index)) {
                *sum += value as f64;
            }
        }
        mean.iter_mut().for_each(|sum| *sum /= rows);

        let mut deviation = vec![0f64; numel];
        for index in 0..self.train.len() {
            for ((sum, &value), centre) in
                deviation.iter_mut().zip(self.train.row(index)).zip(&mean)
            {
                *sum += (value as f64 - centre).powi(2);
            }
        }
        for sum in &mut deviation {
            *sum = (*sum / rows).sqrt();
            if *sum == 0.0 {
                *sum = 1.0;
            }
        }

        for samples in [&mut self.train, &mut self.test] {
            for (position, value) in samples.values.iter_mut().enumerate() {
                let feature = position % numel;
                *value = ((*value as f64 - mean[feature]) / deviation[feature]) as f32;
            }
        }
    }

    /// Builds the batch of the samples at `indices` of `split`, in that order.
    ///
    /// # Errors
    ///
    /// Fails when an index is negative or not below the split's length.
    pub fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        let samples = match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };

        let mut values = Vec::with_capacity(indices.len() * samples.numel());
        let mut labels = Vec::with_capacity(indices.len());
        for &index in indices {
            let Some(position) = usize::try_from(index).ok().filter(|&i| i < samples.len()) else {
                bail!(
                    "sample index {index} is out of range for the {} split of {} samples",
                    split.as_str(),
                    samples.len()
                );
            };
            values.extend_from_slice(samples.row(position));
            labels.push(samples.labels()[position]);
        }

        let mut shape = vec![indices.len() as i64];
        shape.extend_from_slice(&self.sample_shape);
        let inputs = Tensor::from_slice(&values).reshape(shape);
        let labels = self.is_labelled().then(|| Tensor::from_slice(&labels));
        Ok(Batch { inputs, labels })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::tch::Kind;

    use super::*;

    fn three_samples() -> SplitSamples {
        let mut train = Samples::new(2);
        train.push(&[0.0, 1.0], 0);
        train.push(&[2.0, 3.0], 1);
        let mut test = Samples::new(2);
        test.push(&[4.0, 5.0], 1);
        SplitSamples {
            sample_shape: vec![2],
            class_names: vec!["a".into(), "b".into()],
            train,
            test,
        }
    }

    #[test]
    fn batch_follows_index_order() {
        let batch = three_samples().batch(Split::Train, &[1, 0, 1]).unwrap();

        assert_eq!(batch.inputs.size(), [3, 2]);
        assert_eq!(batch.inputs.kind(), Kind::Float);
        let values = Vec::<f32>::try_from(batch.inputs.flatten(0, -1)).unwrap();
        assert_eq!(values, [2.0, 3.0, 0.0, 1.0, 2.0, 3.0]);
        let labels = batch.labels.unwrap();
        assert_eq!(labels.kind(), Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(labels).unwrap(), [1, 0, 1]);
    }

    #[test]
    fn batch_rejects_out_of_range_index() {
        let data = three_samples();

        let error = data.batch(Split::Test, &[1]).unwrap_err();
        assert_eq!(
            error.message(),
            "sample index 1 is out of range for the test split of 1 samples"
        );
        assert!(data.batch(Split::Train, &[-1]).is_err());
    }

    #[test]
    fn empty_batch_has_sample_shape() {
        let batch = three_samples().batch(Split::Train, &[]).unwrap();

        assert_eq!(batch.inputs.size(), [0, 2]);
    }

    #[test]
    fn standardize_uses_train_statistics() {
        let mut data = three_samples();
        data.train.push(&[4.0, 3.0], 0);

        data.standardize();

        // Train feature 0 is (0, 2, 4): mean 2, population deviation sqrt(8 / 3).
        let deviation = (8.0f64 / 3.0).sqrt();
        let train_first: Vec<f32> = (0..3).map(|i| data.train.row(i)[0]).collect();
        let expected: Vec<f32> = [-2.0, 0.0, 2.0].iter().map(|v| (v / deviation) as f32).collect();
        assert_eq!(train_first, expected);
        assert_eq!(data.test.row(0)[0], (2.0 / deviation) as f32);
    }

    #[test]
    fn standardize_keeps_constant_feature_finite() {
        let mut data = three_samples();
        data.train = Samples::new(2);
        data.train.push(&[1.0, 3.0], 0);
        data.train.push(&[1.0, 5.0], 1);

        data.standardize();

        assert_eq!(data.train.row(0)[0], 0.0);
        assert_eq!(data.test.row(0)[0], 3.0);
    }

    #[test]
    fn dataset_without_class_names_is_unlabelled() {
        let mut data = three_samples();
        data.class_names.clear();

        assert_eq!(data.info().num_classes, None);
        assert!(data.batch(Split::Train, &[0]).unwrap().labels.is_none());
    }

    #[test]
    fn info_reports_split_lengths() {
        let info = three_samples().info();

        assert_eq!(info.train_len, 2);
        assert_eq!(info.test_len, 1);
        assert_eq!(info.num_classes, Some(2));
    }
}
