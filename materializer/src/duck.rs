//! DuckDB sessions for reading offline outputs.

use duckdb::Connection;

use crate::MaterializeError;

/// Environment variable naming a DuckDB extension directory (laid out as
/// `<dir>/v1.5.5/linux_amd64/*.duckdb_extension`), set by `scripts/env.sh`.
pub const EXTENSION_DIR_ENV: &str = "DAEDA_DUCKDB_EXTENSION_DIR";

/// A fresh in-memory session. Times are UTC whatever the machine's zone.
pub fn session() -> Result<Connection, MaterializeError> {
    let conn = Connection::open_in_memory()?;
    if let Ok(dir) = std::env::var(EXTENSION_DIR_ENV) {
        conn.execute_batch(&format!("SET extension_directory = {}", crate::source::literal(&dir)))?;
    }
    conn.execute_batch("SET TimeZone = 'UTC'")?;
    Ok(conn)
}

/// Loads the DuckLake extension from the extension directory, or installs it
/// where the machine can reach DuckDB's extension repository.
pub fn load_ducklake(conn: &Connection) -> Result<(), MaterializeError> {
    if conn.execute_batch("LOAD ducklake").is_ok() {
        return Ok(());
    }
    conn.execute_batch("INSTALL ducklake; LOAD ducklake").map_err(|e| {
        MaterializeError::Source(format!(
            "the DuckLake extension is not available ({e}); run scripts/bootstrap.sh or set {EXTENSION_DIR_ENV}"
        ))
    })
}
