//! What the store keeps about a run besides MLflow's model: the process that records it, so that a
//! run left RUNNING by a killed process can be found, and the MLflow runs it was delivered to.

use rusqlite::{OptionalExtension, params};

use super::{RunRow, RunStatus, Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS run_processes (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    host TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mlflow_runs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    tracking_uri TEXT NOT NULL,
    mlflow_run_id TEXT NOT NULL,
    complete INTEGER NOT NULL,
    PRIMARY KEY (run_id, tracking_uri)
);
";

/// The recording process of a run, as `run_processes` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`, field 22), which tells a reused
    /// pid from the original process.
    pub start_ticks: Option<u64>,
    pub host: String,
}

impl ProcessRecord {
    /// The current process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self { pid, start_ticks: start_ticks(pid), host: host_name() }
    }

    /// Whether the process still runs. Only meaningful on the host that recorded it.
    pub fn is_alive(&self) -> bool {
        match (start_ticks(self.pid), self.start_ticks) {
            (Some(now), Some(recorded)) => now == recorded,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces, so count fields after its closing `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This machine's host name, from the kernel.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

impl Store {
    /// Records the current process as the one recording `run_id`.
    pub fn record_process(&self, run_id: &str) -> Result<(), StoreError> {
        let process = ProcessRecord::current();
        self.connection
            .execute(
                "INSERT OR REPLACE INTO run_processes (run_id, pid, start_ticks, host)
                 VALUES (?1, ?2, ?3, ?4)",
                params![run_id, process.pid, process.start_ticks.map(|t| t as i64), process.host],
            )
            .map_err(|error| self.database(error))?;
        Ok(())
    }

    /// The recording process of a run, if one was recorded.
    pub fn process(&self, run_id: &str) -> Result<Option<ProcessRecord>, StoreError> {
        self.connection
            .query_row(
                "SELECT pid, start_ticks, host FROM run_processes WHERE run_id = ?1",
                params![run_id],
                |row| {
                    Ok(ProcessRecord {
                        pid: row.get(0)?,
                        start_ticks: row.get::<_, Option<i64>>(1)?.map(|ticks| ticks as u64),
                        host: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|error| self.database(error))
    }

    /// Runs marked RUNNING whose recording process on this host no longer exists.
    pub fn stale_runs(&self) -> Result<Vec<(RunRow, ProcessRecord)>, StoreError> {
        let host = host_name();
        let mut stale = Vec::new();
        for run in self.list_runs()?.into_iter().filter(|run| run.status == "RUNNING") {
            if let Some(process) = self.process(&run.id)?
                && process.host == host
                && !process.is_alive()
            {
                stale.push((run, process));
            }
        }
        Ok(stale)
    }

    /// The time of a run's last recorded metric, or its start time.
    pub fn last_activity(&self, run_id: &str) -> Result<i64, StoreError> {
        self.connection
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(timestamp) FROM metrics WHERE run_id = ?1), 0),
                            start_time)
                 FROM runs WHERE id = ?1",
                params![run_id],
                |row| row.get(0),
            )
            .map_err(|error| self.database(error))
    }

    /// Marks a run as ended at `end_time` (milliseconds since the Unix epoch).
    pub fn finish_run_at(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        end_time: i64,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE runs SET status = ?1, end_time = ?2, error = ?3 WHERE id = ?4",
                params![status.as_str(), end_time, error, run_id],
            )
            .map_err(|error| self.database(error))?;
        Ok(())
    }

    /// Records the MLflow run that `run_id` maps to on `tracking_uri`, and whether everything was
    /// delivered.
    pub fn record_mlflow_run(
        &self,
        run_id: &str,
        tracking_uri: &str,
        mlflow_run_id: &str,
        complete: bool,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT OR REPLACE INTO mlflow_runs (run_id, tracking_uri, mlflow_run_id, complete)
                 VALUES (?1, ?2, ?3, ?4)",
                params![run_id, tracking_uri, mlflow_run_id, complete],
            )
            .map_err(|error| self.database(error))?;
        Ok(())
    }

    /// The MLflow run id of `run_id` on `tracking_uri` and whether it was fully delivered.
    pub fn mlflow_run(
        &self,
        run_id: &str,
        tracking_uri: &str,
    ) -> Result<Option<(String, bool)>, StoreError> {
        self.connection
            .query_row(
                "SELECT mlflow_run_id, complete FROM mlflow_runs
                 WHERE run_id = ?1 AND tracking_uri = ?2",
                params![run_id, tracking_uri],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|error| self.database(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let process = ProcessRecord::current();
        assert!(process.start_ticks.is_some());
        assert!(process.is_alive());
        let reused = ProcessRecord { start_ticks: process.start_ticks.map(|t| t + 1), ..process };
        assert!(!reused.is_alive(), "a different start time means a reused pid");
    }

    #[test]
    fn dead_process_run_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (run, _) = store.create_run("exp", "run").unwrap();
        store.record_process(&run).unwrap();
        assert!(store.stale_runs().unwrap().is_empty());
        store
            .connection
            .execute("UPDATE run_processes SET start_ticks = start_ticks + 1", [])
            .unwrap();
        let stale = store.stale_runs().unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0.id, run);
    }

    #[test]
    fn mlflow_link_recorded_per_uri() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (run, _) = store.create_run("exp", "run").unwrap();
        store.record_mlflow_run(&run, "http://a", "r1", false).unwrap();
        store.record_mlflow_run(&run, "http://a", "r1", true).unwrap();
        assert_eq!(store.mlflow_run(&run, "http://a").unwrap(), Some(("r1".into(), true)));
        assert_eq!(store.mlflow_run(&run, "http://b").unwrap(), None);
    }
}
