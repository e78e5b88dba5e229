//! Phase two of reading a spec: the raw tree, checked against the host's and the plugins'
//! schemas, becomes an [`Experiment`]. Nothing is read from any dataset here.

use std::path::{Path, PathBuf};

use abi_stable::std_types::RString;
use pretext_plugin_api::ffi::{ParamSpec, ParamType, ParamValue, PluginKind};

use std::sync::Arc;

use super::diagnostic::{Location, SourceFile, SpecError, SpecErrors, closest};
use super::raw::{Entry, Node, NodeValue, Table};
use super::schema::{tracking_schema, trainer_schema};
use crate::plugins::Registry;

/// A plugin chosen by the spec, with its checked parameters (defaults filled in).
#[derive(Debug, Clone)]
pub struct PluginUse {
    /// The spec table's name: the kind for dataset, encoder and objective, the key for an evaluator.
    pub label: String,
    pub plugin: String,
    pub params: Vec<(String, ParamValue)>,
}

/// Where a run should execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(Option<usize>),
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(None) => f.write_str("cuda"),
            DeviceRequest::Cuda(Some(index)) => write!(f, "cuda:{index}"),
        }
    }
}

/// The optimizer algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

/// The `[trainer]` table.
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    pub epochs: u64,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Maximum global gradient norm; `None` disables clipping.
    pub grad_clip: Option<f64>,
    /// Evaluate every this many epochs; 0 evaluates only at the end.
    pub eval_every: u64,
    pub log_every: u64,
    pub device: DeviceRequest,
    pub shuffle: bool,
    pub drop_last: bool,
    /// libtorch intra-op threads; 0 keeps libtorch's default.
    pub threads: usize,
    /// Skip a batch whose loss is not finite instead of failing the run.
    pub skip_non_finite: bool,
    /// Batches read ahead on a background thread; 0 reads inline.
    pub prefetch: usize,
    /// Checkpoint every this many steps (and at each epoch end); 0 checkpoints only at the end.
    pub checkpoint_every: u64,
    /// Periodic checkpoints kept.
    pub keep_checkpoints: usize,
    /// Metric whose best value selects `checkpoints/best`, and whether larger is better.
    pub best_metric: Option<String>,
    pub best_is_max: bool,
}

/// The `[tracking]` table.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    pub backend: String,
}

/// A validated experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub spec_path: PathBuf,
    pub seed: u64,
    pub plugin_paths: Vec<PathBuf>,
    pub dataset: PluginUse,
    pub encoder: PluginUse,
    pub objective: Option<PluginUse>,
    pub evaluators: Vec<PluginUse>,
    pub trainer: TrainerConfig,
    pub trainer_params: Vec<(String, ParamValue)>,
    pub tracking: TrackingConfig,
    pub tracking_params: Vec<(String, ParamValue)>,
}

/// Top-level keys; `sweep` is checked by `crate::sweep`, not here.
const TOP_KEYS: [&str; 10] = [
    "name",
    "seed",
    "plugin_paths",
    "dataset",
    "encoder",
    "objective",
    "evaluate",
    "trainer",
    "tracking",
    "sweep",
];

/// Reads `plugin_paths` before the plugins are loaded; relative paths are taken from the spec's
/// folder.
pub fn plugin_paths(root: &Table, spec_dir: &Path) -> Result<Vec<PathBuf>, SpecErrors> {
    let Some(entry) = root.get("plugin_paths") else {
        return Ok(Vec::new());
    };
    let NodeValue::Array(items) = &entry.node.value else {
        return Err(type_error(&entry.node, "an array of strings").into());
    };
    let mut paths = Vec::new();
    for item in items {
        match &item.value {
            NodeValue::Str(path) => paths.push(spec_dir.join(path)),
            _ => return Err(type_error(item, "a string").into()),
        }
    }
    Ok(paths)
}

/// Checks the whole spec and returns the experiment, or every error found.
pub fn validate(
    root: &Table,
    source: &Arc<SourceFile>,
    registry: &Registry,
) -> Result<Experiment, SpecErrors> {
    let mut errors = Vec::new();
    let spec_path = source.path.as_path();
    let root_location = Location::file(source, 0..0);
    check_unknown_keys(root, &TOP_KEYS, "the top level of the spec", &mut errors);

    let name = match root.get("name") {
        Some(entry) => match &entry.node.value {
            NodeValue::Str(name) if !name.trim().is_empty() => name.clone(),
            _ => {
                errors.push(type_error(&entry.node, "a non-empty string"));
                String::new()
            }
        },
        None => spec_path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let seed = match root.get("seed") {
        Some(entry) => match &entry.node.value {
            NodeValue::Int(seed) if *seed >= 0 => *seed as u64,
            NodeValue::Int(seed) => {
                errors.push(SpecError::new(
                    Some(&entry.node.location),
                    format!("seed must be >= 0, found {seed}"),
                ));
                0
            }
            _ => {
                errors.push(type_error(&entry.node, "a non-negative integer"));
                0
            }
        },
        None => 0,
    };
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let plugin_paths = plugin_paths(root, spec_dir).unwrap_or_else(|error| {
        errors.extend(error.0);
        Vec::new()
    });

    let dataset = plugin_table(
        root,
        "dataset",
        PluginKind::Dataset,
        true,
        registry,
        &root_location,
        &mut errors,
    );
    let encoder = plugin_table(
        root,
        "encoder",
        PluginKind::Encoder,
        true,
        registry,
        &root_location,
        &mut errors,
    );
    let objective = plugin_table(
        root,
        "objective",
        PluginKind::Objective,
        false,
        registry,
        &root_location,
        &mut errors,
    );
    let evaluators = evaluator_tables(root, registry, &mut errors);

    let empty = Table::default();
    let trainer_table = sub_table(root, "trainer", &mut errors).unwrap_or(&empty);
    let trainer_params = check_params(
        trainer_table,
        &trainer_schema(),
        &[],
        "[trainer]",
        trainer_location(root, &root_location),
        &mut errors,
    );
    let trainer = trainer_config(&trainer_params, trainer_table, &mut errors);
    let tracking_table = sub_table(root, "tracking", &mut errors).unwrap_or(&empty);
    let tracking_params = check_params(
        tracking_table,
        &tracking_schema(),
        &[],
        "[tracking]",
        &root_location,
        &mut errors,
    );
    let backend = string_param(&tracking_params, "backend");

    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    Ok(Experiment {
        name,
        spec_path: spec_path.to_path_buf(),
        seed,
        plugin_paths,
        dataset: dataset.expect("no errors means the dataset was found"),
        encoder: encoder.expect("no errors means the encoder was found"),
        objective,
        evaluators,
        trainer,
        trainer_params,
        tracking: TrackingConfig { backend },
        tracking_params,
    })
}

fn trainer_location<'a>(root: &'a Table, fallback: &'a Location) -> &'a Location {
    root.get("trainer").map_or(fallback, |entry| &entry.key_location)
}

fn sub_table<'a>(root: &'a Table, key: &str, errors: &mut Vec<SpecError>) -> Option<&'a Table> {
    let entry = root.get(key)?;
    match &entry.node.value {
        NodeValue::Table(table) => Some(table),
        _ => {
            errors.push(type_error(&entry.node, &format!("a table (`[{key}]`)")));
            None
        }
    }
}

fn type_error(node: &Node, expected: &str) -> SpecError {
    SpecError::new(
        Some(&node.location),
        format!("expected {expected}, found {}", node.value.type_name()),
    )
}

fn check_unknown_keys(table: &Table, known: &[&str], context: &str, errors: &mut Vec<SpecError>) {
    for entry in &table.entries {
        if known.contains(&entry.key.as_str()) {
            continue;
        }
        let mut error = SpecError::new(
            Some(&entry.key_location),
            format!("unknown key `{}` in {context}", entry.key),
        );
        error = match closest(&entry.key, known.iter().copied()) {
            Some(suggestion) => error.with_help(format!("did you mean `{suggestion}`?")),
            None => error.with_help(format!("valid keys: {}", known.join(", "))),
        };
        errors.push(error);
    }
}

/// Reads `[dataset]`, `[encoder]` or `[objective]`: the `plugin` key plus that plugin's parameters.
fn plugin_table(
    root: &Table,
    key: &str,
    kind: PluginKind,
    required: bool,
    registry: &Registry,
    root_location: &Location,
    errors: &mut Vec<SpecError>,
) -> Option<PluginUse> {
    let Some(entry) = root.get(key) else {
        if required {
            errors.push(
                SpecError::new(Some(root_location), format!("missing table `[{key}]`")).with_help(
                    format!(
                        "add `[{key}]` with `plugin = \"NAME\"`; available: {}",
                        registry.names(kind).join(", ")
                    ),
                ),
            );
        }
        return None;
    };
    let NodeValue::Table(table) = &entry.node.value else {
        errors.push(type_error(&entry.node, &format!("a table (`[{key}]`)")));
        return None;
    };
    plugin_use(table, entry, key, kind, None, registry, errors)
}

fn plugin_use(
    table: &Table,
    entry: &Entry,
    label: &str,
    kind: PluginKind,
    default_plugin: Option<&str>,
    registry: &Registry,
    errors: &mut Vec<SpecError>,
) -> Option<PluginUse> {
    let (plugin_name, plugin_location) = match table.get("plugin") {
        Some(plugin_entry) => match &plugin_entry.node.value {
            NodeValue::Str(name) => (name.clone(), plugin_entry.node.location.clone()),
            _ => {
                errors.push(type_error(&plugin_entry.node, "a plugin name (string)"));
                return None;
            }
        },
        None => match default_plugin {
            Some(name) => (name.to_owned(), entry.key_location.clone()),
            None => {
                errors.push(
                    SpecError::new(
                        Some(&entry.key_location),
                        format!("missing key `plugin` in [{label}]"),
                    )
                    .with_help(format!("available {kind}s: {}", registry.names(kind).join(", "))),
                );
                return None;
            }
        },
    };
    let Some(plugin) = registry.find(kind, &plugin_name) else {
        let names = registry.names(kind);
        let mut error =
            SpecError::new(Some(&plugin_location), format!("unknown {kind} `{plugin_name}`"));
        error = match closest(&plugin_name, names.iter().copied()) {
            Some(suggestion) => error.with_help(format!(
                "did you mean `{suggestion}`? available {kind}s: {}",
                names.join(", ")
            )),
            None if names.is_empty() => error.with_help(format!(
                "no {kind} plugins were found; check the plugin folders (`pretext plugins`)"
            )),
            None => error.with_help(format!("available {kind}s: {}", names.join(", "))),
        };
        errors.push(error);
        return None;
    };
    let context = format!("[{label}] ({kind} `{plugin_name}`)");
    let params =
        check_params(table, &plugin.params, &["plugin"], &context, &entry.key_location, errors);
    Some(PluginUse { label: label.to_owned(), plugin: plugin_name, params })
}

/// Reads `[evaluate.NAME]` tables; `plugin` defaults to `NAME`.
fn evaluator_tables(
    root: &Table,
    registry: &Registry,
    errors: &mut Vec<SpecError>,
) -> Vec<PluginUse> {
    let Some(table) = sub_table(root, "evaluate", errors) else {
        return Vec::new();
    };
    let mut uses = Vec::new();
    for entry in &table.entries {
        let NodeValue::Table(inner) = &entry.node.value else {
            errors.push(type_error(&entry.node, &format!("a table (`[evaluate.{}]`)", entry.key)));
            continue;
        };
        let label = format!("evaluate.{}", entry.key);
        if let Some(mut found) = plugin_use(
            inner,
            entry,
            &label,
            PluginKind::Evaluator,
            Some(&entry.key),
            registry,
            errors,
        ) {
            found.label = entry.key.clone();
            uses.push(found);
        }
    }
    uses
}

/// Checks a table against a schema; returns every schema parameter with its value or default.
pub fn check_params(
    table: &Table,
    schema: &[ParamSpec],
    reserved: &[&str],
    context: &str,
    table_location: &Location,
    errors: &mut Vec<SpecError>,
) -> Vec<(String, ParamValue)> {
    let mut known: Vec<&str> = schema.iter().map(|spec| spec.name.as_str()).collect();
    known.extend_from_slice(reserved);
    check_unknown_keys(table, &known, context, errors);

    let mut values = Vec::new();
    for spec in schema {
        let name = spec.name.as_str();
        match table.get(name) {
            Some(entry) => match convert_param(&entry.node, spec) {
                Ok(value) => values.push((name.to_owned(), value)),
                Err(error) => errors.push(error),
            },
            None => match spec.default.as_ref().into_option() {
                Some(default) => values.push((name.to_owned(), default.clone())),
                None => errors.push(
                    SpecError::new(
                        Some(table_location),
                        format!(
                            "missing required parameter `{name}` ({}) in {context}",
                            spec.ty.as_str()
                        ),
                    )
                    .with_help(spec.doc.to_string()),
                ),
            },
        }
    }
    values
}

/// Converts one value to the parameter's type, checking choices and bounds.
fn convert_param(node: &Node, spec: &ParamSpec) -> Result<ParamValue, SpecError> {
    let name = spec.name.as_str();
    let mismatch = || {
        SpecError::new(
            Some(&node.location),
            format!("`{name}` must be {}, found {}", expected_text(spec.ty), describe(&node.value)),
        )
        .with_help(spec.doc.to_string())
    };
    let value = match (spec.ty, &node.value) {
        (ParamType::Bool, NodeValue::Bool(flag)) => ParamValue::Bool(*flag),
        (ParamType::Int, NodeValue::Int(number)) => ParamValue::Int(*number),
        (ParamType::Float, NodeValue::Float(number)) => ParamValue::Float(*number),
        (ParamType::Float, NodeValue::Int(number)) => ParamValue::Float(*number as f64),
        (ParamType::Str, NodeValue::Str(text)) => ParamValue::Str(RString::from(text.as_str())),
        (ParamType::IntList, NodeValue::Array(items)) => {
            let mut numbers = Vec::new();
            for item in items {
                match item.value {
                    NodeValue::Int(number) => numbers.push(number),
                    _ => return Err(element_error(item, name, "an integer")),
                }
            }
            ParamValue::IntList(numbers.into())
        }
        (ParamType::FloatList, NodeValue::Array(items)) => {
            let mut numbers = Vec::new();
            for item in items {
                match item.value {
                    NodeValue::Int(number) => numbers.push(number as f64),
                    NodeValue::Float(number) => numbers.push(number),
                    _ => return Err(element_error(item, name, "a number")),
                }
            }
            ParamValue::FloatList(numbers.into())
        }
        (ParamType::StrList, NodeValue::Array(items)) => {
            let mut texts = Vec::new();
            for item in items {
                match &item.value {
                    NodeValue::Str(text) => texts.push(RString::from(text.as_str())),
                    _ => return Err(element_error(item, name, "a string")),
                }
            }
            ParamValue::StrList(texts.into())
        }
        _ => return Err(mismatch()),
    };
    check_choices(node, spec, &value)?;
    check_bounds(node, spec, &value)?;
    Ok(value)
}

fn element_error(item: &Node, name: &str, expected: &str) -> SpecError {
    SpecError::new(
        Some(&item.location),
        format!("every element of `{name}` must be {expected}, found {}", describe(&item.value)),
    )
}

fn expected_text(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Bool => "a boolean (true or false)",
        ParamType::Int => "an integer",
        ParamType::Float => "a number",
        ParamType::Str => "a string",
        ParamType::IntList => "an array of integers",
        ParamType::FloatList => "an array of numbers",
        ParamType::StrList => "an array of strings",
    }
}

fn describe(value: &NodeValue) -> String {
    match value {
        NodeValue::Bool(flag) => format!("the boolean {flag}"),
        NodeValue::Int(number) => format!("the integer {number}"),
        NodeValue::Float(number) => format!("the float {number}"),
        NodeValue::Str(text) => format!("the string \"{text}\""),
        other => other.type_name().to_owned(),
    }
}

fn check_choices(node: &Node, spec: &ParamSpec, value: &ParamValue) -> Result<(), SpecError> {
    let ParamValue::Str(text) = value else {
        return Ok(());
    };
    if spec.choices.is_empty() || spec.choices.iter().any(|choice| choice == text) {
        return Ok(());
    }
    let choices: Vec<&str> = spec.choices.iter().map(RString::as_str).collect();
    let mut error = SpecError::new(
        Some(&node.location),
        format!(
            "invalid value \"{text}\" for `{}`; expected one of: {}",
            spec.name,
            choices.join(", ")
        ),
    );
    if let Some(suggestion) = closest(text.as_str(), choices.iter().copied()) {
        error = error.with_help(format!("did you mean \"{suggestion}\"?"));
    }
    Err(error)
}

fn check_bounds(node: &Node, spec: &ParamSpec, value: &ParamValue) -> Result<(), SpecError> {
    let numbers: Vec<f64> = match value {
        ParamValue::Int(number) => vec![*number as f64],
        ParamValue::Float(number) => vec![*number],
        ParamValue::IntList(numbers) => numbers.iter().map(|number| *number as f64).collect(),
        ParamValue::FloatList(numbers) => numbers.to_vec(),
        _ => return Ok(()),
    };
    let min = spec.min.into_option();
    let max = spec.max.into_option();
    for number in numbers {
        let below = min.is_some_and(|min| number < min);
        let above = max.is_some_and(|max| number > max);
        if number.is_nan() || below || above {
            let range = match (min, max) {
                (Some(min), Some(max)) => format!("between {min} and {max}"),
                (Some(min), None) => format!(">= {min}"),
                (None, Some(max)) => format!("<= {max}"),
                (None, None) => "a number".to_owned(),
            };
            return Err(SpecError::new(
                Some(&node.location),
                format!("`{}` must be {range}, found {number}", spec.name),
            )
            .with_help(spec.doc.to_string()));
        }
    }
    Ok(())
}

fn string_param(params: &[(String, ParamValue)], name: &str) -> String {
    match params.iter().find(|(key, _)| key == name) {
        Some((_, ParamValue::Str(text))) => text.to_string(),
        _ => String::new(),
    }
}

fn number_param(params: &[(String, ParamValue)], name: &str) -> f64 {
    match params.iter().find(|(key, _)| key == name) {
        Some((_, ParamValue::Float(number))) => *number,
        Some((_, ParamValue::Int(number))) => *number as f64,
        _ => 0.0,
    }
}

fn int_param(params: &[(String, ParamValue)], name: &str) -> i64 {
    match params.iter().find(|(key, _)| key == name) {
        Some((_, ParamValue::Int(number))) => *number,
        _ => 0,
    }
}

fn bool_param(params: &[(String, ParamValue)], name: &str) -> bool {
    matches!(params.iter().find(|(key, _)| key == name), Some((_, ParamValue::Bool(true))))
}

fn trainer_config(
    params: &[(String, ParamValue)],
    table: &Table,
    errors: &mut Vec<SpecError>,
) -> TrainerConfig {
    let device_text = string_param(params, "device");
    let device = parse_device(&device_text).unwrap_or_else(|| {
        let location = table.get("device").map(|entry| entry.node.location.clone());
        errors.push(
            SpecError::new(location.as_ref(), format!("invalid device \"{device_text}\""))
                .with_help("use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""),
        );
        DeviceRequest::Cpu
    });
    let optimizer = match string_param(params, "optimizer").as_str() {
        "sgd" => OptimizerKind::Sgd,
        "adamw" => OptimizerKind::AdamW,
        _ => OptimizerKind::Adam,
    };
    let grad_clip = number_param(params, "grad_clip");
    TrainerConfig {
        epochs: int_param(params, "epochs").max(0) as u64,
        batch_size: int_param(params, "batch_size").max(1) as usize,
        optimizer,
        lr: number_param(params, "lr"),
        weight_decay: number_param(params, "weight_decay"),
        momentum: number_param(params, "momentum"),
        beta1: number_param(params, "beta1"),
        beta2: number_param(params, "beta2"),
        grad_clip: (grad_clip > 0.0).then_some(grad_clip),
        eval_every: int_param(params, "eval_every").max(0) as u64,
        log_every: int_param(params, "log_every").max(1) as u64,
        device,
        shuffle: bool_param(params, "shuffle"),
        drop_last: bool_param(params, "drop_last"),
        threads: int_param(params, "threads").max(0) as usize,
        skip_non_finite: string_param(params, "on_nan") == "skip_batch",
        prefetch: int_param(params, "prefetch").max(0) as usize,
        checkpoint_every: int_param(params, "checkpoint_every").max(0) as u64,
        keep_checkpoints: int_param(params, "keep_checkpoints").max(1) as usize,
        best_metric: Some(string_param(params, "best_metric")).filter(|key| !key.is_empty()),
        best_is_max: string_param(params, "best_mode") != "min",
    }
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(text: &str) -> Option<DeviceRequest> {
    match text {
        "auto" => Some(DeviceRequest::Auto),
        "cpu" => Some(DeviceRequest::Cpu),
        "cuda" => Some(DeviceRequest::Cuda(None)),
        _ => {
            let index = text.strip_prefix("cuda:")?.parse::<usize>().ok()?;
            Some(DeviceRequest::Cuda(Some(index)))
        }
    }
}
