//! The `npy` and `npz` datasets: samples from NumPy arrays that a user brings, read row by row
//! from the file on each batch (see [`crate::npy`]).
//!
//! An `.npz` member stored without compression (as `np.savez` writes it) is read in place like
//! a `.npy` file. A compressed member (`np.savez_compressed`) must be decompressed into memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, InputKind, Param,
    ParamType, Params, Result, Split, bail, ensure,
};
use zip::CompressionMethod;
use zip::ZipArchive;

use crate::npy::NpyArray;
use crate::split::SplitOptions;

/// Samples served from an array, with optional labels and the rows of each split.
pub struct ArrayDataset {
    array: NpyArray,
    labels: Option<Vec<i64>>,
    class_names: Vec<String>,
    train: Vec<usize>,
    test: Vec<usize>,
}

impl ArrayDataset {
    /// Splits the rows of `array`, stratified by `labels` when there are labels and at random
    /// otherwise.
    ///
    /// # Errors
    ///
    /// Fails when the array has fewer than two dimensions, the labels do not match the rows,
    /// holdout classes are set without labels, or the split fails.
    pub fn new(array: NpyArray, labels: Option<Vec<i64>>, options: &SplitOptions) -> Result<Self> {
        let shape = &array.header.shape;
        ensure!(
            shape.len() >= 2,
            "{}: expected an array of at least 2 dimensions [samples, ...], found shape {shape:?}",
            array.name
        );
        let rows = array.header.rows();
        if let Some(labels) = &labels {
            ensure!(
                labels.len() == rows,
                "{}: there are {rows} samples but {} labels",
                array.name,
                labels.len()
            );
        } else {
            ensure!(
                options.holdout_classes.is_empty(),
                "holdout_classes needs labels, but {} has none; set the labels parameter",
                array.name
            );
        }

        let split = match &labels {
            Some(labels) => options.split(labels)?,
            None => options.split(&vec![0; rows])?,
        };
        let class_names = match &labels {
            Some(labels) => {
                let classes = labels.iter().max().map_or(0, |max| max + 1);
                (0..classes).map(|label| label.to_string()).collect()
            }
            None => Vec::new(),
        };
        Ok(Self { array, labels, class_names, train: split.train, test: split.test })
    }

    fn rows(&self, split: Split) -> &[usize] {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }
}

impl Dataset for ArrayDataset {
    fn info(&self) -> DatasetInfo {
        let sample_shape = self.array.header.shape[1..].iter().map(|&size| size as i64).collect();
        DatasetInfo {
            sample_shape,
            input_kind: InputKind::Features,
            vocab_size: 0,
            num_classes: self.labels.as_ref().map(|_| self.class_names.len() as i64),
            class_names: self.class_names.clone(),
            train_len: self.train.len(),
            test_len: self.test.len(),
        }
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        let rows = self.rows(split);
        let mut values = Vec::with_capacity(indices.len() * self.array.header.row_numel());
        let mut labels = Vec::with_capacity(indices.len());
        for &index in indices {
            let Some(&row) = usize::try_from(index).ok().and_then(|index| rows.get(index)) else {
                bail!(
                    "sample index {index} is out of range for the {} split of {} samples",
                    split.as_str(),
                    rows.len()
                );
            };
            self.array.read_row(row, &mut values)?;
            if let Some(all) = &self.labels {
                labels.push(all[row]);
            }
        }

        let mut shape = vec![indices.len() as i64];
        shape.extend(self.array.header.shape[1..].iter().map(|&size| size as i64));
        let inputs = Tensor::from_slice(&values).f_reshape(shape)?;
        let labels = self.labels.as_ref().map(|_| Tensor::from_slice(&labels));
        Ok(Batch { inputs, labels })
    }
}

/// The `npy` dataset: a `.npy` array of samples and, optionally, a `.npy` array of labels.
pub struct Npy {
    data: ArrayDataset,
}

impl DatasetPlugin for Npy {
    fn describe() -> Description {
        SplitOptions::declare(
            Description::new(
                "npy",
                env!("CARGO_PKG_VERSION"),
                "samples from a .npy array [samples, ...], read from disk per batch",
            )
            .param(Param::required(
                "path",
                ParamType::Str,
                "the .npy file of samples, relative to the working directory; bool, integer \
                 or float dtype, converted to float32",
            ))
            .param(Param::string(
                "labels",
                "",
                "a .npy file of non-negative integer labels, one per sample; empty for none",
            )),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let options = SplitOptions::from_params(params)?;
        let array = NpyArray::open(Path::new(&params.string("path")?))?;
        let labels_path = params.string("labels")?;
        let labels = if labels_path.is_empty() {
            None
        } else {
            Some(NpyArray::open(Path::new(&labels_path))?.read_labels()?)
        };
        Ok(Self { data: ArrayDataset::new(array, labels, &options)? })
    }
}

impl Dataset for Npy {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// The `npz` dataset: samples and optional labels as two arrays of one `.npz` archive.
pub struct Npz {
    data: ArrayDataset,
}

impl DatasetPlugin for Npz {
    fn describe() -> Description {
        SplitOptions::declare(
            Description::new(
                "npz",
                env!("CARGO_PKG_VERSION"),
                "samples (and labels) from arrays of a .npz archive",
            )
            .param(Param::required(
                "path",
                ParamType::Str,
                "the .npz file, relative to the working directory",
            ))
            .param(Param::string("inputs_key", "x", "name of the array of samples"))
            .param(Param::string(
                "labels_key",
                "",
                "name of the array of non-negative integer labels; empty for none",
            )),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let options = SplitOptions::from_params(params)?;
        let path = params.string("path")?;
        let array = open_member(Path::new(&path), &params.string("inputs_key")?)?;
        let labels_key = params.string("labels_key")?;
        let labels = if labels_key.is_empty() {
            None
        } else {
            Some(open_member(Path::new(&path), &labels_key)?.read_labels()?)
        };
        Ok(Self { data: ArrayDataset::new(array, labels, &options)? })
    }
}

impl Dataset for Npz {
    fn info(&self) -> DatasetInfo {
        self.data.info()
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        self.data.batch(split, indices)
    }
}

/// Opens the array `key` of the `.npz` archive at `path`: in place when it is stored without
/// compression, decompressed into memory otherwise.
///
/// # Errors
///
/// Fails when the file is not a zip archive, has no member `key.npy`, or the member is not a
/// valid `.npy` array.
pub fn open_member(path: &Path, key: &str) -> Result<NpyArray> {
    let name = path.display().to_string();
    let open = || {
        File::open(path).map_err(|error| pretext_plugin_api::Error::msg(format!("{name}: {error}")))
    };
    let invalid = |error: zip::result::ZipError| {
        pretext_plugin_api::Error::msg(format!("{name}: expected a .npz (zip) archive: {error}"))
    };
    let mut archive = ZipArchive::new(open()?).map_err(invalid)?;
    let member_name = format!("{key}.npy");
    if !archive.file_names().any(|member| member == member_name) {
        let mut members: Vec<&str> = archive.file_names().collect();
        members.sort_unstable();
        bail!("{name}: no array `{key}` in the archive, which contains {members:?}");
    }

    let mut member = archive.by_name(&member_name).map_err(invalid)?;
    let label = format!("{name} ({member_name})");
    if member.compression() == CompressionMethod::Stored {
        let (start, size) = (member.data_start(), member.size());
        drop(member);
        return NpyArray::from_file_region(label, open()?, start, size);
    }
    let mut bytes = Vec::with_capacity(member.size() as usize);
    member.read_to_end(&mut bytes).map_err(|error| {
        pretext_plugin_api::Error::msg(format!("{label}: decompressing failed: {error}"))
    })?;
    NpyArray::from_bytes(label, bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::Device;
    use zip::write::FileOptions;

    use super::*;
    use crate::npy::tests::{f32_bytes, npy_bytes};

    fn context() -> BuildContext {
        BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None }
    }

    fn split_params(mut values: Vec<(String, ParamValue)>) -> Params {
        values.push(("test_fraction".into(), ParamValue::Float(0.25)));
        values.push(("split_seed".into(), ParamValue::Int(0)));
        values.push(("holdout_classes".into(), ParamValue::IntList(Default::default())));
        Params::new(values)
    }

    /// Eight samples of shape [1, 2, 2]: sample `i` contains `i, i + 0.25, i + 0.5, i + 0.75`.
    fn samples_bytes() -> Vec<u8> {
        let values: Vec<f32> = (0..32).map(|i| (i / 4) as f32 + (i % 4) as f32 * 0.25).collect();
        npy_bytes("<f4", &[8, 1, 2, 2], &f32_bytes(&values))
    }

    fn labels_bytes() -> Vec<u8> {
        let labels: Vec<u8> = [0u8, 1, 0, 1, 0, 1, 0, 1].to_vec();
        npy_bytes("|u1", &[8], &labels)
    }

    fn first_values(batch: &Batch) -> Vec<f32> {
        Vec::<f32>::try_from(batch.inputs.flatten(0, -1)).unwrap()
    }

    #[test]
    fn npy_serves_rows_and_labels() {
        let folder = tempfile::tempdir().unwrap();
        let (x, y) = (folder.path().join("x.npy"), folder.path().join("y.npy"));
        std::fs::write(&x, samples_bytes()).unwrap();
        std::fs::write(&y, labels_bytes()).unwrap();
        let params = split_params(vec![
            ("path".into(), ParamValue::Str(x.display().to_string().into())),
            ("labels".into(), ParamValue::Str(y.display().to_string().into())),
        ]);

        let data = Npy::create(&params, &context()).unwrap();

        let info = data.info();
        assert_eq!(info.sample_shape, [1, 2, 2]);
        assert_eq!(info.num_classes, Some(2));
        assert_eq!((info.train_len, info.test_len), (6, 2));
        let batch = data.batch(Split::Train, &[0]).unwrap();
        assert_eq!(batch.inputs.size(), [1, 1, 2, 2]);
        let row = data.data.train[0] as f32;
        assert_eq!(first_values(&batch), [row, row + 0.25, row + 0.5, row + 0.75]);
        let label = Vec::<i64>::try_from(batch.labels.unwrap()).unwrap();
        assert_eq!(label, [data.data.train[0] as i64 % 2]);
    }

    #[test]
    fn npy_without_labels_is_unlabelled() {
        let folder = tempfile::tempdir().unwrap();
        let x = folder.path().join("x.npy");
        std::fs::write(&x, samples_bytes()).unwrap();
        let params = split_params(vec![
            ("path".into(), ParamValue::Str(x.display().to_string().into())),
            ("labels".into(), ParamValue::Str("".into())),
        ]);

        let data = Npy::create(&params, &context()).unwrap();

        assert_eq!(data.info().num_classes, None);
        assert!(data.batch(Split::Test, &[1]).unwrap().labels.is_none());
        assert!(data.batch(Split::Test, &[2]).is_err());
    }

    #[test]
    fn npy_rejects_wrong_dtype() {
        let folder = tempfile::tempdir().unwrap();
        let x = folder.path().join("x.npy");
        std::fs::write(&x, npy_bytes("<c8", &[2, 2], &[0; 32])).unwrap();
        let params = split_params(vec![
            ("path".into(), ParamValue::Str(x.display().to_string().into())),
            ("labels".into(), ParamValue::Str("".into())),
        ]);

        let error = Npy::create(&params, &context()).err().unwrap();

        assert_eq!(
            error.message(),
            format!(
                "{}, byte 10: unsupported dtype `<c8`; expected a bool, integer or float type \
                 such as `<f4`, `<f8`, `|u1` or `<i8`",
                x.display()
            )
        );
    }

    #[test]
    fn npy_rejects_truncated_file() {
        let folder = tempfile::tempdir().unwrap();
        let x = folder.path().join("x.npy");
        let mut bytes = samples_bytes();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&x, bytes).unwrap();

        let error = NpyArray::open(&x).unwrap_err();

        assert!(error.message().ends_with("found 125 (the file is truncated)"), "{error}");
    }

    fn write_npz(path: &Path, method: CompressionMethod) {
        let mut writer = zip::ZipWriter::new(File::create(path).unwrap());
        let options = FileOptions::default().compression_method(method);
        writer.start_file("x.npy", options).unwrap();
        writer.write_all(&samples_bytes()).unwrap();
        writer.start_file("y.npy", options).unwrap();
        writer.write_all(&labels_bytes()).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn npz_reads_stored_and_compressed_members() {
        let folder = tempfile::tempdir().unwrap();
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let path = folder.path().join(format!("{method:?}.npz"));
            write_npz(&path, method);
            let params = split_params(vec![
                ("path".into(), ParamValue::Str(path.display().to_string().into())),
                ("inputs_key".into(), ParamValue::Str("x".into())),
                ("labels_key".into(), ParamValue::Str("y".into())),
            ]);

            let data = Npz::create(&params, &context()).unwrap();

            let batch = data.batch(Split::Test, &[0]).unwrap();
            let row = data.data.test[0] as f32;
            assert_eq!(first_values(&batch)[1], row + 0.25, "{method:?}");
            assert_eq!(data.info().num_classes, Some(2), "{method:?}");
        }
    }

    #[test]
    fn npz_names_missing_key() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("data.npz");
        write_npz(&path, CompressionMethod::Stored);

        let error = open_member(&path, "images").unwrap_err();

        assert_eq!(
            error.message(),
            format!(
                "{}: no array `images` in the archive, which contains [\"x.npy\", \"y.npy\"]",
                path.display()
            )
        );
    }

    #[test]
    fn npz_rejects_non_zip_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("data.npz");
        std::fs::write(&path, samples_bytes()).unwrap();

        let error = open_member(&path, "x").unwrap_err();

        assert!(error.message().contains("expected a .npz (zip) archive"), "{error}");
    }

    #[test]
    fn npz_reads_numpy_written_archive() {
        let Some(python) = std::env::var_os("PRETEXT_PYTHON").filter(|value| !value.is_empty())
        else {
            eprintln!("skipped: PRETEXT_PYTHON is not set, so numpy cannot write the archive");
            return;
        };
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("data.npz");
        let script = "import sys, numpy as np\n\
                      x = np.arange(24, dtype=np.float64).reshape(6, 4)\n\
                      np.savez_compressed(sys.argv[1], x=x, y=np.array([0, 1, 2, 0, 1, 2]))\n";
        let status =
            std::process::Command::new(python).args(["-c", script]).arg(&path).status().unwrap();
        assert!(status.success());
        let params = split_params(vec![
            ("path".into(), ParamValue::Str(path.display().to_string().into())),
            ("inputs_key".into(), ParamValue::Str("x".into())),
            ("labels_key".into(), ParamValue::Str("y".into())),
        ]);

        let data = Npz::create(&params, &context()).unwrap();

        assert_eq!(data.info().sample_shape, [4]);
        assert_eq!(data.info().num_classes, Some(3));
        let row = data.data.train[0] as f32;
        let batch = data.batch(Split::Train, &[0]).unwrap();
        assert_eq!(
            first_values(&batch),
            [4.0 * row, 4.0 * row + 1.0, 4.0 * row + 2.0, 4.0 * row + 3.0]
        );
    }
}
