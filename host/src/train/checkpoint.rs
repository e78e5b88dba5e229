//! Training checkpoints on disk: parameters and optimizer state (safetensors) plus the training
//! position (JSON), written atomically and pruned to the latest few.
//!
//! A checkpoint is the pair `step-NNNNNNNNNN.safetensors` and `step-NNNNNNNNNN.json` in the run's
//! `checkpoints/` folder. The JSON file is written last, so a checkpoint counts only once both
//! files are complete. A crash mid-write leaves at most a temporary file, which the next write
//! replaces.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::TrainState;

/// Prefix of optimizer-state tensors inside a checkpoint file.
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// What a checkpoint's JSON file records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub state: TrainState,
    /// The run store's last metric row when the checkpoint was written; a resume deletes the
    /// rows after it, so every step's metrics end up recorded exactly once.
    pub metric_row: i64,
}

/// A checkpoint found on disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: PathBuf,
}

/// The folder of a run's checkpoints.
pub fn folder(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn stem(step: u64) -> String {
    format!("step-{step:010}")
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let temporary = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|ext| ext.to_str()).unwrap_or("")
    ));
    write(&temporary)?;
    File::open(&temporary)
        .and_then(|file| file.sync_all())
        .map_err(|error| format!("cannot sync {}: {error}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .map_err(|error| format!("cannot move {} into place: {error}", path.display()))?;
    if let Some(parent) = path.parent() {
        // Persist the rename itself.
        let _ = File::open(parent).and_then(|dir| dir.sync_all());
    }
    Ok(())
}

/// Saves parameters, optimizer state and `meta`, then removes all but the latest `keep`.
pub fn save(
    run_dir: &Path,
    parameters: Vec<(String, Tensor)>,
    optimizer_state: Vec<(String, Tensor)>,
    meta: &CheckpointMeta,
    keep: usize,
) -> Result<Checkpoint, String> {
    let dir = folder(run_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let stem = stem(meta.state.step);
    let tensors_path = dir.join(format!("{stem}.safetensors"));
    let mut tensors: Vec<(String, Tensor)> = parameters
        .into_iter()
        .map(|(name, tensor)| (name, tensor.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    tensors.extend(optimizer_state.into_iter().map(|(name, tensor)| {
        (
            format!("{OPTIMIZER_PREFIX}{name}"),
            tensor.detach().to_device(tch::Device::Cpu).contiguous(),
        )
    }));
    write_atomic(&tensors_path, |path| {
        Tensor::write_safetensors(&tensors, path)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))
    })?;
    let meta_path = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(meta).map_err(|error| error.to_string())?;
    write_atomic(&meta_path, |path| {
        let mut file = File::create(path)
            .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        file.write_all(text.as_bytes())
            .map_err(|error| format!("cannot write {}: {error}", path.display()))
    })?;
    prune(&dir, keep);
    Ok(Checkpoint { meta: meta.clone(), tensors: tensors_path })
}

/// Complete checkpoints in a folder, oldest first.
pub fn list(run_dir: &Path) -> Vec<Checkpoint> {
    let dir = folder(run_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_step = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("step-"));
        if !is_step || path.extension().and_then(|ext| ext.to_str()) != Some("json") {
            continue;
        }
        let tensors = path.with_extension("safetensors");
        let meta = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<CheckpointMeta>(&text).ok());
        match meta {
            Some(meta) if tensors.exists() => found.push(Checkpoint { meta, tensors }),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an incomplete or unreadable checkpoint")
            }
        }
    }
    found.sort_by_key(|checkpoint| checkpoint.meta.state.step);
    found
}

/// The latest complete checkpoint of a run.
pub fn latest(run_dir: &Path) -> Option<Checkpoint> {
    list(run_dir).pop()
}

fn prune(dir: &Path, keep: usize) {
    let run_dir = dir.parent().unwrap_or(dir);
    let all = list(run_dir);
    let excess = all.len().saturating_sub(keep.max(1));
    for checkpoint in all.into_iter().take(excess) {
        let meta = checkpoint.tensors.with_extension("json");
        // The JSON goes first, so a half-pruned checkpoint is never taken as complete.
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&checkpoint.tensors);
    }
}

/// The value of the metric that selected `checkpoints/best`, if there is one.
pub fn best_value(run_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(folder(run_dir).join("best.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["value"].as_f64()
}

/// Copies `checkpoint` to `best.safetensors` and records `metric = value` in `best.json`.
pub fn save_best(
    run_dir: &Path,
    checkpoint: &Checkpoint,
    metric: &str,
    value: f64,
) -> Result<(), String> {
    let dir = folder(run_dir);
    write_atomic(&dir.join("best.safetensors"), |path| {
        std::fs::copy(&checkpoint.tensors, path).map(|_| ()).map_err(|error| {
            format!("cannot copy {} to {}: {error}", checkpoint.tensors.display(), path.display())
        })
    })?;
    let record =
        serde_json::json!({ "metric": metric, "value": value, "step": checkpoint.meta.state.step });
    write_atomic(&dir.join("best.json"), |path| {
        std::fs::write(path, record.to_string())
            .map_err(|error| format!("cannot write {}: {error}", path.display()))
    })
}

/// Tensors by name.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Reads a checkpoint's tensors: `(parameters, optimizer state)`.
pub fn read(checkpoint: &Checkpoint) -> Result<(NamedTensors, NamedTensors), String> {
    let tensors = Tensor::read_safetensors(&checkpoint.tensors).map_err(|error| {
        format!("cannot read checkpoint {}: {error}", checkpoint.tensors.display())
    })?;
    let mut parameters = Vec::new();
    let mut optimizer = Vec::new();
    for (name, tensor) in tensors {
        match name.strip_prefix(OPTIMIZER_PREFIX) {
            Some(rest) => optimizer.push((rest.to_owned(), tensor)),
            None => parameters.push((name, tensor)),
        }
    }
    Ok((parameters, optimizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(step: u64) -> CheckpointMeta {
        CheckpointMeta {
            state: TrainState { step, ..TrainState::default() },
            metric_row: step as i64,
        }
    }

    #[test]
    fn save_keeps_latest_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        for step in [10, 20, 30, 40] {
            let parameters = vec![("encoder.w".to_owned(), Tensor::from_slice(&[step as f32]))];
            let optimizer = vec![("main.steps".to_owned(), Tensor::from_slice(&[step as i64]))];
            save(dir.path(), parameters, optimizer, &meta(step), 2).unwrap();
        }
        let steps: Vec<u64> =
            list(dir.path()).iter().map(|checkpoint| checkpoint.meta.state.step).collect();
        assert_eq!(steps, vec![30, 40]);
        let (parameters, optimizer) = read(&latest(dir.path()).unwrap()).unwrap();
        assert_eq!(parameters[0].0, "encoder.w");
        assert_eq!(parameters[0].1.double_value(&[0]), 40.0);
        assert_eq!(optimizer[0].0, "main.steps");
    }

    #[test]
    fn checkpoint_without_json_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        save(
            dir.path(),
            vec![("w".into(), Tensor::from_slice(&[1.0f32]))],
            Vec::new(),
            &meta(5),
            3,
        )
        .unwrap();
        std::fs::write(folder(dir.path()).join("step-0000000009.safetensors"), b"partial").unwrap();
        assert_eq!(latest(dir.path()).unwrap().meta.state.step, 5);
    }
}
