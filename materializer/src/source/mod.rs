//! Opening a service's offline output in DuckDB. Each kind has a module of the
//! same shape: `open(conn, ..) -> Opened`, which makes the output readable as one
//! SQL relation and describes exactly what was read (the source snapshot).

mod duckdb_file;
mod ducklake;
mod parquet;

use ::duckdb::Connection;
use daeda_catalog::Source;

use crate::MaterializeError;

/// A source made readable in a DuckDB session.
#[derive(Debug, Clone)]
pub struct Opened {
    /// SQL naming the relation, e.g. `read_parquet('…')` or `src_lake."t"`.
    pub relation: String,
    /// What was read: Parquet files with sizes and mtimes, the DuckDB file, or the
    /// DuckLake snapshot id. Recorded with the run and the generation.
    pub snapshot: serde_json::Value,
}

/// Opens `source` in `conn`, which must be a fresh session (see `duck::session`).
pub fn open(conn: &Connection, source: &Source) -> Result<Opened, MaterializeError> {
    match source {
        Source::Parquet { path } => parquet::open(conn, path),
        Source::DuckDb { database, table } => duckdb_file::open(conn, database, table),
        Source::DuckLake { catalog, data_path, table, snapshot } => {
            ducklake::open(conn, catalog, data_path, table, *snapshot)
        }
    }
}

/// A single-quoted SQL string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A double-quoted SQL identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `schema.table` as quoted parts under a catalog alias.
pub(crate) fn qualified(alias: &str, table: &str) -> String {
    let mut out = alias.to_string();
    for part in table.split('.') {
        out.push('.');
        out.push_str(&ident(part));
    }
    out
}

/// Size and modification time of a file, for snapshots.
pub(crate) fn file_stamp(path: &std::path::Path) -> Result<serde_json::Value, MaterializeError> {
    let md = std::fs::metadata(path).map_err(|e| MaterializeError::Source(format!("cannot read {}: {e}", path.display())))?;
    let mtime = md
        .modified()
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    Ok(serde_json::json!({"path": path.display().to_string(), "size": md.len(), "mtime": mtime}))
}
