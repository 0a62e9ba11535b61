//! A table in a DuckDB database file, attached read-only.

use std::path::Path;

use duckdb::Connection;

use super::{file_stamp, Opened};
use crate::sql::{attach_duckdb, qualified};
use crate::OfflineError;

pub fn open(conn: &Connection, database: &Path, table: &str) -> Result<Opened, OfflineError> {
    if !database.is_file() {
        return Err(OfflineError::NoDatabase(database.to_path_buf()));
    }
    conn.execute_batch(&attach_duckdb(database, "src_db"))?;
    Ok(Opened {
        relation: qualified("src_db", table),
        snapshot: serde_json::json!({"kind": "duckdb", "database": file_stamp(database)?, "table": table}),
    })
}
