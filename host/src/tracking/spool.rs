//! The MLflow spool of one run: `mlflow/` in the run folder.
//!
//! `spool.jsonl` is append-only, one record per line (`{"seq": N, "record": {...}}`), and is
//! fsynced before any of its records is sent. `acked` lists, one per line, the sequence numbers
//! the server acknowledged (or rejected for good), so a replay sends only the rest, in order.
//! `state.json` names the MLflow run once it exists. An `acked` line lost in a crash makes one
//! request go out twice; MLflow's SQL store keeps a metric that is identical in key, value, step
//! and timestamp only once, and logging a param or tag again with the same value changes nothing.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::Record;

/// One spooled request and its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub record: Record,
}

/// The MLflow run a local run maps to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteState {
    pub uri: String,
    pub experiment_id: String,
    pub run_id: String,
    pub artifact_uri: String,
}

/// An open spool.
pub struct Spool {
    dir: PathBuf,
    file: File,
    acked_file: File,
    next_seq: u64,
    acked: HashSet<u64>,
}

fn io_error(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

impl Spool {
    /// The spool folder of a run folder.
    pub fn folder(run_dir: &Path) -> PathBuf {
        run_dir.join("mlflow")
    }

    /// Whether the run folder holds a spool with records in it.
    pub fn exists(run_dir: &Path) -> bool {
        Self::folder(run_dir).join("spool.jsonl").is_file()
    }

    /// Opens (creating if needed) the spool of a run folder; returns it and the records not yet
    /// acknowledged, in order.
    ///
    /// # Errors
    ///
    /// Returns I/O errors with the path. A last line cut short by a crash is skipped with a
    /// warning, because its record was never sent.
    pub fn open(run_dir: &Path) -> std::io::Result<(Self, Vec<Entry>)> {
        let dir = Self::folder(run_dir);
        std::fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        let spool_path = dir.join("spool.jsonl");
        let acked_path = dir.join("acked");

        let mut acked = HashSet::new();
        if let Ok(file) = File::open(&acked_path) {
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|error| io_error(&acked_path, error))?;
                if let Ok(seq) = line.trim().parse::<u64>() {
                    acked.insert(seq);
                }
            }
        }
        let mut pending = Vec::new();
        let mut next_seq = 0;
        if let Ok(file) = File::open(&spool_path) {
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|error| io_error(&spool_path, error))?;
                match serde_json::from_str::<Entry>(&line) {
                    Ok(entry) => {
                        next_seq = next_seq.max(entry.seq + 1);
                        if !acked.contains(&entry.seq) {
                            pending.push(entry);
                        }
                    }
                    Err(error) => tracing::warn!(
                        path = %spool_path.display(),
                        "skipping an unreadable spool line: {error}"
                    ),
                }
            }
        }
        let open = |path: &Path| {
            OpenOptions::new().create(true).append(true).open(path).map_err(|e| io_error(path, e))
        };
        let mut file = open(&spool_path)?;
        end_with_newline(&mut file, &spool_path)?;
        let mut acked_file = open(&acked_path)?;
        end_with_newline(&mut acked_file, &acked_path)?;
        Ok((Self { dir, file, acked_file, next_seq, acked }, pending))
    }

    /// Appends records and fsyncs the file; returns them with their sequence numbers.
    ///
    /// # Errors
    ///
    /// Returns the write or fsync error.
    pub fn append(&mut self, records: Vec<Record>) -> std::io::Result<Vec<Entry>> {
        let mut text = String::new();
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let entry = Entry { seq: self.next_seq, record };
            self.next_seq += 1;
            text.push_str(&serde_json::to_string(&entry).map_err(std::io::Error::other)?);
            text.push('\n');
            entries.push(entry);
        }
        if entries.is_empty() {
            return Ok(entries);
        }
        let path = self.dir.join("spool.jsonl");
        self.file.write_all(text.as_bytes()).map_err(|error| io_error(&path, error))?;
        self.file.sync_data().map_err(|error| io_error(&path, error))?;
        Ok(entries)
    }

    /// Records sequence numbers as delivered (or rejected for good).
    ///
    /// # Errors
    ///
    /// Returns the write error.
    pub fn ack(&mut self, seqs: &[u64]) -> std::io::Result<()> {
        let mut text = String::new();
        for seq in seqs {
            if self.acked.insert(*seq) {
                text.push_str(&format!("{seq}\n"));
            }
        }
        let path = self.dir.join("acked");
        self.acked_file.write_all(text.as_bytes()).map_err(|error| io_error(&path, error))
    }

    /// Whether every record appended so far is acknowledged.
    pub fn is_drained(&self) -> bool {
        (0..self.next_seq).all(|seq| self.acked.contains(&seq))
    }

    /// Deletes the spool and its acknowledgements, keeping `state.json`.
    ///
    /// # Errors
    ///
    /// Returns the error of removing a file.
    pub fn remove(self) -> std::io::Result<()> {
        for name in ["spool.jsonl", "acked"] {
            let path = self.dir.join(name);
            std::fs::remove_file(&path).map_err(|error| io_error(&path, error))?;
        }
        Ok(())
    }

    /// The spool folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Terminates a line cut short by a crash, so that the next append starts a line of its own.
fn end_with_newline(file: &mut File, path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let length = file.metadata().map_err(|error| io_error(path, error))?.len();
    if length == 0 {
        return Ok(());
    }
    let mut reader = File::open(path).map_err(|error| io_error(path, error))?;
    reader.seek(SeekFrom::Start(length - 1)).map_err(|error| io_error(path, error))?;
    let mut last = [0u8; 1];
    reader.read_exact(&mut last).map_err(|error| io_error(path, error))?;
    if last[0] != b'\n' {
        file.write_all(b"\n").map_err(|error| io_error(path, error))?;
    }
    Ok(())
}

/// Reads every record of a run folder's spool, acknowledged or not, in order. A missing spool
/// has no records, and unreadable lines (a line cut short by a crash) are skipped.
///
/// # Errors
///
/// Returns the read error with the path.
pub fn read_records(run_dir: &Path) -> std::io::Result<Vec<Record>> {
    let path = Spool::folder(run_dir).join("spool.jsonl");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(&path, error)),
    };
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|error| io_error(&path, error))?;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            records.push(entry.record);
        }
    }
    Ok(records)
}

/// Reads `state.json` of a run folder, if the MLflow run was created.
pub fn read_state(run_dir: &Path) -> Option<RemoteState> {
    let text = std::fs::read_to_string(Spool::folder(run_dir).join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `state.json` through a temporary file, so that a reader never sees half of it.
///
/// # Errors
///
/// Returns the write or rename error.
pub fn write_state(run_dir: &Path, state: &RemoteState) -> std::io::Result<()> {
    let dir = Spool::folder(run_dir);
    std::fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
    let path = dir.join("state.json");
    let temporary = dir.join("state.json.tmp");
    let text = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(&temporary, text).map_err(|error| io_error(&temporary, error))?;
    std::fs::rename(&temporary, &path).map_err(|error| io_error(&path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(time: i64) -> Record {
        Record::End { status: "FINISHED".into(), end_time: time }
    }

    #[test]
    fn reopened_spool_returns_unacked_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, pending) = Spool::open(dir.path()).unwrap();
        assert!(pending.is_empty());
        let entries = spool.append(vec![end(1), end(2), end(3)]).unwrap();
        spool.ack(&[entries[1].seq]).unwrap();
        drop(spool);

        let (mut spool, pending) = Spool::open(dir.path()).unwrap();
        let times: Vec<Record> = pending.into_iter().map(|entry| entry.record).collect();
        assert_eq!(times, vec![end(1), end(3)]);
        let next = spool.append(vec![end(4)]).unwrap();
        assert_eq!(next[0].seq, 3);
        assert!(!spool.is_drained());
        spool.ack(&[0, 2, 3]).unwrap();
        assert!(spool.is_drained());
    }

    #[test]
    fn read_records_includes_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_records(dir.path()).unwrap().is_empty(), "no spool, no records");
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        let entries = spool.append(vec![end(1), end(2)]).unwrap();
        spool.ack(&[entries[0].seq]).unwrap();
        assert_eq!(read_records(dir.path()).unwrap(), vec![end(1), end(2)]);
    }

    #[test]
    fn torn_last_line_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        spool.append(vec![end(1)]).unwrap();
        drop(spool);
        let path = Spool::folder(dir.path()).join("spool.jsonl");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":1,\"rec").unwrap();
        let (mut spool, pending) = Spool::open(dir.path()).unwrap();
        assert_eq!(pending.len(), 1);
        spool.append(vec![end(2)]).unwrap();
        drop(spool);
        let (_, pending) = Spool::open(dir.path()).unwrap();
        assert_eq!(pending.len(), 2, "a record appended after a torn line is readable");
    }
}
