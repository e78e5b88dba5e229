//! Phase one of reading a spec: TOML text to a tree of values that remember where they came from.
//!
//! Nothing here knows what keys mean; [`super::validate`] does that against the schemas.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml_edit::{Document, Item, TableLike, Value};

use super::diagnostic::{Location, SourceFile, SpecError};

/// A value with its location.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: NodeValue,
    pub location: Location,
}

/// The value kinds a spec may contain.
#[derive(Debug, Clone)]
pub enum NodeValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Node>),
    Table(Table),
}

impl NodeValue {
    /// The TOML type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a float",
            NodeValue::Str(_) => "a string",
            NodeValue::Array(_) => "an array",
            NodeValue::Table(_) => "a table",
        }
    }
}

/// A table: its entries in document order.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

/// One key of a table.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_location: Location,
    pub node: Node,
}

impl Table {
    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|entry| entry.key == key)
    }
}

/// Reads and parses a spec file.
///
/// # Errors
///
/// Returns a located error when the file cannot be read, is not valid TOML (including a key
/// defined twice or an integer out of the 64-bit range), or uses TOML features that specs do not
/// (dates and times).
pub fn parse_file(path: &Path) -> Result<(Arc<SourceFile>, Table), SpecError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        SpecError::new(None, format!("cannot read spec {}: {error}", path.display()))
    })?;
    let source = Arc::new(SourceFile { path: path.to_path_buf(), text });
    let table = parse_source(&source)?;
    Ok((source, table))
}

/// Parses TOML text that belongs to `source`.
pub fn parse_source(source: &Arc<SourceFile>) -> Result<Table, SpecError> {
    let document = Document::parse(source.text.clone()).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        let location = Location::file(source, span);
        SpecError::new(Some(&location), format!("invalid TOML: {}", error.message().trim()))
    })?;
    let root_location = Location::file(source, 0..0);
    convert_table(document.as_table(), source, &root_location)
}

fn convert_table(
    table: &dyn TableLike,
    source: &Arc<SourceFile>,
    parent: &Location,
) -> Result<Table, SpecError> {
    let mut entries = Vec::new();
    for (key, item) in table.iter() {
        let key_span = table.get_key_value(key).and_then(|(key, _)| key.span());
        let key_location = located(source, key_span, parent);
        let node = convert_item(item, source, &key_location)?;
        entries.push(Entry { key: key.to_owned(), key_location, node });
    }
    Ok(Table { entries })
}

fn located(source: &Arc<SourceFile>, span: Option<Range<usize>>, fallback: &Location) -> Location {
    match span {
        Some(span) => Location::file(source, span),
        None => fallback.clone(),
    }
}

fn convert_item(item: &Item, source: &Arc<SourceFile>, key: &Location) -> Result<Node, SpecError> {
    let location = located(source, item.span(), key);
    match item {
        Item::None => Err(SpecError::new(Some(key), "missing value")),
        Item::Value(value) => convert_value(value, source, key),
        Item::Table(table) => {
            Ok(Node { value: NodeValue::Table(convert_table(table, source, &location)?), location })
        }
        Item::ArrayOfTables(array) => {
            let mut nodes = Vec::new();
            for table in array.iter() {
                let table_location = located(source, table.span(), &location);
                let value = NodeValue::Table(convert_table(table, source, &table_location)?);
                nodes.push(Node { value, location: table_location });
            }
            Ok(Node { value: NodeValue::Array(nodes), location })
        }
    }
}

/// Converts a parsed TOML value; also used for override values, which have no file.
pub fn convert_value(
    value: &Value,
    source: &Arc<SourceFile>,
    key: &Location,
) -> Result<Node, SpecError> {
    let location = located(source, value.span(), key);
    let node_value = match value {
        Value::String(text) => NodeValue::Str(text.value().clone()),
        Value::Integer(number) => NodeValue::Int(*number.value()),
        Value::Float(number) => NodeValue::Float(*number.value()),
        Value::Boolean(flag) => NodeValue::Bool(*flag.value()),
        Value::Datetime(_) => {
            return Err(SpecError::new(
                Some(&location),
                "dates and times are not valid in a spec; quote the value to make it a string",
            ));
        }
        Value::Array(array) => {
            let mut nodes = Vec::new();
            for element in array.iter() {
                nodes.push(convert_value(element, source, &location)?);
            }
            NodeValue::Array(nodes)
        }
        Value::InlineTable(table) => NodeValue::Table(convert_table(table, source, &location)?),
    };
    Ok(Node { value: node_value, location })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Table, SpecError> {
        let source = Arc::new(SourceFile { path: "spec.toml".into(), text: text.into() });
        parse_source(&source)
    }

    #[test]
    fn duplicate_key_is_located_error() {
        let error = parse("a = 1\na = 2\n").unwrap_err();
        assert!(error.to_string().starts_with("spec.toml:2:"), "{error}");
    }

    #[test]
    fn dotted_keys_and_tables_merge() {
        let table = parse("[encoder]\nplugin = \"mlp\"\nact.kind = \"relu\"\n").unwrap();
        let encoder = table.get("encoder").unwrap();
        let NodeValue::Table(encoder) = &encoder.node.value else { panic!("not a table") };
        assert!(encoder.get("act").is_some());
    }

    #[test]
    fn key_location_points_at_key() {
        let table = parse("\n  seed = 3\n").unwrap();
        let entry = table.get("seed").unwrap();
        assert_eq!(entry.key_location.to_string(), "spec.toml:2:3");
    }
}
