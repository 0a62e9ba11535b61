//! Parquet globs, hive partitions included. Extra columns (partition keys) are
//! simply not selected.

use duckdb::Connection;

use super::{file_stamp, Opened};
use crate::sql::literal;
use crate::OfflineError;

pub fn open(conn: &Connection, glob: &str) -> Result<Opened, OfflineError> {
    let mut stmt = conn.prepare(&format!("SELECT file FROM glob({}) ORDER BY file", literal(glob)))?;
    let files: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if files.is_empty() {
        return Err(OfflineError::NoFiles(glob.to_string()));
    }
    let stamps = files.iter().map(|f| file_stamp(std::path::Path::new(f))).collect::<Result<Vec<_>, _>>()?;
    // Read exactly the files listed in the snapshot, even if the glob matches more by now.
    let list = files.iter().map(|f| literal(f)).collect::<Vec<_>>().join(", ");
    Ok(Opened {
        relation: format!("read_parquet([{list}], hive_partitioning = true, union_by_name = true)"),
        snapshot: serde_json::json!({"kind": "parquet", "glob": glob, "files": stamps}),
    })
}
