//! Plugin-side glue: wraps the safe traits in the boundary traits, catching every panic.
//!
//! [`crate::export_plugins!`] expands to calls into this module; plugin authors never call it.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::RRef;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RVec};
use tch::Tensor;

use crate::convert::{option_from_ffi, option_to_ffi, share_batch, share_named};
use crate::error::{Error, Result};
use crate::ffi::{
    FfiBatch, FfiBuildContext_TO, FfiDataset, FfiDataset_TO, FfiDatasetInfo, FfiEncoder,
    FfiEncoder_TO, FfiEncoderHandle_TO, FfiEncoderInfo, FfiEncoderOutput, FfiEvalContext_TO,
    FfiEvalReport, FfiEvaluator, FfiEvaluator_TO, FfiFitData_TO, FfiInstance, FfiLossOutput,
    FfiObjective, FfiObjective_TO, FfiParamGroup, FfiPhase, FfiPluginEntry, FfiResult, FfiStepInfo,
    NamedTensor, NamedValue, PluginKind, PluginLibrary, PluginLibraryRef, Split,
};
use crate::params::Params;
use crate::plugin::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Encoder, EncoderHandle,
    EncoderOutput, EncoderPlugin, EvalContext, Evaluator, EvaluatorPlugin, FitData, Objective,
    ObjectivePlugin,
};
use crate::tensor::RawTensor;

thread_local! {
    /// Message and location of the last panic on this thread, recorded by the library's hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL_HOOK: Once = Once::new();

/// Replaces this library's panic hook with one that records the message for [`guard`] instead
/// of printing it, so the host reports the panic once, with the plugin and method named.
///
/// Each plugin library links its own copy of `std`, so this hook covers only this library.
fn install_panic_hook() {
    INSTALL_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = panic_message(info.payload());
            let text = match info.location() {
                Some(location) => format!("{message} (at {}:{})", location.file(), location.line()),
                None => message,
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs plugin code, turning both a returned error and a panic into an [`FfiResult`].
///
/// Unwinding must never cross an `extern "C"` boundary, so every method of every adapter below
/// goes through here.
pub fn guard<T>(body: impl FnOnce() -> Result<T>) -> FfiResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(error.into()),
        Err(payload) => {
            let message = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .unwrap_or_else(|| panic_message(payload.as_ref()));
            RResult::RErr(Error::panic(message).into())
        }
    }
}

fn from_ffi<T>(result: FfiResult<T>) -> Result<T> {
    result.into_result().map_err(Error::from)
}

struct DatasetAdapter<T>(T);

impl<T: Dataset> FfiDataset for DatasetAdapter<T> {
    fn info(&self) -> FfiResult<FfiDatasetInfo> {
        guard(|| Ok(self.0.info().into()))
    }

    fn batch(&self, split: Split, indices: RSlice<'_, i64>) -> FfiResult<FfiBatch> {
        guard(|| self.0.batch(split, indices.as_slice()).map(FfiBatch::from))
    }
}

struct FitDataShim<'a, 'b>(FfiFitData_TO<'a, RRef<'b, ()>>);

impl FitData for FitDataShim<'_, '_> {
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    fn batch(&self, indices: &[i64]) -> Result<Batch> {
        from_ffi(self.0.batch(indices.into())).map(Batch::from)
    }
}

struct EncoderAdapter<T>(T);

impl<T: Encoder> FfiEncoder for EncoderAdapter<T> {
    fn info(&self) -> FfiResult<FfiEncoderInfo> {
        guard(|| Ok(self.0.info().into()))
    }

    fn parameters(&self) -> FfiResult<RVec<NamedTensor>> {
        guard(|| Ok(share_named(&self.0.parameters())))
    }

    fn fit(&mut self, data: FfiFitData_TO<'_, RRef<'_, ()>>) -> FfiResult<()> {
        guard(|| self.0.fit(&FitDataShim(data)))
    }

    fn forward(&self, inputs: RawTensor, train: bool) -> FfiResult<FfiEncoderOutput> {
        guard(|| self.0.forward(&inputs.into_tensor(), train).map(FfiEncoderOutput::from))
    }

    fn buffers(&self) -> FfiResult<RVec<NamedTensor>> {
        guard(|| Ok(share_named(&self.0.buffers())))
    }
}

struct EncoderHandleShim<'a, 'b>(FfiEncoderHandle_TO<'a, RRef<'b, ()>>);

impl EncoderHandle for EncoderHandleShim<'_, '_> {
    fn output_dim(&self) -> i64 {
        self.0.output_dim()
    }

    fn forward(&self, inputs: &Tensor, train: bool) -> Result<EncoderOutput> {
        from_ffi(self.0.forward(RawTensor::share(inputs), train)).map(EncoderOutput::from)
    }
}

struct ObjectiveAdapter<T>(T);

impl<T: Objective> FfiObjective for ObjectiveAdapter<T> {
    fn parameter_groups(&self) -> FfiResult<RVec<FfiParamGroup>> {
        guard(|| Ok(self.0.parameter_groups().into_iter().map(FfiParamGroup::from).collect()))
    }

    fn phases(&self) -> FfiResult<RVec<FfiPhase>> {
        guard(|| Ok(self.0.phases().into_iter().map(FfiPhase::from).collect()))
    }

    fn loss(
        &mut self,
        step: FfiStepInfo,
        phase: RStr<'_>,
        batch: FfiBatch,
        encoder: FfiEncoderHandle_TO<'_, RRef<'_, ()>>,
    ) -> FfiResult<FfiLossOutput> {
        guard(|| {
            let batch = Batch::from(batch);
            let encoder = EncoderHandleShim(encoder);
            self.0.loss(step.into(), phase.as_str(), &batch, &encoder).map(FfiLossOutput::from)
        })
    }

    fn representation(&self, features: RawTensor) -> FfiResult<RawTensor> {
        guard(|| self.0.representation(&features.into_tensor()).map(RawTensor::new))
    }

    fn reconstruct(
        &self,
        inputs: RawTensor,
        encoder: FfiEncoderHandle_TO<'_, RRef<'_, ()>>,
    ) -> FfiResult<ROption<RawTensor>> {
        guard(|| {
            let encoder = EncoderHandleShim(encoder);
            self.0.reconstruct(&inputs.into_tensor(), &encoder).map(option_to_ffi)
        })
    }

    fn sample(&self, count: i64) -> FfiResult<ROption<RawTensor>> {
        guard(|| self.0.sample(count).map(option_to_ffi))
    }
}

struct EvalContextShim<'a, 'b>(FfiEvalContext_TO<'a, RRef<'b, ()>>);

impl EvalContext for EvalContextShim<'_, '_> {
    fn dataset(&self) -> DatasetInfo {
        self.0.dataset().into()
    }

    fn seed(&self) -> u64 {
        self.0.seed()
    }

    fn device(&self) -> tch::Device {
        self.0.device().into()
    }

    fn embeddings(&self, split: Split) -> Result<Tensor> {
        from_ffi(self.0.embeddings(split)).map(RawTensor::into_tensor)
    }

    fn labels(&self, split: Split) -> Result<Option<Tensor>> {
        from_ffi(self.0.labels(split)).map(option_from_ffi)
    }

    fn inputs(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        from_ffi(self.0.inputs(split, indices.into())).map(Batch::from)
    }

    fn encode(&self, inputs: &Tensor) -> Result<Tensor> {
        from_ffi(self.0.encode(RawTensor::share(inputs))).map(RawTensor::into_tensor)
    }

    fn reconstruct(&self, inputs: &Tensor) -> Result<Option<Tensor>> {
        from_ffi(self.0.reconstruct(RawTensor::share(inputs))).map(option_from_ffi)
    }

    fn sample(&self, count: i64) -> Result<Option<Tensor>> {
        from_ffi(self.0.sample(count)).map(option_from_ffi)
    }
}

struct EvaluatorAdapter<T>(T);

impl<T: Evaluator> FfiEvaluator for EvaluatorAdapter<T> {
    fn evaluate(
        &mut self,
        context: FfiEvalContext_TO<'_, RRef<'_, ()>>,
    ) -> FfiResult<FfiEvalReport> {
        guard(|| self.0.evaluate(&EvalContextShim(context)).map(FfiEvalReport::from))
    }
}

fn build_context(context: &FfiBuildContext_TO<'static, RBox<()>>) -> BuildContext {
    BuildContext {
        device: context.device().into(),
        seed: context.seed(),
        dataset: context.dataset().into_option().map(DatasetInfo::from),
        encoder: context.encoder().into_option().map(Into::into),
    }
}

extern "C" fn dataset_factory<T: DatasetPlugin>(
    params: RVec<NamedValue>,
    context: FfiBuildContext_TO<'static, RBox<()>>,
) -> FfiResult<FfiInstance> {
    guard(|| {
        let value = T::create(&Params::from_ffi(params.as_slice()), &build_context(&context))?;
        Ok(FfiInstance::Dataset(FfiDataset_TO::from_value(DatasetAdapter(value), TD_Opaque)))
    })
}

extern "C" fn encoder_factory<T: EncoderPlugin>(
    params: RVec<NamedValue>,
    context: FfiBuildContext_TO<'static, RBox<()>>,
) -> FfiResult<FfiInstance> {
    guard(|| {
        let value = T::create(&Params::from_ffi(params.as_slice()), &build_context(&context))?;
        Ok(FfiInstance::Encoder(FfiEncoder_TO::from_value(EncoderAdapter(value), TD_Opaque)))
    })
}

extern "C" fn objective_factory<T: ObjectivePlugin>(
    params: RVec<NamedValue>,
    context: FfiBuildContext_TO<'static, RBox<()>>,
) -> FfiResult<FfiInstance> {
    guard(|| {
        let value = T::create(&Params::from_ffi(params.as_slice()), &build_context(&context))?;
        Ok(FfiInstance::Objective(FfiObjective_TO::from_value(ObjectiveAdapter(value), TD_Opaque)))
    })
}

extern "C" fn evaluator_factory<T: EvaluatorPlugin>(
    params: RVec<NamedValue>,
    context: FfiBuildContext_TO<'static, RBox<()>>,
) -> FfiResult<FfiInstance> {
    guard(|| {
        let value = T::create(&Params::from_ffi(params.as_slice()), &build_context(&context))?;
        Ok(FfiInstance::Evaluator(FfiEvaluator_TO::from_value(EvaluatorAdapter(value), TD_Opaque)))
    })
}

/// The registry entry of a dataset plugin.
pub fn dataset<T: DatasetPlugin>() -> FfiPluginEntry {
    FfiPluginEntry {
        info: T::describe().into_info(PluginKind::Dataset),
        factory: dataset_factory::<T>,
    }
}

/// The registry entry of an encoder plugin.
pub fn encoder<T: EncoderPlugin>() -> FfiPluginEntry {
    FfiPluginEntry {
        info: T::describe().into_info(PluginKind::Encoder),
        factory: encoder_factory::<T>,
    }
}

/// The registry entry of an objective plugin.
pub fn objective<T: ObjectivePlugin>() -> FfiPluginEntry {
    FfiPluginEntry {
        info: T::describe().into_info(PluginKind::Objective),
        factory: objective_factory::<T>,
    }
}

/// The registry entry of an evaluator plugin.
pub fn evaluator<T: EvaluatorPlugin>() -> FfiPluginEntry {
    FfiPluginEntry {
        info: T::describe().into_info(PluginKind::Evaluator),
        factory: evaluator_factory::<T>,
    }
}

/// Collects a library's entries, catching a panic in any `describe`.
pub fn collect_entries(
    entries: impl FnOnce() -> Vec<FfiPluginEntry>,
) -> FfiResult<RVec<FfiPluginEntry>> {
    install_panic_hook();
    guard(|| Ok(entries().into()))
}

/// The `pretext-plugin-api` version this crate is.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The libtorch version this crate was compiled against.
pub const LIBTORCH_VERSION: &str = env!("PRETEXT_LIBTORCH_VERSION");

/// The libtorch `lib` folder this crate was linked against.
pub const LIBTORCH_LIB_DIR: &str = env!("PRETEXT_LIBTORCH_LIB");

/// The `_GLIBCXX_USE_CXX11_ABI` value (`0` or `1`) libtorch was compiled with.
pub const LIBTORCH_CXX11_ABI: &str = env!("PRETEXT_LIBTORCH_CXX11_ABI");

/// Builds the root module of a library whose entries come from `plugins`.
pub fn library(plugins: extern "C" fn() -> FfiResult<RVec<FfiPluginEntry>>) -> PluginLibraryRef {
    use abi_stable::prefix_type::PrefixTypeTrait;

    install_panic_hook();
    PluginLibrary {
        api_version: RStr::from_str(API_VERSION),
        libtorch_version: RStr::from_str(LIBTORCH_VERSION),
        plugins,
    }
    .leak_into_prefix()
}

/// Shares a batch with a plugin.
pub fn lend_batch(batch: &Batch) -> FfiBatch {
    share_batch(batch)
}
