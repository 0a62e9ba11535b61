//! The MetadataStore: one SQLite file (WAL mode) under the run root holding an
//! append-only log of run records. A run appends a `running` record when it starts
//! and a final one (`succeeded`, `failed`, `dry_run`) when it ends; triggers refuse
//! UPDATE and DELETE, so history cannot be rewritten. Definitions never move in
//! here: the YAML stays the file of record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

/// File name of the store inside the run root.
pub const FILE_NAME: &str = "metadata.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The run root could not be created.
    #[error("cannot create the run root {path}: {source}")]
    RunRoot { path: PathBuf, source: std::io::Error },
    /// SQLite failed (open, schema, insert or query).
    #[error("MetadataStore {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    /// `runs show` of an id with no records.
    #[error("no run with id `{0}`")]
    UnknownRun(String),
}

/// One record of one run. JSON-valued fields are kept as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    /// `materialize` or `skew_check`.
    pub kind: String,
    pub service: String,
    pub version: String,
    /// `full` or `incremental` for materializations.
    pub mode: String,
    /// `running`, `succeeded`, `failed` or `dry_run`.
    pub status: String,
    /// 1 + the failed runs of this service and kind since its last success.
    pub attempt: u32,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub as_of: Option<String>,
    /// Parquet file list with sizes and mtimes, DuckDB file, or DuckLake snapshot id.
    pub source_snapshot: Option<serde_json::Value>,
    /// Entities written (or compared, for a skew check).
    pub row_count: Option<u64>,
    pub event_ts_min: Option<String>,
    pub event_ts_max: Option<String>,
    /// Fraction of source rows with a NULL value, per join key.
    pub join_key_null_rates: Option<serde_json::Value>,
    pub generation: Option<String>,
    /// HEAD of the catalog's git repository, when it is in one.
    pub git_sha: Option<String>,
    pub error: Option<String>,
    /// Anything else worth keeping (rows read, bytes, rates; a skew report).
    pub details: Option<serde_json::Value>,
}

pub struct MetadataStore {
    path: PathBuf,
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS run_records (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id              TEXT NOT NULL,
    kind                TEXT NOT NULL,
    service             TEXT NOT NULL,
    version             TEXT NOT NULL,
    mode                TEXT NOT NULL,
    status              TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    started_at          TEXT NOT NULL,
    ended_at            TEXT,
    as_of               TEXT,
    source_snapshot     TEXT,
    row_count           INTEGER,
    event_ts_min        TEXT,
    event_ts_max        TEXT,
    join_key_null_rates TEXT,
    generation          TEXT,
    git_sha             TEXT,
    error               TEXT,
    details             TEXT
);
CREATE INDEX IF NOT EXISTS run_records_run ON run_records (run_id);
CREATE INDEX IF NOT EXISTS run_records_service ON run_records (service, kind, seq);
CREATE TRIGGER IF NOT EXISTS run_records_no_update BEFORE UPDATE ON run_records
BEGIN SELECT RAISE(ABORT, 'run_records is append-only'); END;
CREATE TRIGGER IF NOT EXISTS run_records_no_delete BEFORE DELETE ON run_records
BEGIN SELECT RAISE(ABORT, 'run_records is append-only'); END;
";

const COLUMNS: &str = "run_id, kind, service, version, mode, status, attempt, started_at, ended_at, as_of, \
    source_snapshot, row_count, event_ts_min, event_ts_max, join_key_null_rates, generation, git_sha, error, details";

impl MetadataStore {
    /// Opens (creating if needed) `<run_root>/metadata.sqlite`.
    pub fn open(run_root: &Path) -> Result<MetadataStore, StoreError> {
        std::fs::create_dir_all(run_root)
            .map_err(|source| StoreError::RunRoot { path: run_root.to_path_buf(), source })?;
        let path = run_root.join(FILE_NAME);
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(sql)?;
        // Concurrent runs (cron, Dagster) append to one file: wait instead of failing.
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(MetadataStore { path, conn })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    pub fn append(&self, r: &RunRecord) -> Result<(), StoreError> {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        self.conn
            .execute(
                &format!("INSERT INTO run_records ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
                params![
                    r.run_id, r.kind, r.service, r.version, r.mode, r.status, r.attempt, r.started_at, r.ended_at,
                    r.as_of, json(&r.source_snapshot), r.row_count.map(|n| n as i64), r.event_ts_min, r.event_ts_max,
                    json(&r.join_key_null_rates), r.generation, r.git_sha, r.error, json(&r.details),
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// 1 + the failed runs of `service`/`kind` since its last success.
    pub fn next_attempt(&self, service: &str, kind: &str) -> Result<u32, StoreError> {
        let last_ok: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(seq) FROM run_records WHERE service = ?1 AND kind = ?2 AND status = 'succeeded'",
                params![service, kind],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .flatten();
        let failed: u32 = self
            .conn
            .query_row(
                "SELECT count(*) FROM run_records WHERE service = ?1 AND kind = ?2 AND status = 'failed' AND seq > ?3",
                params![service, kind, last_ok.unwrap_or(0)],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(failed + 1)
    }

    /// The latest record of each run, newest run first.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM run_records WHERE seq IN (SELECT max(seq) FROM run_records GROUP BY run_id) \
             ORDER BY seq DESC LIMIT ?1"
        );
        self.query(&sql, params![limit as i64])
    }

    /// Every record of one run, oldest first.
    pub fn show(&self, run_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM run_records WHERE run_id = ?1 ORDER BY seq");
        let v = self.query(&sql, params![run_id])?;
        if v.is_empty() {
            return Err(StoreError::UnknownRun(run_id.to_string()));
        }
        Ok(v)
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<RunRecord>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows = stmt.query_map(p, read_record).map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }
}

fn read_record(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(r.get::<_, Option<String>>(i)?.and_then(|s| serde_json::from_str(&s).ok()))
    };
    Ok(RunRecord {
        run_id: r.get(0)?,
        kind: r.get(1)?,
        service: r.get(2)?,
        version: r.get(3)?,
        mode: r.get(4)?,
        status: r.get(5)?,
        attempt: r.get(6)?,
        started_at: r.get(7)?,
        ended_at: r.get(8)?,
        as_of: r.get(9)?,
        source_snapshot: json(10)?,
        row_count: r.get::<_, Option<i64>>(11)?.map(|n| n as u64),
        event_ts_min: r.get(12)?,
        event_ts_max: r.get(13)?,
        join_key_null_rates: json(14)?,
        generation: r.get(15)?,
        git_sha: r.get(16)?,
        error: r.get(17)?,
        details: json(18)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(run: &str, status: &str) -> RunRecord {
        RunRecord {
            run_id: run.into(),
            kind: "materialize".into(),
            service: "s".into(),
            version: "2026-01-01".into(),
            mode: "full".into(),
            status: status.into(),
            attempt: 1,
            started_at: "2026-01-01T00:00:00Z".into(),
            source_snapshot: Some(serde_json::json!({"files": []})),
            ..Default::default()
        }
    }

    #[test]
    fn records_append_and_cannot_be_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        store.append(&rec("r1", "running")).unwrap();
        store.append(&rec("r1", "failed")).unwrap();
        assert_eq!(store.next_attempt("s", "materialize").unwrap(), 2);
        store.append(&rec("r2", "running")).unwrap();
        store.append(&rec("r2", "succeeded")).unwrap();
        assert_eq!(store.next_attempt("s", "materialize").unwrap(), 1);

        let list = store.list(10).unwrap();
        assert_eq!(list.iter().map(|r| (r.run_id.as_str(), r.status.as_str())).collect::<Vec<_>>(), [("r2", "succeeded"), ("r1", "failed")]);
        assert_eq!(store.show("r1").unwrap().len(), 2);
        assert_eq!(list[0].source_snapshot, Some(serde_json::json!({"files": []})));
        assert!(matches!(store.show("nope"), Err(StoreError::UnknownRun(_))));

        let err = store.conn.execute("UPDATE run_records SET status = 'succeeded'", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(store.conn.execute("DELETE FROM run_records", []).is_err());
        let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }
}
