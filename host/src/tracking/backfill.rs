//! The records of a spooled run that its local store contains but its MLflow side lacks.
//!
//! The local store is written synchronously, and the writer spools only what it has received
//! from its channel. A SIGKILL therefore loses the records still in the channel (up to one 200 ms
//! batch) from the spool, while the local store keeps them. Before a spooled run's end is sent,
//! by `pretext sync` or by the marking of stale runs, [`missing_records`] finds every local metric
//! point, param, tag and artifact that neither the spool nor the server contains.

use std::collections::{HashMap, HashSet};

use super::client::Client;
use super::records::{BatchBuilder, Metric, Pair, Record};
use super::run_artifacts;
use super::spool::{read_records, read_state};
use super::target::MlflowTarget;
use crate::store::{MetricPoint, RunRow, Store, StoreError};

/// A metric point as compared: key, step, timestamp and value bits (see [`value_bits`]).
type PointKey = (String, i64, i64, u64);

/// Maps a value to the bits it is compared by. NaN has many bit patterns but one JSON form
/// (`"NaN"`). MLflow's SQL store (3.17.2) keeps `+inf` and `-inf` as the largest and smallest
/// double. `-0.0` is compared as `0.0`.
fn value_bits(value: f64) -> u64 {
    if value.is_nan() {
        f64::NAN.to_bits()
    } else if value == f64::INFINITY {
        f64::MAX.to_bits()
    } else if value == f64::NEG_INFINITY {
        f64::MIN.to_bits()
    } else if value == 0.0 {
        0.0f64.to_bits()
    } else {
        value.to_bits()
    }
}

fn point_key(metric: &Metric) -> PointKey {
    (metric.key.clone(), metric.step, metric.timestamp, value_bits(metric.value))
}

/// The contents of a spool, plus the metric points the server already has.
#[derive(Debug, Default)]
struct Delivered {
    points: HashSet<PointKey>,
    params: HashSet<String>,
    tags: HashSet<(String, String)>,
    artifacts: HashSet<String>,
    has_end: bool,
}

impl Delivered {
    fn from_spool(records: &[Record]) -> Self {
        let mut delivered = Self::default();
        for record in records {
            match record {
                Record::Batch { metrics, params, tags } => {
                    delivered.points.extend(metrics.iter().map(point_key));
                    delivered.params.extend(params.iter().map(|param| param.key.clone()));
                    delivered
                        .tags
                        .extend(tags.iter().map(|tag| (tag.key.clone(), tag.value.clone())));
                }
                Record::Artifact { path, .. } => {
                    delivered.artifacts.insert(path.clone());
                }
                Record::End { .. } => delivered.has_end = true,
                Record::Start { .. } => {}
            }
        }
        delivered
    }
}

/// The records to queue before a spooled run's end.
#[derive(Debug)]
pub enum Backfill {
    /// The records the spool and the server lack (possibly none).
    Ready {
        records: Vec<Record>,
        /// Metric points among `records`.
        points: usize,
        /// Whether the spool already contains an end record.
        has_end: bool,
    },
    /// The run exists on the server but its metric history could not be read, so nothing is
    /// queued now; a later `pretext sync` compares again.
    Deferred(String),
}

/// Returns the points of `local` that `delivered` lacks.
///
/// A point counts as delivered when a delivered point has the same key, step, timestamp and
/// value. A resumed run records the steps after its checkpoint again with new timestamps, and
/// the points of those steps that were delivered before the resume match no local point
/// exactly. Each such left-over delivered point also stands for one local point with the same
/// key, step and value, so that the resumed steps are not sent a second time.
fn missing_points(local: Vec<MetricPoint>, delivered: &HashSet<PointKey>) -> Vec<MetricPoint> {
    let mut matched = HashSet::new();
    let mut missing = Vec::new();
    for point in local {
        let metric = Metric::from(&point);
        let key = point_key(&metric);
        if delivered.contains(&key) {
            matched.insert(key);
        } else {
            missing.push(point);
        }
    }
    if missing.is_empty() {
        return missing;
    }

    let mut left_over: HashMap<(String, i64, u64), usize> = HashMap::new();
    for (key, step, _, bits) in delivered.difference(&matched) {
        *left_over.entry((key.clone(), *step, *bits)).or_default() += 1;
    }
    missing.retain(|point| {
        let key = (point.key.clone(), point.step as i64, value_bits(point.value));
        match left_over.get_mut(&key) {
            Some(count) if *count > 0 => {
                *count -= 1;
                false
            }
            _ => true,
        }
    });
    missing
}

/// Adds the server's metric history of `keys` to `delivered`.
fn add_server_history(
    delivered: &mut Delivered,
    target: &MlflowTarget,
    remote_run_id: &str,
    keys: &HashSet<String>,
) -> Result<(), String> {
    let client = Client::new(target)?;
    for key in keys {
        let history = client
            .metric_history(remote_run_id, key)
            .map_err(|error| format!("cannot read the history of `{key}`: {error}"))?;
        delivered.points.extend(history.iter().map(point_key));
    }
    Ok(())
}

/// Counts, per metric key and step, the distinct points of `keys` that the run's spool contains
/// or the server's MLflow run already has: what a resumed run must not send again.
///
/// # Errors
///
/// Returns a message when the spool or the server's history cannot be read.
pub fn sent_steps(
    run_dir: &std::path::Path,
    target: &MlflowTarget,
    keys: &HashSet<String>,
) -> Result<HashMap<(String, u64), usize>, String> {
    let spooled =
        read_records(run_dir).map_err(|error| format!("cannot read the spool: {error}"))?;
    let mut delivered = Delivered::from_spool(&spooled);
    if let Some(state) = read_state(run_dir).filter(|state| state.uri == target.uri) {
        // A key that only the spool still names has points on the server too.
        let mut keys = keys.clone();
        keys.extend(delivered.points.iter().map(|(key, ..)| key.clone()));
        add_server_history(&mut delivered, target, &state.run_id, &keys)?;
    }
    let mut counts = HashMap::new();
    for (key, step, _, _) in delivered.points {
        if let Ok(step) = u64::try_from(step) {
            *counts.entry((key, step)).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Finds the local metric points, params, tags and artifacts of a spooled run that neither its
/// spool nor, when the run exists there, the server's metric history contains. Params are
/// compared by key, tags by key and value, artifacts by path.
///
/// # Errors
///
/// Returns the store's error. A spool or server that cannot be read defers the comparison
/// instead.
pub fn missing_records(
    store: &Store,
    run: &RunRow,
    target: &MlflowTarget,
) -> Result<Backfill, StoreError> {
    let spooled = match read_records(&run.dir) {
        Ok(records) => records,
        Err(error) => return Ok(Backfill::Deferred(format!("cannot read the spool: {error}"))),
    };
    let mut delivered = Delivered::from_spool(&spooled);
    let local_points = store.metrics(&run.id)?;
    let remote = read_state(&run.dir).filter(|state| state.uri == target.uri);
    if let Some(state) = remote {
        let keys: HashSet<String> = local_points.iter().map(|point| point.key.clone()).collect();
        if let Err(message) = add_server_history(&mut delivered, target, &state.run_id, &keys) {
            return Ok(Backfill::Deferred(message));
        }
    }

    let mut builder = BatchBuilder::default();
    for (key, value) in store.params(&run.id)? {
        if !delivered.params.contains(&key) {
            builder.param(Pair { key, value });
        }
    }
    for (key, value) in store.tags(&run.id)? {
        if !delivered.tags.contains(&(key.clone(), value.clone())) {
            builder.tag(Pair { key, value });
        }
    }
    let points = missing_points(local_points, &delivered.points);
    for point in &points {
        builder.metric(Metric::from(point));
    }
    for (file, path) in run_artifacts(&run.dir) {
        if !delivered.artifacts.contains(&path) {
            let file = file.strip_prefix(&run.dir).unwrap_or(&file).display().to_string();
            builder.other(Record::Artifact { file, path });
        }
    }
    Ok(Backfill::Ready {
        records: builder.finish(),
        points: points.len(),
        has_end: delivered.has_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(key: &str, step: u64, timestamp: i64, value: f64) -> MetricPoint {
        MetricPoint { key: key.to_owned(), value, step, timestamp }
    }

    fn delivered(points: &[MetricPoint]) -> HashSet<PointKey> {
        points.iter().map(|point| point_key(&Metric::from(point))).collect()
    }

    #[test]
    fn missing_points_compare_exactly() {
        let sent = [point("loss", 1, 10, 0.5), point("loss", 2, 20, 0.25)];
        let local = vec![
            point("loss", 1, 10, 0.5),
            point("loss", 2, 20, 0.25),
            point("loss", 3, 30, 0.125),
            point("loss", 2, 21, 0.25),
        ];
        let missing = missing_points(local, &delivered(&sent));
        assert_eq!(missing, vec![point("loss", 3, 30, 0.125), point("loss", 2, 21, 0.25)]);
    }

    #[test]
    fn resumed_steps_match_earlier_points() {
        // Steps 2 and 3 were delivered, then the run resumed from step 1 and recorded them again.
        let sent =
            [point("loss", 1, 10, 0.5), point("loss", 2, 20, 0.25), point("loss", 3, 30, 0.1)];
        let local = vec![
            point("loss", 1, 10, 0.5),
            point("loss", 2, 50, 0.25),
            point("loss", 3, 60, 0.1),
            point("loss", 4, 70, 0.05),
        ];
        let missing = missing_points(local, &delivered(&sent));
        assert_eq!(missing, vec![point("loss", 4, 70, 0.05)]);
    }

    #[test]
    fn non_finite_values_compare_as_stored() {
        let sent = [point("m", 1, 10, f64::MAX), point("m", 2, 20, f64::NAN)];
        let local = vec![point("m", 1, 10, f64::INFINITY), point("m", 2, 20, -f64::NAN)];
        assert!(missing_points(local, &delivered(&sent)).is_empty());
    }
}
