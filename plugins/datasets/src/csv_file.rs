//! The `csv` dataset: numeric columns of a CSV file that a user brings, with an optional label
//! column chosen by name.
//!
//! The header is detected when `header = "auto"`: the first row is a header when any of its
//! fields is not a number. Label values that are all non-negative integers are used as class
//! ids. Otherwise each distinct value is a class, numbered in sorted order and named by the
//! value.
//!
//! NOTE: fields are split at every delimiter, and only quotes around a whole field are
//! removed, so a quoted field that contains the delimiter is read as two fields.

use std::collections::BTreeSet;
use std::path::Path;

use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Param, ParamType,
    Params, Result, Split, bail, ensure,
};

use crate::samples::{Samples, SplitSamples};
use crate::split::SplitOptions;

/// Whether the first row names the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMode {
    Auto,
    Present,
    Absent,
}

/// Settings of [`parse_csv`].
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    pub header: HeaderMode,
    pub delimiter: char,
    /// Name of the label column; empty for none.
    pub label_column: String,
}

/// A parsed table: the feature rows, the label column's values, and the feature names.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    pub samples: Samples,
    /// Class names by id; empty when there is no label column.
    pub class_names: Vec<String>,
    pub feature_names: Vec<String>,
}

/// The `csv` dataset, split into train and test.
pub struct Csv {
    data: SplitSamples,
}

impl DatasetPlugin for Csv {
    fn describe() -> Description {
        let description = Description::new(
            "csv",
            env!("CARGO_PKG_VERSION"),
            "numeric columns of a CSV file, with an optional label column",
        )
        .param(Param::required(
            "path",
            ParamType::Str,
            "the CSV file, relative to the working directory",
        ))
        .param(Param::string(
            "label_column",
            "",
            "name of the label column in the header; empty for unlabelled data",
        ))
        .param(
            Param::string(
                "header",
                "auto",
                "`auto`: the first row is a header when a field is not a number; `yes`; `no`",
            )
            .choices(&["auto", "yes", "no"]),
        )
        .param(Param::string("delimiter", ",", "the field separator, one character"))
        .param(Param::bool(
            "standardize",
            false,
            "z-score each feature with the train split's mean and population standard deviation",
        ));
        SplitOptions::declare(description)
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let header = match params.string("header")?.as_str() {
            "auto" => HeaderMode::Auto,
            "yes" => HeaderMode::Present,
            "no" => HeaderMode::Absent,
            other => bail!("header must be `auto`, `yes` or `no`, found `{other}`"),
        };
        let delimiter = params.string("delimiter")?;
        let mut characters = delimiter.chars();
        let (Some(delimiter), None) = (characters.next(), characters.next()) else {
            bail!("delimiter must be one character, found `{delimiter}`");
        };
        let options =
            CsvOptions { header, delimiter, label_column: params.string("label_column")? };
        let split = SplitOptions::from_params(params)?;

        let path = params.string("path")?;
        let text = std::fs::read(&path)
            .map_err(|error| pretext_plugin_api::Error::msg(format!("{path}: {error}")))?;
        let text = crate::text::decode_utf8(Path::new(&path), &text)?;
        let table = parse_csv(&path, text, &options)?;
        if table.class_names.is_empty() {
            ensure!(
                split.holdout_classes.is_empty(),
                "holdout_classes needs labels, but {path} is read without a label column; set \
                 label_column"
            );
        }

        let shape = vec![table.samples.numel() as i64];
        let mut data = SplitSamples::split(&table.samples, shape, table.class_names, &split)?;
        if params.bool("standardize")? {
            data.standardize();
        }
        Ok(Self { data })
    }
}

impl Dataset for Csv {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// Removes surrounding whitespace and one pair of surrounding double quotes.
fn clean(field: &str) -> &str {
    let field = field.trim();
    field.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')).unwrap_or(field)
}

/// Parses CSV `text`; `name` is the file named in messages.
///
/// # Errors
///
/// Fails on a row whose field count differs from the first row's, a feature field that is not
/// a finite number, or an empty label. Fails too when the label column is missing from the
/// header or there is no header, and when there are no data rows. Messages name the line and
/// the column.
pub fn parse_csv(name: &str, text: &str, options: &CsvOptions) -> Result<CsvTable> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty())
        .peekable();
    let Some(&(_, first)) = lines.peek() else {
        bail!("{name}: expected rows of comma-separated numbers, found an empty file");
    };
    let first: Vec<&str> = first.split(options.delimiter).map(clean).collect();
    let has_header = match options.header {
        HeaderMode::Present => true,
        HeaderMode::Absent => false,
        HeaderMode::Auto => first.iter().any(|field| field.parse::<f64>().is_err()),
    };
    let columns: Vec<String> = if has_header {
        lines.next();
        first.iter().map(|field| field.to_string()).collect()
    } else {
        (1..=first.len()).map(|column| format!("column {column}")).collect()
    };

    let label_index = if options.label_column.is_empty() {
        None
    } else {
        ensure!(
            has_header,
            "{name}: label_column is `{}` but the file has no header row to find it in",
            options.label_column
        );
        let position = columns.iter().position(|column| *column == options.label_column);
        let Some(position) = position else {
            bail!(
                "{name}, line 1: no column named `{}`; the header has {columns:?}",
                options.label_column
            );
        };
        Some(position)
    };

    let features = columns.len() - usize::from(label_index.is_some());
    ensure!(features > 0, "{name}: the file has no feature columns besides the label");
    let mut values = Vec::new();
    let mut raw_labels = Vec::new();
    let mut row = Vec::with_capacity(features);
    for (line_number, line) in lines {
        let fields: Vec<&str> = line.split(options.delimiter).map(clean).collect();
        if fields.len() != columns.len() {
            bail!(
                "{name}, line {line_number}: expected {} fields as in the first row, found {}",
                columns.len(),
                fields.len()
            );
        }
        row.clear();
        for (index, field) in fields.iter().enumerate() {
            if Some(index) == label_index {
                ensure!(
                    !field.is_empty(),
                    "{name}, line {line_number}, column `{}`: expected a label, found an empty \
                     field",
                    columns[index]
                );
                raw_labels.push(field.to_string());
                continue;
            }
            let Some(value) = field.parse::<f32>().ok().filter(|value| value.is_finite()) else {
                bail!(
                    "{name}, line {line_number}, column `{}` (field {}): expected a finite \
                     number, found `{field}`",
                    columns[index],
                    index + 1
                );
            };
            row.push(value);
        }
        values.push(row.clone());
    }
    ensure!(!values.is_empty(), "{name}: expected data rows after the header, found none");

    let (labels, class_names) = match label_index {
        Some(_) => encode_labels(&raw_labels),
        None => (vec![0; values.len()], Vec::new()),
    };
    let mut samples = Samples::new(features);
    for (row, label) in values.iter().zip(labels) {
        samples.push(row, label);
    }
    let feature_names = columns
        .into_iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != label_index)
        .map(|(_, name)| name)
        .collect();
    Ok(CsvTable { samples, class_names, feature_names })
}

/// Maps label strings to class ids: the integers themselves when every label is a
/// non-negative integer, otherwise the rank of each distinct value in sorted order.
fn encode_labels(raw: &[String]) -> (Vec<i64>, Vec<String>) {
    let integers: Option<Vec<i64>> =
        raw.iter().map(|label| label.parse::<i64>().ok().filter(|value| *value >= 0)).collect();
    if let Some(integers) = integers {
        let classes = integers.iter().max().map_or(0, |max| max + 1);
        return (integers, (0..classes).map(|label| label.to_string()).collect());
    }
    let names: Vec<String> = raw.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let ids = raw.iter().map(|label| names.binary_search(label).unwrap_or(0) as i64).collect();
    (ids, names)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    fn options(header: HeaderMode, label_column: &str) -> CsvOptions {
        CsvOptions { header, delimiter: ',', label_column: label_column.into() }
    }

    #[test]
    fn csv_detects_header_and_label_column() {
        let text = "a,species,b\n1.5,setosa,2\n3,virginica,4\n5,setosa,6\n";

        let table = parse_csv("t.csv", text, &options(HeaderMode::Auto, "species")).unwrap();

        assert_eq!(table.feature_names, ["a", "b"]);
        assert_eq!(table.class_names, ["setosa", "virginica"]);
        assert_eq!(table.samples.labels(), [0, 1, 0]);
        assert_eq!(table.samples.row(1), [3.0, 4.0]);
    }

    #[test]
    fn csv_without_header_numbers_columns() {
        let text = "1,2\r\n3,4\r\n\r\n";

        let table = parse_csv("t.csv", text, &options(HeaderMode::Auto, "")).unwrap();

        assert_eq!(table.feature_names, ["column 1", "column 2"]);
        assert!(table.class_names.is_empty());
        assert_eq!(table.samples.len(), 2);
    }

    #[test]
    fn csv_integer_labels_are_class_ids() {
        let text = "x,\"y\"\n0.5,2\n0.25,0\n";

        let table = parse_csv("t.csv", text, &options(HeaderMode::Present, "y")).unwrap();

        assert_eq!(table.samples.labels(), [2, 0]);
        assert_eq!(table.class_names, ["0", "1", "2"]);
    }

    #[test]
    fn csv_rejects_ragged_row() {
        let text = "a,b,c\n1,2,3\n4,5\n";

        let error = parse_csv("t.csv", text, &options(HeaderMode::Auto, "")).unwrap_err();

        assert_eq!(
            error.message(),
            "t.csv, line 3: expected 3 fields as in the first row, found 2"
        );
    }

    #[test]
    fn csv_rejects_text_in_numeric_column() {
        let text = "a,b\n1,2\n3,n/a\n";

        let error = parse_csv("t.csv", text, &options(HeaderMode::Auto, "")).unwrap_err();

        assert_eq!(
            error.message(),
            "t.csv, line 3, column `b` (field 2): expected a finite number, found `n/a`"
        );
    }

    #[test]
    fn csv_rejects_unknown_label_column() {
        let error =
            parse_csv("t.csv", "a,b\n1,2\n", &options(HeaderMode::Auto, "label")).unwrap_err();

        assert_eq!(
            error.message(),
            "t.csv, line 1: no column named `label`; the header has [\"a\", \"b\"]"
        );
    }

    #[test]
    fn csv_rejects_label_without_header() {
        let error = parse_csv("t.csv", "1,2\n", &options(HeaderMode::Absent, "a")).unwrap_err();

        assert_eq!(
            error.message(),
            "t.csv: label_column is `a` but the file has no header row to find it in"
        );
    }

    #[test]
    fn csv_plugin_reads_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("data.csv");
        let rows: String = (0..20).map(|i| format!("{i},{},{}\n", i * 2, i % 2)).collect();
        std::fs::write(&path, format!("x;y;label\n{}", rows.replace(',', ";"))).unwrap();
        let params = Params::new(vec![
            ("path".into(), ParamValue::Str(path.display().to_string().into())),
            ("label_column".into(), ParamValue::Str("label".into())),
            ("header".into(), ParamValue::Str("auto".into())),
            ("delimiter".into(), ParamValue::Str(";".into())),
            ("standardize".into(), ParamValue::Bool(true)),
            ("test_fraction".into(), ParamValue::Float(0.2)),
            ("split_seed".into(), ParamValue::Int(0)),
            ("holdout_classes".into(), ParamValue::IntList(vec![1].into())),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };

        let data = Csv::create(&params, &context).unwrap();

        let info = data.info();
        assert_eq!(info.sample_shape, [2]);
        assert_eq!(info.num_classes, Some(2));
        assert_eq!((info.train_len, info.test_len), (8, 12));
        assert!(data.data.train.labels().iter().all(|&label| label == 0));
    }
}
