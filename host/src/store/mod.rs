//! The embedded run store: an SQLite database under the run root, plus one folder per run.
//!
//! The tables mirror MLflow's model (experiments, runs, params, metrics with steps, tags) so that
//! a stored run can be sent to an MLflow server unchanged. SQLite stores NaN as NULL, so each
//! metric keeps non-finite values in a separate `special` column (`nan`, `inf`, `-inf`).

mod links;

use std::path::{Path, PathBuf};

pub use links::{ProcessRecord, host_name};
use rusqlite::{Connection, OptionalExtension, params};

/// Errors of the run store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run store {path}: {source}")]
    Database { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no run matches `{0}`; list runs with `pretext runs`")]
    RunNotFound(String),
    #[error("`{prefix}` matches {count} runs; give more characters of the run id")]
    AmbiguousRun { prefix: String, count: usize },
}

/// A run's final status, as MLflow names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// One recorded metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub step: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A run as `pretext runs` lists it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub experiment: String,
    pub name: String,
    pub status: String,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub dir: PathBuf,
}

/// The database handle. The run root contains `pretext.db` and one folder per run.
pub struct Store {
    connection: Connection,
    db_path: PathBuf,
    root: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    end_time INTEGER,
    dir TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS params (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value REAL,
    special TEXT,
    step INTEGER NOT NULL,
    timestamp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, key, step);
";

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn encode_value(value: f64) -> (Option<f64>, Option<&'static str>) {
    if value.is_nan() {
        (None, Some("nan"))
    } else if value == f64::INFINITY {
        (None, Some("inf"))
    } else if value == f64::NEG_INFINITY {
        (None, Some("-inf"))
    } else {
        (Some(value), None)
    }
}

fn decode_value(value: Option<f64>, special: Option<String>) -> f64 {
    match special.as_deref() {
        Some("inf") => f64::INFINITY,
        Some("-inf") => f64::NEG_INFINITY,
        Some(_) => f64::NAN,
        None => value.unwrap_or(f64::NAN),
    }
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)
            .map_err(|source| StoreError::Io { path: root.to_path_buf(), source })?;
        let db_path = root.join("pretext.db");
        let database = |source| StoreError::Database { path: db_path.clone(), source };
        let connection = Connection::open(&db_path).map_err(database)?;
        connection.busy_timeout(std::time::Duration::from_secs(30)).map_err(database)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(database)?;
        // A commit reaches the operating system but is not fsynced, so a killed process loses
        // nothing and a step costs no disk flush. A power loss can drop the commits since the
        // last `sync` (each checkpoint and each run's end), and never corrupts the file.
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(database)?;
        connection.pragma_update(None, "foreign_keys", "ON").map_err(database)?;
        connection.execute_batch(SCHEMA).map_err(database)?;
        connection.execute_batch(links::SCHEMA).map_err(database)?;
        Ok(Self { connection, db_path, root: root.to_path_buf() })
    }

    fn database(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Database { path: self.db_path.clone(), source }
    }

    /// The run root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a RUNNING run and its folder; returns the run id and folder.
    pub fn create_run(
        &self,
        experiment: &str,
        run_name: &str,
    ) -> Result<(String, PathBuf), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.root.join(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        let now = now_millis();
        self.connection
            .execute(
                "INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?1, ?2)",
                params![experiment, now],
            )
            .map_err(|error| self.database(error))?;
        self.connection
            .execute(
                "INSERT INTO runs (id, experiment_id, name, status, start_time, dir)
                 SELECT ?1, id, ?2, 'RUNNING', ?3, ?4 FROM experiments WHERE name = ?5",
                params![id, run_name, now, dir.display().to_string(), experiment],
            )
            .map_err(|error| self.database(error))?;
        Ok((id, dir))
    }

    /// Records parameters; a key given again keeps its first value, as in MLflow.
    pub fn log_params(
        &mut self,
        run_id: &str,
        params: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.insert_pairs(
            "INSERT OR IGNORE INTO params (run_id, key, value) VALUES (?1, ?2, ?3)",
            run_id,
            params,
        )
    }

    /// Sets tags, replacing earlier values.
    pub fn set_tags(&mut self, run_id: &str, tags: &[(String, String)]) -> Result<(), StoreError> {
        self.insert_pairs(
            "INSERT OR REPLACE INTO tags (run_id, key, value) VALUES (?1, ?2, ?3)",
            run_id,
            tags,
        )
    }

    fn insert_pairs(
        &mut self,
        sql: &str,
        run_id: &str,
        pairs: &[(String, String)],
    ) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction()
            .map_err(|error| StoreError::Database { path: self.db_path.clone(), source: error })?;
        {
            let mut statement = transaction.prepare_cached(sql).map_err(|error| {
                StoreError::Database { path: self.db_path.clone(), source: error }
            })?;
            for (key, value) in pairs {
                statement.execute(params![run_id, key, value]).map_err(|error| {
                    StoreError::Database { path: self.db_path.clone(), source: error }
                })?;
            }
        }
        transaction
            .commit()
            .map_err(|error| StoreError::Database { path: self.db_path.clone(), source: error })
    }

    /// Appends metric points in one transaction.
    pub fn log_metrics(&mut self, run_id: &str, points: &[MetricPoint]) -> Result<(), StoreError> {
        let db_path = self.db_path.clone();
        let database = |source| StoreError::Database { path: db_path.clone(), source };
        let transaction = self.connection.transaction().map_err(database)?;
        {
            let mut statement = transaction
                .prepare_cached(
                    "INSERT INTO metrics (run_id, key, value, special, step, timestamp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(database)?;
            for point in points {
                let (value, special) = encode_value(point.value);
                statement
                    .execute(params![
                        run_id,
                        point.key,
                        value,
                        special,
                        point.step as i64,
                        point.timestamp
                    ])
                    .map_err(database)?;
            }
        }
        transaction.commit().map_err(database)
    }

    /// The row id of the run's last metric point, or 0 when it has none.
    pub fn last_metric_row(&self, run_id: &str) -> Result<i64, StoreError> {
        self.connection
            .query_row(
                "SELECT COALESCE(MAX(rowid), 0) FROM metrics WHERE run_id = ?1",
                params![run_id],
                |row| row.get(0),
            )
            .map_err(|error| self.database(error))
    }

    /// Deletes the run's metric points recorded after row `row`; returns how many went.
    pub fn truncate_metrics(&self, run_id: &str, row: i64) -> Result<usize, StoreError> {
        self.connection
            .execute("DELETE FROM metrics WHERE run_id = ?1 AND rowid > ?2", params![run_id, row])
            .map_err(|error| self.database(error))
    }

    /// Marks an ended run as RUNNING again, for a resume.
    pub fn reopen_run(&self, run_id: &str) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE runs SET status = 'RUNNING', end_time = NULL, error = NULL WHERE id = ?1",
                params![run_id],
            )
            .map_err(|error| self.database(error))?;
        Ok(())
    }

    /// Marks a run as ended, and makes everything recorded so far durable.
    pub fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE runs SET status = ?1, end_time = ?2, error = ?3 WHERE id = ?4",
                params![status.as_str(), now_millis(), error, run_id],
            )
            .map_err(|error| self.database(error))?;
        self.sync()
    }

    /// Runs a passive checkpoint. With `synchronous = NORMAL` SQLite syncs the write-ahead log at
    /// checkpoints, so the transactions committed so far survive a power loss. A passive
    /// checkpoint never waits for other connections, such as those of a sweep's other trials.
    ///
    /// NOTE: whether the log is still synced when other connections' reads keep the checkpoint
    /// from copying any frame was not checked. The next checkpoint covers those commits.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|error| self.database(error))
    }

    /// All runs, newest first.
    pub fn list_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT runs.id, experiments.name, runs.name, runs.status, runs.start_time,
                        runs.end_time, runs.dir
                 FROM runs JOIN experiments ON experiments.id = runs.experiment_id
                 ORDER BY runs.start_time DESC, runs.id",
            )
            .map_err(|error| self.database(error))?;
        let rows = statement
            .query_map([], |row| {
                Ok(RunRow {
                    id: row.get(0)?,
                    experiment: row.get(1)?,
                    name: row.get(2)?,
                    status: row.get(3)?,
                    start_time: row.get(4)?,
                    end_time: row.get(5)?,
                    dir: PathBuf::from(row.get::<_, String>(6)?),
                })
            })
            .map_err(|error| self.database(error))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|error| self.database(error))
    }

    /// The run whose id starts with `prefix`.
    pub fn find_run(&self, prefix: &str) -> Result<RunRow, StoreError> {
        let matches: Vec<RunRow> =
            self.list_runs()?.into_iter().filter(|run| run.id.starts_with(prefix)).collect();
        match matches.len() {
            0 => Err(StoreError::RunNotFound(prefix.to_owned())),
            1 => Ok(matches.into_iter().next().expect("one element")),
            count => Err(StoreError::AmbiguousRun { prefix: prefix.to_owned(), count }),
        }
    }

    /// The error message recorded for a failed run.
    pub fn run_error(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        self.connection
            .query_row("SELECT error FROM runs WHERE id = ?1", params![run_id], |row| row.get(0))
            .optional()
            .map(Option::flatten)
            .map_err(|error| self.database(error))
    }

    /// A run's parameters, sorted by key.
    pub fn params(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs("SELECT key, value FROM params WHERE run_id = ?1 ORDER BY key", run_id)
    }

    /// A run's tags, sorted by key.
    pub fn tags(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs("SELECT key, value FROM tags WHERE run_id = ?1 ORDER BY key", run_id)
    }

    fn pairs(&self, sql: &str, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut statement = self.connection.prepare(sql).map_err(|error| self.database(error))?;
        let rows = statement
            .query_map(params![run_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|error| self.database(error))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|error| self.database(error))
    }

    /// Every metric point of a run, ordered by key, step and insertion.
    pub fn metrics(&self, run_id: &str) -> Result<Vec<MetricPoint>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT key, value, special, step, timestamp FROM metrics
                 WHERE run_id = ?1 ORDER BY key, step, rowid",
            )
            .map_err(|error| self.database(error))?;
        let rows = statement
            .query_map(params![run_id], |row| {
                Ok(MetricPoint {
                    key: row.get(0)?,
                    value: decode_value(row.get(1)?, row.get(2)?),
                    step: row.get::<_, i64>(3)? as u64,
                    timestamp: row.get(4)?,
                })
            })
            .map_err(|error| self.database(error))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|error| self.database(error))
    }

    /// The last value of each metric of a run, sorted by key.
    pub fn latest_metrics(&self, run_id: &str) -> Result<Vec<(String, f64)>, StoreError> {
        let mut latest: Vec<(String, f64)> = Vec::new();
        for point in self.metrics(run_id)? {
            match latest.last_mut() {
                Some((key, value)) if *key == point.key => *value = point.value,
                _ => latest.push((point.key, point.value)),
            }
        }
        Ok(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_metrics_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (run, _) = store.create_run("exp", "run").unwrap();
        let values = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.5];
        let points: Vec<MetricPoint> = values
            .iter()
            .enumerate()
            .map(|(step, value)| MetricPoint {
                key: "m".into(),
                value: *value,
                step: step as u64,
                timestamp: 0,
            })
            .collect();
        store.log_metrics(&run, &points).unwrap();
        let read = store.metrics(&run).unwrap();
        assert!(read[0].value.is_nan());
        assert_eq!(read[1].value, f64::INFINITY);
        assert_eq!(read[2].value, f64::NEG_INFINITY);
        assert_eq!(read[3].value, 0.5);
    }

    #[test]
    fn run_lifecycle_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (run, run_dir) = store.create_run("exp", "first").unwrap();
        assert!(run_dir.is_dir());
        assert_eq!(store.find_run(&run[..6]).unwrap().status, "RUNNING");
        store.finish_run(&run, RunStatus::Failed, Some("boom")).unwrap();
        let row = store.find_run(&run).unwrap();
        assert_eq!(row.status, "FAILED");
        assert!(row.end_time.is_some());
        assert_eq!(store.run_error(&run).unwrap().as_deref(), Some("boom"));
    }
}
