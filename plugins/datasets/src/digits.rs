//! The 8x8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" test set,
//! embedded in the library (see `data/SOURCES.md`).

use std::io::Read;

use flate2::read::GzDecoder;
use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Error, Param, Params,
    Result, Split, bail,
};

use crate::samples::{Samples, SplitSamples};
use crate::split::SplitOptions;

/// The gzip-compressed CSV: one row per image, 64 pixel values in 0..=16, then the label.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// Number of pixels in one image (8 x 8).
pub const PIXELS: usize = 64;

/// Largest pixel value in the file, by which pixels are divided.
pub const MAX_PIXEL: u32 = 16;

/// Number of classes, the digits 0 to 9.
pub const CLASSES: i64 = 10;

/// The digits dataset, split into train and test.
pub struct Digits {
    data: SplitSamples,
}

impl DatasetPlugin for Digits {
    fn describe() -> Description {
        let description = Description::new(
            "digits",
            env!("CARGO_PKG_VERSION"),
            "1797 handwritten digits as 8x8 images, pixels in [0, 1], 10 classes",
        )
        .param(
            Param::string("shape", "flat", "sample shape: `flat` for [64], `image` for [1, 8, 8]")
                .choices(&["flat", "image"]),
        );
        SplitOptions::declare(description)
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let sample_shape = match params.string("shape")?.as_str() {
            "flat" => vec![PIXELS as i64],
            "image" => vec![1, 8, 8],
            other => bail!("shape must be `flat` or `image`, found `{other}`"),
        };
        let options = SplitOptions::from_params(params)?;

        let samples = load_digits()?;
        let class_names = (0..CLASSES).map(|label| label.to_string()).collect();
        let data = SplitSamples::split(&samples, sample_shape, class_names, &options)?;
        Ok(Self { data })
    }
}

impl Dataset for Digits {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// Decompresses and parses the embedded digits, in file order, with pixels scaled to [0, 1].
///
/// # Errors
///
/// Fails when the embedded file cannot be decompressed or a row is malformed.
pub fn load_digits() -> Result<Samples> {
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|error| Error::msg(format!("failed to decompress digits.csv.gz: {error}")))?;
    parse_digits_csv(&text).map_err(|error| error.context("invalid digits.csv.gz"))
}

/// Parses digits CSV text: per row, [`PIXELS`] integers in 0..=[`MAX_PIXEL`] and a label in
/// 0..[`CLASSES`]. Pixels are divided by [`MAX_PIXEL`]. Blank lines are skipped.
///
/// # Errors
///
/// Fails on the first malformed row, naming its line, the field and what was found, and when
/// the text contains no rows.
pub fn parse_digits_csv(text: &str) -> Result<Samples> {
    let mut samples = Samples::new(PIXELS);
    let mut pixels = [0f32; PIXELS];

    for (line_index, line) in text.lines().enumerate() {
        let line_number = line_index + 1;
        if line.trim().is_empty() {
            continue;
        }

        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != PIXELS + 1 {
            bail!(
                "line {line_number}: expected {} comma-separated values ({PIXELS} pixels, then \
                 the label), found {}",
                PIXELS + 1,
                fields.len()
            );
        }

        for (column, (field, pixel)) in fields.iter().zip(pixels.iter_mut()).enumerate() {
            let value = field.parse::<u32>().ok().filter(|&value| value <= MAX_PIXEL);
            let Some(value) = value else {
                bail!(
                    "line {line_number}, field {}: expected a pixel value, an integer in \
                     0..={MAX_PIXEL}, found `{field}`",
                    column + 1
                );
            };
            *pixel = value as f32 / MAX_PIXEL as f32;
        }

        let label_field = fields[PIXELS];
        let label = label_field.parse::<i64>().ok().filter(|label| (0..CLASSES).contains(label));
        let Some(label) = label else {
            bail!(
                "line {line_number}, field {}: expected a label, an integer in 0..={}, found \
                 `{label_field}`",
                PIXELS + 1,
                CLASSES - 1
            );
        };
        samples.push(&pixels, label);
    }

    if samples.is_empty() {
        bail!("expected rows of {} values, found no rows", PIXELS + 1);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    fn build(shape: &str, test_fraction: f64, split_seed: i64) -> Digits {
        let params = Params::new(vec![
            ("shape".into(), ParamValue::Str(shape.into())),
            ("test_fraction".into(), ParamValue::Float(test_fraction)),
            ("split_seed".into(), ParamValue::Int(split_seed)),
            ("holdout_classes".into(), ParamValue::IntList(Default::default())),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        Digits::create(&params, &context).unwrap()
    }

    fn class_counts(labels: &[i64]) -> [usize; CLASSES as usize] {
        let mut counts = [0; CLASSES as usize];
        for &label in labels {
            counts[label as usize] += 1;
        }
        counts
    }

    fn row_of(pixel: &str, label: &str) -> String {
        let mut fields = vec![pixel.to_owned(); PIXELS];
        fields.push(label.to_owned());
        fields.join(",")
    }

    #[test]
    fn digits_has_1797_rows() {
        let samples = load_digits().unwrap();

        assert_eq!(samples.len(), 1797);
        assert_eq!(samples.numel(), PIXELS);
    }

    #[test]
    fn digits_class_counts_match_source() {
        let samples = load_digits().unwrap();

        // Counts of the digits 0 to 9 in the UCI test set.
        let expected = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];
        assert_eq!(class_counts(samples.labels()), expected);
    }

    #[test]
    fn digits_pixels_lie_in_unit_range() {
        let samples = load_digits().unwrap();

        let pixels: Vec<f32> = (0..samples.len()).flat_map(|i| samples.row(i).to_vec()).collect();
        assert!(pixels.iter().all(|&value| (0.0..=1.0).contains(&value)));
        assert!(pixels.contains(&0.0));
        assert!(pixels.contains(&1.0));
    }

    #[test]
    fn digits_first_row_matches_file() {
        let samples = load_digits().unwrap();

        let first = samples.row(0);
        assert_eq!(first[..4], [0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        assert_eq!(samples.labels()[0], 0);
    }

    #[test]
    fn digits_split_sizes_per_class() {
        let digits = build("flat", 0.2, 0);

        let train = class_counts(digits.data.train.labels());
        let test = class_counts(digits.data.test.labels());
        let totals = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];
        for (label, &total) in totals.iter().enumerate() {
            let expected_test = (0.2 * total as f64).round() as usize;
            assert_eq!(test[label], expected_test, "test count of class {label}");
            assert_eq!(train[label], total - expected_test, "train count of class {label}");
        }
        assert_eq!(digits.info().train_len, 1438);
        assert_eq!(digits.info().test_len, 359);
    }

    #[test]
    fn digits_split_is_deterministic() {
        let first = build("flat", 0.2, 5);
        let again = build("flat", 0.2, 5);
        let other = build("flat", 0.2, 6);

        assert_eq!(first.data.test, again.data.test);
        assert_eq!(first.data.train, again.data.train);
        assert_ne!(first.data.test, other.data.test);
    }

    #[test]
    fn digits_image_shape() {
        let digits = build("image", 0.2, 0);

        let batch = digits.batch(Split::Test, &[0, 1]).unwrap();
        assert_eq!(digits.info().sample_shape, [1, 8, 8]);
        assert_eq!(batch.inputs.size(), [2, 1, 8, 8]);
        assert_eq!(digits.info().class_names[9], "9");
    }

    #[test]
    fn digits_flat_shape() {
        let digits = build("flat", 0.2, 0);

        let batch = digits.batch(Split::Train, &[3]).unwrap();
        assert_eq!(batch.inputs.size(), [1, 64]);
        assert_eq!(digits.info().num_classes, Some(10));
    }

    #[test]
    fn parse_rejects_short_row() {
        let error = parse_digits_csv("1,2,3\n").unwrap_err();

        assert_eq!(
            error.message(),
            "line 1: expected 65 comma-separated values (64 pixels, then the label), found 3"
        );
    }

    #[test]
    fn parse_rejects_bad_pixel() {
        let text = format!("{}\n{}\n", row_of("0", "1"), row_of("17", "1"));

        let error = parse_digits_csv(&text).unwrap_err();
        assert_eq!(
            error.message(),
            "line 2, field 1: expected a pixel value, an integer in 0..=16, found `17`"
        );
    }

    #[test]
    fn parse_rejects_non_numeric_pixel() {
        let error = parse_digits_csv(&row_of("x", "1")).unwrap_err();

        assert!(error.message().contains("found `x`"), "{}", error.message());
    }

    #[test]
    fn parse_rejects_bad_label() {
        let error = parse_digits_csv(&row_of("3", "10")).unwrap_err();

        assert_eq!(
            error.message(),
            "line 1, field 65: expected a label, an integer in 0..=9, found `10`"
        );
    }

    #[test]
    fn digits_holdout_moves_class_to_test() {
        let params = Params::new(vec![
            ("shape".into(), ParamValue::Str("flat".into())),
            ("test_fraction".into(), ParamValue::Float(0.2)),
            ("split_seed".into(), ParamValue::Int(0)),
            ("holdout_classes".into(), ParamValue::IntList(vec![3, 8].into())),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };

        let digits = Digits::create(&params, &context).unwrap();

        let train = class_counts(digits.data.train.labels());
        let test = class_counts(digits.data.test.labels());
        assert_eq!((train[3], train[8]), (0, 0));
        assert_eq!((test[3], test[8]), (183, 174));
        assert_eq!(digits.info().num_classes, Some(10));
    }

    #[test]
    fn parse_rejects_empty_text() {
        let error = parse_digits_csv("\n\n").unwrap_err();

        assert_eq!(error.message(), "expected rows of 65 values, found no rows");
    }

    #[test]
    fn parse_skips_blank_lines_and_crlf() {
        let text = format!("{}\r\n\r\n{}\r\n", row_of("16", "2"), row_of("8", "3"));

        let samples = parse_digits_csv(&text).unwrap();
        assert_eq!(samples.labels(), [2, 3]);
        assert_eq!(samples.row(1)[0], 0.5);
    }
}
