//! The `text` dataset: UTF-8 text cut into fixed-length sequences of byte or character tokens,
//! for masked modelling.
//!
//! Token ids 0, 1 and 2 are reserved: 0 pads the last sequence of each file, 1 is the `[MASK]`
//! token for masked modelling, and 2 stands for a character outside the vocabulary. Byte tokens
//! are `3 + byte`, so the vocabulary has 259 ids. Character tokens are numbered from 3 by
//! descending frequency in the corpus (ties in character order), and `max_vocab` caps their
//! number. Each file is cut into consecutive, non-overlapping sequences of `length` tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::{
    Batch, BuildContext, Dataset, DatasetInfo, DatasetPlugin, Description, InputKind, Param,
    ParamType, Params, Result, Split, bail, ensure,
};

use crate::split::stratified_split;

/// Token id that pads the end of a file's last sequence.
pub const PAD: u32 = 0;

/// Token id of `[MASK]`, never produced by the text itself.
pub const MASK: u32 = 1;

/// Token id of a character outside the vocabulary.
pub const UNKNOWN: u32 = 2;

/// Number of reserved ids before the first text token.
pub const RESERVED: u32 = 3;

/// Largest accepted sequence length.
const MAX_LENGTH: f64 = 1_000_000.0;

/// The unit of one token: a byte or a character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    Bytes,
    Chars,
}

/// Checks that `bytes` are UTF-8 and returns them as text.
///
/// # Errors
///
/// Fails at the first invalid sequence, naming `path`, its byte offset and its line.
pub fn decode_utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(error) => {
            let offset = error.valid_up_to();
            let line = bytes[..offset].iter().filter(|&&byte| byte == b'\n').count() + 1;
            bail!(
                "{}, byte {offset} (line {line}): expected UTF-8 text, found the invalid byte \
                 0x{:02x}",
                path.display(),
                bytes[offset]
            )
        }
    }
}

/// Lists `path` itself when it is a file, or every file below it when it is a folder, sorted by
/// path. Entries whose names start with `.` are skipped.
///
/// # Errors
///
/// Fails when a folder cannot be read or `path` does not exist.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| pretext_plugin_api::Error::msg(format!("{}: {error}", path.display())))?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }

    let mut files = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|error| {
            pretext_plugin_api::Error::msg(format!("{}: {error}", folder.display()))
        })?;
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A character vocabulary: the id of each character that has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    ids: BTreeMap<char, u32>,
}

impl Vocabulary {
    /// Builds the vocabulary of `texts`: the most frequent characters first, at most
    /// `max_size` ids in all (reserved ids included), or every character when `max_size` is 0.
    pub fn build(texts: &[&str], max_size: usize) -> Self {
        let mut counts: BTreeMap<char, usize> = BTreeMap::new();
        for text in texts {
            for character in text.chars() {
                *counts.entry(character).or_default() += 1;
            }
        }
        let mut ranked: Vec<(char, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if max_size > 0 {
            ranked.truncate(max_size.saturating_sub(RESERVED as usize));
        }
        let ids = ranked
            .iter()
            .enumerate()
            .map(|(rank, (character, _))| (*character, RESERVED + rank as u32))
            .collect();
        Self { ids }
    }

    /// Number of ids, reserved ones included.
    pub fn size(&self) -> usize {
        RESERVED as usize + self.ids.len()
    }

    /// Token id of `character`, or [`UNKNOWN`].
    pub fn id(&self, character: char) -> u32 {
        self.ids.get(&character).copied().unwrap_or(UNKNOWN)
    }
}

/// Fixed-length token sequences and the sequences of each split.
pub struct Text {
    /// All sequences, `length` tokens each, concatenated.
    tokens: Vec<u32>,
    length: usize,
    vocab_size: usize,
    train: Vec<usize>,
    test: Vec<usize>,
}

impl DatasetPlugin for Text {
    fn describe() -> Description {
        Description::new(
            "text",
            env!("CARGO_PKG_VERSION"),
            "UTF-8 text as fixed-length token sequences; ids 0 = pad, 1 = [MASK], 2 = unknown",
        )
        .param(Param::required(
            "path",
            ParamType::Str,
            "a UTF-8 text file, or a folder whose files (recursively, hidden ones skipped) are \
             all read; relative to the working directory",
        ))
        .param(
            Param::string(
                "tokens",
                "char",
                "`byte`: ids 3 + byte (vocabulary 259); `char`: ids from 3 by frequency",
            )
            .choices(&["byte", "char"]),
        )
        .param(Param::int("length", 64, "tokens per sequence").range(1.0, MAX_LENGTH))
        .param(
            Param::int(
                "max_vocab",
                0,
                "largest vocabulary for `char` tokens, reserved ids included; 0 keeps every \
                 character",
            )
            .min(0.0),
        )
        .param(
            Param::float("test_fraction", 0.1, "share of the sequences put in the test split")
                .range(0.0, 1.0),
        )
        .param(Param::int("split_seed", 0, "seed of the train/test split").min(0.0))
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let tokens = match params.string("tokens")?.as_str() {
            "byte" => Tokens::Bytes,
            "char" => Tokens::Chars,
            other => bail!("tokens must be `byte` or `char`, found `{other}`"),
        };
        let length = params.int("length")?;
        let max_vocab = params.int("max_vocab")?;
        ensure!(length >= 1, "length must be at least 1, found {length}");
        ensure!(
            max_vocab == 0 || max_vocab > RESERVED as i64,
            "max_vocab must be 0 or above the {RESERVED} reserved ids, found {max_vocab}"
        );

        let path = params.string("path")?;
        let files = list_files(Path::new(&path))?;
        ensure!(!files.is_empty(), "{path}: the folder contains no files");
        let mut contents = Vec::with_capacity(files.len());
        for file in &files {
            let bytes = std::fs::read(file).map_err(|error| {
                pretext_plugin_api::Error::msg(format!("{}: {error}", file.display()))
            })?;
            decode_utf8(file, &bytes)?;
            contents.push(String::from_utf8(bytes)?);
        }
        let texts: Vec<&str> = contents.iter().map(String::as_str).collect();
        Self::from_texts(&texts, tokens, length as usize, max_vocab as usize, params)
            .map_err(|error| error.context(&path))
    }
}

impl Text {
    fn from_texts(
        texts: &[&str],
        tokens: Tokens,
        length: usize,
        max_vocab: usize,
        params: &Params,
    ) -> Result<Self> {
        let (sequences, vocab_size) = tokenize(texts, tokens, length, max_vocab);
        let count = sequences.len() / length;
        ensure!(count > 0, "the text is empty; expected at least one character");

        let test_fraction = params.float("test_fraction")?;
        let seed = params.int("split_seed")? as u64;
        let split = stratified_split(&vec![0; count], test_fraction, seed)?;
        Ok(Self { tokens: sequences, length, vocab_size, train: split.train, test: split.test })
    }
}

/// Cuts each text into sequences of `length` token ids, padding the last one of each text with
/// [`PAD`]. Returns the sequences concatenated and the vocabulary size.
pub fn tokenize(
    texts: &[&str],
    tokens: Tokens,
    length: usize,
    max_vocab: usize,
) -> (Vec<u32>, usize) {
    let vocabulary = match tokens {
        Tokens::Bytes => None,
        Tokens::Chars => Some(Vocabulary::build(texts, max_vocab)),
    };
    let mut sequences = Vec::new();
    for text in texts {
        let start = sequences.len();
        match &vocabulary {
            None => sequences.extend(text.bytes().map(|byte| RESERVED + byte as u32)),
            Some(vocabulary) => sequences.extend(text.chars().map(|c| vocabulary.id(c))),
        }
        let written = sequences.len() - start;
        let padded = written.div_ceil(length) * length;
        sequences.resize(start + padded, PAD);
    }
    let vocab_size = vocabulary.map_or(RESERVED as usize + 256, |vocabulary| vocabulary.size());
    (sequences, vocab_size)
}

impl Dataset for Text {
    fn info(&self) -> DatasetInfo {
        DatasetInfo {
            sample_shape: vec![self.length as i64],
            input_kind: InputKind::Tokens,
            vocab_size: self.vocab_size as i64,
            num_classes: None,
            class_names: Vec::new(),
            train_len: self.train.len(),
            test_len: self.test.len(),
        }
    }

    fn batch(&self, split: Split, indices: &[i64]) -> Result<Batch> {
        let sequences = match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };
        let mut values = Vec::with_capacity(indices.len() * self.length);
        for &index in indices {
            let Some(&sequence) = usize::try_from(index).ok().and_then(|i| sequences.get(i)) else {
                bail!(
                    "sample index {index} is out of range for the {} split of {} samples",
                    split.as_str(),
                    sequences.len()
                );
            };
            let tokens = &self.tokens[sequence * self.length..(sequence + 1) * self.length];
            values.extend(tokens.iter().map(|&token| token as i64));
        }
        let inputs =
            Tensor::from_slice(&values).f_reshape([indices.len() as i64, self.length as i64])?;
        Ok(Batch { inputs, labels: None })
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;
    use pretext_plugin_api::tch::{Device, Kind};

    use super::*;

    fn params(path: &Path, tokens: &str, length: i64, max_vocab: i64) -> Params {
        Params::new(vec![
            ("path".into(), ParamValue::Str(path.display().to_string().into())),
            ("tokens".into(), ParamValue::Str(tokens.into())),
            ("length".into(), ParamValue::Int(length)),
            ("max_vocab".into(), ParamValue::Int(max_vocab)),
            ("test_fraction".into(), ParamValue::Float(0.25)),
            ("split_seed".into(), ParamValue::Int(0)),
        ])
    }

    fn context() -> BuildContext {
        BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None }
    }

    #[test]
    fn byte_tokens_are_offset_and_padded() {
        let (sequences, vocab_size) = tokenize(&["ab", "c"], Tokens::Bytes, 3, 0);

        assert_eq!(sequences, [3 + 97, 3 + 98, PAD, 3 + 99, PAD, PAD]);
        assert_eq!(vocab_size, 259);
    }

    #[test]
    fn char_vocabulary_ranks_by_frequency() {
        let vocabulary = Vocabulary::build(&["banana é"], 0);

        assert_eq!(vocabulary.id('a'), 3);
        assert_eq!(vocabulary.id('n'), 4);
        assert_eq!(vocabulary.id(' '), 5);
        assert_eq!(vocabulary.id('é'), 7);
        assert_eq!(vocabulary.id('z'), UNKNOWN);
        assert_eq!(vocabulary.size(), 8);
    }

    #[test]
    fn max_vocab_maps_rare_characters_to_unknown() {
        let (sequences, vocab_size) = tokenize(&["aab"], Tokens::Chars, 4, 4);

        assert_eq!(vocab_size, 4);
        assert_eq!(sequences, [3, 3, UNKNOWN, PAD]);
    }

    #[test]
    fn text_folder_serves_token_sequences() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("a.txt"), "hello world, hello text").unwrap();
        std::fs::create_dir(folder.path().join("more")).unwrap();
        std::fs::write(folder.path().join("more/b.txt"), "naïve café").unwrap();
        std::fs::write(folder.path().join(".hidden"), [0xff, 0xfe]).unwrap();

        let text = Text::create(&params(folder.path(), "char", 4, 0), &context()).unwrap();

        let info = text.info();
        assert_eq!(info.input_kind, InputKind::Tokens);
        assert_eq!(info.sample_shape, [4]);
        assert_eq!(info.num_classes, None);
        // 23 characters give 6 sequences and 10 give 3.
        assert_eq!(info.train_len + info.test_len, 9);
        let batch = text.batch(Split::Train, &[0, 1]).unwrap();
        assert_eq!(batch.inputs.kind(), Kind::Int64);
        assert_eq!(batch.inputs.size(), [2, 4]);
        assert!(batch.labels.is_none());
        let ids = Vec::<i64>::try_from(batch.inputs.flatten(0, -1)).unwrap();
        assert!(ids.iter().all(|&id| id != MASK as i64), "{ids:?}");
        assert!(ids.iter().all(|&id| id < info.vocab_size), "{ids:?}");
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("latin1.txt");
        std::fs::write(&path, b"first line\ncaf\xe9\n").unwrap();

        let error = Text::create(&params(&path, "byte", 8, 0), &context()).err().unwrap();

        assert_eq!(
            error.message(),
            format!(
                "{}, byte 14 (line 2): expected UTF-8 text, found the invalid byte 0xe9",
                path.display()
            )
        );
    }

    #[test]
    fn text_rejects_empty_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("empty.txt");
        std::fs::write(&path, "").unwrap();

        let error = Text::create(&params(&path, "char", 8, 0), &context()).err().unwrap();

        assert!(error.message().contains("the text is empty"), "{error}");
    }

    #[test]
    fn text_rejects_missing_path() {
        let error =
            Text::create(&params(Path::new("/nonexistent/corpus"), "char", 8, 0), &context())
                .err()
                .unwrap();

        assert!(error.message().starts_with("/nonexistent/corpus: "), "{error}");
    }
}
