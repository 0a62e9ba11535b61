//! A table in a DuckDB database file, attached read-only.

use std::path::Path;

use duckdb::Connection;

use super::{file_stamp, literal, qualified, Opened};
use crate::MaterializeError;

pub fn open(conn: &Connection, database: &Path, table: &str) -> Result<Opened, MaterializeError> {
    if !database.is_file() {
        return Err(MaterializeError::Source(format!("the DuckDB database {} does not exist", database.display())));
    }
    conn.execute_batch(&format!("ATTACH {} AS src_db (READ_ONLY)", literal(&database.to_string_lossy())))?;
    Ok(Opened {
        relation: qualified("src_db", table),
        snapshot: serde_json::json!({"kind": "duckdb", "database": file_stamp(database)?, "table": table}),
    })
}
