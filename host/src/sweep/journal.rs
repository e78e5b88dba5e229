//! The sweep journal: an SQLite database (`journal.db`) in the sweep folder with the sweep's
//! definition and one row per trial. Every status change is committed before the sweep acts on
//! it, so a sweep killed at any point can be resumed from the journal alone.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

/// A trial's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialStatus {
    Pending,
    Running,
    Finished,
    Failed,
    /// Stopped early by the pruning rule.
    Pruned,
    /// Stopped by a signal or cancelled, as when the sweep itself was interrupted.
    Killed,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Finished => "finished",
            TrialStatus::Failed => "failed",
            TrialStatus::Pruned => "pruned",
            TrialStatus::Killed => "killed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => TrialStatus::Running,
            "finished" => TrialStatus::Finished,
            "failed" => TrialStatus::Failed,
            "pruned" => TrialStatus::Pruned,
            "killed" => TrialStatus::Killed,
            _ => TrialStatus::Pending,
        }
    }

    /// Whether the trial has ended for good: a resumed sweep does not run it again.
    pub fn is_done(self) -> bool {
        matches!(self, TrialStatus::Finished | TrialStatus::Pruned)
    }
}

/// One trial row.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub id: u64,
    /// The `key=value` overrides of the swept keys.
    pub overrides: Vec<String>,
    /// The point's coordinates (see [`super::space`]).
    pub point: Vec<f64>,
    pub status: TrialStatus,
    pub run_id: Option<String>,
    /// The target metric of a finished trial, or the last report of a pruned one.
    pub value: Option<f64>,
    /// The target metric at each evaluation so far.
    pub reports: Vec<f64>,
    /// The trial's folder, which is also the run root of its runs.
    pub dir: PathBuf,
    pub run_dir: Option<PathBuf>,
    /// How many times the trial was started.
    pub attempts: u32,
    pub pid: Option<u32>,
    /// `JOBID_TASK` of a trial run through Slurm.
    pub slurm_job: Option<String>,
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    overrides TEXT NOT NULL,
    point TEXT NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT,
    value REAL,
    reports TEXT NOT NULL DEFAULT '[]',
    dir TEXT NOT NULL,
    run_dir TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    slurm_job TEXT,
    error TEXT,
    started_at INTEGER,
    ended_at INTEGER
);
";

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("sweep journal {path}: {source}")]
    Database { path: PathBuf, source: rusqlite::Error },
    #[error("sweep journal {path}: invalid stored value: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// The open journal of one sweep folder.
pub struct Journal {
    connection: Connection,
    path: PathBuf,
}

impl Journal {
    /// The journal's file in a sweep folder.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("journal.db")
    }

    /// Opens (creating if needed) the journal of the sweep folder `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let path = Self::path_in(dir);
        let database = |source| JournalError::Database { path: path.clone(), source };
        let connection = Connection::open(&path).map_err(database)?;
        connection.busy_timeout(std::time::Duration::from_secs(30)).map_err(database)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(database)?;
        // FULL makes each committed status change survive a power loss, not only a crash.
        connection.pragma_update(None, "synchronous", "FULL").map_err(database)?;
        connection.execute_batch(SCHEMA).map_err(database)?;
        Ok(Self { connection, path })
    }

    fn database(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Database { path: self.path.clone(), source }
    }

    /// A stored value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0))
            .optional()
            .map_err(|error| self.database(error))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), JournalError> {
        self.connection
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(drop)
            .map_err(|error| self.database(error))
    }

    /// Adds a pending trial and returns it.
    pub fn add_trial(
        &self,
        id: u64,
        overrides: &[String],
        point: &[f64],
        dir: &Path,
    ) -> Result<Trial, JournalError> {
        let overrides_json = serde_json::to_string(overrides).expect("strings serialize");
        let point_json = serde_json::to_string(point).expect("floats serialize");
        self.connection
            .execute(
                "INSERT INTO trials (id, overrides, point, status, dir) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id as i64,
                    overrides_json,
                    point_json,
                    TrialStatus::Pending.as_str(),
                    dir.display().to_string()
                ],
            )
            .map_err(|error| self.database(error))?;
        Ok(Trial {
            id,
            overrides: overrides.to_vec(),
            point: point.to_vec(),
            status: TrialStatus::Pending,
            run_id: None,
            value: None,
            reports: Vec::new(),
            dir: dir.to_path_buf(),
            run_dir: None,
            attempts: 0,
            pid: None,
            slurm_job: None,
            error: None,
            started_at: None,
            ended_at: None,
        })
    }

    /// Every trial, by id.
    pub fn trials(&self) -> Result<Vec<Trial>, JournalError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, overrides, point, status, run_id, value, reports, dir, run_dir,
                        attempts, pid, slurm_job, error, started_at, ended_at
                 FROM trials ORDER BY id",
            )
            .map_err(|error| self.database(error))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<f64>>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, Option<String>>(8)?,
                    row.get::<_, i64>(9)?,
                    row.get::<_, Option<i64>>(10)?,
                    row.get::<_, Option<String>>(11)?,
                    row.get::<_, Option<String>>(12)?,
                    row.get::<_, Option<i64>>(13)?,
                    row.get::<_, Option<i64>>(14)?,
                ))
            })
            .map_err(|error| self.database(error))?;
        let mut trials = Vec::new();
        for row in rows {
            let row = row.map_err(|error| self.database(error))?;
            let corrupt = |error: serde_json::Error| JournalError::Corrupt {
                path: self.path.clone(),
                message: error.to_string(),
            };
            trials.push(Trial {
                id: row.0 as u64,
                overrides: serde_json::from_str(&row.1).map_err(corrupt)?,
                point: serde_json::from_str(&row.2).map_err(corrupt)?,
                status: TrialStatus::parse(&row.3),
                run_id: row.4,
                value: row.5,
                reports: serde_json::from_str(&row.6).map_err(corrupt)?,
                dir: PathBuf::from(row.7),
                run_dir: row.8.map(PathBuf::from),
                attempts: row.9 as u32,
                pid: row.10.map(|pid| pid as u32),
                slurm_job: row.11,
                error: row.12,
                started_at: row.13,
                ended_at: row.14,
            });
        }
        Ok(trials)
    }

    fn execute(&self, sql: &str, values: impl rusqlite::Params) -> Result<(), JournalError> {
        self.connection.execute(sql, values).map(drop).map_err(|error| self.database(error))
    }

    /// Records that a trial started: attempt count, process id or Slurm job, start time.
    pub fn mark_running(
        &self,
        id: u64,
        pid: Option<u32>,
        slurm_job: Option<&str>,
    ) -> Result<(), JournalError> {
        self.execute(
            "UPDATE trials SET status = 'running', attempts = attempts + 1, pid = ?2,
                    slurm_job = ?3, started_at = ?4, ended_at = NULL, error = NULL, value = NULL,
                    reports = '[]', run_id = NULL, run_dir = NULL
             WHERE id = ?1",
            params![id as i64, pid.map(i64::from), slurm_job, crate::store::now_millis()],
        )
    }

    /// Records the run a trial created.
    pub fn set_run(&self, id: u64, run_id: &str, run_dir: &Path) -> Result<(), JournalError> {
        self.execute(
            "UPDATE trials SET run_id = ?2, run_dir = ?3 WHERE id = ?1",
            params![id as i64, run_id, run_dir.display().to_string()],
        )
    }

    /// Records a trial's reports of the target metric so far.
    pub fn set_reports(&self, id: u64, reports: &[f64]) -> Result<(), JournalError> {
        let json = serde_json::to_string(reports).expect("floats serialize");
        self.execute("UPDATE trials SET reports = ?2 WHERE id = ?1", params![id as i64, json])
    }

    /// Records how a trial ended.
    pub fn finish(
        &self,
        id: u64,
        status: TrialStatus,
        value: Option<f64>,
        error: Option<&str>,
    ) -> Result<(), JournalError> {
        self.execute(
            "UPDATE trials SET status = ?2, value = ?3, error = ?4, ended_at = ?5 WHERE id = ?1",
            params![id as i64, status.as_str(), value, error, crate::store::now_millis()],
        )
    }

    /// Sets every trial that has not ended for good (running, failed, killed) back to pending,
    /// and returns how many there were.
    pub fn reset_unfinished(&self) -> Result<usize, JournalError> {
        self.connection
            .execute(
                "UPDATE trials SET status = 'pending' WHERE status NOT IN ('finished', 'pruned')",
                [],
            )
            .map_err(|error| self.database(error))
    }

    /// One trial by id.
    pub fn trial(&self, id: u64) -> Result<Option<Trial>, JournalError> {
        Ok(self.trials()?.into_iter().find(|trial| trial.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.add_trial(0, &["trainer.lr=0.1".into()], &[0.1], dir.path()).unwrap();
        journal.mark_running(0, Some(42), None).unwrap();
        journal.set_reports(0, &[1.0, 0.5]).unwrap();
        journal.finish(0, TrialStatus::Finished, Some(0.5), None).unwrap();
        let trials = journal.trials().unwrap();
        assert_eq!(trials[0].status, TrialStatus::Finished);
        assert_eq!(trials[0].reports, [1.0, 0.5]);
        assert_eq!(trials[0].attempts, 1);
        assert_eq!(trials[0].pid, Some(42));
    }

    #[test]
    fn reset_keeps_finished_trials() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for id in 0..3 {
            journal.add_trial(id, &[], &[], dir.path()).unwrap();
        }
        journal.finish(0, TrialStatus::Finished, Some(1.0), None).unwrap();
        journal.finish(1, TrialStatus::Failed, None, Some("abort")).unwrap();
        journal.mark_running(2, Some(1), None).unwrap();
        assert_eq!(journal.reset_unfinished().unwrap(), 2);
        let statuses: Vec<TrialStatus> =
            journal.trials().unwrap().iter().map(|trial| trial.status).collect();
        assert_eq!(statuses, [TrialStatus::Finished, TrialStatus::Pending, TrialStatus::Pending]);
    }
}
