//! SQL text built from names and paths: quoting, and the `ATTACH` statements
//! of the source kinds that attach a database (written once, for the
//! materializer's session and the SQL plane's views alike).

use std::path::Path;

/// Quoting lives in `sql_wire` so the gateway, which links no DuckDB, uses the same copy.
pub use daeda_sql_wire::quote::{ident, literal};

/// `schema.table` as quoted parts under a catalog alias.
pub fn qualified(alias: &str, table: &str) -> String {
    let mut out = alias.to_string();
    for part in table.split('.') {
        out.push('.');
        out.push_str(&ident(part));
    }
    out
}

/// Attaches a DuckDB database file read-only as `alias`.
pub fn attach_duckdb(database: &Path, alias: &str) -> String {
    format!("ATTACH {} AS {alias} (READ_ONLY)", literal(&database.to_string_lossy()))
}

/// Attaches a DuckLake catalog read-only as `alias`, pinned to `snapshot` if
/// given. The data path is always given and overrides the one stored in the
/// catalog, so a lake copied or mounted elsewhere than where it was written
/// still reads (DuckLake refuses a mismatched DATA_PATH otherwise).
pub fn attach_ducklake(catalog: &Path, data_path: &Path, alias: &str, snapshot: Option<u64>) -> String {
    let pin = snapshot.map(|v| format!(", SNAPSHOT_VERSION {v}")).unwrap_or_default();
    format!(
        "ATTACH {} AS {alias} (DATA_PATH {}, OVERRIDE_DATA_PATH true, READ_ONLY{pin})",
        literal(&format!("ducklake:{}", catalog.display())),
        literal(&data_path.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_of_a_qualified_name_is_quoted() {
        assert_eq!(qualified("src", "main.t\"x"), "src.\"main\".\"t\"\"x\"");
    }
}
