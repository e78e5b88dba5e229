//! The resolved form of an experiment: every value, defaults included, as TOML and as the flat
//! dotted parameters that a run records.

use pretext_plugin_api::ffi::ParamValue;
use sha2::{Digest, Sha256};
use toml_edit::{Array, DocumentMut, Item, Table, Value};

use super::validate::{Experiment, PluginUse};

fn toml_value(value: &ParamValue) -> Value {
    match value {
        ParamValue::Bool(flag) => Value::from(*flag),
        ParamValue::Int(number) => Value::from(*number),
        ParamValue::Float(number) => Value::from(*number),
        ParamValue::Str(text) => Value::from(text.as_str()),
        ParamValue::IntList(numbers) => Value::Array(numbers.iter().copied().collect::<Array>()),
        ParamValue::FloatList(numbers) => Value::Array(numbers.iter().copied().collect::<Array>()),
        ParamValue::StrList(texts) => {
            Value::Array(texts.iter().map(|text| text.as_str()).collect::<Array>())
        }
    }
}

/// Formats a parameter value the way the resolved spec writes it.
pub fn format_value(value: &ParamValue) -> String {
    toml_value(value).to_string().trim().to_owned()
}

fn plugin_table(use_: &PluginUse) -> Table {
    let mut table = Table::new();
    table["plugin"] = Item::Value(Value::from(use_.plugin.as_str()));
    for (name, value) in &use_.params {
        table[name.as_str()] = Item::Value(toml_value(value));
    }
    table
}

fn params_table(params: &[(String, ParamValue)]) -> Table {
    let mut table = Table::new();
    for (name, value) in params {
        table[name.as_str()] = Item::Value(toml_value(value));
    }
    table
}

/// The experiment as a complete TOML spec, which runs the same experiment when given back.
pub fn resolved_toml(experiment: &Experiment) -> String {
    let mut document = DocumentMut::new();
    document["name"] = Item::Value(Value::from(experiment.name.as_str()));
    document["seed"] = Item::Value(Value::from(experiment.seed as i64));
    if !experiment.plugin_paths.is_empty() {
        let paths: Array =
            experiment.plugin_paths.iter().map(|path| path.display().to_string()).collect();
        document["plugin_paths"] = Item::Value(Value::Array(paths));
    }
    document["dataset"] = Item::Table(plugin_table(&experiment.dataset));
    document["encoder"] = Item::Table(plugin_table(&experiment.encoder));
    if let Some(objective) = &experiment.objective {
        document["objective"] = Item::Table(plugin_table(objective));
    }
    if !experiment.evaluators.is_empty() {
        let mut evaluate = Table::new();
        evaluate.set_implicit(true);
        for evaluator in &experiment.evaluators {
            evaluate[evaluator.label.as_str()] = Item::Table(plugin_table(evaluator));
        }
        document["evaluate"] = Item::Table(evaluate);
    }
    document["trainer"] = Item::Table(params_table(&experiment.trainer_params));
    document["tracking"] = Item::Table(params_table(&experiment.tracking_params));
    document.to_string()
}

/// The experiment as dotted keys and string values, such as `trainer.lr = 0.001`.
pub fn flat_params(experiment: &Experiment) -> Vec<(String, String)> {
    let mut params = vec![
        ("name".to_owned(), experiment.name.clone()),
        ("seed".to_owned(), experiment.seed.to_string()),
    ];
    let mut push_use = |prefix: &str, use_: &PluginUse| {
        params.push((format!("{prefix}.plugin"), use_.plugin.clone()));
        for (name, value) in &use_.params {
            params.push((format!("{prefix}.{name}"), format_value(value)));
        }
    };
    push_use("dataset", &experiment.dataset);
    push_use("encoder", &experiment.encoder);
    if let Some(objective) = &experiment.objective {
        push_use("objective", objective);
    }
    for evaluator in &experiment.evaluators {
        push_use(&format!("evaluate.{}", evaluator.label), evaluator);
    }
    for (name, value) in &experiment.trainer_params {
        params.push((format!("trainer.{name}"), format_value(value)));
    }
    for (name, value) in &experiment.tracking_params {
        params.push((format!("tracking.{name}"), format_value(value)));
    }
    params
}

/// SHA-256 of the resolved spec, as lowercase hex.
pub fn spec_hash(resolved: &str) -> String {
    format!("{:x}", Sha256::digest(resolved.as_bytes()))
}
