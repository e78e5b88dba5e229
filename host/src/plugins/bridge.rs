//! Host-side implementations of the boundary traits that plugins call back into.
//!
//! A plugin reaches the encoder, the data or the trained model only through these bridges. Each
//! callback catches panics in host code, because unwinding must not cross the `extern "C"` frames
//! of the plugin that called it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::std_types::{ROption, RResult, RSlice, RString};
use pretext_plugin_api::convert::{option_to_ffi, share_batch};
use pretext_plugin_api::ffi::{
    FfiBatch, FfiBuildContext, FfiDatasetInfo, FfiDevice, FfiEncoderHandle, FfiEncoderInfo,
    FfiEncoderOutput, FfiError, FfiEvalContext, FfiFitData, FfiResult, Split,
};
use pretext_plugin_api::tensor::RawTensor;
use pretext_plugin_api::{Batch, DatasetInfo};
use tch::Tensor;

use super::instance::{DatasetInstance, EncoderInstance, InnerError, PluginCallError};

fn host_error(message: String) -> FfiError {
    FfiError { message: RString::from(message), panicked: false }
}

/// Runs host code on behalf of a plugin, recording plugin failures for [`InnerError::prefer`].
fn callback<T>(
    inner: &InnerError,
    body: impl FnOnce() -> Result<T, CallbackError>,
) -> FfiResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(CallbackError::Plugin(error))) => {
            inner.record(&error);
            RResult::RErr(host_error(error.to_string()))
        }
        Ok(Err(CallbackError::Host(message))) => RResult::RErr(host_error(message)),
        Err(_) => RResult::RErr(host_error("internal error in the pretext host".to_owned())),
    }
}

/// An error inside a callback: from another plugin, or from the host itself.
pub enum CallbackError {
    Plugin(PluginCallError),
    Host(String),
}

impl From<PluginCallError> for CallbackError {
    fn from(error: PluginCallError) -> Self {
        CallbackError::Plugin(error)
    }
}

/// The construction context handed to a plugin's factory.
pub struct HostBuildContext {
    pub device: FfiDevice,
    pub seed: u64,
    pub dataset: Option<FfiDatasetInfo>,
    pub encoder: Option<FfiEncoderInfo>,
}

impl FfiBuildContext for HostBuildContext {
    fn device(&self) -> FfiDevice {
        self.device
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn dataset(&self) -> ROption<FfiDatasetInfo> {
        self.dataset.clone().into()
    }

    fn encoder(&self) -> ROption<FfiEncoderInfo> {
        self.encoder.clone().into()
    }
}

/// The encoder as an objective calls it.
pub struct EncoderBridge<'a> {
    encoder: &'a EncoderInstance,
    output_dim: i64,
    inner: InnerError,
}

impl<'a> EncoderBridge<'a> {
    pub fn new(encoder: &'a EncoderInstance) -> Self {
        let output_dim = encoder.info().map(|info| info.output_dim).unwrap_or(0);
        Self { encoder, output_dim, inner: InnerError::default() }
    }

    pub fn prefer_inner_error<T>(
        &self,
        result: Result<T, PluginCallError>,
    ) -> Result<T, PluginCallError> {
        self.inner.prefer(result)
    }
}

impl FfiEncoderHandle for EncoderBridge<'_> {
    fn output_dim(&self) -> i64 {
        self.output_dim
    }

    fn forward(&self, inputs: RawTensor, train: bool) -> FfiResult<FfiEncoderOutput> {
        callback(&self.inner, || {
            let output = self.encoder.forward(&inputs.into_tensor(), train)?;
            Ok(FfiEncoderOutput::from(output))
        })
    }
}

/// The train split as an encoder's `fit` reads it.
pub struct FitBridge<'a> {
    dataset: &'a DatasetInstance,
    len: u64,
    inner: InnerError,
}

impl<'a> FitBridge<'a> {
    pub fn new(dataset: &'a DatasetInstance) -> Self {
        let len = dataset.info().map(|info| info.train_len as u64).unwrap_or(0);
        Self { dataset, len, inner: InnerError::default() }
    }

    pub fn prefer_inner_error<T>(
        &self,
        result: Result<T, PluginCallError>,
    ) -> Result<T, PluginCallError> {
        self.inner.prefer(result)
    }
}

impl FfiFitData for FitBridge<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn batch(&self, indices: RSlice<'_, i64>) -> FfiResult<FfiBatch> {
        callback(&self.inner, || {
            let batch = self.dataset.batch(Split::Train, indices.as_slice())?;
            Ok(FfiBatch::from(batch))
        })
    }
}

/// What the host provides to evaluators: the data and the trained model.
pub trait EvalSource {
    fn dataset_info(&self) -> DatasetInfo;
    fn seed(&self) -> u64;
    fn device(&self) -> tch::Device;
    fn embeddings(&self, split: Split) -> Result<Tensor, CallbackError>;
    fn labels(&self, split: Split) -> Result<Option<Tensor>, CallbackError>;
    fn inputs(&self, split: Split, indices: &[i64]) -> Result<Batch, CallbackError>;
    fn encode(&self, inputs: &Tensor) -> Result<Tensor, CallbackError>;
    fn reconstruct(&self, inputs: &Tensor) -> Result<Option<Tensor>, CallbackError>;
    fn sample(&self, count: i64) -> Result<Option<Tensor>, CallbackError>;
}

/// An [`EvalSource`] as an evaluator plugin calls it.
pub struct EvalBridge<'a> {
    source: &'a dyn EvalSource,
    inner: InnerError,
}

impl<'a> EvalBridge<'a> {
    pub fn new(source: &'a dyn EvalSource) -> Self {
        Self { source, inner: InnerError::default() }
    }

    pub fn prefer_inner_error<T>(
        &self,
        result: Result<T, PluginCallError>,
    ) -> Result<T, PluginCallError> {
        self.inner.prefer(result)
    }
}

impl FfiEvalContext for EvalBridge<'_> {
    fn dataset(&self) -> FfiDatasetInfo {
        self.source.dataset_info().into()
    }

    fn seed(&self) -> u64 {
        self.source.seed()
    }

    fn device(&self) -> FfiDevice {
        self.source.device().into()
    }

    fn embeddings(&self, split: Split) -> FfiResult<RawTensor> {
        callback(&self.inner, || self.source.embeddings(split).map(RawTensor::new))
    }

    fn labels(&self, split: Split) -> FfiResult<ROption<RawTensor>> {
        callback(&self.inner, || self.source.labels(split).map(option_to_ffi))
    }

    fn inputs(&self, split: Split, indices: RSlice<'_, i64>) -> FfiResult<FfiBatch> {
        callback(&self.inner, || {
            self.source.inputs(split, indices.as_slice()).map(|batch| share_batch(&batch))
        })
    }

    fn encode(&self, inputs: RawTensor) -> FfiResult<RawTensor> {
        callback(&self.inner, || self.source.encode(&inputs.into_tensor()).map(RawTensor::new))
    }

    fn reconstruct(&self, inputs: RawTensor) -> FfiResult<ROption<RawTensor>> {
        callback(&self.inner, || self.source.reconstruct(&inputs.into_tensor()).map(option_to_ffi))
    }

    fn sample(&self, count: i64) -> FfiResult<ROption<RawTensor>> {
        callback(&self.inner, || self.source.sample(count).map(option_to_ffi))
    }
}
