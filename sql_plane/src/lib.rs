//! The SQL plane's engine: one DuckDB database holding a view per approved
//! service (its declared columns over its whole offline output), then locked
//! down before any query runs: external access off except the services' own
//! source folders, extension autoloading off, configuration locked. The policy
//! decides what may run; this session is the defence in depth behind it.
//!
//! Invariant: the views are created (and DuckLake attached) before external
//! access is switched off; after that, nothing can change the session's
//! settings, attach a database or read another file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use daeda_catalog::{Catalog, ServiceDef, Source};
use daeda_gateway::sql::{Interrupt, SqlEngine, SqlError, SqlOutput};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::Connection;

pub struct DuckDbEngine {
    /// A connection kept only to clone per query; clones share the database.
    base: Mutex<Connection>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn qualified(alias: &str, table: &str) -> String {
    std::iter::once(alias.to_string()).chain(table.split('.').map(ident)).collect::<Vec<_>>().join(".")
}

/// The folder a path or glob lives in (the part before the first wildcard).
fn folder_of(path: &str) -> PathBuf {
    let cut = path.find(['*', '?', '[', '{']).map_or(path, |i| &path[..i]);
    let p = Path::new(cut);
    if cut.ends_with('/') { p.to_path_buf() } else { p.parent().unwrap_or(Path::new("/")).to_path_buf() }
}

impl DuckDbEngine {
    /// Builds the session for every service of `catalog` whose serving is allowed.
    pub fn new(catalog: &Catalog) -> Result<DuckDbEngine, String> {
        let conn = daeda_materializer::session().map_err(|e| e.to_string())?;
        let mut allowed: BTreeSet<String> = BTreeSet::new();
        for (i, def) in catalog.services().filter(|s| s.serving.allowed).enumerate() {
            Self::expose(&conn, def, i, &mut allowed).map_err(|e| format!("SQL plane: service `{}`: {e}", def.name))?;
        }
        let dirs = allowed.iter().map(|d| literal(&format!("{}/", d.trim_end_matches('/')))).collect::<Vec<_>>().join(", ");
        conn.execute_batch(&format!(
            "SET allowed_directories = [{dirs}];
             SET enable_external_access = false;
             SET autoinstall_known_extensions = false;
             SET autoload_known_extensions = false;
             SET lock_configuration = true;"
        ))
        .map_err(|e| format!("SQL plane: locking the session: {e}"))?;
        Ok(DuckDbEngine { base: Mutex::new(conn) })
    }

    fn expose(conn: &Connection, def: &ServiceDef, i: usize, dirs: &mut BTreeSet<String>) -> Result<(), duckdb::Error> {
        let columns = def.columns.iter().map(|c| ident(&c.name)).collect::<Vec<_>>().join(", ");
        let relation = match &def.source {
            Source::Parquet { path } => {
                dirs.insert(folder_of(path).display().to_string());
                format!("read_parquet({}, hive_partitioning = true, union_by_name = true)", literal(path))
            }
            Source::DuckDb { database, table } => {
                let alias = format!("src_{i}");
                conn.execute_batch(&format!("ATTACH {} AS {alias} (READ_ONLY)", literal(&database.display().to_string())))?;
                dirs.insert(folder_of(&database.display().to_string()).display().to_string());
                qualified(&alias, table)
            }
            Source::DuckLake { catalog, data_path, table, snapshot } => {
                let alias = format!("lake_{i}");
                daeda_materializer::load_ducklake(conn).map_err(|e| duckdb::Error::InvalidParameterName(e.to_string()))?;
                let pin = snapshot.map(|v| format!(", SNAPSHOT_VERSION {v}")).unwrap_or_default();
                conn.execute_batch(&format!(
                    "ATTACH {} AS {alias} (DATA_PATH {}, OVERRIDE_DATA_PATH true, READ_ONLY{pin})",
                    literal(&format!("ducklake:{}", catalog.display())),
                    literal(&data_path.display().to_string()),
                ))?;
                dirs.insert(data_path.display().to_string());
                dirs.insert(folder_of(&catalog.display().to_string()).display().to_string());
                qualified(&alias, table)
            }
        };
        conn.execute_batch(&format!("CREATE VIEW main.{} AS SELECT {columns} FROM {relation}", ident(&def.name)))
    }
}

impl SqlEngine for DuckDbEngine {
    fn run(&self, sql: &str, max_rows: usize, interrupt: &Interrupt) -> Result<SqlOutput, SqlError> {
        let conn = self
            .base
            .lock()
            .map_err(|_| SqlError::Internal("SQL session lock poisoned".into()))?
            .try_clone()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let handle = conn.interrupt_handle();
        interrupt.set(Box::new(move || handle.interrupt()));
        let mut stmt = conn.prepare(sql).map_err(|e| SqlError::Query(e.to_string()))?;
        drop(stmt.stream_arrow([]).map_err(|e| SqlError::Query(e.to_string()))?);
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(chunk) = stmt.step().map_err(|e| SqlError::Query(e.to_string()))? {
            let batch = RecordBatch::from(&chunk);
            if rows + batch.num_rows() > max_rows {
                batches.push(batch.slice(0, max_rows - rows));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        let schema = stmt.schema();
        Ok(SqlOutput { schema, batches, truncated })
    }
}
