//! The sweep as an MLflow parent run: when the swept spec tracks to an MLflow server, the sweep
//! creates one run there, and every trial's run carries `mlflow.parentRunId` pointing at it, so
//! the MLflow UI shows the trials nested under the sweep.

use crate::plugins::Registry;
use crate::store::now_millis;
use crate::tracking::client::Client;
use crate::tracking::records::{Metric, Pair};
use crate::tracking::resolve_target;

use super::journal::Journal;
use super::plan::SweepPlan;

/// The variable through which a trial process learns its parent run.
pub const PARENT_RUN_VARIABLE: &str = "PRETEXT_MLFLOW_PARENT_RUN_ID";

/// Journal metadata key of the parent run's MLflow id, kept so that a resumed sweep reuses it.
const PARENT_KEY: &str = "mlflow_parent_run_id";

/// The sweep's run on an MLflow server.
pub struct ParentRun {
    client: Client,
    pub run_id: String,
}

/// Creates the parent run, or finds the one a previous start of this sweep created; `None` when
/// the spec does not track to MLflow.
///
/// # Errors
///
/// Returns a message when the server cannot be reached or rejects the run.
pub fn start(
    plan: &SweepPlan,
    journal: &Journal,
    registry: &mut Registry,
    sweep_name: &str,
) -> Result<Option<ParentRun>, String> {
    let experiment = crate::spec::load(&plan.spec, &plan.fixed, registry)
        .map_err(|errors| format!("the swept spec no longer validates:\n{errors}"))?;
    let Some(target) = resolve_target(&experiment)? else {
        return Ok(None);
    };
    let client = Client::new(&target)?;
    if let Some(run_id) = journal.meta(PARENT_KEY).map_err(|error| error.to_string())? {
        return Ok(Some(ParentRun { client, run_id }));
    }
    let experiment_id =
        client.experiment_id(&target.experiment).map_err(|error| error.to_string())?;
    let tags = vec![
        Pair { key: "mlflow.runName".into(), value: sweep_name.to_owned() },
        Pair { key: "pretext.sweep".into(), value: sweep_name.to_owned() },
        Pair { key: "pretext.sweep.metric".into(), value: plan.metric().to_owned() },
    ];
    let run = client
        .create_run(&experiment_id, sweep_name, now_millis(), &tags)
        .map_err(|error| format!("cannot create the sweep's MLflow run: {error}"))?;
    journal.set_meta(PARENT_KEY, &run.run_id).map_err(|error| error.to_string())?;
    tracing::info!(run = %run.run_id, "created the sweep's MLflow parent run");
    Ok(Some(ParentRun { client, run_id: run.run_id }))
}

impl ParentRun {
    /// Records the best target value and marks the parent run FINISHED, or KILLED when the sweep
    /// was interrupted.
    pub fn finish(&self, metric: &str, best: Option<f64>, interrupted: bool) {
        if let Some(value) = best {
            let point =
                Metric { key: format!("best/{metric}"), value, timestamp: now_millis(), step: 0 };
            if let Err(error) = self.client.log_batch(&self.run_id, &[point], &[], &[]) {
                tracing::warn!(run = %self.run_id, "cannot record the sweep's best value: {error}");
            }
        }
        let status = if interrupted { "KILLED" } else { "FINISHED" };
        if let Err(error) = self.client.update_run(&self.run_id, status, now_millis()) {
            tracing::warn!(run = %self.run_id, "cannot end the sweep's MLflow run: {error}");
        }
    }
}
