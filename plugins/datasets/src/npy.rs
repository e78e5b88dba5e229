//! Reading NumPy `.npy` arrays: the header parser, and row access that reads only the requested
//! rows, so that an array larger than memory can be served.
//!
//! NOTE: rows are read with positioned reads (`pread`) rather than a memory map, because mapping
//! a file needs `unsafe` (another process may truncate it under the map), which this crate
//! forbids. Each read costs a system call, and the page cache still keeps hot rows in memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pretext_plugin_api::{Result, bail, ensure};

/// The six bytes that start every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element types that the reader converts: floats to float32, integers and booleans exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// NumPy's name of the type, such as `float32`.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::U32 => "uint32",
            DType::I32 => "int32",
            DType::U64 => "uint64",
            DType::I64 => "int64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// True for the integer and boolean types, which can be labels.
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }
}

/// Byte order of the elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

/// The parsed header of a `.npy` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: DType,
    pub endian: Endian,
    pub shape: Vec<usize>,
    /// Offset of the first element from the start of the `.npy` data.
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of elements in one row, the product of the shape after the first axis.
    pub fn row_numel(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Number of rows, the first axis (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of data bytes that the shape and dtype announce.
    pub fn data_bytes(&self) -> u64 {
        self.rows() as u64 * self.row_numel() as u64 * self.dtype.size() as u64
    }
}

/// Parses the header at the start of `bytes` (which must contain at least the whole header).
/// `name` is the file name used in messages.
///
/// # Errors
///
/// Fails on a missing magic string, an unknown version, a header that is not a dict with
/// `descr`, `fortran_order` and `shape`, an unsupported dtype or a Fortran-ordered array.
pub fn parse_header(name: &str, bytes: &[u8]) -> Result<NpyHeader> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        let found = &bytes[..bytes.len().min(6)];
        bail!("{name}, byte 0: expected the npy magic string \\x93NUMPY, found {found:?}");
    }
    let (length_bytes, start) = match bytes[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        major => bail!("{name}, byte 6: expected npy format version 1, 2 or 3, found {major}"),
    };
    ensure!(bytes.len() >= start, "{name}: the file ends inside the npy header");
    let mut length = [0u8; 4];
    length[..length_bytes].copy_from_slice(&bytes[8..8 + length_bytes]);
    let length = u32::from_le_bytes(length) as usize;
    let end = start + length;
    ensure!(
        bytes.len() >= end,
        "{name}: the npy header announces {length} bytes at byte {start}, but the file ends at \
         byte {}",
        bytes.len()
    );
    let Ok(text) = std::str::from_utf8(&bytes[start..end]) else {
        bail!("{name}, byte {start}: the npy header is not valid text");
    };

    let descr = dict_value(text, "descr")
        .and_then(|value| quoted(value))
        .ok_or_else(|| header_error(name, start, "a `descr` string", text))?;
    let (dtype, endian) = parse_descr(descr).ok_or_else(|| {
        pretext_plugin_api::Error::msg(format!(
            "{name}, byte {start}: unsupported dtype `{descr}`; expected a bool, integer or \
             float type such as `<f4`, `<f8`, `|u1` or `<i8`"
        ))
    })?;
    let fortran = dict_value(text, "fortran_order")
        .ok_or_else(|| header_error(name, start, "a `fortran_order` flag", text))?;
    let shape = dict_value(text, "shape")
        .and_then(parse_shape)
        .ok_or_else(|| header_error(name, start, "a `shape` tuple of integers", text))?;
    if fortran.starts_with("True") && shape.len() > 1 {
        bail!(
            "{name}: the array is stored in Fortran order, which is not supported; save it with \
             `np.save(path, np.ascontiguousarray(array))`"
        );
    }
    Ok(NpyHeader { dtype, endian, shape, data_offset: end as u64 })
}

fn header_error(name: &str, start: usize, expected: &str, text: &str) -> pretext_plugin_api::Error {
    pretext_plugin_api::Error::msg(format!(
        "{name}, byte {start}: expected {expected} in the npy header, found `{}`",
        text.trim_end()
    ))
}

/// Returns the text after `'key':` in a Python dict literal, up to the end of the dict.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("'{key}'");
    let position = text.find(&pattern)? + pattern.len();
    let rest = text[position..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

/// Returns the contents of the single-quoted string that `value` starts with.
fn quoted(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('\'')?;
    Some(&rest[..rest.find('\'')?])
}

/// Parses `(3, 4)`, `(3,)` or `()` at the start of `value`.
fn parse_shape(value: &str) -> Option<Vec<usize>> {
    let inner = &value.strip_prefix('(')?[..value.find(')')? - 1];
    inner
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().ok())
        .collect()
}

/// Maps a NumPy type string such as `<f4` to its element type and byte order.
fn parse_descr(descr: &str) -> Option<(DType, Endian)> {
    let mut chars = descr.chars();
    let endian = match chars.next()? {
        '<' | '|' | '=' => Endian::Little,
        '>' => Endian::Big,
        _ => return None,
    };
    let dtype = match chars.as_str() {
        "b1" => DType::Bool,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "u2" => DType::U16,
        "i2" => DType::I16,
        "u4" => DType::U32,
        "i4" => DType::I32,
        "u8" => DType::U64,
        "i8" => DType::I64,
        "f4" => DType::F32,
        "f8" => DType::F64,
        _ => return None,
    };
    Some((dtype, endian))
}

/// Converts one element's bytes to float64.
fn element(bytes: &[u8], dtype: DType, endian: Endian) -> f64 {
    macro_rules! read {
        ($type:ty) => {{
            let array = bytes.try_into().expect("the slice has the element's size");
            match endian {
                Endian::Little => <$type>::from_le_bytes(array) as f64,
                Endian::Big => <$type>::from_be_bytes(array) as f64,
            }
        }};
    }
    match dtype {
        DType::Bool => f64::from(u8::from(bytes[0] != 0)),
        DType::U8 => bytes[0] as f64,
        DType::I8 => bytes[0] as i8 as f64,
        DType::U16 => read!(u16),
        DType::I16 => read!(i16),
        DType::U32 => read!(u32),
        DType::I32 => read!(i32),
        DType::U64 => read!(u64),
        DType::I64 => read!(i64),
        DType::F32 => read!(f32),
        DType::F64 => read!(f64),
    }
}

/// The storage of an array's bytes: a region of a file read on demand, or bytes in memory.
#[derive(Debug)]
pub enum ArrayBytes {
    File { file: File, offset: u64 },
    Memory(Vec<u8>),
}

/// A `.npy` array whose rows are read on request.
#[derive(Debug)]
pub struct NpyArray {
    /// File (and archive member) named in messages.
    pub name: String,
    pub header: NpyHeader,
    bytes: ArrayBytes,
}

/// Largest header that a reader looks at; NumPy writes headers of at most a few hundred bytes.
const MAX_HEADER: usize = 65_536;

impl NpyArray {
    /// Opens the `.npy` file at `path`, reading only its header.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read, its header is invalid, or it is shorter than the
    /// header announces.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path)
            .map_err(|error| pretext_plugin_api::Error::msg(format!("{name}: {error}")))?;
        let length = file.metadata()?.len();
        Self::from_file_region(name, file, 0, length)
    }

    /// Opens the `.npy` data stored uncompressed in `file` from byte `start` for `length` bytes.
    ///
    /// # Errors
    ///
    /// Fails as [`NpyArray::open`] does.
    pub fn from_file_region(name: String, file: File, start: u64, length: u64) -> Result<Self> {
        let mut head = vec![0u8; (length as usize).min(MAX_HEADER)];
        file.read_exact_at(&mut head, start)
            .map_err(|error| pretext_plugin_api::Error::msg(format!("{name}: {error}")))?;
        let header = parse_header(&name, &head)?;
        check_length(&name, &header, length)?;
        let offset = start + header.data_offset;
        Ok(Self { name, header, bytes: ArrayBytes::File { file, offset } })
    }

    /// Parses a whole `.npy` file held in memory.
    ///
    /// # Errors
    ///
    /// Fails when the header is invalid or the bytes are shorter than it announces.
    pub fn from_bytes(name: String, bytes: Vec<u8>) -> Result<Self> {
        let header = parse_header(&name, &bytes)?;
        check_length(&name, &header, bytes.len() as u64)?;
        Ok(Self { name, header, bytes: ArrayBytes::Memory(bytes) })
    }

    /// Fills `buffer` with the data bytes from `relative` bytes after the first element.
    fn read_bytes(&self, relative: u64, buffer: &mut [u8]) -> Result<()> {
        match &self.bytes {
            ArrayBytes::File { file, offset } => {
                file.read_exact_at(buffer, offset + relative).map_err(|error| {
                    pretext_plugin_api::Error::msg(format!(
                        "{}: reading {} bytes at byte {} failed: {error}",
                        self.name,
                        buffer.len(),
                        offset + relative
                    ))
                })
            }
            ArrayBytes::Memory(bytes) => {
                let start = (self.header.data_offset + relative) as usize;
                buffer.copy_from_slice(&bytes[start..start + buffer.len()]);
                Ok(())
            }
        }
    }

    /// Appends row `row` to `values`, converted to float32.
    ///
    /// # Errors
    ///
    /// Fails when the read fails, as when the file shrank after it was opened.
    pub fn read_row(&self, row: usize, values: &mut Vec<f32>) -> Result<()> {
        let size = self.header.dtype.size();
        let mut buffer = vec![0u8; self.header.row_numel() * size];
        self.read_bytes(row as u64 * buffer.len() as u64, &mut buffer)?;
        let (dtype, endian) = (self.header.dtype, self.header.endian);
        values.extend(buffer.chunks_exact(size).map(|bytes| element(bytes, dtype, endian) as f32));
        Ok(())
    }

    /// Reads every element as an integer label.
    ///
    /// # Errors
    ///
    /// Fails when the dtype is not an integer type, the array is not one-dimensional, or a
    /// label is negative.
    pub fn read_labels(&self) -> Result<Vec<i64>> {
        ensure!(
            self.header.dtype.is_integer(),
            "{}: labels must have an integer dtype, found {}",
            self.name,
            self.header.dtype.name()
        );
        ensure!(
            self.header.shape.len() == 1,
            "{}: labels must be a one-dimensional array, found shape {:?}",
            self.name,
            self.header.shape
        );

        let size = self.header.dtype.size();
        let mut buffer = vec![0u8; self.header.rows() * size];
        self.read_bytes(0, &mut buffer)?;
        let mut labels = Vec::with_capacity(self.header.rows());
        for (row, bytes) in buffer.chunks_exact(size).enumerate() {
            let label = element(bytes, self.header.dtype, self.header.endian) as i64;
            ensure!(label >= 0, "{}: label {row} is {label}, expected at least 0", self.name);
            labels.push(label);
        }
        Ok(labels)
    }
}

/// Checks that `available` bytes hold the header and all the data it announces.
fn check_length(name: &str, header: &NpyHeader, available: u64) -> Result<()> {
    let expected = header.data_offset + header.data_bytes();
    ensure!(
        available >= expected,
        "{name}: expected {} bytes of {} data for shape {:?} after the {}-byte header, found {} \
         (the file is truncated)",
        header.data_bytes(),
        header.dtype.name(),
        header.shape,
        header.data_offset,
        available.saturating_sub(header.data_offset)
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds `.npy` bytes (format 1.0) for the given type string, shape and raw data.
    pub(crate) fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let shape_text = match shape {
            [single] => format!("({single},)"),
            _ => format!(
                "({})",
                shape.iter().map(|value| value.to_string()).collect::<Vec<_>>().join(", ")
            ),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|value| value.to_le_bytes()).collect()
    }

    #[test]
    fn header_parses_numpy_layout() {
        let bytes = npy_bytes("<f4", &[3, 2, 2], &f32_bytes(&[0.0; 12]));

        let header = parse_header("a.npy", &bytes).unwrap();

        assert_eq!(header.dtype, DType::F32);
        assert_eq!(header.endian, Endian::Little);
        assert_eq!(header.shape, [3, 2, 2]);
        assert_eq!(header.data_offset, 128);
        assert_eq!(header.row_numel(), 4);
    }

    #[test]
    fn header_rejects_unsupported_dtype() {
        let bytes = npy_bytes("<U5", &[2], &[0; 40]);

        let error = parse_header("a.npy", &bytes).unwrap_err();

        assert_eq!(
            error.message(),
            "a.npy, byte 10: unsupported dtype `<U5`; expected a bool, integer or float type \
             such as `<f4`, `<f8`, `|u1` or `<i8`"
        );
    }

    #[test]
    fn header_rejects_missing_magic() {
        let error = parse_header("a.npy", b"PK\x03\x04 not an npy file").unwrap_err();

        assert!(error.message().starts_with("a.npy, byte 0: expected the npy magic string"));
    }

    #[test]
    fn array_reads_rows_of_big_endian_doubles() {
        let data: Vec<u8> =
            [1.5f64, -2.0, 3.25, 4.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let array = NpyArray::from_bytes("a.npy".into(), npy_bytes(">f8", &[2, 2], &data)).unwrap();

        let mut values = Vec::new();
        array.read_row(1, &mut values).unwrap();

        assert_eq!(values, [3.25, 4.0]);
    }

    #[test]
    fn array_rejects_truncated_data() {
        let bytes = npy_bytes("<f4", &[4, 3], &f32_bytes(&[0.0; 5]));

        let error = NpyArray::from_bytes("a.npy".into(), bytes).unwrap_err();

        assert_eq!(
            error.message(),
            "a.npy: expected 48 bytes of float32 data for shape [4, 3] after the 128-byte header, \
             found 20 (the file is truncated)"
        );
    }

    #[test]
    fn labels_reject_float_dtype() {
        let bytes = npy_bytes("<f4", &[2], &f32_bytes(&[0.0, 1.0]));
        let array = NpyArray::from_bytes("y.npy".into(), bytes).unwrap();

        let error = array.read_labels().unwrap_err();

        assert_eq!(error.message(), "y.npy: labels must have an integer dtype, found float32");
    }

    #[test]
    fn labels_read_integers() {
        let data: Vec<u8> = [2i64, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let array = NpyArray::from_bytes("y.npy".into(), npy_bytes("<i8", &[3], &data)).unwrap();

        assert_eq!(array.read_labels().unwrap(), [2, 0, 1]);
    }
}
