//! What evaluators see of a trained pipeline, and running them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use pretext_plugin_api::{Batch, DatasetInfo, EvalReport, Split};
use tch::{Device, Kind, Tensor};

use super::pipeline::Pipeline;
use crate::plugins::{CallbackError, EvalSource, PluginCallError};

/// Samples per forward pass when embedding a whole split.
const EMBED_BATCH: usize = 256;

/// The trained pipeline as an [`EvalSource`]; embeddings are computed once per split.
pub struct Evaluation<'a> {
    pipeline: &'a Pipeline,
    cache: RefCell<HashMap<Split, (Tensor, Option<Tensor>)>>,
}

impl<'a> Evaluation<'a> {
    pub fn new(pipeline: &'a Pipeline) -> Self {
        Self { pipeline, cache: RefCell::new(HashMap::new()) }
    }

    /// Representations of `inputs` (already on the pipeline's device), without gradients.
    fn represent(&self, inputs: &Tensor) -> Result<Tensor, PluginCallError> {
        let _guard = tch::no_grad_guard();
        let output = self.pipeline.encoder.forward(inputs, false)?;
        match &self.pipeline.objective {
            Some(objective) => objective.representation(&output.features),
            None => Ok(output.features),
        }
    }

    /// Embeddings and labels of a whole split, on the CPU.
    pub fn split(&self, split: Split) -> Result<(Tensor, Option<Tensor>), PluginCallError> {
        if let Some((embeddings, labels)) = self.cache.borrow().get(&split) {
            return Ok((embeddings.shallow_clone(), labels.as_ref().map(Tensor::shallow_clone)));
        }
        let len = self.pipeline.data_info.len(split) as i64;
        let mut parts = Vec::new();
        let mut label_parts = Vec::new();
        let indices: Vec<i64> = (0..len).collect();
        for chunk in indices.chunks(EMBED_BATCH) {
            let batch = self.pipeline.dataset.batch(split, chunk)?;
            let inputs = batch.inputs.to_device(self.pipeline.device);
            parts.push(self.represent(&inputs)?.to_device(Device::Cpu).to_kind(Kind::Float));
            if let Some(labels) = batch.labels {
                label_parts.push(labels.to_device(Device::Cpu));
            }
        }
        let embeddings = if parts.is_empty() {
            Tensor::zeros([0, 0], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&parts, 0)
        };
        let labels = (!label_parts.is_empty() && label_parts.len() == parts.len())
            .then(|| Tensor::cat(&label_parts, 0));
        self.cache.borrow_mut().insert(
            split,
            (embeddings.shallow_clone(), labels.as_ref().map(Tensor::shallow_clone)),
        );
        Ok((embeddings, labels))
    }
}

impl EvalSource for Evaluation<'_> {
    fn dataset_info(&self) -> DatasetInfo {
        self.pipeline.data_info.clone()
    }

    fn seed(&self) -> u64 {
        self.pipeline.seed
    }

    fn device(&self) -> Device {
        self.pipeline.device
    }

    fn embeddings(&self, split: Split) -> Result<Tensor, CallbackError> {
        Ok(self.split(split)?.0)
    }

    fn labels(&self, split: Split) -> Result<Option<Tensor>, CallbackError> {
        Ok(self.split(split)?.1)
    }

    fn inputs(&self, split: Split, indices: &[i64]) -> Result<Batch, CallbackError> {
        let len = self.pipeline.data_info.len(split) as i64;
        if let Some(bad) = indices.iter().find(|index| **index < 0 || **index >= len) {
            return Err(CallbackError::Host(format!(
                "index {bad} is out of range for the {} split of {len} samples",
                split.as_str()
            )));
        }
        Ok(self.pipeline.dataset.batch(split, indices)?)
    }

    fn encode(&self, inputs: &Tensor) -> Result<Tensor, CallbackError> {
        let inputs = inputs.to_device(self.pipeline.device);
        Ok(self.represent(&inputs)?.to_device(Device::Cpu))
    }

    fn reconstruct(&self, inputs: &Tensor) -> Result<Option<Tensor>, CallbackError> {
        let Some(objective) = &self.pipeline.objective else {
            return Ok(None);
        };
        let _guard = tch::no_grad_guard();
        let inputs = inputs.to_device(self.pipeline.device);
        let output = objective.reconstruct(&inputs, &self.pipeline.encoder)?;
        Ok(output.map(|tensor| tensor.to_device(Device::Cpu)))
    }

    fn sample(&self, count: i64) -> Result<Option<Tensor>, CallbackError> {
        let Some(objective) = &self.pipeline.objective else {
            return Ok(None);
        };
        let _guard = tch::no_grad_guard();
        Ok(objective.sample(count)?.map(|tensor| tensor.to_device(Device::Cpu)))
    }
}

/// Checks that an artifact path stays inside the artifact folder: relative, no `..`, and not
/// through a symbolic link.
pub fn artifact_path(root: &Path, relative: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    if relative.is_empty() || path.is_absolute() {
        return Err(format!("artifact path `{relative}` must be a non-empty relative path"));
    }
    for component in path.components() {
        if !matches!(component, Component::Normal(_)) {
            return Err(format!("artifact path `{relative}` may not contain `..` or `.` parts"));
        }
    }
    let mut current = root.to_path_buf();
    for component in path.components() {
        current.push(component);
        if current.symlink_metadata().is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(format!("artifact path `{relative}` goes through a symbolic link"));
        }
    }
    Ok(root.join(path))
}

/// Runs every evaluator; returns `(label, report)` pairs.
pub fn run_evaluators(
    pipeline: &mut Pipeline,
) -> Result<Vec<(String, EvalReport)>, PluginCallError> {
    let mut evaluators = std::mem::take(&mut pipeline.evaluators);
    let result = (|| {
        let evaluation = Evaluation::new(pipeline);
        let mut reports = Vec::new();
        for (label, evaluator) in &mut evaluators {
            tracing::info!(evaluator = %label, "evaluating");
            reports.push((label.clone(), evaluator.evaluate(&evaluation)?));
        }
        Ok(reports)
    })();
    pipeline.evaluators = evaluators;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_cannot_escape() {
        let root = Path::new("/tmp/run/artifacts");
        assert!(artifact_path(root, "latent.png").is_ok());
        assert!(artifact_path(root, "plots/latent.png").is_ok());
        assert!(artifact_path(root, "../escape.png").is_err());
        assert!(artifact_path(root, "/etc/passwd").is_err());
        assert!(artifact_path(root, "").is_err());
    }
}
