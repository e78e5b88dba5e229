//! Command-line overrides such as `trainer.lr=3e-4` or `encoder.hidden=[256,128]`.
//!
//! The value is read as a TOML value, so it gets the type the spec file would give it (`lr=1` is
//! an integer, which float parameters accept). A bare word that is not valid TOML, such as
//! `optimizer=sgd`, is taken as a string.

use std::str::FromStr;
use std::sync::Arc;

use super::diagnostic::{Location, Origin, SourceFile, SpecError};
use super::raw::{Entry, Node, NodeValue, Table, convert_value};

/// One parsed override.
#[derive(Debug, Clone)]
pub struct Override {
    pub path: Vec<String>,
    pub node: Node,
    pub text: String,
}

/// Parses `key.path=value`.
///
/// # Errors
///
/// Returns an error for a missing `=`, an empty key segment, a key with characters other than
/// letters, digits, `_` and `-`, or an empty value.
pub fn parse_override(text: &str) -> Result<Override, SpecError> {
    let location = Location { origin: Origin::Override { text: text.to_owned() }, span: 0..0 };
    let Some((key, value)) = text.split_once('=') else {
        return Err(SpecError::new(Some(&location), "expected `key=value`, found no `=`")
            .with_help("write overrides as dotted keys, such as `trainer.lr=3e-4`"));
    };
    let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
    for segment in &path {
        let valid = !segment.is_empty()
            && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(SpecError::new(
                Some(&location),
                format!(
                    "invalid key `{key}`: each dot-separated part must be a non-empty bare key"
                ),
            ));
        }
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(SpecError::new(Some(&location), format!("missing value for `{key}`"))
            .with_help("quote an empty string as `key=\"\"`"));
    }
    let node = parse_value(value, &location)?;
    Ok(Override { path, node, text: text.to_owned() })
}

fn parse_value(value: &str, location: &Location) -> Result<Node, SpecError> {
    match toml_edit::Value::from_str(value) {
        Ok(parsed) => {
            let scratch = Arc::new(SourceFile { path: "override".into(), text: value.to_owned() });
            let mut node = convert_value(&parsed, &scratch, location)
                .map_err(|error| SpecError { location: Some(location.clone()), ..error })?;
            relocate(&mut node, location);
            Ok(node)
        }
        Err(_) if looks_like_bare_word(value) => {
            Ok(Node { value: NodeValue::Str(value.to_owned()), location: location.clone() })
        }
        Err(error) => Err(SpecError::new(
            Some(location),
            format!("invalid value `{value}`: {}", error.message().trim()),
        )),
    }
}

/// A value the user plainly meant as a string: no quotes, brackets, braces or spaces.
fn looks_like_bare_word(value: &str) -> bool {
    !value.chars().any(|c| matches!(c, '"' | '\'' | '[' | ']' | '{' | '}' | ',' | ' ' | '='))
}

fn relocate(node: &mut Node, location: &Location) {
    node.location = location.clone();
    match &mut node.value {
        NodeValue::Array(nodes) => nodes.iter_mut().for_each(|node| relocate(node, location)),
        NodeValue::Table(table) => {
            for entry in &mut table.entries {
                entry.key_location = location.clone();
                relocate(&mut entry.node, location);
            }
        }
        _ => {}
    }
}

/// Applies overrides in order, creating tables as needed.
///
/// # Errors
///
/// Returns an error when the same key is overridden twice, or when a path goes through a value
/// that is not a table.
pub fn apply(root: &mut Table, overrides: &[Override]) -> Result<(), SpecError> {
    for (index, item) in overrides.iter().enumerate() {
        if let Some(earlier) = overrides[..index].iter().find(|other| other.path == item.path) {
            return Err(SpecError::new(
                Some(&item.node.location),
                format!(
                    "key `{}` is overridden twice (first by `{}`)",
                    item.path.join("."),
                    earlier.text
                ),
            )
            .with_help("give each key once"));
        }
        apply_one(root, item)?;
    }
    Ok(())
}

fn apply_one(root: &mut Table, item: &Override) -> Result<(), SpecError> {
    let location = item.node.location.clone();
    let (leaf, parents) = item.path.split_last().expect("an override path has at least one key");
    let mut table = root;
    for (depth, key) in parents.iter().enumerate() {
        if table.get(key).is_none() {
            table.entries.push(Entry {
                key: key.clone(),
                key_location: location.clone(),
                node: Node {
                    value: NodeValue::Table(Table::default()),
                    location: location.clone(),
                },
            });
        }
        let entry = table.get_mut(key).expect("inserted above");
        match &mut entry.node.value {
            NodeValue::Table(inner) => table = inner,
            other => {
                return Err(SpecError::new(
                    Some(&location),
                    format!(
                        "`{}` is {}, not a table, so `{}` cannot be set",
                        item.path[..=depth].join("."),
                        other.type_name(),
                        item.path.join(".")
                    ),
                ));
            }
        }
    }
    match table.get_mut(leaf) {
        Some(entry) => entry.node = item.node.clone(),
        None => table.entries.push(Entry {
            key: leaf.clone(),
            key_location: location,
            node: item.node.clone(),
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_value_stays_integer() {
        let parsed = parse_override("trainer.lr=1").unwrap();
        assert!(matches!(parsed.node.value, NodeValue::Int(1)));
    }

    #[test]
    fn bare_word_becomes_string() {
        let parsed = parse_override("trainer.optimizer=sgd").unwrap();
        assert!(matches!(parsed.node.value, NodeValue::Str(ref s) if s == "sgd"));
    }

    #[test]
    fn list_value_parses() {
        let parsed = parse_override("encoder.hidden=[256, 128]").unwrap();
        let NodeValue::Array(items) = parsed.node.value else { panic!("not an array") };
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn missing_equals_rejected() {
        assert!(parse_override("trainer.lr").is_err());
    }

    #[test]
    fn same_key_twice_rejected() {
        let overrides = vec![
            parse_override("trainer.lr=1e-3").unwrap(),
            parse_override("trainer.lr=1e-4").unwrap(),
        ];
        let error = apply(&mut Table::default(), &overrides).unwrap_err();
        assert!(error.message.contains("overridden twice"), "{error}");
    }

    #[test]
    fn override_through_scalar_rejected() {
        let mut root = Table::default();
        apply(&mut root, &[parse_override("seed=1").unwrap()]).unwrap();
        let error = apply(&mut root, &[parse_override("seed.x=1").unwrap()]).unwrap_err();
        assert!(error.message.contains("not a table"), "{error}");
    }
}
