//! Parameter schemas that plugins declare, and the validated values they receive.

use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec};

use crate::error::{Error, Result};
use crate::ffi::{NamedValue, ParamSpec, ParamType, ParamValue, PluginInfo, PluginKind};

/// A plugin's name, version, description and parameter schema.
#[derive(Debug, Clone)]
pub struct Description {
    name: String,
    version: String,
    summary: String,
    params: Vec<ParamSpec>,
}

impl Description {
    /// Starts a description; `summary` is the one line that `pretext plugins` prints.
    pub fn new(name: &str, version: &str, summary: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            summary: summary.to_owned(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter to the schema.
    pub fn param(mut self, param: Param) -> Self {
        self.params.push(param.spec);
        self
    }

    /// Converts the description into the boundary type for a plugin of `kind`.
    pub fn into_info(self, kind: PluginKind) -> PluginInfo {
        PluginInfo {
            name: self.name.into(),
            kind,
            version: self.version.into(),
            description: self.summary.into(),
            params: self.params.into(),
        }
    }
}

/// Builder for one parameter of a schema.
#[derive(Debug, Clone)]
pub struct Param {
    spec: ParamSpec,
}

impl Param {
    fn new(name: &str, ty: ParamType, default: ROption<ParamValue>, doc: &str) -> Self {
        Self {
            spec: ParamSpec {
                name: name.into(),
                ty,
                default,
                doc: doc.into(),
                choices: RVec::new(),
                min: RNone,
                max: RNone,
            },
        }
    }

    /// A boolean parameter with a default.
    pub fn bool(name: &str, default: bool, doc: &str) -> Self {
        Self::new(name, ParamType::Bool, RSome(ParamValue::Bool(default)), doc)
    }

    /// An integer parameter with a default.
    pub fn int(name: &str, default: i64, doc: &str) -> Self {
        Self::new(name, ParamType::Int, RSome(ParamValue::Int(default)), doc)
    }

    /// A float parameter with a default.
    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        Self::new(name, ParamType::Float, RSome(ParamValue::Float(default)), doc)
    }

    /// A string parameter with a default.
    pub fn string(name: &str, default: &str, doc: &str) -> Self {
        Self::new(name, ParamType::Str, RSome(ParamValue::Str(default.into())), doc)
    }

    /// A list-of-integers parameter with a default.
    pub fn int_list(name: &str, default: &[i64], doc: &str) -> Self {
        Self::new(name, ParamType::IntList, RSome(ParamValue::IntList(default.into())), doc)
    }

    /// A list-of-floats parameter with a default.
    pub fn float_list(name: &str, default: &[f64], doc: &str) -> Self {
        Self::new(name, ParamType::FloatList, RSome(ParamValue::FloatList(default.into())), doc)
    }

    /// A list-of-strings parameter with a default.
    pub fn string_list(name: &str, default: &[&str], doc: &str) -> Self {
        let values: RVec<RString> = default.iter().map(|value| RString::from(*value)).collect();
        Self::new(name, ParamType::StrList, RSome(ParamValue::StrList(values)), doc)
    }

    /// A parameter of the given type that the spec must set.
    pub fn required(name: &str, ty: ParamType, doc: &str) -> Self {
        Self::new(name, ty, RNone, doc)
    }

    /// Restricts a string parameter to the given values.
    pub fn choices(mut self, choices: &[&str]) -> Self {
        self.spec.choices = choices.iter().map(|choice| RString::from(*choice)).collect();
        self
    }

    /// Restricts a numeric parameter to the inclusive range `[min, max]`.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.spec.min = RSome(min);
        self.spec.max = RSome(max);
        self
    }

    /// Sets only a lower bound (inclusive).
    pub fn min(mut self, min: f64) -> Self {
        self.spec.min = RSome(min);
        self
    }

    /// The finished schema entry.
    pub fn into_spec(self) -> ParamSpec {
        self.spec
    }
}

/// The validated parameters a plugin is built with.
///
/// The host checks every value against the plugin's schema and fills in defaults before the
/// plugin receives them, so a getter fails only when the plugin requests a name or type that its
/// own schema does not declare.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: Vec<(String, ParamValue)>,
}

impl Params {
    /// Builds parameters from name and value pairs.
    pub fn new(values: Vec<(String, ParamValue)>) -> Self {
        Self { values }
    }

    pub(crate) fn from_ffi(values: &[NamedValue]) -> Self {
        let values =
            values.iter().map(|entry| (entry.name.to_string(), entry.value.clone())).collect();
        Self { values }
    }

    /// The raw value of a parameter, if present.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.iter().find(|(key, _)| key == name).map(|(_, value)| value)
    }

    fn require(&self, name: &str) -> Result<&ParamValue> {
        self.get(name).ok_or_else(|| Error::msg(format!("parameter `{name}` is missing")))
    }

    fn mismatch(name: &str, expected: &str, found: &ParamValue) -> Error {
        Error::msg(format!("parameter `{name}` is {found:?}, expected {expected}"))
    }

    /// A boolean parameter.
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.require(name)? {
            ParamValue::Bool(value) => Ok(*value),
            other => Err(Self::mismatch(name, "a bool", other)),
        }
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Result<i64> {
        match self.require(name)? {
            ParamValue::Int(value) => Ok(*value),
            other => Err(Self::mismatch(name, "an integer", other)),
        }
    }

    /// A float parameter; integers are accepted and widened.
    pub fn float(&self, name: &str) -> Result<f64> {
        match self.require(name)? {
            ParamValue::Float(value) => Ok(*value),
            ParamValue::Int(value) => Ok(*value as f64),
            other => Err(Self::mismatch(name, "a float", other)),
        }
    }

    /// A string parameter.
    pub fn string(&self, name: &str) -> Result<String> {
        match self.require(name)? {
            ParamValue::Str(value) => Ok(value.to_string()),
            other => Err(Self::mismatch(name, "a string", other)),
        }
    }

    /// A list-of-integers parameter.
    pub fn int_list(&self, name: &str) -> Result<Vec<i64>> {
        match self.require(name)? {
            ParamValue::IntList(values) => Ok(values.to_vec()),
            other => Err(Self::mismatch(name, "a list of integers", other)),
        }
    }

    /// A list-of-floats parameter.
    pub fn float_list(&self, name: &str) -> Result<Vec<f64>> {
        match self.require(name)? {
            ParamValue::FloatList(values) => Ok(values.to_vec()),
            ParamValue::IntList(values) => Ok(values.iter().map(|value| *value as f64).collect()),
            other => Err(Self::mismatch(name, "a list of floats", other)),
        }
    }

    /// A list-of-strings parameter.
    pub fn string_list(&self, name: &str) -> Result<Vec<String>> {
        match self.require(name)? {
            ParamValue::StrList(values) => {
                Ok(values.iter().map(|value| value.to_string()).collect())
            }
            other => Err(Self::mismatch(name, "a list of strings", other)),
        }
    }
}
