//! The requests the MLflow writer sends, in the form it spools them, and MLflow's batch limits.

use serde::{Deserialize, Serialize};

use crate::store::MetricPoint;

/// Maximum metrics in one `runs/log-batch` request (MLflow's `MAX_METRICS_PER_BATCH`).
pub const MAX_METRICS: usize = 1000;
/// Maximum params in one request.
pub const MAX_PARAMS: usize = 100;
/// Maximum tags in one request.
pub const MAX_TAGS: usize = 100;
/// Maximum metrics, params and tags together in one request.
pub const MAX_ITEMS: usize = 1000;
/// Maximum request body in bytes; MLflow rejects larger log-batch requests.
pub const MAX_BYTES: usize = 1_000_000;
/// Room left in each request for the envelope (`run_id` and brackets).
const ENVELOPE_BYTES: usize = 200;

/// A key and a value, as MLflow's params and tags are written in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub key: String,
    pub value: String,
}

/// One metric point as `runs/log-batch` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    #[serde(with = "mlflow_float")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

impl From<&MetricPoint> for Metric {
    fn from(point: &MetricPoint) -> Self {
        Metric {
            key: point.key.clone(),
            value: point.value,
            timestamp: point.timestamp,
            step: point.step as i64,
        }
    }
}

/// Non-finite doubles as MLflow's protobuf JSON writes them: the strings `NaN`, `Infinity` and
/// `-Infinity`. A bare `NaN` literal is not valid JSON and the server misreads it.
pub mod mlflow_float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if *value == f64::INFINITY {
            serializer.serialize_str("Infinity")
        } else if *value == f64::NEG_INFINITY {
            serializer.serialize_str("-Infinity")
        } else {
            serializer.serialize_f64(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Float {
            Number(f64),
            Text(String),
        }
        match Float::deserialize(deserializer)? {
            Float::Number(value) => Ok(value),
            Float::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => other.parse().map_err(serde::de::Error::custom),
            },
        }
    }
}

/// One spooled request. Each becomes one HTTP request, except that consecutive batches may be
/// merged when they fit the limits together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Finds or creates the experiment, then finds (by the `pretext.run_id` tag) or creates the run.
    Start {
        uri: String,
        experiment: String,
        run_name: String,
        local_run_id: String,
        start_time: i64,
        tags: Vec<Pair>,
    },
    Batch {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        metrics: Vec<Metric>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<Pair>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<Pair>,
    },
    /// Uploads `file` (relative to the run folder) to the artifact path `path`.
    Artifact { file: String, path: String },
    /// Sets the final status and end time.
    End { status: String, end_time: i64 },
}

/// Serialized size of one JSON entry plus its separating comma.
fn entry_bytes<T: Serialize>(entry: &T) -> usize {
    serde_json::to_string(entry).map_or(0, |text| text.len()) + 1
}

/// Fills `runs/log-batch` requests within MLflow's limits.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    metrics: Vec<Metric>,
    params: Vec<Pair>,
    tags: Vec<Pair>,
    bytes: usize,
    done: Vec<Record>,
}

impl BatchBuilder {
    fn fits(&self, metrics: usize, params: usize, tags: usize, bytes: usize) -> bool {
        self.metrics.len() + metrics <= MAX_METRICS
            && self.params.len() + params <= MAX_PARAMS
            && self.tags.len() + tags <= MAX_TAGS
            && self.metrics.len() + self.params.len() + self.tags.len() + metrics + params + tags
                <= MAX_ITEMS
            && self.bytes + bytes + ENVELOPE_BYTES <= MAX_BYTES
    }

    fn cut(&mut self) {
        if self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty() {
            return;
        }
        self.done.push(Record::Batch {
            metrics: std::mem::take(&mut self.metrics),
            params: std::mem::take(&mut self.params),
            tags: std::mem::take(&mut self.tags),
        });
        self.bytes = 0;
    }

    pub fn metric(&mut self, metric: Metric) {
        let bytes = entry_bytes(&metric);
        if !self.fits(1, 0, 0, bytes) {
            self.cut();
        }
        self.bytes += bytes;
        self.metrics.push(metric);
    }

    pub fn param(&mut self, param: Pair) {
        let bytes = entry_bytes(&param);
        if !self.fits(0, 1, 0, bytes) {
            self.cut();
        }
        self.bytes += bytes;
        self.params.push(param);
    }

    pub fn tag(&mut self, tag: Pair) {
        let bytes = entry_bytes(&tag);
        if !self.fits(0, 0, 1, bytes) {
            self.cut();
        }
        self.bytes += bytes;
        self.tags.push(tag);
    }

    /// Appends a record that is not a batch, after the batch being filled.
    pub fn other(&mut self, record: Record) {
        self.cut();
        self.done.push(record);
    }

    /// Returns every record, the partly filled batch last.
    pub fn finish(mut self) -> Vec<Record> {
        self.cut();
        self.done
    }

    /// Merges consecutive batch records while they fit together; returns the merged record and
    /// how many of `records` it covers.
    pub fn merge(records: &[&Record]) -> (Record, usize) {
        let mut builder = BatchBuilder::default();
        let mut used = 0;
        for record in records {
            let Record::Batch { metrics, params, tags } = record else {
                break;
            };
            let bytes: usize = metrics.iter().map(entry_bytes).sum::<usize>()
                + params.iter().map(entry_bytes).sum::<usize>()
                + tags.iter().map(entry_bytes).sum::<usize>();
            if used > 0 && !builder.fits(metrics.len(), params.len(), tags.len(), bytes) {
                break;
            }
            builder.metrics.extend(metrics.iter().cloned());
            builder.params.extend(params.iter().cloned());
            builder.tags.extend(tags.iter().cloned());
            builder.bytes += bytes;
            used += 1;
        }
        if used == 0 {
            return (records[0].clone(), 1);
        }
        let merged = builder.finish().pop().expect("at least one batch was added");
        (merged, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(record: &Record) -> (usize, usize, usize) {
        match record {
            Record::Batch { metrics, params, tags } => (metrics.len(), params.len(), tags.len()),
            _ => panic!("not a batch"),
        }
    }

    #[test]
    fn batches_respect_every_limit() {
        let mut builder = BatchBuilder::default();
        for index in 0..250 {
            builder.param(Pair { key: format!("p{index}"), value: "v".into() });
        }
        for index in 0..1500 {
            builder.metric(Metric { key: format!("m{index}"), value: 1.0, timestamp: 0, step: 0 });
        }
        let records = builder.finish();
        let mut total = (0, 0);
        for record in &records {
            let (metrics, params, tags) = counts(record);
            assert!(metrics <= MAX_METRICS);
            assert!(params <= MAX_PARAMS);
            assert!(tags <= MAX_TAGS);
            assert!(metrics + params + tags <= MAX_ITEMS);
            assert!(serde_json::to_string(record).unwrap().len() < MAX_BYTES);
            total.0 += metrics;
            total.1 += params;
        }
        assert_eq!(total, (1500, 250));
    }

    #[test]
    fn batches_respect_byte_limit() {
        let mut builder = BatchBuilder::default();
        for index in 0..400 {
            builder.tag(Pair { key: format!("t{index}"), value: "x".repeat(5000) });
        }
        for record in builder.finish() {
            assert!(serde_json::to_string(&record).unwrap().len() + ENVELOPE_BYTES <= MAX_BYTES);
        }
    }

    #[test]
    fn non_finite_values_use_mlflow_strings() {
        let metric = Metric { key: "m".into(), value: f64::NAN, timestamp: 1, step: 2 };
        let text = serde_json::to_string(&metric).unwrap();
        assert!(text.contains("\"value\":\"NaN\""), "{text}");
        let back: Metric = serde_json::from_str(&text.replace("\"NaN\"", "\"-Infinity\"")).unwrap();
        assert_eq!(back.value, f64::NEG_INFINITY);
    }

    #[test]
    fn merge_stops_at_limits() {
        let batch = |count: usize| Record::Batch {
            metrics: (0..count)
                .map(|step| Metric { key: "m".into(), value: 0.0, timestamp: 0, step: step as i64 })
                .collect(),
            params: Vec::new(),
            tags: Vec::new(),
        };
        let records = [batch(600), batch(300), batch(200)];
        let references: Vec<&Record> = records.iter().collect();
        let (merged, used) = BatchBuilder::merge(&references);
        assert_eq!(used, 2);
        assert_eq!(counts(&merged).0, 900);
    }
}
