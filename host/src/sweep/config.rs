//! The `[sweep]` table of a spec: target metric, search strategy, launcher, pruning and the
//! Slurm resources. Its `[sweep.params]` sub-table is read by [`super::space`].

use serde::{Deserialize, Serialize};

use super::space::{Space, read_params};
use crate::spec::SpecError;
use crate::spec::diagnostic::{Location, closest};
use crate::spec::raw::{Node, NodeValue, Table};

/// Whether a lower or a higher target is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    /// The value as the search strategies see it: lower is always better.
    pub fn loss(self, value: f64) -> f64 {
        match self {
            Direction::Minimize => value,
            Direction::Maximize => -value,
        }
    }
}

/// How trial points are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Every combination of the swept values.
    Grid,
    /// Independent uniform samples.
    Random,
    /// Tree-structured Parzen Estimator, after `startup_trials` random ones.
    Tpe,
}

/// Where trials run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Launcher {
    Local,
    Slurm,
}

/// The early-stopping rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PruneRule {
    None,
    /// Stop a trial whose best report so far is worse than the median of the other trials at the
    /// same report.
    Median,
    /// Asynchronous successive halving: at rungs of `grace * eta^k` reports, a trial continues
    /// only when it is in the best `1/eta` of the trials that reached that rung.
    Asha,
}

/// `[sweep.prune]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneConfig {
    pub rule: PruneRule,
    /// Reports a trial makes before the median rule may stop it.
    pub warmup: u64,
    /// Other trials that must have reached a report before the median rule compares with them.
    pub min_trials: u64,
    /// ASHA reduction factor.
    pub eta: u64,
    /// ASHA's first rung, in reports.
    pub grace: u64,
}

/// `[sweep.slurm]`: resources of each array task, passed to `sbatch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    /// Time limit in Slurm's format, such as `00:30:00`.
    pub time: Option<String>,
    pub cpus_per_task: Option<u64>,
    /// Memory per node in Slurm's format, such as `4G`.
    pub mem: Option<String>,
    /// GPUs per task, such as `1` or `a100:1`.
    pub gpus: Option<String>,
    /// Further `sbatch` arguments, each a whole argument such as `--qos=short`.
    pub extra_args: Vec<String>,
}

/// The whole `[sweep]` table with defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    /// Target metric key as the run records it, such as `reconstruction/mse`.
    pub metric: Option<String>,
    pub direction: Direction,
    pub strategy: Strategy,
    /// Number of trials for random search and TPE; grid search runs every combination.
    pub trials: u64,
    pub seed: u64,
    /// Random trials TPE runs before it models the observations.
    pub startup_trials: u64,
    pub launcher: Launcher,
    /// Trials that run at once.
    pub max_parallel: usize,
    /// libtorch CPU threads of each local trial; 0 divides the machine's cores between
    /// `max_parallel` trials.
    pub threads_per_trial: usize,
    pub prune: PruneConfig,
    pub slurm: SlurmConfig,
    pub space: Space,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            metric: None,
            direction: Direction::Minimize,
            strategy: Strategy::Grid,
            trials: 10,
            seed: 0,
            startup_trials: 5,
            launcher: Launcher::Local,
            max_parallel: 1,
            threads_per_trial: 0,
            prune: PruneConfig {
                rule: PruneRule::None,
                warmup: 1,
                min_trials: 2,
                eta: 3,
                grace: 1,
            },
            slurm: SlurmConfig::default(),
            space: Space::default(),
        }
    }
}

const SWEEP_KEYS: [&str; 13] = [
    "metric",
    "direction",
    "strategy",
    "trials",
    "seed",
    "startup_trials",
    "launcher",
    "max_parallel",
    "threads_per_trial",
    "prune",
    "slurm",
    "params",
    "parameters",
];
const PRUNE_KEYS: [&str; 5] = ["rule", "warmup", "min_trials", "eta", "grace"];
const SLURM_KEYS: [&str; 6] = ["partition", "time", "cpus_per_task", "mem", "gpus", "extra_args"];

/// Reads the `[sweep]` table of a parsed spec; a spec without one gives the defaults.
///
/// # Errors
///
/// Returns every located problem: unknown keys (with the closest valid one), wrong types,
/// values out of range and invalid domains.
pub fn read_sweep(root: &Table) -> Result<SweepConfig, Vec<SpecError>> {
    let mut config = SweepConfig::default();
    let Some(entry) = root.get("sweep") else {
        return Ok(config);
    };
    let mut errors = Vec::new();
    let NodeValue::Table(table) = &entry.node.value else {
        return Err(vec![expected(&entry.node, "a table (`[sweep]`)")]);
    };
    check_keys(table, &SWEEP_KEYS, "[sweep]", &mut errors);
    let mut reader = Reader { table, errors: &mut errors };
    config.metric = reader.string("metric");
    if let Some(text) = reader.choice("direction", &["minimize", "maximize"]) {
        config.direction =
            if text == "maximize" { Direction::Maximize } else { Direction::Minimize };
    }
    if let Some(text) = reader.choice("strategy", &["grid", "random", "tpe"]) {
        config.strategy = match text.as_str() {
            "random" => Strategy::Random,
            "tpe" => Strategy::Tpe,
            _ => Strategy::Grid,
        };
    }
    if let Some(text) = reader.choice("launcher", &["local", "slurm"]) {
        config.launcher = if text == "slurm" { Launcher::Slurm } else { Launcher::Local };
    }
    config.trials = reader.integer("trials", 1).unwrap_or(config.trials);
    config.seed = reader.integer("seed", 0).unwrap_or(config.seed);
    config.startup_trials = reader.integer("startup_trials", 1).unwrap_or(config.startup_trials);
    config.max_parallel = reader.integer("max_parallel", 1).map_or(1, |value| value as usize);
    config.threads_per_trial =
        reader.integer("threads_per_trial", 0).map_or(0, |value| value as usize);
    if let Some(prune) = sub_table(table, "prune", &mut errors) {
        read_prune(prune, &mut config.prune, &mut errors);
    }
    if let Some(slurm) = sub_table(table, "slurm", &mut errors) {
        read_slurm(slurm, &mut config.slurm, &mut errors);
    }
    let params = sub_table(table, "params", &mut errors)
        .or_else(|| sub_table(table, "parameters", &mut errors));
    if let Some(params) = params {
        match read_params(params) {
            Ok(space) => config.space = space,
            Err(found) => errors.extend(found),
        }
    }
    if errors.is_empty() { Ok(config) } else { Err(errors) }
}

fn read_prune(table: &Table, prune: &mut PruneConfig, errors: &mut Vec<SpecError>) {
    check_keys(table, &PRUNE_KEYS, "[sweep.prune]", errors);
    let mut reader = Reader { table, errors };
    if let Some(rule) = reader.choice("rule", &["none", "median", "asha"]) {
        prune.rule = match rule.as_str() {
            "median" => PruneRule::Median,
            "asha" => PruneRule::Asha,
            _ => PruneRule::None,
        };
    }
    prune.warmup = reader.integer("warmup", 0).unwrap_or(prune.warmup);
    prune.min_trials = reader.integer("min_trials", 1).unwrap_or(prune.min_trials);
    prune.eta = reader.integer("eta", 2).unwrap_or(prune.eta);
    prune.grace = reader.integer("grace", 1).unwrap_or(prune.grace);
}

fn read_slurm(table: &Table, slurm: &mut SlurmConfig, errors: &mut Vec<SpecError>) {
    check_keys(table, &SLURM_KEYS, "[sweep.slurm]", errors);
    let mut reader = Reader { table, errors };
    slurm.partition = reader.string("partition");
    slurm.time = reader.string("time");
    slurm.cpus_per_task = reader.integer("cpus_per_task", 1);
    slurm.mem = reader.string("mem");
    slurm.gpus = reader.string_or_integer("gpus");
    slurm.extra_args = reader.strings("extra_args");
}

/// Typed reads of one table's keys that collect errors instead of stopping at the first.
struct Reader<'a> {
    table: &'a Table,
    errors: &'a mut Vec<SpecError>,
}

impl Reader<'_> {
    fn string(&mut self, key: &str) -> Option<String> {
        let node = &self.table.get(key)?.node;
        match &node.value {
            NodeValue::Str(text) if !text.trim().is_empty() => Some(text.clone()),
            _ => {
                self.errors.push(expected(node, "a non-empty string"));
                None
            }
        }
    }

    fn string_or_integer(&mut self, key: &str) -> Option<String> {
        let node = &self.table.get(key)?.node;
        match &node.value {
            NodeValue::Int(number) => Some(number.to_string()),
            _ => self.string(key),
        }
    }

    fn strings(&mut self, key: &str) -> Vec<String> {
        let Some(entry) = self.table.get(key) else {
            return Vec::new();
        };
        match &entry.node.value {
            NodeValue::Array(items) => items
                .iter()
                .filter_map(|item| match &item.value {
                    NodeValue::Str(text) => Some(text.clone()),
                    _ => {
                        self.errors.push(expected(item, "a string"));
                        None
                    }
                })
                .collect(),
            _ => {
                self.errors.push(expected(&entry.node, "an array of strings"));
                Vec::new()
            }
        }
    }

    fn choice(&mut self, key: &str, choices: &[&str]) -> Option<String> {
        let text = self.string(key)?;
        if choices.contains(&text.as_str()) {
            return Some(text);
        }
        let node = &self.table.get(key).expect("read above").node;
        self.errors.push(
            SpecError::new(Some(&node.location), format!("invalid `{key}` \"{text}\""))
                .with_help(format!("valid values: {}", choices.join(", "))),
        );
        None
    }

    fn integer(&mut self, key: &str, min: i64) -> Option<u64> {
        let node = &self.table.get(key)?.node;
        match node.value {
            NodeValue::Int(value) if value >= min => Some(value as u64),
            NodeValue::Int(value) => {
                self.errors.push(SpecError::new(
                    Some(&node.location),
                    format!("`{key}` must be at least {min}, found {value}"),
                ));
                None
            }
            _ => {
                self.errors.push(expected(node, "an integer"));
                None
            }
        }
    }
}

fn expected(node: &Node, what: &str) -> SpecError {
    SpecError::new(
        Some(&node.location),
        format!("expected {what}, found {}", node.value.type_name()),
    )
}

fn sub_table<'a>(table: &'a Table, key: &str, errors: &mut Vec<SpecError>) -> Option<&'a Table> {
    let entry = table.get(key)?;
    match &entry.node.value {
        NodeValue::Table(inner) => Some(inner),
        _ => {
            errors.push(expected(&entry.node, &format!("a table (`[sweep.{key}]`)")));
            None
        }
    }
}

fn check_keys(table: &Table, known: &[&str], context: &str, errors: &mut Vec<SpecError>) {
    for entry in &table.entries {
        if known.contains(&entry.key.as_str()) {
            continue;
        }
        let error = SpecError::new(
            Some(&entry.key_location),
            format!("unknown key `{}` in {context}", entry.key),
        );
        errors.push(match closest(&entry.key, known.iter().copied()) {
            Some(suggestion) => error.with_help(format!("did you mean `{suggestion}`?")),
            None => error.with_help(format!("valid keys: {}", known.join(", "))),
        });
    }
}

/// A location for errors that concern the sweep as a whole.
pub fn sweep_location(root: &Table) -> Option<Location> {
    root.get("sweep").map(|entry| entry.key_location.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spec::diagnostic::SourceFile;
    use crate::spec::raw::parse_source;
    use crate::sweep::space::Domain;

    fn read(text: &str) -> Result<SweepConfig, Vec<SpecError>> {
        let source = Arc::new(SourceFile { path: "spec.toml".into(), text: text.into() });
        read_sweep(&parse_source(&source).unwrap())
    }

    #[test]
    fn full_table_reads() {
        let config = read(
            r#"
[sweep]
metric = "linear_probe/accuracy"
direction = "maximize"
strategy = "tpe"
trials = 12
max_parallel = 2
[sweep.prune]
rule = "asha"
[sweep.slurm]
partition = "debug"
gpus = 1
[sweep.params]
trainer.lr = { loguniform = [1e-4, 1e-2] }
"encoder.latent" = [8, 16]
trainer.epochs = { int = [1, 5], step = 2 }
"#,
        )
        .unwrap();
        assert_eq!(config.direction, Direction::Maximize);
        assert_eq!(config.strategy, Strategy::Tpe);
        assert_eq!(config.prune.rule, PruneRule::Asha);
        assert_eq!(config.slurm.gpus.as_deref(), Some("1"));
        let keys: Vec<&str> = config.space.dimensions.iter().map(|d| d.key.as_str()).collect();
        // Dotted keys under one table merge into it, so both `trainer` keys come first.
        assert_eq!(keys, ["trainer.lr", "trainer.epochs", "encoder.latent"]);
        assert_eq!(config.space.dimensions[1].domain, Domain::Int { low: 1, high: 5, step: 2 });
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let errors = read("[sweep]\nstrategie = \"grid\"\n").unwrap_err();
        assert_eq!(errors[0].help.as_deref(), Some("did you mean `strategy`?"));
    }

    #[test]
    fn bad_domain_is_located() {
        let errors =
            read("[sweep.params]\n\"trainer.lr\" = { loguniform = [0.0, 1.0] }\n").unwrap_err();
        assert!(errors[0].to_string().starts_with("spec.toml:2:"), "{}", errors[0]);
    }
}
