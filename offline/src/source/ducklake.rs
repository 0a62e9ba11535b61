//! A DuckLake table, attached with its data path given (see
//! [`crate::sql::attach_ducklake`]).

use std::path::Path;

use duckdb::Connection;

use super::Opened;
use crate::sql::{attach_ducklake, qualified};
use crate::OfflineError;

pub fn open(
    conn: &Connection,
    catalog: &Path,
    data_path: &Path,
    table: &str,
    pinned: Option<u64>,
) -> Result<Opened, OfflineError> {
    if !catalog.is_file() {
        return Err(OfflineError::NoLakeCatalog(catalog.to_path_buf()));
    }
    crate::session::load_ducklake(conn)?;
    if crate::s3::is_remote(&data_path.to_string_lossy()) {
        crate::s3::prepare(conn)?;
    }
    conn.execute_batch(&attach_ducklake(catalog, data_path, "src_lake", pinned)).map_err(|e| {
        let path = data_path.to_string_lossy();
        if crate::s3::is_remote(&path) {
            crate::s3::read_error(&path, &e)
        } else {
            OfflineError::DuckDb(e)
        }
    })?;
    // With a pin, current_snapshot() is the pinned one.
    let snapshot: i64 = conn.query_row("SELECT id FROM src_lake.current_snapshot()", [], |r| r.get(0))?;
    Ok(Opened {
        relation: qualified("src_lake", table),
        snapshot: serde_json::json!({
            "kind": "ducklake",
            "catalog": catalog.display().to_string(),
            "table": table,
            "snapshot_id": snapshot,
            "pinned": pinned.is_some(),
        }),
    })
}
