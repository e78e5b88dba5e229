//! Conversions between the boundary types of [`crate::ffi`] and the safe types of
//! [`crate::plugin`], used by the plugin-side glue and by the host alike.

use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec};
use tch::{Device, Tensor};

use crate::ffi::{
    FfiArtifact, FfiBatch, FfiDatasetInfo, FfiDevice, FfiEncoderInfo, FfiEncoderOutput,
    FfiEvalReport, FfiLossOutput, FfiParamGroup, FfiPhase, FfiStepInfo, NamedScalar, NamedTensor,
};
use crate::plugin::{
    Artifact, Batch, DatasetInfo, EncoderInfo, EncoderOutput, EvalReport, LossOutput, ParamGroup,
    Phase, StepInfo,
};
use crate::tensor::RawTensor;

impl From<Device> for FfiDevice {
    fn from(device: Device) -> Self {
        match device {
            Device::Cuda(index) => FfiDevice { index: index as i64 },
            _ => FfiDevice { index: -1 },
        }
    }
}

impl From<FfiDevice> for Device {
    fn from(device: FfiDevice) -> Self {
        if device.index < 0 { Device::Cpu } else { Device::Cuda(device.index as usize) }
    }
}

impl From<DatasetInfo> for FfiDatasetInfo {
    fn from(info: DatasetInfo) -> Self {
        FfiDatasetInfo {
            sample_shape: info.sample_shape.into(),
            input_kind: info.input_kind,
            vocab_size: info.vocab_size,
            num_classes: info.num_classes.unwrap_or(0),
            class_names: info.class_names.into_iter().map(RString::from).collect(),
            train_len: info.train_len as u64,
            test_len: info.test_len as u64,
        }
    }
}

impl From<FfiDatasetInfo> for DatasetInfo {
    fn from(info: FfiDatasetInfo) -> Self {
        DatasetInfo {
            sample_shape: info.sample_shape.into_vec(),
            input_kind: info.input_kind,
            vocab_size: info.vocab_size,
            num_classes: (info.num_classes > 0).then_some(info.num_classes),
            class_names: info.class_names.into_iter().map(RString::into_string).collect(),
            train_len: info.train_len as usize,
            test_len: info.test_len as usize,
        }
    }
}

impl From<Batch> for FfiBatch {
    fn from(batch: Batch) -> Self {
        FfiBatch {
            inputs: RawTensor::new(batch.inputs),
            labels: batch.labels.map(RawTensor::new).into(),
        }
    }
}

impl From<FfiBatch> for Batch {
    fn from(batch: FfiBatch) -> Self {
        Batch {
            inputs: batch.inputs.into_tensor(),
            labels: batch.labels.into_option().map(RawTensor::into_tensor),
        }
    }
}

/// Shares a batch across the boundary without giving it up.
pub fn share_batch(batch: &Batch) -> FfiBatch {
    FfiBatch {
        inputs: RawTensor::share(&batch.inputs),
        labels: match &batch.labels {
            Some(labels) => RSome(RawTensor::share(labels)),
            None => RNone,
        },
    }
}

impl From<EncoderInfo> for FfiEncoderInfo {
    fn from(info: EncoderInfo) -> Self {
        FfiEncoderInfo {
            output_dim: info.output_dim,
            hidden_sizes: info.hidden_sizes.into(),
            has_token_output: info.has_token_output,
            needs_fit: info.needs_fit,
        }
    }
}

impl From<FfiEncoderInfo> for EncoderInfo {
    fn from(info: FfiEncoderInfo) -> Self {
        EncoderInfo {
            output_dim: info.output_dim,
            hidden_sizes: info.hidden_sizes.into_vec(),
            has_token_output: info.has_token_output,
            needs_fit: info.needs_fit,
        }
    }
}

impl From<EncoderOutput> for FfiEncoderOutput {
    fn from(output: EncoderOutput) -> Self {
        FfiEncoderOutput {
            features: RawTensor::new(output.features),
            tokens: output.tokens.map(RawTensor::new).into(),
        }
    }
}

impl From<FfiEncoderOutput> for EncoderOutput {
    fn from(output: FfiEncoderOutput) -> Self {
        EncoderOutput {
            features: output.features.into_tensor(),
            tokens: output.tokens.into_option().map(RawTensor::into_tensor),
        }
    }
}

/// Converts named tensors to the boundary type, sharing each tensor.
pub fn share_named(tensors: &[(String, Tensor)]) -> RVec<NamedTensor> {
    tensors
        .iter()
        .map(|(name, tensor)| NamedTensor {
            name: name.as_str().into(),
            tensor: RawTensor::share(tensor),
        })
        .collect()
}

/// Converts named tensors from the boundary type.
pub fn take_named(tensors: RVec<NamedTensor>) -> Vec<(String, Tensor)> {
    tensors
        .into_iter()
        .map(|entry| (entry.name.into_string(), entry.tensor.into_tensor()))
        .collect()
}

fn scalars_to_ffi(scalars: Vec<(String, f64)>) -> RVec<NamedScalar> {
    scalars.into_iter().map(|(name, value)| NamedScalar { name: name.into(), value }).collect()
}

fn scalars_from_ffi(scalars: RVec<NamedScalar>) -> Vec<(String, f64)> {
    scalars.into_iter().map(|entry| (entry.name.into_string(), entry.value)).collect()
}

impl From<ParamGroup> for FfiParamGroup {
    fn from(group: ParamGroup) -> Self {
        FfiParamGroup {
            name: group.name.into(),
            params: share_named(&group.params),
            includes_encoder: group.includes_encoder,
        }
    }
}

impl From<FfiParamGroup> for ParamGroup {
    fn from(group: FfiParamGroup) -> Self {
        ParamGroup {
            name: group.name.into_string(),
            params: take_named(group.params),
            includes_encoder: group.includes_encoder,
        }
    }
}

impl From<Phase> for FfiPhase {
    fn from(phase: Phase) -> Self {
        FfiPhase {
            name: phase.name.into(),
            groups: phase.groups.into_iter().map(RString::from).collect(),
        }
    }
}

impl From<FfiPhase> for Phase {
    fn from(phase: FfiPhase) -> Self {
        Phase {
            name: phase.name.into_string(),
            groups: phase.groups.into_iter().map(RString::into_string).collect(),
        }
    }
}

impl From<StepInfo> for FfiStepInfo {
    fn from(step: StepInfo) -> Self {
        FfiStepInfo { step: step.step, epoch: step.epoch }
    }
}

impl From<FfiStepInfo> for StepInfo {
    fn from(step: FfiStepInfo) -> Self {
        StepInfo { step: step.step, epoch: step.epoch }
    }
}

impl From<LossOutput> for FfiLossOutput {
    fn from(output: LossOutput) -> Self {
        FfiLossOutput { loss: RawTensor::new(output.loss), metrics: scalars_to_ffi(output.metrics) }
    }
}

impl From<FfiLossOutput> for LossOutput {
    fn from(output: FfiLossOutput) -> Self {
        LossOutput { loss: output.loss.into_tensor(), metrics: scalars_from_ffi(output.metrics) }
    }
}

impl From<EvalReport> for FfiEvalReport {
    fn from(report: EvalReport) -> Self {
        FfiEvalReport {
            metrics: scalars_to_ffi(report.metrics),
            artifacts: report
                .artifacts
                .into_iter()
                .map(|artifact| FfiArtifact {
                    path: artifact.path.into(),
                    bytes: artifact.bytes.into(),
                })
                .collect(),
        }
    }
}

impl From<FfiEvalReport> for EvalReport {
    fn from(report: FfiEvalReport) -> Self {
        EvalReport {
            metrics: scalars_from_ffi(report.metrics),
            artifacts: report
                .artifacts
                .into_iter()
                .map(|artifact| Artifact {
                    path: artifact.path.into_string(),
                    bytes: artifact.bytes.into_vec(),
                })
                .collect(),
        }
    }
}

/// Converts an optional tensor to the boundary type.
pub fn option_to_ffi(tensor: Option<Tensor>) -> ROption<RawTensor> {
    tensor.map(RawTensor::new).into()
}

/// Converts an optional tensor from the boundary type.
pub fn option_from_ffi(tensor: ROption<RawTensor>) -> Option<Tensor> {
    tensor.into_option().map(RawTensor::into_tensor)
}
