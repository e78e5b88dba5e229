//! A fake [`EvalContext`] for the evaluators' unit tests.

use pretext_plugin_api::tch::{Device, Kind, Tensor};
use pretext_plugin_api::{Batch, DatasetInfo, EvalContext, InputKind, Result, Split, bail};

/// Decoder of a fake objective: maps an input batch to its reconstruction.
pub type Decoder = Box<dyn Fn(&Tensor) -> Tensor>;

/// An identity model over fixed data: the embeddings are the inputs themselves.
pub struct FakeContext {
    pub train: Tensor,
    pub test: Tensor,
    pub train_labels: Option<Vec<i64>>,
    pub test_labels: Option<Vec<i64>>,
    pub class_names: Vec<String>,
    pub decoder: Option<Decoder>,
}

impl FakeContext {
    /// Builds a labelled context over float64 rows.
    pub fn labelled(
        train: &[Vec<f64>],
        train_labels: &[i64],
        test: &[Vec<f64>],
        test_labels: &[i64],
    ) -> Self {
        let classes = train_labels.iter().chain(test_labels).max().map_or(0, |max| max + 1);
        Self {
            train: matrix(train),
            test: matrix(test),
            train_labels: Some(train_labels.to_vec()),
            test_labels: Some(test_labels.to_vec()),
            class_names: (0..classes).map(|label| format!("class {label}")).collect(),
            decoder: None,
        }
    }

    fn split(&self, split: Split) -> &Tensor {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }
}

/// Stacks rows of equal length into a `[N, D]` float64 tensor.
pub fn matrix(rows: &[Vec<f64>]) -> Tensor {
    let width = rows.first().map_or(0, Vec::len) as i64;
    let values: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&values).view([rows.len() as i64, width])
}

impl EvalContext for FakeContext {
    fn dataset(&self) -> DatasetInfo {
        DatasetInfo {
            sample_shape: self.train.size()[1..].to_vec(),
            input_kind: InputKind::Features,
            vocab_size: 0,
            num_classes: self.train_labels.as_ref().map(|_| self.class_names.len() as i64),
            class_names: self.class_names.clone(),
            train_len: self.train.size()[0] as usize,
            test_len: self.test.size()[0] as usize,
        }
    }

    fn seed(&self) -> u64 {
        0
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn embeddings(&self, split: Split) -> Result<Tensor> {
        Ok(self.split(split).flatten(1, -1))
    }

    fn labels(&self, split: Split) -> Result<Option<Tensor>> {
        let labels = match split {
            Split::Train => &self.train_labels,
            Split::Test => &self.test_labels,
        };
        Ok(labels.as_ref().map(|labels| Tensor::from_slice(labels)))
    }

    fn inputs(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        let data = self.split(split);
        let len = data.size()[0];
        if let Some(index) = indices.iter().find(|&&index| index < 0 || index >= len) {
            bail!("index {index} out of range for {len} samples");
        }
        let inputs = data.index_select(0, &Tensor::from_slice(indices)).to_kind(Kind::Float);
        Ok(Batch { inputs, labels: None })
    }

    fn encode(&self, inputs: &Tensor) -> Result<Tensor> {
        Ok(inputs.flatten(1, -1))
    }

    fn reconstruct(&self, inputs: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.decoder.as_ref().map(|decoder| decoder(inputs)))
    }

    fn sample(&self, _count: i64) -> Result<Option<Tensor>> {
        Ok(None)
    }
}
