//! A DuckLake table. The data path is always given and overrides the one stored
//! in the catalog, so a lake copied or mounted elsewhere than where it was
//! written still reads (DuckLake refuses a mismatched DATA_PATH otherwise).

use std::path::Path;

use duckdb::Connection;

use super::{literal, qualified, Opened};
use crate::MaterializeError;

pub fn open(conn: &Connection, catalog: &Path, data_path: &Path, table: &str, pinned: Option<u64>) -> Result<Opened, MaterializeError> {
    if !catalog.is_file() {
        return Err(MaterializeError::Source(format!("the DuckLake catalog {} does not exist", catalog.display())));
    }
    crate::duck::load_ducklake(conn)?;
    let pin = pinned.map(|v| format!(", SNAPSHOT_VERSION {v}")).unwrap_or_default();
    conn.execute_batch(&format!(
        "ATTACH {} AS src_lake (DATA_PATH {}, OVERRIDE_DATA_PATH true, READ_ONLY{pin})",
        literal(&format!("ducklake:{}", catalog.display())),
        literal(&data_path.to_string_lossy()),
    ))?;
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
