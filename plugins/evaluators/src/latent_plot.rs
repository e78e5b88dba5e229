//! The `latent_plot` evaluator: a PNG scatter plot of the test embeddings, coloured by label.

use pretext_plugin_api::{
    Artifact, BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin,
    Param, Params, Result, Split, ensure,
};

use crate::data;
use crate::plot::{Scatter, render_png, text_available};
use crate::projection::project_to_plane;

/// Largest accepted width or height, in pixels.
const MAX_SIDE: i64 = 8192;

/// Smallest accepted width or height, in pixels, which leaves room for the axes.
const MIN_SIDE: i64 = 100;

/// Plots the test embeddings in the plane, projected by PCA when they have more than two
/// dimensions.
pub struct LatentPlot {
    width: u32,
    height: u32,
    max_points: usize,
}

impl EvaluatorPlugin for LatentPlot {
    fn describe() -> Description {
        let side = (MIN_SIDE as f64, MAX_SIDE as f64);
        Description::new(
            "latent_plot",
            env!("CARGO_PKG_VERSION"),
            "latent.png: test embeddings in 2-D (first two principal components when wider), by label",
        )
        .param(Param::int("width", 800, "image width in pixels").range(side.0, side.1))
        .param(Param::int("height", 600, "image height in pixels").range(side.0, side.1))
        .param(
            Param::int("max_points", 5000, "maximum number of points drawn, taken evenly spaced")
                .min(1.0),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let width = params.int("width")?;
        let height = params.int("height")?;
        let max_points = params.int("max_points")?;
        for (name, value) in [("width", width), ("height", height)] {
            ensure!(
                (MIN_SIDE..=MAX_SIDE).contains(&value),
                "{name} must be between {MIN_SIDE} and {MAX_SIDE} pixels, found {value}"
            );
        }
        ensure!(max_points >= 1, "max_points must be at least 1, found {max_points}");

        Ok(Self { width: width as u32, height: height as u32, max_points: max_points as usize })
    }
}

impl Evaluator for LatentPlot {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let embeddings = data::embeddings(context, Split::Test)?;
        let rows = embeddings.size()[0];
        ensure!(rows > 0, "the test split is empty; latent_plot needs at least one sample");
        let labels = data::labels(context, Split::Test, rows)?;

        // The projection uses every test sample, and only the drawing is thinned out.
        let projection = project_to_plane(&embeddings)?;
        let chosen = evenly_spaced(projection.points.len(), self.max_points);
        let points: Vec<[f64; 2]> = chosen.iter().map(|&index| projection.points[index]).collect();

        let class_names = context.dataset().class_names;
        let grouping = labels.map(|labels| {
            let chosen_labels: Vec<i64> = chosen.iter().map(|&index| labels[index]).collect();
            group_by_label(&chosen_labels, &class_names)
        });
        let scatter = Scatter {
            points: &points,
            groups: grouping.as_ref().map(|(groups, _)| groups.as_slice()),
            group_names: grouping.as_ref().map_or(&[], |(_, names)| names.as_slice()),
            axis_names: &projection.axis_names,
        };

        let bytes = render_png(&scatter, self.width, self.height, text_available())?;
        let artifact = Artifact { path: "latent.png".to_owned(), bytes };
        Ok(EvalReport { metrics: Vec::new(), artifacts: vec![artifact] })
    }
}

/// Returns `min(len, limit)` indices spread evenly over `0..len`, in ascending order.
fn evenly_spaced(len: usize, limit: usize) -> Vec<usize> {
    if len <= limit {
        return (0..len).collect();
    }
    (0..limit).map(|i| (i as u128 * len as u128 / limit as u128) as usize).collect()
}

/// Maps each label to a group index, groups ordered by label, and names each group by the
/// dataset's class name for that label, or by the label itself when there is none.
fn group_by_label(labels: &[i64], class_names: &[String]) -> (Vec<usize>, Vec<String>) {
    let mut distinct = labels.to_vec();
    distinct.sort_unstable();
    distinct.dedup();

    let groups = labels.iter().map(|label| distinct.binary_search(label).unwrap_or(0)).collect();
    let names = distinct
        .iter()
        .map(|&label| {
            let known = usize::try_from(label).ok().and_then(|index| class_names.get(index));
            known.cloned().unwrap_or_else(|| label.to_string())
        })
        .collect();
    (groups, names)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::FakeContext;

    fn plot(width: i64, height: i64, max_points: i64) -> Result<LatentPlot> {
        let params = Params::new(vec![
            ("width".into(), ParamValue::Int(width)),
            ("height".into(), ParamValue::Int(height)),
            ("max_points".into(), ParamValue::Int(max_points)),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        LatentPlot::create(&params, &context)
    }

    fn context(dim: usize) -> FakeContext {
        let rows: Vec<Vec<f64>> = (0..60)
            .map(|i| (0..dim).map(|j| ((i * (j + 3)) % 17) as f64 / 4.0).collect())
            .collect();
        let labels: Vec<i64> = (0..60).map(|i| i % 3).collect();
        FakeContext::labelled(&rows, &labels, &rows, &labels)
    }

    fn is_png(bytes: &[u8]) -> bool {
        bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A])
    }

    #[test]
    fn latent_plot_returns_png_artifact() {
        let report = plot(400, 300, 5000).unwrap().evaluate(&context(8)).unwrap();

        assert!(report.metrics.is_empty());
        assert_eq!(report.artifacts.len(), 1);
        assert_eq!(report.artifacts[0].path, "latent.png");
        assert!(is_png(&report.artifacts[0].bytes));
        let decoded = image::load_from_memory(&report.artifacts[0].bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (400, 300));
    }

    #[test]
    fn latent_plot_is_deterministic() {
        let first = plot(300, 200, 20).unwrap().evaluate(&context(2)).unwrap();
        let again = plot(300, 200, 20).unwrap().evaluate(&context(2)).unwrap();

        assert_eq!(first.artifacts[0].bytes, again.artifacts[0].bytes);
    }

    #[test]
    fn latent_plot_draws_unlabelled_and_one_dimensional() {
        let mut context = context(1);
        context.test_labels = None;

        let report = plot(200, 200, 10).unwrap().evaluate(&context).unwrap();

        assert!(is_png(&report.artifacts[0].bytes));
    }

    #[test]
    fn latent_plot_rejects_small_canvas() {
        let error = plot(50, 600, 10).err().unwrap();

        assert_eq!(error.message(), "width must be between 100 and 8192 pixels, found 50");
    }

    #[test]
    fn evenly_spaced_covers_range() {
        assert_eq!(evenly_spaced(10, 4), [0, 2, 5, 7]);
        assert_eq!(evenly_spaced(3, 5), [0, 1, 2]);
    }

    #[test]
    fn groups_use_class_names() {
        let names = ["zero".to_owned(), "one".to_owned()];

        let (groups, group_names) = group_by_label(&[1, 7, 1, 0], &names);

        assert_eq!(groups, [1, 2, 1, 0]);
        assert_eq!(group_names, ["zero", "one", "7"]);
    }
}
