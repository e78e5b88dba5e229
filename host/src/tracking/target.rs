//! Resolution of the MLflow server a run goes to: the `[tracking]` table first, then MLflow's
//! environment variables.

use std::time::Duration;

use crate::spec::Experiment;

/// Request credentials, from `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME` and
/// `MLFLOW_TRACKING_PASSWORD`. `Debug` prints no secret.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => formatter.write_str("None"),
            Credentials::Bearer(_) => formatter.write_str("Bearer(<redacted>)"),
            Credentials::Basic { .. } => formatter.write_str("Basic(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Reads the credentials from MLflow's environment variables; a token wins over a password.
    pub fn from_env() -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        if let Some(token) = read("MLFLOW_TRACKING_TOKEN") {
            return Credentials::Bearer(token);
        }
        match (read("MLFLOW_TRACKING_USERNAME"), read("MLFLOW_TRACKING_PASSWORD")) {
            (Some(username), password) => {
                Credentials::Basic { username, password: password.unwrap_or_default() }
            }
            _ => Credentials::None,
        }
    }
}

/// An MLflow server and the experiment a run goes to.
#[derive(Debug, Clone)]
pub struct MlflowTarget {
    /// Base URI without a trailing `/`, such as `http://127.0.0.1:5000`.
    pub uri: String,
    pub experiment: String,
    pub credentials: Credentials,
    /// How long one request may keep failing before the writer gives up and keeps the spool.
    pub retry_budget: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// Checks a tracking URI: `http` or `https`, no credentials in it; returns it without the trailing
/// `/`.
pub fn check_uri(uri: &str) -> Result<String, String> {
    let trimmed = uri.trim().trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://"))
    else {
        return Err(format!(
            "tracking URI `{trimmed}` is not supported; pretext talks to MLflow servers over \
             http:// or https://"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("the tracking URI contains credentials; set MLFLOW_TRACKING_USERNAME and \
                    MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
            .to_owned());
    }
    if authority.is_empty() {
        return Err(format!("tracking URI `{trimmed}` has no host"));
    }
    Ok(trimmed.to_owned())
}

fn param<'a>(
    experiment: &'a Experiment,
    name: &str,
) -> Option<&'a pretext_plugin_api::ffi::ParamValue> {
    experiment.tracking_params.iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

fn string_param(experiment: &Experiment, name: &str) -> String {
    match param(experiment, name) {
        Some(pretext_plugin_api::ffi::ParamValue::Str(text)) => text.trim().to_owned(),
        _ => String::new(),
    }
}

fn seconds_param(experiment: &Experiment, name: &str, default: f64) -> Duration {
    let seconds = match param(experiment, name) {
        Some(pretext_plugin_api::ffi::ParamValue::Float(value)) => *value,
        Some(pretext_plugin_api::ffi::ParamValue::Int(value)) => *value as f64,
        _ => default,
    };
    Duration::from_secs_f64(seconds.max(0.0))
}

/// Resolves where the experiment's runs go besides the local store.
///
/// `backend = "local"` never uses a server; `"mlflow"` needs `uri` or `MLFLOW_TRACKING_URI`;
/// `"auto"` (the default) uses MLflow exactly when one of the two is set.
///
/// # Errors
///
/// Returns a message when `mlflow` is chosen without a URI or the URI is not usable.
pub fn resolve_target(experiment: &Experiment) -> Result<Option<MlflowTarget>, String> {
    let backend = experiment.tracking.backend.as_str();
    if backend == "local" {
        return Ok(None);
    }
    let spec_uri = string_param(experiment, "uri");
    let uri = if spec_uri.is_empty() { env_value("MLFLOW_TRACKING_URI") } else { Some(spec_uri) };
    let Some(uri) = uri else {
        if backend == "mlflow" {
            return Err("`[tracking] backend = \"mlflow\"` needs `uri` in [tracking] or the \
                        MLFLOW_TRACKING_URI environment variable"
                .to_owned());
        }
        return Ok(None);
    };
    let uri = check_uri(&uri)?;
    let spec_experiment = string_param(experiment, "experiment");
    let experiment_name = if spec_experiment.is_empty() {
        env_value("MLFLOW_EXPERIMENT_NAME").unwrap_or_else(|| experiment.name.clone())
    } else {
        spec_experiment
    };
    Ok(Some(MlflowTarget {
        uri,
        experiment: experiment_name,
        credentials: Credentials::from_env(),
        retry_budget: seconds_param(experiment, "retry_seconds", 120.0),
        request_timeout: seconds_param(experiment, "timeout_seconds", 30.0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_credentials_rejected() {
        assert!(check_uri("http://user:secret@127.0.0.1:5000").is_err());
    }

    #[test]
    fn uri_scheme_checked() {
        assert!(check_uri("file:./mlruns").is_err());
        assert_eq!(check_uri("http://127.0.0.1:5000/").unwrap(), "http://127.0.0.1:5000");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let credentials =
            Credentials::Basic { username: "alice".into(), password: "hunter2".into() };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
    }
}
