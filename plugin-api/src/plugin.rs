//! The safe traits and types that plugin authors implement and use.
//!
//! Every method that can fail returns [`Result`]; a panic inside any of them is caught at the
//! boundary and reported by the host as an error that names the plugin and the method.

use tch::{Device, Tensor};

use crate::error::Result;
use crate::ffi::{InputKind, Split};
use crate::params::{Description, Params};

/// Description of a dataset's samples and splits.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInfo {
    /// Shape of one sample, such as `[64]` for vectors or `[1, 8, 8]` for images.
    pub sample_shape: Vec<i64>,
    pub input_kind: InputKind,
    /// Vocabulary size of a token dataset, 0 otherwise.
    pub vocab_size: i64,
    /// Number of classes; `None` for unlabelled data.
    pub num_classes: Option<i64>,
    pub class_names: Vec<String>,
    pub train_len: usize,
    pub test_len: usize,
}

impl DatasetInfo {
    /// Number of samples in a split.
    pub fn len(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_len,
            Split::Test => self.test_len,
        }
    }

    /// Number of values in one sample (the product of `sample_shape`).
    pub fn sample_numel(&self) -> i64 {
        self.sample_shape.iter().product()
    }
}

/// A batch of samples, with integer class labels (`Kind::Int64`) when the dataset has them.
#[derive(Debug)]
pub struct Batch {
    /// `[batch, ...sample_shape]`: float for features, `Kind::Int64` for tokens.
    pub inputs: Tensor,
    pub labels: Option<Tensor>,
}

/// Description of an encoder's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncoderInfo {
    pub output_dim: i64,
    /// Hidden layer widths, input side first, for objectives that mirror the encoder.
    pub hidden_sizes: Vec<i64>,
    /// True when `forward` also returns per-token outputs.
    pub has_token_output: bool,
    /// True when the encoder must be fitted on the train split before use.
    pub needs_fit: bool,
}

/// The output of an encoder.
#[derive(Debug)]
pub struct EncoderOutput {
    /// Pooled features, `[batch, output_dim]`.
    pub features: Tensor,
    /// Per-token features, `[batch, length, dim]`, for sequence encoders.
    pub tokens: Option<Tensor>,
}

/// A set of parameters updated together by one optimizer.
#[derive(Debug)]
pub struct ParamGroup {
    pub name: String,
    /// Trainable tensors owned by the objective, by name.
    pub params: Vec<(String, Tensor)>,
    /// True when the encoder's parameters belong to this group as well.
    pub includes_encoder: bool,
}

/// One backward pass and optimizer step within a training step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    /// Names of the parameter groups whose optimizers step after this phase's backward pass.
    pub groups: Vec<String>,
}

impl Phase {
    /// A phase that updates the given groups.
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            groups: groups.iter().map(|group| group.to_string()).collect(),
        }
    }
}

/// Training position: the optimizer step and the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInfo {
    /// Global optimizer step, starting at 0.
    pub step: u64,
    /// Epoch, starting at 0.
    pub epoch: u64,
}

/// A loss to minimise and scalars to log beside it (such as the parts of a composite loss).
#[derive(Debug)]
pub struct LossOutput {
    pub loss: Tensor,
    pub metrics: Vec<(String, f64)>,
}

impl LossOutput {
    /// A loss with no extra metrics.
    pub fn new(loss: Tensor) -> Self {
        Self { loss, metrics: Vec::new() }
    }
}

/// A file produced by an evaluator, stored in the run's artifact folder.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Relative path such as `latent.png`; the host rejects paths that leave the folder.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What an evaluator returns: metrics by name (the host prefixes the evaluator's name) and files.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    pub metrics: Vec<(String, f64)>,
    pub artifacts: Vec<Artifact>,
}

/// Construction context that the host passes to a plugin's constructor.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub device: Device,
    /// The experiment seed, for plugins that draw their own random numbers.
    pub seed: u64,
    /// The dataset's description; `None` when building the dataset.
    pub dataset: Option<DatasetInfo>,
    /// The encoder's description; set when building an objective or an evaluator.
    pub encoder: Option<EncoderInfo>,
}

/// A map-style dataset: a fixed number of samples per split, read by index.
///
/// The host decides the order (shuffling with its own seeded generator) and may call `batch`
/// from a background thread to prefetch, hence `Send + Sync`.
pub trait Dataset: Send + Sync + 'static {
    /// Describes the samples and the size of each split.
    fn info(&self) -> DatasetInfo;

    /// Reads the samples at `indices` of `split`, in that order.
    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch>;
}

/// Train-split data an encoder can fit on (see [`Encoder::fit`]).
pub trait FitData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn batch(&self, indices: &[i64]) -> Result<Batch>;
}

/// An encoder: maps a batch of inputs to representations.
pub trait Encoder: Send + 'static {
    /// Describes the output.
    fn info(&self) -> EncoderInfo;

    /// Trainable tensors by name; the host puts them in its optimizer and checkpoints.
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// Fits the encoder on the train split before training, for encoders that are not trained by
    /// gradient (such as PCA). Called only when [`EncoderInfo::needs_fit`] is true.
    fn fit(&mut self, data: &dyn FitData) -> Result<()> {
        let _ = data;
        Ok(())
    }

    /// Runs the encoder; `train` selects training behaviour such as dropout or batch statistics.
    fn forward(&self, inputs: &Tensor, train: bool) -> Result<EncoderOutput>;

    /// Non-trainable tensors by name (batch-norm running statistics, fitted projections) that the
    /// host saves in checkpoints and restores on resume, without optimizing them. Since 1.1.0.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Handle through which an objective calls the encoder. Calls go through the host to the encoder plugin, keeping
/// the autograd graph, so the objective's loss reaches the encoder's parameters.
pub trait EncoderHandle {
    fn output_dim(&self) -> i64;
    fn forward(&self, inputs: &Tensor, train: bool) -> Result<EncoderOutput>;
}

/// A training objective: owns any extra modules (decoder, projection head, generator) and turns a
/// batch into a loss.
pub trait Objective: Send + 'static {
    /// The parameter groups, each with its own optimizer. Exactly one group should set
    /// `includes_encoder`.
    fn parameter_groups(&self) -> Vec<ParamGroup>;

    /// The phases of one training step, run in order; the default is a single phase `main` that
    /// updates the group `main`.
    fn phases(&self) -> Vec<Phase> {
        vec![Phase::new("main", &["main"])]
    }

    /// Computes the loss of `phase` on a batch.
    fn loss(
        &mut self,
        step: StepInfo,
        phase: &str,
        batch: &Batch,
        encoder: &dyn EncoderHandle,
    ) -> Result<LossOutput>;

    /// Maps encoder features to the representation evaluators see (a VAE keeps the mean half).
    fn representation(&self, features: &Tensor) -> Result<Tensor> {
        Ok(features.shallow_clone())
    }

    /// Reconstructs inputs, for objectives that have a decoder.
    fn reconstruct(&self, inputs: &Tensor, encoder: &dyn EncoderHandle) -> Result<Option<Tensor>> {
        let _ = (inputs, encoder);
        Ok(None)
    }

    /// Draws `count` samples, for generative objectives.
    fn sample(&self, count: i64) -> Result<Option<Tensor>> {
        let _ = count;
        Ok(None)
    }
}

/// Everything an evaluator can ask about the trained model and the data.
pub trait EvalContext {
    fn dataset(&self) -> DatasetInfo;
    fn seed(&self) -> u64;
    fn device(&self) -> Device;
    /// Representations of every sample of a split, `[len, dim]`, computed without gradients.
    fn embeddings(&self, split: Split) -> Result<Tensor>;
    /// Labels of every sample of a split, `[len]`, when the dataset has them.
    fn labels(&self, split: Split) -> Result<Option<Tensor>>;
    /// Raw samples of a split.
    fn inputs(&self, split: Split, indices: &[i64]) -> Result<Batch>;
    /// Representations of arbitrary inputs.
    fn encode(&self, inputs: &Tensor) -> Result<Tensor>;
    /// Reconstructions, when the objective has a decoder.
    fn reconstruct(&self, inputs: &Tensor) -> Result<Option<Tensor>>;
    /// Samples, when the objective is generative.
    fn sample(&self, count: i64) -> Result<Option<Tensor>>;
}

/// An evaluator: scores the trained representation.
pub trait Evaluator: Send + 'static {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport>;
}

/// A dataset plugin: its description and constructor.
pub trait DatasetPlugin: Dataset + Sized {
    fn describe() -> Description;
    fn create(params: &Params, context: &BuildContext) -> Result<Self>;
}

/// An encoder plugin: its description and constructor.
pub trait EncoderPlugin: Encoder + Sized {
    fn describe() -> Description;
    fn create(params: &Params, context: &BuildContext) -> Result<Self>;
}

/// An objective plugin: its description and constructor.
pub trait ObjectivePlugin: Objective + Sized {
    fn describe() -> Description;
    fn create(params: &Params, context: &BuildContext) -> Result<Self>;
}

/// An evaluator plugin: its description and constructor.
pub trait EvaluatorPlugin: Evaluator + Sized {
    fn describe() -> Description;
    fn create(params: &Params, context: &BuildContext) -> Result<Self>;
}
