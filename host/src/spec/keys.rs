//! The key rule shared with MLflow: letters, digits, `_`, `-`, `.`, `/` and space, at most 250
//! characters, and no `..`; and MLflow's limit on parameter values. Checked before training so
//! that any run can later be sent to an MLflow server.

use super::diagnostic::{SpecError, SpecErrors};
use super::resolve::flat_params;
use super::validate::Experiment;

/// The maximum length of a parameter or metric key.
pub const MAX_KEY_LENGTH: usize = 250;

/// The maximum length of a parameter value: MLflow's `MAX_PARAM_VAL_LENGTH` (6000 since 2.x);
/// the server rejects longer values, so they are rejected before training, never truncated.
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;

/// Checks one key; the error says which rule it breaks.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".to_owned());
    }
    if key.chars().count() > MAX_KEY_LENGTH {
        return Err(format!("key `{key}` is longer than {MAX_KEY_LENGTH} characters"));
    }
    if let Some(bad) =
        key.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' ')))
    {
        return Err(format!(
            "key `{key}` contains `{bad}`; keys may contain only letters, digits, `_`, `-`, `.`, \
             `/` and spaces"
        ));
    }
    if key.contains("..") {
        return Err(format!("key `{key}` contains `..`"));
    }
    if key.starts_with('/') {
        return Err(format!("key `{key}` starts with `/`"));
    }
    Ok(())
}

/// Checks a parameter value against MLflow's length limit.
pub fn check_param_value(key: &str, value: &str) -> Result<(), String> {
    let length = value.chars().count();
    if length > MAX_PARAM_VALUE_LENGTH {
        return Err(format!(
            "parameter `{key}` has a value of {length} characters; MLflow accepts at most \
             {MAX_PARAM_VALUE_LENGTH}"
        ));
    }
    Ok(())
}

/// Checks every parameter key and value of an experiment and the metric prefix of every
/// evaluator.
pub fn check_experiment_keys(experiment: &Experiment) -> Result<(), SpecErrors> {
    let mut errors = Vec::new();
    for (key, value) in flat_params(experiment) {
        if let Err(message) = check_key(&key) {
            errors.push(SpecError::new(None, format!("invalid parameter key: {message}")));
        }
        if let Err(message) = check_param_value(&key, &value) {
            errors.push(SpecError::new(None, message));
        }
    }
    for evaluator in &experiment.evaluators {
        if let Err(message) = check_key(&format!("{}/x", evaluator.label)) {
            errors.push(SpecError::new(
                None,
                format!(
                    "evaluator name `{}` cannot prefix metric keys: {message}",
                    evaluator.label
                ),
            ));
        }
    }
    if let Some(metric) = &experiment.trainer.best_metric {
        let label = metric.split('/').next().unwrap_or_default();
        if !metric.contains('/')
            || !experiment.evaluators.iter().any(|evaluator| evaluator.label == label)
        {
            let labels: Vec<&str> =
                experiment.evaluators.iter().map(|evaluator| evaluator.label.as_str()).collect();
            errors.push(SpecError::new(
                None,
                format!(
                    "`trainer.best_metric = \"{metric}\"` names no evaluator of this spec; use \
                     EVALUATOR/METRIC with one of: {}",
                    if labels.is_empty() { "(none)".to_owned() } else { labels.join(", ") }
                ),
            ));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(SpecErrors(errors)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys_accepted() {
        for key in ["linear_probe/accuracy", "train/loss", "encoder.hidden", "a b-c_d.e"] {
            assert!(check_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn invalid_keys_rejected() {
        for key in ["", "a..b", "/abs", "semi;colon", "tab\tkey", &"k".repeat(251)] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn param_value_length_limit() {
        assert!(check_param_value("k", &"v".repeat(6000)).is_ok());
        let error = check_param_value("encoder.note", &"v".repeat(6001)).unwrap_err();
        assert!(error.contains("`encoder.note`"), "{error}");
    }

    #[test]
    fn key_at_length_limit_accepted() {
        assert!(check_key(&"k".repeat(250)).is_ok());
    }
}
