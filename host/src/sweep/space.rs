//! The search space of a sweep: the swept keys and their domains, read from `[sweep.params]` or
//! from Hydra-style command-line values such as `trainer.lr=1e-3,3e-4`.
//!
//! A point of the space is one coordinate per dimension: the index of the value for a choice,
//! the number itself for an integer or float domain. [`Space::overrides`] turns a point into the
//! `key=value` overrides that `pretext run` reads.

use serde::{Deserialize, Serialize};

use crate::spec::SpecError;
use crate::spec::diagnostic::Location;
use crate::spec::overrides::parse_override;
use crate::spec::raw::{Node, NodeValue, Table};

/// The values one swept key may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Domain {
    /// Explicit values, each kept as TOML text (`3e-4`, `"sgd"`, `[32, 16]`).
    Choice(Vec<String>),
    /// Integers from `low` to `high` inclusive, `step` apart.
    Int { low: i64, high: i64, step: i64 },
    /// Floats between `low` and `high`. With a `step` the domain is the grid `low, low + step, ...`
    /// up to `high`; with `log` it is sampled uniformly in `ln(value)`.
    Float { low: f64, high: f64, step: Option<f64>, log: bool },
}

/// One swept key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    /// Dotted spec key, such as `trainer.lr`.
    pub key: String,
    pub domain: Domain,
}

/// The swept keys in the order they were declared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub dimensions: Vec<Dimension>,
}

/// Keys of a domain table in `[sweep.params]`.
const DOMAIN_KEYS: [&str; 8] =
    ["choice", "values", "int", "float", "uniform", "loguniform", "step", "log"];

impl Domain {
    /// Number of grid points on a step grid from `low` to `high`, both included.
    fn grid_len(low: f64, high: f64, step: f64) -> usize {
        ((high - low) / step + 1e-9).floor() as usize + 1
    }

    /// Every value of the domain, as coordinates, or `None` for a continuous domain.
    pub fn grid(&self) -> Option<Vec<f64>> {
        match self {
            Domain::Choice(values) => Some((0..values.len()).map(|index| index as f64).collect()),
            Domain::Int { low, high, step } => {
                Some((*low..=*high).step_by(*step as usize).map(|value| value as f64).collect())
            }
            Domain::Float { low, high, step: Some(step), log: false } => {
                let count = Self::grid_len(*low, *high, *step);
                Some((0..count).map(|index| low + step * index as f64).collect())
            }
            Domain::Float { .. } => None,
        }
    }

    /// The TOML text of a coordinate, for an override.
    pub fn render(&self, coordinate: f64) -> String {
        match self {
            Domain::Choice(values) => {
                let index = (coordinate.max(0.0) as usize).min(values.len() - 1);
                values[index].clone()
            }
            Domain::Int { .. } => format!("{}", coordinate.round() as i64),
            Domain::Float { .. } => float_text(coordinate),
        }
    }

    /// The coordinate as a number for plotting: the value itself, or for a choice the value when
    /// it is a number and the index otherwise.
    pub fn numeric(&self, coordinate: f64) -> f64 {
        match self {
            Domain::Choice(values) => {
                let text = self.render(coordinate);
                if values.iter().all(|value| value.parse::<f64>().is_ok()) {
                    text.parse().unwrap_or(coordinate)
                } else {
                    coordinate
                }
            }
            _ => coordinate,
        }
    }
}

/// Formats a float so that TOML reads it back as a float (`1.0`, `0.0003`, `1e-7`).
pub fn float_text(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    let text = format!("{value:?}");
    if text.contains(['.', 'e', 'i']) { text } else { format!("{text}.0") }
}

impl Space {
    /// The `key=value` overrides of a point.
    pub fn overrides(&self, point: &[f64]) -> Vec<String> {
        self.dimensions
            .iter()
            .zip(point)
            .map(|(dimension, coordinate)| {
                format!("{}={}", dimension.key, dimension.domain.render(*coordinate))
            })
            .collect()
    }

    /// Whether `key` is one of the swept keys.
    pub fn contains(&self, key: &str) -> bool {
        self.dimensions.iter().any(|dimension| dimension.key == key)
    }
}

/// Splits a command-line value at the commas that are outside quotes and brackets:
/// `1e-3,3e-4` is two values, `'a,b'` one, and `[1,2],[3,4]` two.
///
/// # Errors
///
/// Returns an error for an empty value between commas, an unclosed quote or unbalanced brackets.
pub fn split_values(text: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for character in text.chars() {
        if let Some(open) = quote {
            current.push(character);
            if escaped {
                escaped = false;
            } else if character == '\\' && open == '"' {
                escaped = true;
            } else if character == open {
                quote = None;
            }
            continue;
        }
        match character {
            '"' | '\'' => quote = Some(character),
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                values.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced brackets in `{text}`"));
        }
        current.push(character);
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in `{text}`"));
    }
    if depth != 0 {
        return Err(format!("unbalanced brackets in `{text}`"));
    }
    values.push(current);
    if values.iter().any(|value| value.trim().is_empty()) {
        return Err(format!("empty value in `{text}`; remove the extra comma"));
    }
    Ok(values.into_iter().map(|value| value.trim().to_owned()).collect())
}

/// Command-line arguments after the spec, sorted into fixed overrides and swept keys.
#[derive(Debug, Clone, Default)]
pub struct CommandLineSpace {
    /// Overrides with one value, passed unchanged to every trial.
    pub fixed: Vec<String>,
    /// Keys with several comma-separated values, each a choice.
    pub swept: Vec<Dimension>,
}

/// Reads Hydra-style arguments: `key=a,b` sweeps `key` over `a` and `b`, `key=a` fixes it.
///
/// # Errors
///
/// Returns every invalid argument: a key given twice, a value that does not split, or a value
/// that is not a valid override.
pub fn parse_command_line(arguments: &[String]) -> Result<CommandLineSpace, Vec<String>> {
    let mut space = CommandLineSpace::default();
    let mut errors = Vec::new();
    let mut seen: Vec<(String, &str)> = Vec::new();
    for argument in arguments {
        let Some((key, value)) = argument.split_once('=') else {
            errors.push(format!("invalid override `{argument}`: expected `key=value`"));
            continue;
        };
        let key = key.trim().to_owned();
        if let Some((_, earlier)) = seen.iter().find(|(other, _)| *other == key) {
            errors.push(format!(
                "key `{key}` is given twice (`{earlier}` and `{argument}`); give each key once"
            ));
            continue;
        }
        seen.push((key.clone(), argument));
        let values = match split_values(value) {
            Ok(values) => values,
            Err(message) => {
                errors.push(format!("invalid override `{argument}`: {message}"));
                continue;
            }
        };
        for value in &values {
            if let Err(error) = parse_override(&format!("{key}={value}")) {
                errors.push(format!("invalid value `{value}` for `{key}`: {}", error.message));
            }
        }
        if values.len() == 1 {
            space.fixed.push(argument.clone());
        } else {
            space.swept.push(Dimension { key, domain: Domain::Choice(values) });
        }
    }
    if errors.is_empty() { Ok(space) } else { Err(errors) }
}

/// Reads `[sweep.params]`: each leaf is an array of values or a domain table; other tables nest
/// keys, so `trainer.lr = [...]` and `"trainer.lr" = [...]` mean the same.
///
/// # Errors
///
/// Returns every located problem: a scalar where a domain was expected, an empty list, an
/// unknown domain key, or bounds in the wrong order.
pub fn read_params(table: &Table) -> Result<Space, Vec<SpecError>> {
    let mut space = Space::default();
    let mut errors = Vec::new();
    read_params_into(table, "", &mut space, &mut errors);
    if errors.is_empty() { Ok(space) } else { Err(errors) }
}

fn read_params_into(table: &Table, prefix: &str, space: &mut Space, errors: &mut Vec<SpecError>) {
    for entry in &table.entries {
        let key =
            if prefix.is_empty() { entry.key.clone() } else { format!("{prefix}.{}", entry.key) };
        match &entry.node.value {
            NodeValue::Array(items) => match choice(items, &entry.node.location, &key) {
                Ok(domain) => space.dimensions.push(Dimension { key, domain }),
                Err(error) => errors.push(error),
            },
            NodeValue::Table(inner) if is_domain_table(inner) => {
                match domain_table(inner, &entry.node.location, &key) {
                    Ok(domain) => space.dimensions.push(Dimension { key, domain }),
                    Err(error) => errors.push(error),
                }
            }
            NodeValue::Table(inner) => read_params_into(inner, &key, space, errors),
            other => errors.push(
                SpecError::new(
                    Some(&entry.node.location),
                    format!("`{key}` in [sweep.params] is {}, not a domain", other.type_name()),
                )
                .with_help(
                    "give a list of values, or a table with `choice`, `int`, `float`, `uniform` \
                     or `loguniform`",
                ),
            ),
        }
    }
}

fn is_domain_table(table: &Table) -> bool {
    table.entries.iter().any(|entry| DOMAIN_KEYS[..6].contains(&entry.key.as_str()))
}

fn choice(items: &[Node], location: &Location, key: &str) -> Result<Domain, SpecError> {
    if items.is_empty() {
        return Err(SpecError::new(Some(location), format!("`{key}` has an empty list of values")));
    }
    Ok(Domain::Choice(items.iter().map(|item| toml_text(&item.value)).collect()))
}

fn domain_table(table: &Table, location: &Location, key: &str) -> Result<Domain, SpecError> {
    for entry in &table.entries {
        if !DOMAIN_KEYS.contains(&entry.key.as_str()) {
            return Err(SpecError::new(
                Some(&entry.key_location),
                format!("unknown key `{}` in the domain of `{key}`", entry.key),
            )
            .with_help(format!("valid keys: {}", DOMAIN_KEYS.join(", "))));
        }
    }
    let kinds: Vec<&str> = table
        .entries
        .iter()
        .map(|entry| entry.key.as_str())
        .filter(|name| DOMAIN_KEYS[..6].contains(name))
        .collect();
    if kinds.len() != 1 {
        return Err(SpecError::new(
            Some(location),
            format!("the domain of `{key}` names {} kinds; give exactly one", kinds.join(" and ")),
        ));
    }
    let kind = kinds[0];
    let node = &table.get(kind).expect("found above").node;
    let step = table.get("step").map(|entry| &entry.node);
    let log = match table.get("log").map(|entry| &entry.node) {
        Some(Node { value: NodeValue::Bool(flag), .. }) => *flag,
        Some(other) => return Err(type_error(other, "a boolean", key)),
        None => kind == "loguniform",
    };
    match kind {
        "choice" | "values" => match &node.value {
            NodeValue::Array(items) => choice(items, &node.location, key),
            _ => Err(type_error(node, "an array of values", key)),
        },
        "int" => {
            let (low, high) = int_bounds(node, key)?;
            let step = match step {
                Some(Node { value: NodeValue::Int(step), .. }) if *step > 0 => *step,
                Some(other) => return Err(type_error(other, "a positive integer", key)),
                None => 1,
            };
            if log {
                return Err(SpecError::new(
                    Some(location),
                    format!("`{key}`: an integer range cannot be logarithmic"),
                )
                .with_help("use `loguniform` for a float, or list the integers"));
            }
            Ok(Domain::Int { low, high, step })
        }
        _ => {
            let (low, high) = float_bounds(node, key)?;
            let step = match step {
                Some(Node { value: NodeValue::Float(step), .. }) if *step > 0.0 => Some(*step),
                Some(Node { value: NodeValue::Int(step), .. }) if *step > 0 => Some(*step as f64),
                Some(other) => return Err(type_error(other, "a positive number", key)),
                None => None,
            };
            if log && low <= 0.0 {
                return Err(SpecError::new(
                    Some(&node.location),
                    format!(
                        "`{key}`: a logarithmic range needs a lower bound above 0, found {low}"
                    ),
                ));
            }
            if log && step.is_some() {
                return Err(SpecError::new(
                    Some(location),
                    format!("`{key}`: a logarithmic range cannot have a `step`"),
                ));
            }
            Ok(Domain::Float { low, high, step, log })
        }
    }
}

fn type_error(node: &Node, expected: &str, key: &str) -> SpecError {
    SpecError::new(
        Some(&node.location),
        format!("`{key}`: expected {expected}, found {}", node.value.type_name()),
    )
}

fn pair<'a>(node: &'a Node, key: &str) -> Result<(&'a Node, &'a Node), SpecError> {
    match &node.value {
        NodeValue::Array(items) if items.len() == 2 => Ok((&items[0], &items[1])),
        _ => Err(type_error(node, "a two-element array `[low, high]`", key)),
    }
}

fn int_bounds(node: &Node, key: &str) -> Result<(i64, i64), SpecError> {
    let (low, high) = pair(node, key)?;
    let (NodeValue::Int(low), NodeValue::Int(high)) = (&low.value, &high.value) else {
        return Err(type_error(node, "two integers `[low, high]`", key));
    };
    if low > high {
        return Err(SpecError::new(
            Some(&node.location),
            format!("`{key}`: the lower bound {low} is above the upper bound {high}"),
        ));
    }
    Ok((*low, *high))
}

fn float_bounds(node: &Node, key: &str) -> Result<(f64, f64), SpecError> {
    let (low, high) = pair(node, key)?;
    let number = |node: &Node| match node.value {
        NodeValue::Int(value) => Some(value as f64),
        NodeValue::Float(value) if value.is_finite() => Some(value),
        _ => None,
    };
    let (Some(low), Some(high)) = (number(low), number(high)) else {
        return Err(type_error(node, "two finite numbers `[low, high]`", key));
    };
    if low >= high {
        return Err(SpecError::new(
            Some(&node.location),
            format!("`{key}`: the lower bound {low} must be below the upper bound {high}"),
        ));
    }
    Ok((low, high))
}

/// Writes a spec value back as TOML text.
pub fn toml_text(value: &NodeValue) -> String {
    match value {
        NodeValue::Bool(flag) => flag.to_string(),
        NodeValue::Int(number) => number.to_string(),
        NodeValue::Float(number) => float_text(*number),
        NodeValue::Str(text) => toml_edit::Value::from(text.as_str()).to_string().trim().to_owned(),
        NodeValue::Array(items) => {
            let items: Vec<String> = items.iter().map(|item| toml_text(&item.value)).collect();
            format!("[{}]", items.join(", "))
        }
        NodeValue::Table(table) => {
            let entries: Vec<String> = table
                .entries
                .iter()
                .map(|entry| format!("{} = {}", entry.key, toml_text(&entry.node.value)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|text| (*text).to_owned()).collect()
    }

    #[test]
    fn commas_split_values() {
        assert_eq!(split_values("1e-3,3e-4").unwrap(), ["1e-3", "3e-4"]);
    }

    #[test]
    fn quoted_comma_is_one_value() {
        assert_eq!(split_values("'a,b'").unwrap(), ["'a,b'"]);
        assert_eq!(split_values(r#""a,\"b""#).unwrap(), [r#""a,\"b""#]);
    }

    #[test]
    fn bracketed_lists_are_values() {
        assert_eq!(split_values("[1,2],[3,4]").unwrap(), ["[1,2]", "[3,4]"]);
    }

    #[test]
    fn empty_value_rejected() {
        assert!(split_values("1,,2").is_err());
        assert!(split_values("[1,2").is_err());
        assert!(split_values("'a").is_err());
    }

    #[test]
    fn repeated_key_rejected() {
        let errors = parse_command_line(&args(&["trainer.lr=1", "trainer.lr=2,3"])).unwrap_err();
        assert!(errors[0].contains("given twice"), "{errors:?}");
    }

    #[test]
    fn single_values_stay_fixed() {
        let space = parse_command_line(&args(&["name='a,b'", "trainer.lr=1e-3,1e-4"])).unwrap();
        assert_eq!(space.fixed, ["name='a,b'"]);
        assert_eq!(space.swept.len(), 1);
    }

    #[test]
    fn float_grid_includes_upper_bound() {
        let domain = Domain::Float { low: 0.0, high: 1.0, step: Some(0.25), log: false };
        assert_eq!(domain.grid().unwrap(), [0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn floats_render_as_toml_floats() {
        assert_eq!(float_text(3.0), "3.0");
        assert_eq!(float_text(1e-7), "1e-7");
        assert_eq!(float_text(0.5), "0.5");
    }
}
