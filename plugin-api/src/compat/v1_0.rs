//! The boundary types exactly as plugin-api 1.0.0 declared them, kept only for their layout.
//!
//! abi_stable's layout check accepts a library only when its prefix types (vtables and modules)
//! have at least the host's fields. A library built against an older minor version lacks the
//! methods added since, so it fails the check against the current types. The registry checks such a
//! library against these frozen layouts instead. Nothing here is called: the host goes on using the
//! current types, whose accessors find the added methods missing and run their default bodies.
//! Never edit this file; add a new module for the next minor version instead.
#![allow(dead_code, missing_docs)]
// `sabi_trait` expands to impls inside generated constants, which this lint flags.
#![allow(non_local_definitions)]
// The boundary mirrors `FitData::len`; `is_empty` is provided on the safe side only.
#![allow(clippy::len_without_is_empty)]

use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec};
use abi_stable::{StableAbi, sabi_trait};

use crate::tensor::RawTensor;

/// The result type of every call that crosses the boundary.
pub type FfiResult<T> = RResult<T, FfiError>;

/// An error returned by a plugin, or by the host to a plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiError {
    pub message: RString,
    /// True when the error is a caught panic rather than a returned error.
    pub panicked: bool,
}

/// The four kinds of plugin.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    Dataset,
    Encoder,
    Objective,
    Evaluator,
}

impl PluginKind {
    /// All kinds, in the order a spec lists them.
    pub const ALL: [PluginKind; 4] =
        [PluginKind::Dataset, PluginKind::Encoder, PluginKind::Objective, PluginKind::Evaluator];

    /// The lowercase name used in specs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Dataset => "dataset",
            PluginKind::Encoder => "encoder",
            PluginKind::Objective => "objective",
            PluginKind::Evaluator => "evaluator",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a plugin parameter.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Bool,
    Int,
    Float,
    Str,
    IntList,
    FloatList,
    StrList,
}

impl ParamType {
    /// The name used in schemas and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Bool => "bool",
            ParamType::Int => "integer",
            ParamType::Float => "float",
            ParamType::Str => "string",
            ParamType::IntList => "list of integers",
            ParamType::FloatList => "list of floats",
            ParamType::StrList => "list of strings",
        }
    }
}

/// A parameter value as it crosses the boundary.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(RString),
    IntList(RVec<i64>),
    FloatList(RVec<f64>),
    StrList(RVec<RString>),
}

/// One entry of a plugin's parameter schema.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ParamSpec {
    pub name: RString,
    pub ty: ParamType,
    /// `RNone` marks a required parameter.
    pub default: ROption<ParamValue>,
    pub doc: RString,
    /// Allowed values of a string parameter; empty means any string.
    pub choices: RVec<RString>,
    /// Inclusive bounds of a numeric parameter (and of each element of a numeric list).
    pub min: ROption<f64>,
    pub max: ROption<f64>,
}

/// A plugin's name, kind, version, description and parameter schema.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginInfo {
    pub name: RString,
    pub kind: PluginKind,
    pub version: RString,
    pub description: RString,
    pub params: RVec<ParamSpec>,
}

/// A named parameter value given to a plugin's constructor.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct NamedValue {
    pub name: RString,
    pub value: ParamValue,
}

/// A named tensor, such as a trainable parameter.
#[repr(C)]
#[derive(StableAbi)]
pub struct NamedTensor {
    pub name: RString,
    pub tensor: RawTensor,
}

/// A named scalar, such as a metric.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct NamedScalar {
    pub name: RString,
    pub value: f64,
}

/// A data split.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// The lowercase name used in specs and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// A device: `index < 0` is the CPU, otherwise the CUDA device with that index.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfiDevice {
    pub index: i64,
}

/// Encoding of a dataset's samples.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Float feature vectors, or images, of shape `sample_shape`.
    Features,
    /// Integer token sequences (`Kind::Int64`) of shape `[length]`.
    Tokens,
}

/// Description of a dataset's samples and splits.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiDatasetInfo {
    pub sample_shape: RVec<i64>,
    pub input_kind: InputKind,
    /// Vocabulary size of a token dataset, 0 otherwise.
    pub vocab_size: i64,
    /// Number of classes of a labelled dataset, 0 when unlabelled.
    pub num_classes: i64,
    pub class_names: RVec<RString>,
    pub train_len: u64,
    pub test_len: u64,
}

/// A batch of samples with optional integer labels.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiBatch {
    pub inputs: RawTensor,
    pub labels: ROption<RawTensor>,
}

/// Description of an encoder's output.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiEncoderInfo {
    pub output_dim: i64,
    /// Hidden layer widths, input side first, for objectives that mirror the encoder.
    pub hidden_sizes: RVec<i64>,
    /// True when `forward` also returns per-token outputs.
    pub has_token_output: bool,
    /// True when the encoder must be fitted on the train split before use (such as PCA).
    pub needs_fit: bool,
}

/// The output of an encoder's forward pass.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiEncoderOutput {
    /// Pooled features, `[batch, output_dim]`.
    pub features: RawTensor,
    /// Per-token features, `[batch, length, dim]`, for sequence encoders.
    pub tokens: ROption<RawTensor>,
}

/// A set of parameters updated by one optimizer.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiParamGroup {
    pub name: RString,
    pub params: RVec<NamedTensor>,
    /// True when the encoder's parameters belong to this group.
    pub includes_encoder: bool,
}

/// One backward pass and optimizer step of a training step, updating the named groups.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiPhase {
    pub name: RString,
    pub groups: RVec<RString>,
}

/// Training position (step and epoch) passed to an objective's loss.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiStepInfo {
    pub step: u64,
    pub epoch: u64,
}

/// A loss to minimise plus scalars to log beside it.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiLossOutput {
    pub loss: RawTensor,
    pub metrics: RVec<NamedScalar>,
}

/// A file an evaluator produced, such as a plot.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiArtifact {
    /// Relative path inside the run directory's artifact folder.
    pub path: RString,
    pub bytes: RVec<u8>,
}

/// What an evaluator returns.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiEvalReport {
    pub metrics: RVec<NamedScalar>,
    pub artifacts: RVec<FfiArtifact>,
}

/// Construction context that the host gives a plugin's factory.
#[sabi_trait]
pub trait FfiBuildContext {
    fn device(&self) -> FfiDevice;
    fn seed(&self) -> u64;
    /// The dataset's description; `RNone` when building the dataset itself.
    fn dataset(&self) -> ROption<FfiDatasetInfo>;
    /// The encoder's description; `RSome` only when building an objective or evaluator.
    #[sabi(last_prefix_field)]
    fn encoder(&self) -> ROption<FfiEncoderInfo>;
}

/// A map-style dataset.
#[sabi_trait]
pub trait FfiDataset: Send + Sync {
    fn info(&self) -> FfiResult<FfiDatasetInfo>;
    #[sabi(last_prefix_field)]
    fn batch(&self, split: Split, indices: RSlice<'_, i64>) -> FfiResult<FfiBatch>;
}

/// Train-split data that the host lends an encoder to fit on.
#[sabi_trait]
pub trait FfiFitData {
    fn len(&self) -> u64;
    #[sabi(last_prefix_field)]
    fn batch(&self, indices: RSlice<'_, i64>) -> FfiResult<FfiBatch>;
}

/// An encoder.
#[sabi_trait]
pub trait FfiEncoder: Send {
    fn info(&self) -> FfiResult<FfiEncoderInfo>;
    fn parameters(&self) -> FfiResult<RVec<NamedTensor>>;
    fn fit(
        &mut self,
        data: FfiFitData_TO<'_, abi_stable::sabi_types::RRef<'_, ()>>,
    ) -> FfiResult<()>;
    #[sabi(last_prefix_field)]
    fn forward(&self, inputs: RawTensor, train: bool) -> FfiResult<FfiEncoderOutput>;
}

/// Handle through which an objective calls the encoder. The host routes these calls to the encoder
/// plugin.
#[sabi_trait]
pub trait FfiEncoderHandle {
    fn output_dim(&self) -> i64;
    #[sabi(last_prefix_field)]
    fn forward(&self, inputs: RawTensor, train: bool) -> FfiResult<FfiEncoderOutput>;
}

/// A training objective.
#[sabi_trait]
pub trait FfiObjective: Send {
    fn parameter_groups(&self) -> FfiResult<RVec<FfiParamGroup>>;
    fn phases(&self) -> FfiResult<RVec<FfiPhase>>;
    fn loss(
        &mut self,
        step: FfiStepInfo,
        phase: RStr<'_>,
        batch: FfiBatch,
        encoder: FfiEncoderHandle_TO<'_, abi_stable::sabi_types::RRef<'_, ()>>,
    ) -> FfiResult<FfiLossOutput>;
    fn representation(&self, features: RawTensor) -> FfiResult<RawTensor>;
    fn reconstruct(
        &self,
        inputs: RawTensor,
        encoder: FfiEncoderHandle_TO<'_, abi_stable::sabi_types::RRef<'_, ()>>,
    ) -> FfiResult<ROption<RawTensor>>;
    #[sabi(last_prefix_field)]
    fn sample(&self, count: i64) -> FfiResult<ROption<RawTensor>>;
}

/// Everything an evaluator may ask of the trained model and the data; implemented by the host.
#[sabi_trait]
pub trait FfiEvalContext {
    fn dataset(&self) -> FfiDatasetInfo;
    fn seed(&self) -> u64;
    fn device(&self) -> FfiDevice;
    fn embeddings(&self, split: Split) -> FfiResult<RawTensor>;
    fn labels(&self, split: Split) -> FfiResult<ROption<RawTensor>>;
    fn inputs(&self, split: Split, indices: RSlice<'_, i64>) -> FfiResult<FfiBatch>;
    fn encode(&self, inputs: RawTensor) -> FfiResult<RawTensor>;
    fn reconstruct(&self, inputs: RawTensor) -> FfiResult<ROption<RawTensor>>;
    #[sabi(last_prefix_field)]
    fn sample(&self, count: i64) -> FfiResult<ROption<RawTensor>>;
}

/// An evaluator.
#[sabi_trait]
pub trait FfiEvaluator: Send {
    #[sabi(last_prefix_field)]
    fn evaluate(
        &mut self,
        context: FfiEvalContext_TO<'_, abi_stable::sabi_types::RRef<'_, ()>>,
    ) -> FfiResult<FfiEvalReport>;
}

/// A constructed plugin object of one of the four kinds.
#[repr(u8)]
#[derive(StableAbi)]
pub enum FfiInstance {
    Dataset(FfiDataset_TO<'static, RBox<()>>),
    Encoder(FfiEncoder_TO<'static, RBox<()>>),
    Objective(FfiObjective_TO<'static, RBox<()>>),
    Evaluator(FfiEvaluator_TO<'static, RBox<()>>),
}

/// Builds a plugin object from validated parameters.
pub type FfiFactory = extern "C" fn(
    params: RVec<NamedValue>,
    context: FfiBuildContext_TO<'static, RBox<()>>,
) -> FfiResult<FfiInstance>;

/// One plugin exported by a library.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiPluginEntry {
    pub info: PluginInfo,
    /// Builds a plugin object from validated parameters; see [`FfiFactory`].
    pub factory: extern "C" fn(
        params: RVec<NamedValue>,
        context: FfiBuildContext_TO<'static, RBox<()>>,
    ) -> FfiResult<FfiInstance>,
}

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibraryRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLibrary {
    /// The `pretext-plugin-api` version the library was compiled against.
    pub api_version: RStr<'static>,
    /// The libtorch version the library was compiled against, such as `2.11.0+cu130`.
    pub libtorch_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub plugins: extern "C" fn() -> FfiResult<RVec<FfiPluginEntry>>,
}
