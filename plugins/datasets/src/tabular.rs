//! The real tabular datasets `breast_cancer` and `wine`, embedded in the library (see
//! `data/SOURCES.md`), with features standardized by the train split's statistics.

use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Param, Params, Result,
    Split, bail,
};

use crate::samples::{Samples, SplitSamples};
use crate::split::SplitOptions;

/// The breast cancer CSV, whose first line is `569,30,malignant,benign`.
const BREAST_CANCER_CSV: &str = include_str!("../data/breast_cancer.csv");

/// The wine CSV, whose first line is `178,13,class_0,class_1,class_2`.
const WINE_CSV: &str = include_str!("../data/wine_data.csv");

/// A table parsed from the scikit-learn CSV format: float features and class names.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub samples: Samples,
    pub class_names: Vec<String>,
}

/// Parses the CSV layout that scikit-learn ships its small data sets in.
///
/// The first line is `rows,features,class names...`. Every other non-blank line holds
/// `features` floats and then an integer label below the number of class names. `name` is the
/// file name used in messages.
///
/// # Errors
///
/// Fails on a malformed header or row, naming the line, the field and what was found, and when
/// the number of rows differs from the header's count.
pub fn parse_sklearn_csv(name: &str, text: &str) -> Result<Table> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("{name}: expected a header line `rows,features,class names...`, found no lines");
    };
    let fields: Vec<&str> = header.split(',').map(str::trim).collect();
    let count = |index: usize, what: &str| -> Result<usize> {
        match fields.get(index).and_then(|field| field.parse::<usize>().ok()) {
            Some(value) => Ok(value),
            None => bail!(
                "{name}, line 1: expected the {what} count as field {}, found `{}`",
                index + 1,
                fields.get(index).copied().unwrap_or("")
            ),
        }
    };
    let rows = count(0, "row")?;
    let features = count(1, "feature")?;
    let class_names: Vec<String> = fields[2..].iter().map(|name| name.to_string()).collect();
    if class_names.is_empty() {
        bail!("{name}, line 1: expected class names after the two counts, found none");
    }

    let mut samples = Samples::new(features);
    let mut values = vec![0f32; features];
    for (line_index, line) in lines {
        let line_number = line_index + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != features + 1 {
            bail!(
                "{name}, line {line_number}: expected {} comma-separated values ({features} \
                 features, then the label), found {}",
                features + 1,
                fields.len()
            );
        }
        for (column, (field, value)) in fields.iter().zip(values.iter_mut()).enumerate() {
            let Some(parsed) = field.parse::<f32>().ok().filter(|value| value.is_finite()) else {
                bail!(
                    "{name}, line {line_number}, field {}: expected a finite number, found \
                     `{field}`",
                    column + 1
                );
            };
            *value = parsed;
        }
        let label_field = fields[features];
        let classes = class_names.len() as i64;
        let Some(label) =
            label_field.parse::<i64>().ok().filter(|label| (0..classes).contains(label))
        else {
            bail!(
                "{name}, line {line_number}, field {}: expected a label, an integer in 0..={}, \
                 found `{label_field}`",
                features + 1,
                classes - 1
            );
        };
        samples.push(&values, label);
    }

    if samples.len() != rows {
        bail!("{name}: the header announces {rows} rows, found {}", samples.len());
    }
    Ok(Table { samples, class_names })
}

/// Builds a standardized (or raw) split of an embedded table from the spec's parameters.
fn build_table(name: &str, text: &str, params: &Params) -> Result<SplitSamples> {
    let options = SplitOptions::from_params(params)?;
    let table = parse_sklearn_csv(name, text)?;
    let shape = vec![table.samples.numel() as i64];
    let mut data = SplitSamples::split(&table.samples, shape, table.class_names, &options)?;
    if params.bool("standardize")? {
        data.standardize();
    }
    Ok(data)
}

/// Adds the parameters that both tabular datasets share.
fn declare_table(description: Description) -> Description {
    SplitOptions::declare(description).param(Param::bool(
        "standardize",
        true,
        "z-score each feature with the train split's mean and population standard deviation",
    ))
}

/// The Breast Cancer Wisconsin (Diagnostic) data: 569 tumours, 30 features, 2 classes.
pub struct BreastCancer {
    data: SplitSamples,
}

impl DatasetPlugin for BreastCancer {
    fn describe() -> Description {
        declare_table(Description::new(
            "breast_cancer",
            env!("CARGO_PKG_VERSION"),
            "569 breast tumours, 30 features, 2 classes (0 malignant, 1 benign)",
        ))
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        Ok(Self { data: build_table("breast_cancer.csv", BREAST_CANCER_CSV, params)? })
    }
}

impl Dataset for BreastCancer {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// The UCI Wine data: 178 wines, 13 chemical features, 3 cultivars.
pub struct Wine {
    data: SplitSamples,
}

impl DatasetPlugin for Wine {
    fn describe() -> Description {
        declare_table(Description::new(
            "wine",
            env!("CARGO_PKG_VERSION"),
            "178 wines, 13 chemical features, 3 classes (cultivars)",
        ))
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        Ok(Self { data: build_table("wine_data.csv", WINE_CSV, params)? })
    }
}

impl Dataset for Wine {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    fn params(standardize: bool, holdout: &[i64]) -> Params {
        Params::new(vec![
            ("test_fraction".into(), ParamValue::Float(0.25)),
            ("split_seed".into(), ParamValue::Int(0)),
            ("holdout_classes".into(), ParamValue::IntList(holdout.into())),
            ("standardize".into(), ParamValue::Bool(standardize)),
        ])
    }

    fn context() -> BuildContext {
        BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None }
    }

    fn column_mean(samples: &Samples, column: usize) -> f64 {
        let sum: f64 = (0..samples.len()).map(|i| samples.row(i)[column] as f64).sum();
        sum / samples.len() as f64
    }

    #[test]
    fn breast_cancer_matches_source_counts() {
        let table = parse_sklearn_csv("breast_cancer.csv", BREAST_CANCER_CSV).unwrap();

        assert_eq!(table.samples.len(), 569);
        assert_eq!(table.samples.numel(), 30);
        assert_eq!(table.class_names, ["malignant", "benign"]);
        let malignant = table.samples.labels().iter().filter(|&&label| label == 0).count();
        assert_eq!(malignant, 212);
        assert_eq!(table.samples.row(0)[0], 17.99);
    }

    #[test]
    fn wine_matches_source_counts() {
        let table = parse_sklearn_csv("wine_data.csv", WINE_CSV).unwrap();

        assert_eq!(table.samples.len(), 178);
        assert_eq!(table.samples.numel(), 13);
        let counts: Vec<usize> = (0..3)
            .map(|class| table.samples.labels().iter().filter(|&&label| label == class).count())
            .collect();
        assert_eq!(counts, [59, 71, 48]);
    }

    #[test]
    fn wine_train_split_is_standardized() {
        let wine = Wine::create(&params(true, &[]), &context()).unwrap();

        for column in [0, 12] {
            assert!(column_mean(&wine.data.train, column).abs() < 1e-5, "column {column}");
        }
        assert!(column_mean(&wine.data.test, 12).abs() > 1e-4);
        assert_eq!(wine.info().sample_shape, [13]);
        assert_eq!(wine.info().num_classes, Some(3));
    }

    #[test]
    fn breast_cancer_keeps_raw_values() {
        let data = BreastCancer::create(&params(false, &[]), &context()).unwrap();

        assert!(column_mean(&data.data.train, 3) > 100.0);
    }

    #[test]
    fn breast_cancer_holds_out_class() {
        let data = BreastCancer::create(&params(true, &[0]), &context()).unwrap();

        assert!(data.data.train.labels().iter().all(|&label| label == 1));
        let malignant = data.data.test.labels().iter().filter(|&&label| label == 0).count();
        assert_eq!(malignant, 212);
    }

    #[test]
    fn parse_rejects_short_row() {
        let error = parse_sklearn_csv("t.csv", "2,2,a,b\n1,2,0\n3,1\n").unwrap_err();

        assert_eq!(
            error.message(),
            "t.csv, line 3: expected 3 comma-separated values (2 features, then the label), \
             found 2"
        );
    }

    #[test]
    fn parse_rejects_bad_label_and_count() {
        let error = parse_sklearn_csv("t.csv", "1,1,a,b\n1.5,2\n").unwrap_err();
        assert_eq!(
            error.message(),
            "t.csv, line 2, field 2: expected a label, an integer in 0..=1, found `2`"
        );

        let error = parse_sklearn_csv("t.csv", "3,1,a,b\n1.5,1\n").unwrap_err();
        assert_eq!(error.message(), "t.csv: the header announces 3 rows, found 1");

        let error = parse_sklearn_csv("t.csv", "x,1,a\n").unwrap_err();
        assert_eq!(error.message(), "t.csv, line 1: expected the row count as field 1, found `x`");
    }
}
