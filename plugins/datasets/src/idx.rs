//! The `idx` dataset: images and labels in the IDX format of MNIST and its relatives, gzip
//! compressed or not.
//!
//! An IDX file starts with two zero bytes, a type code, the number of dimensions, and each
//! dimension as a big-endian u32; the values follow, big-endian. Unsigned-byte values are
//! divided by 255, so MNIST pixels lie in [0, 1]; other types are kept as they are.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, Param, ParamType,
    Params, Result, Split, bail, ensure,
};

use crate::samples::{Samples, SplitSamples};
use crate::split::{SplitIndices, SplitOptions, hold_out_classes};

/// The two bytes that start a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A parsed IDX array: its shape and values as float32.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// True when the values were unsigned bytes, which can be labels.
    pub unsigned_bytes: bool,
}

/// Reads the file at `path`, decompressing it when it starts with the gzip magic bytes.
///
/// # Errors
///
/// Fails when the file cannot be read or the gzip stream is invalid or truncated.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let name = path.display();
    let bytes = std::fs::read(path)
        .map_err(|error| pretext_plugin_api::Error::msg(format!("{name}: {error}")))?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut decoded = Vec::new();
    GzDecoder::new(bytes.as_slice()).read_to_end(&mut decoded).map_err(|error| {
        pretext_plugin_api::Error::msg(format!(
            "{name}: the gzip stream is invalid or truncated after {} decompressed bytes: {error}",
            decoded.len()
        ))
    })?;
    Ok(decoded)
}

/// Parses IDX `bytes`; `name` is the file named in messages.
///
/// # Errors
///
/// Fails on a bad magic number, an unknown type code, no dimensions, or fewer data bytes than
/// the dimensions announce, naming the byte offset.
pub fn parse_idx(name: &str, bytes: &[u8]) -> Result<IdxArray> {
    ensure!(
        bytes.len() >= 4,
        "{name}: expected an IDX header of at least 4 bytes, found {} bytes",
        bytes.len()
    );
    ensure!(
        bytes[0] == 0 && bytes[1] == 0,
        "{name}, byte 0: expected the IDX magic number to start with two zero bytes, found \
         0x{:02x} 0x{:02x}",
        bytes[0],
        bytes[1]
    );
    let (size, kind) = match bytes[2] {
        0x08 => (1, "unsigned byte"),
        0x09 => (1, "signed byte"),
        0x0B => (2, "short"),
        0x0C => (4, "int"),
        0x0D => (4, "float"),
        0x0E => (8, "double"),
        code => bail!(
            "{name}, byte 2: expected an IDX type code 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e, \
             found 0x{code:02x}"
        ),
    };
    let dimensions = bytes[3] as usize;
    ensure!(dimensions > 0, "{name}, byte 3: expected at least one dimension, found 0");

    let header = 4 + 4 * dimensions;
    ensure!(
        bytes.len() >= header,
        "{name}: expected a {header}-byte header for {dimensions} dimensions, found {} bytes \
         (the file is truncated)",
        bytes.len()
    );
    let shape: Vec<usize> = (0..dimensions)
        .map(|axis| {
            let start = 4 + 4 * axis;
            u32::from_be_bytes(bytes[start..start + 4].try_into().expect("four bytes")) as usize
        })
        .collect();
    let count = shape.iter().try_fold(1usize, |total, &size| total.checked_mul(size));
    let expected = count.and_then(|count| count.checked_mul(size));
    let available = bytes.len() - header;
    let Some(expected) = expected.filter(|&expected| expected <= available) else {
        bail!(
            "{name}: expected {} bytes of {kind} data for shape {shape:?} after the {header}-byte \
             header, found {available} (the file is truncated)",
            expected.map_or("more than 2^64".to_owned(), |bytes| bytes.to_string())
        );
    };

    let data = &bytes[header..header + expected];
    let values = match bytes[2] {
        0x08 => data.iter().map(|&value| value as f32 / 255.0).collect(),
        0x09 => data.iter().map(|&value| value as i8 as f32).collect(),
        0x0B => data.chunks_exact(2).map(|b| i16::from_be_bytes([b[0], b[1]]) as f32).collect(),
        0x0C => {
            data.chunks_exact(4).map(|b| i32::from_be_bytes(b.try_into().unwrap()) as f32).collect()
        }
        0x0D => data.chunks_exact(4).map(|b| f32::from_be_bytes(b.try_into().unwrap())).collect(),
        _ => {
            data.chunks_exact(8).map(|b| f64::from_be_bytes(b.try_into().unwrap()) as f32).collect()
        }
    };
    Ok(IdxArray { shape, values, unsigned_bytes: bytes[2] == 0x08 })
}

/// Reads an images file and an optional labels file into samples.
fn read_samples(images: &str, labels: &str) -> Result<(Samples, Vec<usize>)> {
    let array = parse_idx(images, &read_maybe_gzip(Path::new(images))?)?;
    ensure!(
        array.shape.len() >= 2,
        "{images}: expected images of at least 2 dimensions [count, ...], found shape {:?}",
        array.shape
    );
    let count = array.shape[0];
    let numel: usize = array.shape[1..].iter().product();

    let label_values = if labels.is_empty() {
        vec![0; count]
    } else {
        let label_array = parse_idx(labels, &read_maybe_gzip(Path::new(labels))?)?;
        ensure!(
            label_array.unsigned_bytes && label_array.shape.len() == 1,
            "{labels}: expected labels as a 1-dimensional unsigned-byte IDX file, found shape \
             {:?}",
            label_array.shape
        );
        ensure!(
            label_array.shape[0] == count,
            "{labels}: there are {} labels but {images} has {count} images",
            label_array.shape[0]
        );
        label_array.values.iter().map(|value| (value * 255.0).round() as i64).collect()
    };

    let mut samples = Samples::new(numel);
    for (index, &label) in label_values.iter().enumerate() {
        samples.push(&array.values[index * numel..(index + 1) * numel], label);
    }
    Ok((samples, array.shape[1..].to_vec()))
}

/// The `idx` dataset, split into train and test.
pub struct Idx {
    data: SplitSamples,
}

impl DatasetPlugin for Idx {
    fn describe() -> Description {
        let description = Description::new(
            "idx",
            env!("CARGO_PKG_VERSION"),
            "images and labels in the IDX (MNIST) format, gzip or not; bytes scaled to [0, 1]",
        )
        .param(Param::required(
            "images",
            ParamType::Str,
            "the IDX file of train images (such as train-images-idx3-ubyte.gz)",
        ))
        .param(Param::string("labels", "", "the IDX file of train labels; empty for none"))
        .param(Param::string(
            "test_images",
            "",
            "the IDX file of test images; empty to split `images` by test_fraction",
        ))
        .param(Param::string("test_labels", "", "the IDX file of test labels"))
        .param(
            Param::string(
                "shape",
                "image",
                "sample shape: `image` for [1, rows, columns], `flat` for [rows * columns]",
            )
            .choices(&["image", "flat"]),
        );
        SplitOptions::declare(description)
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let options = SplitOptions::from_params(params)?;
        let labels = params.string("labels")?;
        let test_images = params.string("test_images")?;
        let test_labels = params.string("test_labels")?;
        ensure!(
            labels.is_empty() == test_labels.is_empty() || test_images.is_empty(),
            "set both labels and test_labels, or neither"
        );
        ensure!(
            !labels.is_empty() || options.holdout_classes.is_empty(),
            "holdout_classes needs labels; set the labels parameter"
        );

        let (train, image_shape) = read_samples(&params.string("images")?, &labels)?;
        let sample_shape = match (params.string("shape")?.as_str(), image_shape.as_slice()) {
            ("image", [rows, columns]) => vec![1, *rows as i64, *columns as i64],
            ("image", other) => other.iter().map(|&size| size as i64).collect(),
            _ => vec![train.numel() as i64],
        };
        let class_names = if labels.is_empty() {
            Vec::new()
        } else {
            let classes = train.labels().iter().max().map_or(0, |max| max + 1);
            (0..classes).map(|label| label.to_string()).collect()
        };

        let data = if test_images.is_empty() {
            SplitSamples::split(&train, sample_shape, class_names, &options)?
        } else {
            let (test, test_shape) = read_samples(&test_images, &test_labels)?;
            ensure!(
                test_shape == image_shape,
                "{test_images}: test images have shape {test_shape:?} but train images have \
                 {image_shape:?}"
            );
            let everything = SplitIndices { train: (0..train.len()).collect(), test: Vec::new() };
            let kept = hold_out_classes(everything, train.labels(), &options.holdout_classes)?;
            SplitSamples { sample_shape, class_names, train: train.select(&kept.train), test }
        };
        Ok(Self { data })
    }
}

impl Dataset for Idx {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;

    use super::*;

    /// IDX bytes of `count` unsigned-byte images of 2 x 3 pixels, image `i` filled with `i`.
    fn images_bytes(count: u8) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0x08, 3];
        for size in [count as u32, 2, 3] {
            bytes.extend(size.to_be_bytes());
        }
        for image in 0..count {
            bytes.extend([image; 6]);
        }
        bytes
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0x08, 1];
        bytes.extend((labels.len() as u32).to_be_bytes());
        bytes.extend(labels);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn params(entries: &[(&str, &str)], holdout: &[i64]) -> Params {
        let mut values: Vec<(String, ParamValue)> = ["labels", "test_images", "test_labels"]
            .iter()
            .map(|name| (name.to_string(), ParamValue::Str("".into())))
            .collect();
        values.push(("shape".into(), ParamValue::Str("image".into())));
        for (name, value) in entries {
            values.retain(|(key, _)| key != name);
            values.push((name.to_string(), ParamValue::Str((*value).into())));
        }
        values.push(("test_fraction".into(), ParamValue::Float(0.25)));
        values.push(("split_seed".into(), ParamValue::Int(0)));
        values.push(("holdout_classes".into(), ParamValue::IntList(holdout.into())));
        Params::new(values)
    }

    fn context() -> BuildContext {
        BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None }
    }

    #[test]
    fn idx_parses_images_and_scales_bytes() {
        let array = parse_idx("x", &images_bytes(3)).unwrap();

        assert_eq!(array.shape, [3, 2, 3]);
        assert_eq!(array.values[6], 1.0 / 255.0);
        assert!(array.unsigned_bytes);
    }

    #[test]
    fn idx_rejects_truncated_data() {
        let mut bytes = images_bytes(4);
        bytes.truncate(bytes.len() - 5);

        let error = parse_idx("x.idx", &bytes).unwrap_err();

        assert_eq!(
            error.message(),
            "x.idx: expected 24 bytes of unsigned byte data for shape [4, 2, 3] after the \
             16-byte header, found 19 (the file is truncated)"
        );
    }

    #[test]
    fn idx_rejects_truncated_header() {
        let error = parse_idx("x.idx", &[0, 0, 0x08, 3, 0, 0, 0, 4]).unwrap_err();

        assert_eq!(
            error.message(),
            "x.idx: expected a 16-byte header for 3 dimensions, found 8 bytes (the file is \
             truncated)"
        );
    }

    #[test]
    fn idx_rejects_bad_magic_and_type() {
        let error = parse_idx("x.idx", b"\x89PNG....").unwrap_err();
        assert_eq!(
            error.message(),
            "x.idx, byte 0: expected the IDX magic number to start with two zero bytes, found \
             0x89 0x50"
        );

        let error = parse_idx("x.idx", &[0, 0, 0x07, 1, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(
            error.message(),
            "x.idx, byte 2: expected an IDX type code 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e, \
             found 0x07"
        );
    }

    #[test]
    fn idx_parses_big_endian_floats() {
        let mut bytes = vec![0, 0, 0x0D, 1];
        bytes.extend(2u32.to_be_bytes());
        bytes.extend(1.5f32.to_be_bytes());
        bytes.extend((-3.0f32).to_be_bytes());

        let array = parse_idx("x", &bytes).unwrap();

        assert_eq!(array.values, [1.5, -3.0]);
        assert!(!array.unsigned_bytes);
    }

    #[test]
    fn idx_plugin_reads_gzip_with_split() {
        let folder = tempfile::tempdir().unwrap();
        let (images, labels) = (folder.path().join("x.gz"), folder.path().join("y.gz"));
        std::fs::write(&images, gzip(&images_bytes(8))).unwrap();
        std::fs::write(&labels, gzip(&labels_bytes(&[0, 1, 2, 0, 1, 2, 0, 1]))).unwrap();
        let (images, labels) = (images.display().to_string(), labels.display().to_string());

        let data =
            Idx::create(&params(&[("images", &images), ("labels", &labels)], &[2]), &context())
                .unwrap();

        let info = data.info();
        assert_eq!(info.sample_shape, [1, 2, 3]);
        assert_eq!(info.num_classes, Some(3));
        assert!(data.data.train.labels().iter().all(|&label| label != 2));
        assert_eq!(data.data.test.labels().iter().filter(|&&label| label == 2).count(), 2);
        let batch = data.batch(Split::Train, &[0]).unwrap();
        assert_eq!(batch.inputs.size(), [1, 1, 2, 3]);
    }

    #[test]
    fn idx_plugin_uses_separate_test_files() {
        let folder = tempfile::tempdir().unwrap();
        let path = |name: &str| folder.path().join(name).display().to_string();
        std::fs::write(path("train-x"), images_bytes(6)).unwrap();
        std::fs::write(path("train-y"), labels_bytes(&[0, 1, 0, 1, 0, 1])).unwrap();
        std::fs::write(path("test-x"), images_bytes(2)).unwrap();
        std::fs::write(path("test-y"), labels_bytes(&[1, 0])).unwrap();
        let entries = [
            ("images", path("train-x")),
            ("labels", path("train-y")),
            ("test_images", path("test-x")),
            ("test_labels", path("test-y")),
            ("shape", "flat".to_owned()),
        ];
        let entries: Vec<(&str, &str)> =
            entries.iter().map(|(name, value)| (*name, value.as_str())).collect();

        let data = Idx::create(&params(&entries, &[1]), &context()).unwrap();

        let info = data.info();
        assert_eq!(info.sample_shape, [6]);
        assert_eq!((info.train_len, info.test_len), (3, 2));
    }

    #[test]
    fn idx_rejects_corrupt_gzip() {
        let folder = tempfile::tempdir().unwrap();
        let images = folder.path().join("x.gz");
        let mut bytes = gzip(&images_bytes(50));
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&images, bytes).unwrap();

        let error = read_maybe_gzip(&images).unwrap_err();

        assert!(error.message().contains("the gzip stream is invalid or truncated"), "{error}");
    }
}
