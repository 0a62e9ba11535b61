//! DuckDB sessions for reading offline outputs, set up alike wherever they are
//! opened (the materializer, the skew checker, the SQL worker).

use duckdb::Connection;

use crate::sql::literal;
use crate::OfflineError;

/// Environment variable naming a DuckDB extension directory (laid out as
/// `<dir>/v1.5.5/linux_amd64/*.duckdb_extension`), set by `scripts/env.sh`.
pub const EXTENSION_DIR_ENV: &str = "DAEDA_DUCKDB_EXTENSION_DIR";

/// Environment variable capping DuckDB's worker threads (default: all cores).
pub const THREADS_ENV: &str = "DAEDA_DUCKDB_THREADS";

/// Environment variable bounding DuckDB's memory, e.g. `512MB` (default: 80% of RAM).
pub const MEMORY_LIMIT_ENV: &str = "DAEDA_DUCKDB_MEMORY_LIMIT";

/// A fresh in-memory session. Times are UTC whatever the machine's zone.
pub fn session() -> Result<Connection, OfflineError> {
    let conn = Connection::open_in_memory()?;
    prepare(&conn)?;
    // DuckDB takes every core by default; beside a local Redis, fewer can be faster.
    if let Some(n) = std::env::var(THREADS_ENV).ok().and_then(|v| v.parse::<u32>().ok()).filter(|n| *n > 0) {
        conn.execute_batch(&format!("SET threads = {n}"))?;
    }
    // DuckDB keeps per-entity state for the latest-row query; past this limit it
    // spills to a temporary directory instead of growing.
    if let Some(limit) = std::env::var(MEMORY_LIMIT_ENV).ok().filter(|v| !v.trim().is_empty()) {
        conn.execute_batch(&format!("SET memory_limit = {}", literal(&limit)))?;
    }
    Ok(conn)
}

/// What every session needs whoever opened it: the extension directory (when
/// [`EXTENSION_DIR_ENV`] names one) and UTC as the time zone. The SQL worker
/// calls it on its own instance, before it locks the configuration.
pub fn prepare(conn: &Connection) -> Result<(), OfflineError> {
    if let Ok(dir) = std::env::var(EXTENSION_DIR_ENV) {
        conn.execute_batch(&format!("SET extension_directory = {}", literal(&dir)))?;
    }
    conn.execute_batch("SET TimeZone = 'UTC'")?;
    Ok(())
}

/// Loads the DuckLake extension from the extension directory, or installs it
/// where the machine can reach DuckDB's extension repository.
pub fn load_ducklake(conn: &Connection) -> Result<(), OfflineError> {
    if conn.execute_batch("LOAD ducklake").is_ok() {
        return Ok(());
    }
    conn.execute_batch("INSTALL ducklake; LOAD ducklake").map_err(OfflineError::NoDuckLake)
}
