//! Constructed plugin objects, and the one place where the host calls into a plugin.
//!
//! Every call goes through [`cross`]: the plugin side has already caught any panic, so here the
//! boundary result becomes a [`PluginCallError`] that names the plugin, its kind and the method,
//! and is logged once.

use std::cell::RefCell;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::RRef;
use abi_stable::std_types::{RBox, RVec};
use pretext_plugin_api::convert::{option_from_ffi, share_batch, take_named};
use pretext_plugin_api::ffi::{
    FfiBuildContext_TO, FfiDataset_TO, FfiDatasetInfo, FfiEncoder_TO, FfiEncoderHandle_TO,
    FfiEncoderInfo, FfiEvalContext_TO, FfiEvaluator_TO, FfiFitData_TO, FfiInstance,
    FfiObjective_TO, FfiResult, NOT_IMPLEMENTED, NamedValue, PluginKind, Split,
};
use pretext_plugin_api::tensor::RawTensor;
use pretext_plugin_api::{
    Batch, DatasetInfo, EncoderInfo, EncoderOutput, EvalReport, LossOutput, ParamGroup, ParamValue,
    Phase, StepInfo,
};
use tch::{Device, Tensor};

use super::bridge::{EncoderBridge, EvalBridge, EvalSource, FitBridge, HostBuildContext};
use super::registry::LoadedPlugin;

/// A plugin's name and kind, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginId {
    pub name: String,
    pub kind: PluginKind,
}

impl std::fmt::Display for PluginId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind, self.name)
    }
}

/// A failed call into a plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{plugin} {} in `{method}`: {message}", if *.panicked { "panicked" } else { "failed" })]
pub struct PluginCallError {
    pub plugin: PluginId,
    pub method: &'static str,
    pub message: String,
    pub panicked: bool,
}

/// Calls into a plugin and converts its result. This is the host's only crossing into plugin code.
fn cross<T>(
    plugin: &PluginId,
    method: &'static str,
    call: impl FnOnce() -> FfiResult<T>,
) -> Result<T, PluginCallError> {
    call().into_result().map_err(|error| {
        let error = PluginCallError {
            plugin: plugin.clone(),
            method,
            message: error.message.into_string(),
            panicked: error.panicked,
        };
        tracing::error!(plugin = %error.plugin.name, kind = %error.plugin.kind, method, "{error}");
        error
    })
}

/// What the host tells a plugin's constructor.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    pub device: Device,
    pub seed: u64,
    pub dataset: Option<DatasetInfo>,
    pub encoder: Option<EncoderInfo>,
}

/// Builds a plugin object from validated parameters.
fn build(
    plugin: &LoadedPlugin,
    params: &[(String, ParamValue)],
    inputs: &BuildInputs,
) -> Result<FfiInstance, PluginCallError> {
    let id = PluginId { name: plugin.name.clone(), kind: plugin.kind };
    let params: RVec<NamedValue> = params
        .iter()
        .map(|(name, value)| NamedValue { name: name.as_str().into(), value: value.clone() })
        .collect();
    let context = HostBuildContext {
        device: inputs.device.into(),
        seed: inputs.seed,
        dataset: inputs.dataset.clone().map(FfiDatasetInfo::from),
        encoder: inputs.encoder.clone().map(FfiEncoderInfo::from),
    };
    let context = FfiBuildContext_TO::from_value(context, TD_Opaque);
    cross(&id, "create", || (plugin.factory)(params, context))
}

fn wrong_kind(plugin: &LoadedPlugin) -> PluginCallError {
    PluginCallError {
        plugin: PluginId { name: plugin.name.clone(), kind: plugin.kind },
        method: "create",
        message: format!("the factory of this {} returned an object of another kind", plugin.kind),
        panicked: false,
    }
}

/// A dataset plugin object. It is `Send + Sync`, so a prefetch thread may read from it.
pub struct DatasetInstance {
    pub id: PluginId,
    inner: FfiDataset_TO<'static, RBox<()>>,
}

impl DatasetInstance {
    /// Builds the dataset.
    pub fn create(
        plugin: &LoadedPlugin,
        params: &[(String, ParamValue)],
        inputs: &BuildInputs,
    ) -> Result<Self, PluginCallError> {
        match build(plugin, params, inputs)? {
            FfiInstance::Dataset(inner) => Ok(Self { id: plugin_id(plugin), inner }),
            _ => Err(wrong_kind(plugin)),
        }
    }

    pub fn info(&self) -> Result<DatasetInfo, PluginCallError> {
        cross(&self.id, "info", || self.inner.info()).map(DatasetInfo::from)
    }

    pub fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch, PluginCallError> {
        cross(&self.id, "batch", || self.inner.batch(split, indices.into())).map(Batch::from)
    }
}

/// An encoder plugin object.
pub struct EncoderInstance {
    pub id: PluginId,
    /// The plugin-api version its library was built against, for messages about newer methods.
    api_version: String,
    inner: FfiEncoder_TO<'static, RBox<()>>,
}

impl EncoderInstance {
    /// Builds the encoder.
    pub fn create(
        plugin: &LoadedPlugin,
        params: &[(String, ParamValue)],
        inputs: &BuildInputs,
    ) -> Result<Self, PluginCallError> {
        match build(plugin, params, inputs)? {
            FfiInstance::Encoder(inner) => Ok(Self {
                id: plugin_id(plugin),
                api_version: plugin.library.api_version.clone(),
                inner,
            }),
            _ => Err(wrong_kind(plugin)),
        }
    }

    pub fn info(&self) -> Result<EncoderInfo, PluginCallError> {
        cross(&self.id, "info", || self.inner.info()).map(EncoderInfo::from)
    }

    pub fn parameters(&self) -> Result<Vec<(String, Tensor)>, PluginCallError> {
        cross(&self.id, "parameters", || self.inner.parameters()).map(take_named)
    }

    /// Non-trainable tensors to checkpoint. A library built before the method existed returns an
    /// error that names the plugin-api version it was built against.
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>, PluginCallError> {
        let result = self.inner.buffers().into_result();
        match result {
            Err(error) if error.message.starts_with(NOT_IMPLEMENTED) => Err(PluginCallError {
                plugin: self.id.clone(),
                method: "buffers",
                message: format!(
                    "not implemented: the plugin's library was built against plugin-api {}, and \
                     `buffers` was added in 1.1.0",
                    self.api_version
                ),
                panicked: false,
            }),
            other => cross(&self.id, "buffers", || other.into()).map(take_named),
        }
    }

    /// Whether an error from [`EncoderInstance::buffers`] means only that the method is missing.
    pub fn is_not_implemented(error: &PluginCallError) -> bool {
        error.message.starts_with("not implemented: ")
    }

    /// Fits the encoder on the train split of `dataset`.
    pub fn fit(&mut self, dataset: &DatasetInstance) -> Result<(), PluginCallError> {
        let bridge = FitBridge::new(dataset);
        let data = FfiFitData_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let result = cross(&self.id, "fit", || self.inner.fit(data));
        bridge.prefer_inner_error(result)
    }

    pub fn forward(&self, inputs: &Tensor, train: bool) -> Result<EncoderOutput, PluginCallError> {
        cross(&self.id, "forward", || self.inner.forward(RawTensor::share(inputs), train))
            .map(EncoderOutput::from)
    }
}

/// An objective plugin object.
pub struct ObjectiveInstance {
    pub id: PluginId,
    inner: FfiObjective_TO<'static, RBox<()>>,
}

impl ObjectiveInstance {
    /// Builds the objective.
    pub fn create(
        plugin: &LoadedPlugin,
        params: &[(String, ParamValue)],
        inputs: &BuildInputs,
    ) -> Result<Self, PluginCallError> {
        match build(plugin, params, inputs)? {
            FfiInstance::Objective(inner) => Ok(Self { id: plugin_id(plugin), inner }),
            _ => Err(wrong_kind(plugin)),
        }
    }

    pub fn parameter_groups(&self) -> Result<Vec<ParamGroup>, PluginCallError> {
        cross(&self.id, "parameter_groups", || self.inner.parameter_groups())
            .map(|groups| groups.into_iter().map(ParamGroup::from).collect())
    }

    pub fn phases(&self) -> Result<Vec<Phase>, PluginCallError> {
        cross(&self.id, "phases", || self.inner.phases())
            .map(|phases| phases.into_iter().map(Phase::from).collect())
    }

    /// Computes the loss of one phase; an encoder failure inside it is reported as the encoder's.
    pub fn loss(
        &mut self,
        step: StepInfo,
        phase: &str,
        batch: &Batch,
        encoder: &EncoderInstance,
    ) -> Result<LossOutput, PluginCallError> {
        let bridge = EncoderBridge::new(encoder);
        let handle = FfiEncoderHandle_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let result = cross(&self.id, "loss", || {
            self.inner.loss(step.into(), phase.into(), share_batch(batch), handle)
        });
        bridge.prefer_inner_error(result.map(LossOutput::from))
    }

    pub fn representation(&self, features: &Tensor) -> Result<Tensor, PluginCallError> {
        cross(&self.id, "representation", || self.inner.representation(RawTensor::share(features)))
            .map(RawTensor::into_tensor)
    }

    pub fn reconstruct(
        &self,
        inputs: &Tensor,
        encoder: &EncoderInstance,
    ) -> Result<Option<Tensor>, PluginCallError> {
        let bridge = EncoderBridge::new(encoder);
        let handle = FfiEncoderHandle_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let result = cross(&self.id, "reconstruct", || {
            self.inner.reconstruct(RawTensor::share(inputs), handle)
        });
        bridge.prefer_inner_error(result.map(option_from_ffi))
    }

    pub fn sample(&self, count: i64) -> Result<Option<Tensor>, PluginCallError> {
        cross(&self.id, "sample", || self.inner.sample(count)).map(option_from_ffi)
    }
}

/// An evaluator plugin object.
pub struct EvaluatorInstance {
    pub id: PluginId,
    inner: FfiEvaluator_TO<'static, RBox<()>>,
}

impl EvaluatorInstance {
    /// Builds the evaluator.
    pub fn create(
        plugin: &LoadedPlugin,
        params: &[(String, ParamValue)],
        inputs: &BuildInputs,
    ) -> Result<Self, PluginCallError> {
        match build(plugin, params, inputs)? {
            FfiInstance::Evaluator(inner) => Ok(Self { id: plugin_id(plugin), inner }),
            _ => Err(wrong_kind(plugin)),
        }
    }

    /// Runs the evaluator against `source`.
    pub fn evaluate(&mut self, source: &dyn EvalSource) -> Result<EvalReport, PluginCallError> {
        let bridge = EvalBridge::new(source);
        let context = FfiEvalContext_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let result = cross(&self.id, "evaluate", || self.inner.evaluate(context));
        bridge.prefer_inner_error(result.map(EvalReport::from))
    }
}

fn plugin_id(plugin: &LoadedPlugin) -> PluginId {
    PluginId { name: plugin.name.clone(), kind: plugin.kind }
}

/// Remembers the first error a host callback returned to a plugin, so that the host can report
/// the root cause (the encoder's panic) rather than the caller's wrapped message.
#[derive(Default)]
pub(crate) struct InnerError(RefCell<Option<PluginCallError>>);

impl InnerError {
    pub(crate) fn record(&self, error: &PluginCallError) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(error.clone());
        }
    }

    pub(crate) fn prefer<T>(
        &self,
        result: Result<T, PluginCallError>,
    ) -> Result<T, PluginCallError> {
        match (result, self.0.borrow_mut().take()) {
            (Err(_), Some(inner)) => Err(inner),
            (result, _) => result,
        }
    }
}
