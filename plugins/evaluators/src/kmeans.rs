//! The `kmeans` evaluator: k-means on the test embeddings, scored against the labels by NMI, ARI
//! and purity.

use pretext_plugin_api::{
    BuildContext, Description, EvalContext, EvalReport, Evaluator, EvaluatorPlugin, Param, Params,
    Result, Split, bail, ensure,
};

use crate::cluster_metrics::cluster_scores;
use crate::clustering::{KMeansOptions, Points, kmeans};
use crate::data;

/// Clusters the test embeddings and measures how well the clusters recover the classes.
pub struct KMeans {
    /// Number of clusters, or 0 for the dataset's number of classes.
    clusters: usize,
    n_init: usize,
    max_iter: usize,
    tol: f64,
}

impl EvaluatorPlugin for KMeans {
    fn describe() -> Description {
        Description::new(
            "kmeans",
            env!("CARGO_PKG_VERSION"),
            "k-means++ on the test embeddings: NMI, ARI and purity against the labels, and inertia",
        )
        .param(
            Param::int("k", 0, "number of clusters; 0 uses the dataset's number of classes")
                .min(0.0),
        )
        .param(
            Param::int("n_init", 10, "number of seeded restarts; the lowest inertia wins").min(1.0),
        )
        .param(
            Param::int("max_iter", 300, "maximum number of Lloyd iterations per restart").min(1.0),
        )
        .param(
            Param::float(
                "tol",
                1e-4,
                "stop when the squared centre shift is below tol times the mean feature variance",
            )
            .min(0.0),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let clusters = params.int("k")?;
        let n_init = params.int("n_init")?;
        let max_iter = params.int("max_iter")?;
        let tol = params.float("tol")?;
        ensure!(clusters >= 0, "k must be at least 0, found {clusters}");
        ensure!(n_init >= 1, "n_init must be at least 1, found {n_init}");
        ensure!(max_iter >= 1, "max_iter must be at least 1, found {max_iter}");
        ensure!(
            tol.is_finite() && tol >= 0.0,
            "tol must be a finite value of at least 0, found {tol}"
        );
        Ok(Self {
            clusters: clusters as usize,
            n_init: n_init as usize,
            max_iter: max_iter as usize,
            tol,
        })
    }
}

impl Evaluator for KMeans {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let test = data::embeddings(context, Split::Test)?;
        let (rows, dim) = (test.size()[0], test.size()[1]);
        let labels = data::labels(context, Split::Test, rows)?;
        let clusters = match (self.clusters, context.dataset().num_classes) {
            (0, Some(classes)) => classes as usize,
            (0, None) => {
                bail!("the dataset has no classes to count; set k to the number of clusters")
            }
            (clusters, _) => clusters,
        };

        let values = Vec::<f64>::try_from(&test.f_flatten(0, -1)?)?;
        let options = KMeansOptions {
            clusters,
            n_init: self.n_init,
            max_iter: self.max_iter,
            tol: self.tol,
            seed: context.seed(),
        };
        let clustering = kmeans(Points { values: &values, dim: dim as usize }, &options)?;

        let mut metrics = Vec::new();
        if let Some(labels) = labels {
            let assignments: Vec<i64> =
                clustering.assignments.iter().map(|&cluster| cluster as i64).collect();
            let scores = cluster_scores(&labels, &assignments)?;
            metrics.push(("nmi".to_owned(), scores.nmi));
            metrics.push(("ari".to_owned(), scores.ari));
            metrics.push(("purity".to_owned(), scores.purity));
        }
        metrics.push(("inertia".to_owned(), clustering.inertia));
        Ok(EvalReport { metrics, artifacts: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;
    use crate::testing::FakeContext;

    fn evaluator(k: i64) -> KMeans {
        let params = Params::new(vec![
            ("k".into(), ParamValue::Int(k)),
            ("n_init".into(), ParamValue::Int(5)),
            ("max_iter".into(), ParamValue::Int(300)),
            ("tol".into(), ParamValue::Float(1e-4)),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        KMeans::create(&params, &context).unwrap()
    }

    fn metric(report: &EvalReport, name: &str) -> f64 {
        report.metrics.iter().find(|(key, _)| key == name).map(|(_, value)| *value).unwrap()
    }

    fn separated() -> FakeContext {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (label, centre) in [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]].iter().enumerate() {
            for step in 0..5 {
                let offset = 0.1 * step as f64;
                rows.push(vec![centre[0] + offset, centre[1] - offset]);
                labels.push(label as i64);
            }
        }
        FakeContext::labelled(&rows, &labels, &rows, &labels)
    }

    #[test]
    fn kmeans_recovers_separated_classes() {
        let report = evaluator(0).evaluate(&separated()).unwrap();

        let names: Vec<&str> = report.metrics.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["nmi", "ari", "purity", "inertia"]);
        assert!((metric(&report, "nmi") - 1.0).abs() < 1e-12);
        assert!((metric(&report, "ari") - 1.0).abs() < 1e-12);
        assert_eq!(metric(&report, "purity"), 1.0);
    }

    #[test]
    fn kmeans_with_two_clusters_merges_classes() {
        let report = evaluator(2).evaluate(&separated()).unwrap();

        assert_eq!(metric(&report, "purity"), 0.5);
        assert!(metric(&report, "nmi") < 1.0);
    }

    #[test]
    fn kmeans_without_labels_reports_inertia() {
        let mut context = separated();
        context.test_labels = None;
        context.train_labels = None;

        let report = evaluator(4).evaluate(&context).unwrap();

        assert_eq!(report.metrics.len(), 1);
        assert_eq!(report.metrics[0].0, "inertia");
    }

    #[test]
    fn kmeans_needs_k_without_classes() {
        let mut context = separated();
        context.test_labels = None;
        context.train_labels = None;

        let error = evaluator(0).evaluate(&context).err().unwrap();

        assert_eq!(
            error.message(),
            "the dataset has no classes to count; set k to the number of clusters"
        );
    }
}
