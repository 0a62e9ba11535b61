//! Parquet globs, hive partitions included, on local disk or on S3. Extra
//! columns (partition keys) are simply not selected.

use duckdb::Connection;

use super::{file_stamp, Opened};
use crate::sql::literal;
use crate::{s3, OfflineError};

pub fn open(conn: &Connection, glob: &str) -> Result<Opened, OfflineError> {
    let remote = s3::is_remote(glob);
    if remote {
        s3::prepare(conn)?;
    }
    let files: Vec<String> = (|| {
        let mut stmt = conn.prepare(&format!("SELECT file FROM glob({}) ORDER BY file", literal(glob)))?;
        let files = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>();
        files
    })()
    .map_err(|e| if remote { s3::read_error(glob, &e) } else { OfflineError::DuckDb(e) })?;
    if files.is_empty() {
        return Err(OfflineError::NoFiles(glob.to_string()));
    }
    let stamps = if remote {
        object_stamps(conn, &files)?
    } else {
        files.iter().map(|f| file_stamp(std::path::Path::new(f))).collect::<Result<Vec<_>, _>>()?
    };
    Ok(Opened {
        relation: relation(&files),
        snapshot: serde_json::json!({"kind": "parquet", "glob": glob, "files": stamps}),
    })
}

/// Reads exactly `files` (the snapshot's list), even if the glob matches more by now.
pub(super) fn relation(files: &[String]) -> String {
    let list = files.iter().map(|f| literal(f)).collect::<Vec<_>>().join(", ");
    format!("read_parquet([{list}], hive_partitioning = true, union_by_name = true)")
}

/// Size and last-modified time of S3 objects, in the shape of a local
/// [`file_stamp`]. DuckDB 1.5.5's `read_blob` exposes these (not the ETag);
/// the object's content is not fetched when it is not selected.
pub(super) fn object_stamps(conn: &Connection, files: &[String]) -> Result<Vec<serde_json::Value>, OfflineError> {
    let list = files.iter().map(|f| literal(f)).collect::<Vec<_>>().join(", ");
    let rows: Vec<(String, i64, Option<i64>)> = (|| {
        let mut stmt = conn.prepare(&format!(
            "SELECT filename, size, epoch_us(last_modified) FROM read_blob([{list}]) ORDER BY filename"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>();
        rows
    })()
    .map_err(|e| s3::read_error(files.first().map(String::as_str).unwrap_or_default(), &e))?;
    Ok(rows
        .into_iter()
        .map(|(path, size, us)| {
            let mtime = us
                .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            serde_json::json!({"path": path, "size": size, "mtime": mtime})
        })
        .collect())
}
