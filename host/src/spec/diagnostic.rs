//! Located errors for specs and command-line overrides.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// A spec file's path and text, shared by every location inside it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

/// Where a value came from.
#[derive(Debug, Clone)]
pub enum Origin {
    File(Arc<SourceFile>),
    /// The override at this position on the command line.
    Override {
        text: String,
    },
    /// A default filled in by the host.
    Default,
}

/// A location: origin plus a byte range within it.
#[derive(Debug, Clone)]
pub struct Location {
    pub origin: Origin,
    pub span: Range<usize>,
}

impl Location {
    pub fn file(source: &Arc<SourceFile>, span: Range<usize>) -> Self {
        Self { origin: Origin::File(Arc::clone(source)), span }
    }

    pub fn default_value() -> Self {
        Self { origin: Origin::Default, span: 0..0 }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(source) => {
                let (line, column) = source.line_column(self.span.start);
                write!(f, "{}:{line}:{column}", source.path.display())
            }
            Origin::Override { text } => write!(f, "override `{text}`"),
            Origin::Default => f.write_str("default value"),
        }
    }
}

/// One problem in a spec or override.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub location: Option<Location>,
    pub message: String,
    pub help: Option<String>,
}

impl SpecError {
    pub fn new(location: Option<&Location>, message: impl Into<String>) -> Self {
        Self { location: location.cloned(), message: message.into(), help: None }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message)?,
            None => f.write_str(&self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one spec, reported together.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<SpecError> for SpecErrors {
    fn from(error: SpecError) -> Self {
        SpecErrors(vec![error])
    }
}

/// The closest of `candidates` to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Jaro-Winkler ranks candidates; a small edit distance also counts, so that transpositions in
    // short names (`mpl` for `mlp`) are caught.
    candidates
        .into_iter()
        .map(|candidate| {
            let close_edit = name.len() > 2 && strsim::damerau_levenshtein(name, candidate) <= 2;
            (strsim::jaro_winkler(name, candidate), close_edit, candidate)
        })
        .filter(|(score, close_edit, _)| *score >= 0.8 || *close_edit)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, _, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let source = SourceFile { path: "a.toml".into(), text: "a = 1\nbb = 2\n".into() };
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(6), (2, 1));
        assert_eq!(source.line_column(8), (2, 3));
    }

    #[test]
    fn closest_finds_typo() {
        assert_eq!(closest("latnet", ["latent", "hidden"]), Some("latent"));
        assert_eq!(closest("mpl", ["identity", "mlp"]), Some("mlp"));
        assert_eq!(closest("zzz", ["latent", "hidden"]), None);
    }
}
