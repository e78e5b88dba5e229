//! Reading embeddings and labels from an [`EvalContext`] into checked CPU values.
//!
//! The values are copied to the CPU in float64, whatever device the model ran on, so that
//! computing on them gives bit-identical results for the same inputs.

use pretext_plugin_api::tch::{Device, Kind, Tensor};
use pretext_plugin_api::{EvalContext, Result, Split, ensure};

/// Returns the embeddings of `split` as a `[N, D]` float64 CPU tensor.
///
/// # Errors
///
/// Fails when the context fails, when the embeddings are not a matrix, or when they contain NaN
/// or infinite values (as a diverged model produces).
pub fn embeddings(context: &dyn EvalContext, split: Split) -> Result<Tensor> {
    let name = split.as_str();
    let embeddings = context.embeddings(split)?;
    let size = embeddings.size();
    ensure!(size.len() == 2, "{name} embeddings must be a matrix [N, D], found shape {size:?}");

    let embeddings = embeddings.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let finite = embeddings.f_isfinite()?.f_all()?.int64_value(&[]) != 0;
    ensure!(finite, "{name} embeddings contain NaN or infinite values");
    Ok(embeddings)
}

/// Returns the labels of `split`, or `None` when the dataset has none, checking that there is
/// one per embedding row.
///
/// # Errors
///
/// Fails when the context fails, or when the labels are not a vector of `rows` integers.
pub fn labels(context: &dyn EvalContext, split: Split, rows: i64) -> Result<Option<Vec<i64>>> {
    let name = split.as_str();
    let Some(labels) = context.labels(split)? else {
        return Ok(None);
    };
    let size = labels.size();
    ensure!(size.len() == 1, "{name} labels must be a vector [N], found shape {size:?}");
    ensure!(size[0] == rows, "the {name} split has {rows} embeddings but {} labels", size[0]);

    let labels = labels.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?;
    Ok(Some(Vec::<i64>::try_from(&labels)?))
}

/// Embeddings and labels of both splits, checked to be non-empty and of equal width.
#[derive(Debug)]
pub struct LabelledSplits {
    /// `[N_train, D]` float64 on the CPU.
    pub train: Tensor,
    pub train_labels: Vec<i64>,
    /// `[N_test, D]` float64 on the CPU.
    pub test: Tensor,
    pub test_labels: Vec<i64>,
}

/// Reads the embeddings and labels of both splits for the evaluator `evaluator`, which names
/// it in messages.
///
/// # Errors
///
/// Fails as [`embeddings`] and [`labels`] do, and when the dataset has no labels, a split is
/// empty or the splits' widths differ.
pub fn labelled_splits(context: &dyn EvalContext, evaluator: &str) -> Result<LabelledSplits> {
    let train = embeddings(context, Split::Train)?;
    let test = embeddings(context, Split::Test)?;
    let no_labels = || {
        pretext_plugin_api::Error::msg(format!(
            "the dataset has no labels; {evaluator} needs class labels"
        ))
    };
    let train_labels = labels(context, Split::Train, train.size()[0])?.ok_or_else(no_labels)?;
    let test_labels = labels(context, Split::Test, test.size()[0])?.ok_or_else(no_labels)?;
    for (name, len) in [("train", train_labels.len()), ("test", test_labels.len())] {
        ensure!(len > 0, "the {name} split is empty; {evaluator} needs samples in both splits");
    }
    ensure!(
        train.size()[1] == test.size()[1],
        "train embeddings have {} columns but test embeddings have {}",
        train.size()[1],
        test.size()[1]
    );
    Ok(LabelledSplits { train, train_labels, test, test_labels })
}
