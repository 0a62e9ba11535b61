//! What a run is asked (mode, as-of, tuning) and what it answers.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `full` writes a new generation and flips to it; `incremental` updates the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Full,
    Incremental,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub mode: Mode,
    /// Event-time bound: rows with `timestamp <= as_of`.
    pub as_of: DateTime<Utc>,
    /// Read, check and encode everything; write nothing to Redis.
    pub dry_run: bool,
    /// HEAD of the catalog's git repository, recorded with the run.
    pub git_sha: Option<String>,
    /// Why this run went ahead despite a warning (e.g. a definition that does
    /// not match `registry.lock.json`), recorded as `details.notes`.
    pub notes: Vec<String>,
}

/// Tuning of the writers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent pipelines to Redis.
    pub writers: usize,
    /// Encoded batches buffered between DuckDB and the writers; with DuckDB's
    /// 2,048-row chunks this bounds the rows held in memory.
    pub queue: usize,
    /// The lease expires this long after the last renewal (a killed run frees
    /// the service on its own).
    pub lease_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { writers: 4, queue: 16, lease_ttl: Duration::from_secs(30) }
    }
}

/// Reports progress (rows written, or compared by the skew checker); the CLI
/// draws a spinner on a terminal, nothing otherwise.
pub trait Progress: Send + Sync {
    fn rows_done(&self, _n: u64) {}
}

impl Progress for () {}

/// The outcome of a successful run (`--json` prints it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub service: String,
    pub version: String,
    pub mode: Mode,
    pub dry_run: bool,
    pub as_of: String,
    /// The generation written (full) or updated (incremental); none on a dry run.
    pub generation: Option<String>,
    /// The generation that was live before a full run.
    pub previous_generation: Option<String>,
    /// Source rows with event time <= as_of (or none).
    pub rows_read: u64,
    /// Source rows skipped for a NULL join key or timestamp.
    pub skipped_null_keys: u64,
    /// Latest-per-entity rows produced by the query.
    pub entities: u64,
    /// Rows written to Redis (incremental: inserted + replaced).
    pub rows_written: u64,
    /// Rows an incremental run kept because the online row was as new or newer.
    pub rows_kept: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    pub rows_per_sec: f64,
    pub source_snapshot: serde_json::Value,
    /// Event-time range of the servable source rows (RFC 3339).
    pub event_ts_min: Option<String>,
    pub event_ts_max: Option<String>,
    /// Fraction of source rows with a NULL, per join key.
    pub join_key_null_rates: serde_json::Map<String, serde_json::Value>,
    pub warnings: Vec<String>,
}
