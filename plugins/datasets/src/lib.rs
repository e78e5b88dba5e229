//! Built-in datasets. The real ones are the 8x8 handwritten digits and the tabular
//! `breast_cancer` and `wine`. The synthetic ones are `moons`, `blobs` and `swiss_roll`. The
//! readers of files that a user brings are `npy`, `npz`, `csv`, `idx` and `text`.
//!
//! Every dataset serves batches by index. All but `npy` and `npz` keep their samples in memory.
//! Those two read the requested rows from the file per batch. The train/test split is
//! stratified by label and reproducible from a seed (see [`split::stratified_split`]).
#![forbid(unsafe_code)]

pub mod array_files;
pub mod blobs;
pub mod csv_file;
pub mod digits;
pub mod idx;
pub mod moons;
pub mod npy;
pub mod random;
pub mod samples;
pub mod split;
pub mod swiss_roll;
pub mod tabular;
pub mod text;

pub use array_files::{Npy, Npz};
pub use blobs::Blobs;
pub use csv_file::Csv;
pub use digits::Digits;
pub use idx::Idx;
pub use moons::Moons;
pub use swiss_roll::SwissRoll;
pub use tabular::{BreastCancer, Wine};
pub use text::Text;

pretext_plugin_api::export_plugins![
    dataset(Digits),
    dataset(Moons),
    dataset(Blobs),
    dataset(SwissRoll),
    dataset(BreastCancer),
    dataset(Wine),
    dataset(Npy),
    dataset(Npz),
    dataset(Csv),
    dataset(Text),
    dataset(Idx),
];

#[cfg(test)]
mod tests {
    use pretext_plugin_api::{DatasetPlugin, ParamValue, PluginKind};

    use super::*;

    #[test]
    fn descriptions_have_valid_defaults() {
        let descriptions = [
            Digits::describe(),
            Moons::describe(),
            Blobs::describe(),
            SwissRoll::describe(),
            BreastCancer::describe(),
            Wine::describe(),
            Npy::describe(),
            Npz::describe(),
            Csv::describe(),
            Text::describe(),
            Idx::describe(),
        ];
        for description in descriptions {
            let info = description.into_info(PluginKind::Dataset);
            for spec in info.params.iter() {
                let name = format!("{}.{}", info.name, spec.name);
                let numeric = match spec.default.as_ref().into_option() {
                    Some(ParamValue::Int(value)) => Some(*value as f64),
                    Some(ParamValue::Float(value)) => Some(*value),
                    Some(ParamValue::Str(value)) if !spec.choices.is_empty() => {
                        assert!(spec.choices.contains(value), "{name}: default not a choice");
                        None
                    }
                    _ => None,
                };
                if let Some(value) = numeric {
                    let min = spec.min.into_option().unwrap_or(f64::NEG_INFINITY);
                    let max = spec.max.into_option().unwrap_or(f64::INFINITY);
                    assert!((min..=max).contains(&value), "{name}: default {value} out of range");
                }
                assert!(!spec.doc.is_empty(), "{name} has no doc");
            }
        }
    }
}
