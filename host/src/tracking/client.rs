//! A blocking client for the parts of MLflow's REST API (2.x and 3.x) that pretext uses.

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::Client as HttpClient;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

use super::records::{Metric, Pair};
use super::target::{Credentials, MlflowTarget};

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// Worth retrying: no connection, a timeout, 429 or a 5xx response.
    #[error("{message}")]
    Transient {
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A 4xx response other than 429, which would fail the same way if sent again.
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
}

/// The run fields pretext needs.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub artifact_uri: String,
}

/// An MLflow server.
pub struct Client {
    http: HttpClient,
    base: String,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

fn authorization(credentials: &Credentials) -> Option<HeaderValue> {
    use base64_engine::encode;
    let text = match credentials {
        Credentials::None => return None,
        Credentials::Bearer(token) => format!("Bearer {token}"),
        Credentials::Basic { username, password } => {
            format!("Basic {}", encode(format!("{username}:{password}").as_bytes()))
        }
    };
    let mut value = HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Standard base64, enough for a Basic authorization header.
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let word = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for index in 0..4 {
                if index <= chunk.len() {
                    out.push(ALPHABET[(word >> (18 - 6 * index) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn transient(message: String) -> RequestError {
    RequestError::Transient { message, retry_after: None }
}

/// The `message` of an MLflow error body, or the body itself.
fn server_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| value.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(500).collect())
}

impl Client {
    /// Builds a client for `target`.
    ///
    /// # Errors
    ///
    /// Returns reqwest's message when the TLS backend cannot be initialised.
    pub fn new(target: &MlflowTarget) -> Result<Self, String> {
        let http = HttpClient::builder()
            .timeout(target.request_timeout)
            .connect_timeout(target.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pretext/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(Self {
            http,
            base: target.uri.clone(),
            authorization: authorization(&target.credentials),
        })
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Value, RequestError> {
        let request = match &self.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        };
        let response = request.send().map_err(|error| transient(describe(&error)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .map(|seconds| Duration::from_secs_f64(seconds.clamp(0.0, 3600.0)));
        let body = response.text().map_err(|error| transient(describe(&error)))?;
        if status.is_success() {
            if body.trim().is_empty() {
                return Ok(json!({}));
            }
            return serde_json::from_str(&body)
                .map_err(|error| transient(format!("invalid JSON from the server: {error}")));
        }
        let message = server_message(&body);
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(RequestError::Transient {
                message: format!("HTTP {}: {message}", status.as_u16()),
                retry_after,
            });
        }
        Err(RequestError::Rejected { status: status.as_u16(), message })
    }

    fn post(&self, endpoint: &str, body: &impl serde::Serialize) -> Result<Value, RequestError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let body = serde_json::to_vec(body).map_err(|error| transient(error.to_string()))?;
        self.send(
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value, RequestError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        self.send(self.http.get(url).query(query))
    }

    /// Returns the id of the experiment called `name`, creating it when missing.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn experiment_id(&self, name: &str) -> Result<String, RequestError> {
        for _ in 0..2 {
            match self.get("experiments/get-by-name", &[("experiment_name", name)]) {
                Ok(found) => {
                    if let Some(id) = found["experiment"]["experiment_id"].as_str() {
                        return Ok(id.to_owned());
                    }
                }
                Err(RequestError::Rejected { status: 404, .. }) => {}
                Err(error) => return Err(error),
            }
            match self.post("experiments/create", &json!({ "name": name })) {
                Ok(created) => {
                    if let Some(id) = created["experiment_id"].as_str() {
                        return Ok(id.to_owned());
                    }
                }
                // Another client created it first: look it up again.
                Err(RequestError::Rejected { message, .. })
                    if message.contains("already exists") => {}
                Err(error) => return Err(error),
            }
        }
        Err(RequestError::Rejected {
            status: 0,
            message: format!("experiment `{name}` could be neither found nor created"),
        })
    }

    /// Returns the run of `experiment_id` tagged `pretext.run_id = local_run_id`, if any.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn find_run(
        &self,
        experiment_id: &str,
        local_run_id: &str,
    ) -> Result<Option<RunInfo>, RequestError> {
        let filter = format!("tags.`pretext.run_id` = '{local_run_id}'");
        let found = self.post(
            "runs/search",
            &json!({ "experiment_ids": [experiment_id], "filter": filter, "max_results": 1 }),
        )?;
        Ok(found["runs"].as_array().and_then(|runs| runs.first()).map(|run| run_info(&run["info"])))
    }

    /// Returns the raw `runs/search` response for the runs of `experiment_id` matching `filter`
    /// (empty for all), up to 1000 runs.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn search_runs(&self, experiment_id: &str, filter: &str) -> Result<Value, RequestError> {
        self.post(
            "runs/search",
            &json!({ "experiment_ids": [experiment_id], "filter": filter, "max_results": 1000 }),
        )
    }

    /// Creates a run with its start time and tags.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[Pair],
    ) -> Result<RunInfo, RequestError> {
        let created = self.post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": start_time,
                "tags": tags,
            }),
        )?;
        Ok(run_info(&created["run"]["info"]))
    }

    /// Sends metrics, params and tags in one `runs/log-batch` request.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Pair],
        tags: &[Pair],
    ) -> Result<(), RequestError> {
        /// The request body, serialized straight from the batch's entries.
        #[derive(serde::Serialize)]
        struct LogBatch<'a> {
            run_id: &'a str,
            metrics: &'a [Metric],
            params: &'a [Pair],
            tags: &'a [Pair],
        }
        self.post("runs/log-batch", &LogBatch { run_id, metrics, params, tags }).map(drop)
    }

    /// Sets a run's status back to RUNNING, as when a run resumes.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn set_running(&self, run_id: &str) -> Result<(), RequestError> {
        self.post("runs/update", &json!({ "run_id": run_id, "status": "RUNNING" })).map(drop)
    }

    /// Sets a run's status and end time.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: i64,
    ) -> Result<(), RequestError> {
        self.post(
            "runs/update",
            &json!({ "run_id": run_id, "status": status, "end_time": end_time }),
        )
        .map(drop)
    }

    /// Uploads a file through the server's `mlflow-artifacts` API.
    ///
    /// # Errors
    ///
    /// Returns [`RequestError::Rejected`] when the run's artifacts are not served by the server
    /// (an artifact URI other than `mlflow-artifacts:`), and the request's error otherwise.
    pub fn upload_artifact(
        &self,
        artifact_uri: &str,
        artifact_path: &str,
        file: &Path,
    ) -> Result<(), RequestError> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Err(RequestError::Rejected {
                status: 0,
                message: format!(
                    "the server stores this run's artifacts at `{artifact_uri}`, which it does not \
                     serve; start it with `--serve-artifacts` (the default since MLflow 2.0)"
                ),
            });
        };
        // `mlflow-artifacts://host:port/path` names a host; `mlflow-artifacts:/path` does not.
        let root = match root.strip_prefix("//") {
            Some(rest) => rest.find('/').map_or("", |slash| &rest[slash..]),
            None => root,
        };
        let mut url =
            reqwest::Url::parse(&format!("{}/api/2.0/mlflow-artifacts/artifacts", self.base))
                .map_err(|error| transient(error.to_string()))?;
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                transient(format!("tracking URI `{}` cannot take a path", self.base))
            })?;
            for segment in root.split('/').chain(artifact_path.split('/')) {
                if !segment.is_empty() {
                    segments.push(segment);
                }
            }
        }
        let file_handle = std::fs::File::open(file).map_err(|error| RequestError::Rejected {
            status: 0,
            message: format!("cannot read {}: {error}", file.display()),
        })?;
        self.send(self.http.put(url).body(file_handle)).map(drop)
    }

    /// Returns `runs/get` for a run, as JSON.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn get_run(&self, run_id: &str) -> Result<Value, RequestError> {
        self.get("runs/get", &[("run_id", run_id)])
    }

    /// Returns every point of one metric of a run.
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>, RequestError> {
        let mut points = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("run_id", run_id), ("metric_key", key), ("max_results", "25000")];
            if !token.is_empty() {
                query.push(("page_token", token.as_str()));
            }
            let page = self.get("metrics/get-history", &query)?;
            if let Some(metrics) = page["metrics"].as_array() {
                for metric in metrics {
                    points.push(
                        serde_json::from_value(metric.clone())
                            .map_err(|error| transient(format!("invalid metric: {error}")))?,
                    );
                }
            }
            match page["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_owned(),
                _ => return Ok(points),
            }
        }
    }

    /// Lists the artifact paths of a run under `path` (empty for the root).
    ///
    /// # Errors
    ///
    /// Returns the request's error.
    pub fn list_artifacts(
        &self,
        run_id: &str,
        path: &str,
    ) -> Result<Vec<(String, bool)>, RequestError> {
        let listing = self.get("artifacts/list", &[("run_id", run_id), ("path", path)])?;
        Ok(listing["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .map(|file| {
                        (
                            file["path"].as_str().unwrap_or_default().to_owned(),
                            file["is_dir"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn run_info(info: &Value) -> RunInfo {
    RunInfo {
        run_id: info["run_id"].as_str().unwrap_or_default().to_owned(),
        artifact_uri: info["artifact_uri"].as_str().unwrap_or_default().to_owned(),
    }
}

/// reqwest's error with its causes, which name the refused connection or the timeout.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_is_base64() {
        assert_eq!(base64_engine::encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_engine::encode(b"a"), "YQ==");
        assert_eq!(base64_engine::encode(b"ab"), "YWI=");
    }
}
