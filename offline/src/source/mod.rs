//! Opening a service's offline output in DuckDB. Each kind has a module of the
//! same shape: `open(conn, ..) -> Opened`, which makes the output readable as one
//! SQL relation and describes exactly what was read (the source snapshot).

mod duckdb_file;
mod ducklake;
mod parquet;

use ::duckdb::Connection;
use daeda_catalog::Source;

use crate::OfflineError;

/// A source made readable in a DuckDB session.
#[derive(Debug, Clone)]
pub struct Opened {
    /// SQL naming the relation, e.g. `read_parquet('…')` or `src_lake."t"`.
    pub relation: String,
    /// What was read: Parquet files with sizes and mtimes, the DuckDB file, or the
    /// DuckLake snapshot id. Recorded with the run and the generation.
    pub snapshot: serde_json::Value,
}

/// Opens `source` in `conn`, which must be a fresh session (see [`crate::session()`]).
pub fn open(conn: &Connection, source: &Source) -> Result<Opened, OfflineError> {
    match source {
        Source::Parquet { path } => parquet::open(conn, path),
        Source::DuckDb { database, table } => duckdb_file::open(conn, database, table),
        Source::DuckLake { catalog, data_path, table, snapshot } => {
            ducklake::open(conn, catalog, data_path, table, *snapshot)
        }
    }
}

/// Opens `source` as a generation recorded it (`recorded` is the generation's
/// source snapshot): the same Parquet files, the same DuckLake snapshot. A
/// DuckDB file cannot be read as of a past state; if it changed since, the
/// returned warnings say so, as they do for Parquet files whose size or mtime
/// changed.
pub fn reopen(
    conn: &Connection,
    source: &Source,
    recorded: &serde_json::Value,
) -> Result<(Opened, Vec<String>), OfflineError> {
    let mut warnings = Vec::new();
    let stamp_changed = |stamp: &serde_json::Value, warnings: &mut Vec<String>| -> Result<(), OfflineError> {
        let path = stamp["path"].as_str().unwrap_or_default();
        let now = file_stamp(std::path::Path::new(path))?;
        if now["size"] != stamp["size"] || now["mtime"] != stamp["mtime"] {
            warnings.push(format!("{path} changed since the generation was written"));
        }
        Ok(())
    };
    let opened = match source {
        Source::Parquet { .. } => {
            let files = recorded["files"].as_array().cloned().unwrap_or_default();
            if files.is_empty() {
                return Ok((open(conn, source)?, warnings));
            }
            let paths: Vec<String> = files.iter().map(|f| f["path"].as_str().unwrap_or_default().to_string()).collect();
            if paths.iter().any(|p| crate::s3::is_remote(p)) {
                crate::s3::prepare(conn)?;
                let now = parquet::object_stamps(conn, &paths)?;
                for f in &files {
                    let path = f["path"].as_str().unwrap_or_default();
                    match now.iter().find(|n| n["path"] == f["path"]) {
                        None => return Err(OfflineError::RecordedFileGone(path.to_string())),
                        Some(n) if n["size"] != f["size"] || n["mtime"] != f["mtime"] => {
                            warnings.push(format!("{path} changed since the generation was written"))
                        }
                        Some(_) => {}
                    }
                }
            } else {
                for f in &files {
                    let path = f["path"].as_str().unwrap_or_default();
                    if !std::path::Path::new(path).is_file() {
                        return Err(OfflineError::RecordedFileGone(path.to_string()));
                    }
                    stamp_changed(f, &mut warnings)?;
                }
            }
            Opened { relation: parquet::relation(&paths), snapshot: recorded.clone() }
        }
        Source::DuckDb { .. } => {
            let opened = open(conn, source)?;
            stamp_changed(&recorded["database"], &mut warnings)?;
            opened
        }
        Source::DuckLake { catalog, data_path, table, snapshot } => {
            let pinned = recorded["snapshot_id"].as_u64().or(*snapshot);
            ducklake::open(conn, catalog, data_path, table, pinned)?
        }
    };
    Ok((opened, warnings))
}

/// Size and modification time of a file, for snapshots.
pub(crate) fn file_stamp(path: &std::path::Path) -> Result<serde_json::Value, OfflineError> {
    let md = std::fs::metadata(path).map_err(|source| OfflineError::Stat { path: path.to_path_buf(), source })?;
    let mtime = md
        .modified()
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    Ok(serde_json::json!({"path": path.display().to_string(), "size": md.len(), "mtime": mtime}))
}
