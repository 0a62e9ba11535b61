//! The MetadataStore: one SQLite file (WAL mode) under the run root holding an
//! append-only log of run records. A run appends a `running` record when it starts
//! and a final one when it ends ([`RunStatus`]); triggers refuse UPDATE and
//! DELETE, so history cannot be rewritten. Definitions never move in here: the
//! YAML stays the file of record.
//!
//! Kinds and statuses are enums, stored as their lower-case names; whether a
//! status ends a streak of failures is [`RunStatus::is_success`], and nothing
//! else decides it.

mod recorded;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

pub use recorded::{timestamp, Recorded};

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

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `daeda materialize`.
    #[default]
    Materialize,
    /// `daeda skew check`.
    SkewCheck,
}

/// Where a run stands. A run's first record is `Running`; its last one is one
/// of the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    #[default]
    Running,
    /// A materialization that finished (and flipped or updated the generation).
    Succeeded,
    /// A materialization that read and encoded everything and wrote nothing.
    DryRun,
    /// A skew check within its threshold.
    Passed,
    /// A skew check over its threshold.
    Skewed,
    /// The run stopped with an error.
    Failed,
    /// The run did nothing: another run held the service's lease. Neither a
    /// success nor a failure, so it adds no attempt (overlapping schedules are
    /// the lease working, not the service failing).
    Skipped,
}

macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),*
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<$ty, String> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($ty))),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl rusqlite::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<$ty> {
                v.as_str()?.parse().map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }
    };
}

names!(RunKind { Materialize => "materialize", SkewCheck => "skew_check" });
names!(RunStatus {
    Running => "running",
    Succeeded => "succeeded",
    DryRun => "dry_run",
    Passed => "passed",
    Skewed => "skewed",
    Failed => "failed",
    Skipped => "skipped",
});

impl RunStatus {
    /// The run did what it was for: a materialization that went live or a skew
    /// check that passed. A success resets the attempt counter.
    pub fn is_success(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Passed)
    }

    /// The run ended without success: it failed, or the check found skew. Each
    /// one since the last success adds one to the next run's attempt.
    pub fn is_failure(self) -> bool {
        matches!(self, RunStatus::Failed | RunStatus::Skewed)
    }
}

/// One record of one run. JSON-valued fields are kept as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub kind: RunKind,
    pub service: String,
    pub version: String,
    /// `full` or `incremental` for materializations.
    pub mode: String,
    pub status: RunStatus,
    /// 1 + the unsuccessful runs ([`RunStatus::is_failure`]) of this service and
    /// kind since its last success.
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

    /// 1 + the unsuccessful runs of `service`/`kind` since its last success.
    pub fn next_attempt(&self, service: &str, kind: RunKind) -> Result<u32, StoreError> {
        // The SQL lists are built from the enum, so `is_success` is the only definition.
        let quoted = |keep: fn(RunStatus) -> bool| {
            let names: Vec<String> =
                RunStatus::ALL.iter().filter(|s| keep(**s)).map(|s| format!("'{}'", s.as_str())).collect();
            names.join(", ")
        };
        let last_ok: Option<i64> = self
            .conn
            .query_row(
                &format!(
                    "SELECT max(seq) FROM run_records WHERE service = ?1 AND kind = ?2 AND status IN ({})",
                    quoted(RunStatus::is_success)
                ),
                params![service, kind],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .flatten();
        let failed: u32 = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM run_records WHERE service = ?1 AND kind = ?2 AND status IN ({}) AND seq > ?3",
                    quoted(RunStatus::is_failure)
                ),
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

    /// The latest record of each of `service`'s last `limit` runs of `kind`,
    /// newest first.
    pub fn latest_of(&self, service: &str, kind: RunKind, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM run_records WHERE seq IN (SELECT max(seq) FROM run_records \
             WHERE service = ?1 AND kind = ?2 GROUP BY run_id) ORDER BY seq DESC LIMIT ?3"
        );
        self.query(&sql, params![service, kind, limit as i64])
    }

    /// The highest numeric generation any materialization of `service`
    /// recorded (0 when none): the floor for the next generation id, so ids
    /// are not issued again after Redis lost its data and its counter.
    pub fn highest_generation(&self, service: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(CAST(generation AS INTEGER)) FROM run_records \
             WHERE service = ?1 AND kind = 'materialize' AND generation GLOB '[0-9]*'",
                params![service],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(n.unwrap_or(0).max(0) as u64)
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

    /// Retention: removes every record of the runs that started before
    /// `cutoff` (RFC 3339), except the latest successful run of each service
    /// and kind, which the attempt counter starts from. The only deletion the
    /// store allows: in one transaction the no-delete trigger is dropped, the
    /// rows deleted and the trigger created again, so no other writer ever
    /// sees the table without it. With `dry_run`, counts only. Returns
    /// (runs, records).
    pub fn prune(&mut self, cutoff: &str, dry_run: bool) -> Result<(u64, u64), StoreError> {
        let success: Vec<String> =
            RunStatus::ALL.iter().filter(|s| s.is_success()).map(|s| format!("'{}'", s.as_str())).collect();
        let doomed = format!(
            "SELECT run_id FROM run_records GROUP BY run_id HAVING julianday(min(started_at)) < julianday(?1) \
             EXCEPT SELECT run_id FROM run_records WHERE seq IN \
               (SELECT max(seq) FROM run_records WHERE status IN ({}) GROUP BY service, kind)",
            success.join(", ")
        );
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
        let runs: i64 =
            tx.query_row(&format!("SELECT count(*) FROM ({doomed})"), params![cutoff], |r| r.get(0)).map_err(sql)?;
        let records: i64 = tx
            .query_row(&format!("SELECT count(*) FROM run_records WHERE run_id IN ({doomed})"), params![cutoff], |r| {
                r.get(0)
            })
            .map_err(sql)?;
        let counts = (runs as u64, records as u64);
        if dry_run || records == 0 {
            return Ok(counts);
        }
        tx.execute_batch("DROP TRIGGER run_records_no_delete").map_err(sql)?;
        tx.execute(&format!("DELETE FROM run_records WHERE run_id IN ({doomed})"), params![cutoff]).map_err(sql)?;
        tx.execute_batch(
            "CREATE TRIGGER run_records_no_delete BEFORE DELETE ON run_records \
             BEGIN SELECT RAISE(ABORT, 'run_records is append-only'); END;",
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(counts)
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

/// A new run's id: `20261126T071502Z-user_features-5f3a09c1e2d4b687`, sortable by
/// start time and unique across processes and hosts that start in the same
/// second. The id is also the run's lease token, so two runs sharing one
/// would release each other's lease: the suffix is 64 random bits (std's
/// per-process random hasher keys, seeded by the OS), not clock or pid bits.
pub fn new_run_id(label: &str, started: chrono::DateTime<chrono::Utc>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(started.timestamp_nanos_opt().unwrap_or_default());
    h.write_u32(std::process::id());
    format!("{}-{label}-{:016x}", started.format("%Y%m%dT%H%M%SZ"), h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs of one service started in the same instant (two hosts on the
    /// same cron minute) must not share an id: it is their lease token. The old
    /// 16-bit clock^pid salt repeated once in 65,536 such pairs.
    #[test]
    fn run_ids_started_in_the_same_instant_differ() {
        let at = chrono::DateTime::from_timestamp(1_764_140_000, 0).unwrap();
        let ids: std::collections::HashSet<String> = (0..20_000).map(|_| new_run_id("user_features", at)).collect();
        assert_eq!(ids.len(), 20_000);
        let one = ids.iter().next().unwrap();
        assert!(
            one.starts_with("20251126T065320Z-user_features-")
                && one.len() == "20251126T065320Z-user_features-".len() + 16,
            "{one}"
        );
    }

    fn rec(run: &str, status: RunStatus) -> RunRecord {
        kind_rec(run, RunKind::Materialize, status)
    }

    fn kind_rec(run: &str, kind: RunKind, status: RunStatus) -> RunRecord {
        RunRecord {
            run_id: run.into(),
            kind,
            service: "s".into(),
            version: "2026-01-01".into(),
            mode: "full".into(),
            status,
            attempt: 1,
            started_at: "2026-01-01T00:00:00Z".into(),
            source_snapshot: Some(serde_json::json!({"files": []})),
            ..Default::default()
        }
    }

    /// A run refused because another held the lease did nothing wrong: it
    /// adds no attempt (two overlapping schedules are not a failing service).
    #[test]
    fn a_skipped_run_adds_no_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        store.append(&rec("r1", RunStatus::Failed)).unwrap();
        for run in ["r2", "r3"] {
            store.append(&rec(run, RunStatus::Running)).unwrap();
            store.append(&rec(run, RunStatus::Skipped)).unwrap();
        }
        assert_eq!(store.next_attempt("s", RunKind::Materialize).unwrap(), 2, "only the failure counts");
        assert!(!RunStatus::Skipped.is_success() && !RunStatus::Skipped.is_failure());
    }

    #[test]
    fn records_append_and_cannot_be_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        store.append(&rec("r1", RunStatus::Running)).unwrap();
        store.append(&rec("r1", RunStatus::Failed)).unwrap();
        assert_eq!(store.next_attempt("s", RunKind::Materialize).unwrap(), 2);
        store.append(&rec("r2", RunStatus::Running)).unwrap();
        store.append(&rec("r2", RunStatus::Succeeded)).unwrap();
        assert_eq!(store.next_attempt("s", RunKind::Materialize).unwrap(), 1);

        let list = store.list(10).unwrap();
        assert_eq!(
            list.iter().map(|r| (r.run_id.as_str(), r.status.as_str())).collect::<Vec<_>>(),
            [("r2", "succeeded"), ("r1", "failed")]
        );
        assert_eq!(store.show("r1").unwrap().len(), 2);
        assert_eq!(list[0].source_snapshot, Some(serde_json::json!({"files": []})));
        assert!(matches!(store.show("nope"), Err(StoreError::UnknownRun(_))));

        let err = store.conn.execute("UPDATE run_records SET status = 'succeeded'", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(store.conn.execute("DELETE FROM run_records", []).is_err());
        let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    /// Issue 15: `runs prune` removes whole old runs, keeps each kind's latest
    /// success (the attempt counter's anchor), and leaves the table append-only.
    #[test]
    fn prune_removes_old_runs_but_keeps_the_latest_success_and_the_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let at = |run: &str, status, started: &str| RunRecord { started_at: started.into(), ..rec(run, status) };
        for (run, status, started) in [
            ("older-ok", RunStatus::Succeeded, "2025-12-01T00:00:00.000000Z"),
            ("old-ok", RunStatus::Running, "2026-01-01T00:00:00Z"),
            ("old-ok", RunStatus::Succeeded, "2026-01-01T00:00:00Z"),
            ("old-failed", RunStatus::Running, "2026-01-02T00:00:00Z"),
            ("old-failed", RunStatus::Failed, "2026-01-02T00:00:00Z"),
            ("new", RunStatus::Running, "2026-06-01T00:00:00Z"),
            ("new", RunStatus::Failed, "2026-06-01T00:00:00Z"),
        ] {
            store.append(&at(run, status, started)).unwrap();
        }
        assert_eq!(store.prune("2026-03-01T00:00:00Z", true).unwrap(), (2, 3));
        // Not `old-ok` (the latest success), not `new`.
        let _ = store.show("older-ok").unwrap();
        assert_eq!(store.prune("2026-03-01T00:00:00Z", false).unwrap(), (2, 3));
        assert!(matches!(store.show("older-ok"), Err(StoreError::UnknownRun(_))));
        assert!(matches!(store.show("old-failed"), Err(StoreError::UnknownRun(_))));
        assert_eq!(store.show("old-ok").unwrap().len(), 2);
        assert_eq!(store.next_attempt("s", RunKind::Materialize).unwrap(), 2);
        assert!(store.conn.execute("DELETE FROM run_records", []).unwrap_err().to_string().contains("append-only"));
    }

    /// Regression (issue 14): skew checks end `passed` or `skewed`, but only
    /// `succeeded` reset the counter, so every check after a failed one kept
    /// counting up. Each kind resets on its own success and counts its own failures.
    #[test]
    fn the_attempt_counter_resets_on_the_success_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        let run = |id: &str, kind, status| {
            store.append(&kind_rec(id, kind, RunStatus::Running)).unwrap();
            store.append(&kind_rec(id, kind, status)).unwrap();
        };
        for kind in [RunKind::Materialize, RunKind::SkewCheck] {
            let ok = if kind == RunKind::Materialize { RunStatus::Succeeded } else { RunStatus::Passed };
            assert_eq!(store.next_attempt("s", kind).unwrap(), 1, "{kind}");
            run(&format!("{kind}-1"), kind, RunStatus::Failed);
            run(&format!("{kind}-2"), kind, RunStatus::Failed);
            assert_eq!(store.next_attempt("s", kind).unwrap(), 3, "{kind}");
            run(&format!("{kind}-3"), kind, ok);
            assert_eq!(store.next_attempt("s", kind).unwrap(), 1, "{kind}: {ok} resets");
        }
        // A check that found skew is an unsuccessful attempt; a dry run is neither.
        run("c4", RunKind::SkewCheck, RunStatus::Skewed);
        assert_eq!(store.next_attempt("s", RunKind::SkewCheck).unwrap(), 2);
        run("m4", RunKind::Materialize, RunStatus::DryRun);
        assert_eq!(store.next_attempt("s", RunKind::Materialize).unwrap(), 1);
        // Kinds do not count each other's runs.
        run("m5", RunKind::Materialize, RunStatus::Failed);
        assert_eq!(store.next_attempt("s", RunKind::SkewCheck).unwrap(), 2);
        assert_eq!(store.next_attempt("s", RunKind::Materialize).unwrap(), 2);

        // Stored as their names; read back typed.
        let last = store.show("c4").unwrap().pop().unwrap();
        assert_eq!((last.kind, last.status), (RunKind::SkewCheck, RunStatus::Skewed));
        let raw: String = store
            .conn
            .query_row("SELECT status FROM run_records WHERE run_id = 'c4' ORDER BY seq DESC", [], |r| r.get(0))
            .unwrap();
        assert_eq!(raw, "skewed");
        assert_eq!(serde_json::to_value(&last).unwrap()["kind"], "skew_check");
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
            assert!(!(s.is_success() && s.is_failure()), "{s}");
        }
    }
}
