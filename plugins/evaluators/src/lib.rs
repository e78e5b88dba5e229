//! Built-in evaluators: `linear_probe` (a logistic-regression classifier on frozen embeddings),
//! `reconstruction` (test-split MSE of the objective's decoder) and `latent_plot` (a PNG scatter
//! of the test embeddings).
//!
//! `linear_probe` and `latent_plot` compute on the CPU in float64, so the same embeddings give
//! bit-identical results. `reconstruction` runs the decoder on the model's device and sums the
//! squared errors in float64.
#![forbid(unsafe_code)]

pub mod anomaly;
pub mod charts;
pub mod cluster_metrics;
pub mod clustering;
pub mod data;
pub mod image_grid;
pub mod kmeans;
pub mod knn;
pub mod label_efficiency;
pub mod latent_plot;
pub mod lbfgs;
pub mod logistic;
pub mod metrics;
pub mod neighbours;
pub mod plot;
pub mod probe;
pub mod projection;
pub mod ranking;
pub mod reconstruction;

#[cfg(test)]
mod cluster_reference_tests;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod testing;

pub use anomaly::Anomaly;
pub use image_grid::ImageGrid;
pub use kmeans::KMeans;
pub use knn::Knn;
pub use latent_plot::LatentPlot;
pub use probe::LinearProbe;
pub use reconstruction::Reconstruction;

pretext_plugin_api::export_plugins![
    evaluator(LinearProbe),
    evaluator(Reconstruction),
    evaluator(LatentPlot),
    evaluator(Knn),
    evaluator(KMeans),
    evaluator(Anomaly),
    evaluator(ImageGrid),
];

#[cfg(test)]
mod tests {
    use pretext_plugin_api::{EvaluatorPlugin, ParamValue, PluginKind};

    use super::*;

    #[test]
    fn descriptions_have_valid_defaults() {
        let descriptions = [
            LinearProbe::describe(),
            Reconstruction::describe(),
            LatentPlot::describe(),
            Knn::describe(),
            KMeans::describe(),
            Anomaly::describe(),
            ImageGrid::describe(),
        ];
        for description in descriptions {
            let info = description.into_info(PluginKind::Evaluator);
            for spec in info.params.iter() {
                let name = format!("{}.{}", info.name, spec.name);
                let numeric = match spec.default.as_ref().into_option() {
                    Some(ParamValue::Int(value)) => Some(*value as f64),
                    Some(ParamValue::Float(value)) => Some(*value),
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
