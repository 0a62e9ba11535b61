//! Validated feature service definitions: the types every other crate reads,
//! and the fingerprint of what decides a row's encoding. [`crate::validate`]
//! builds them.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::types::{ColumnType, ScalarType};

/// One feature service, validated: its fields are read through
/// [`Definition`] (`def.name`, `def.columns`), and none can be changed.
///
/// Invariant: `fingerprint` is the digest of `def`'s columns, join keys and
/// timestamp. Only the loader makes a `ServiceDef`, after validation, and no
/// `&mut Definition` is ever handed out, so a changed field can never leave a
/// stale fingerprint (a row written under one schema and read under another).
/// Read access goes through `Deref` rather than one getter per field: the
/// same guarantee, and the ~200 reads across the workspace stay plain field
/// reads. A `Definition` cloned out of it is only data; it cannot become a
/// `ServiceDef` again without being parsed and validated.
///
/// ```
/// fn name(def: &daeda_catalog::ServiceDef) -> &str { &def.name }
/// ```
/// ```compile_fail
/// // Even through `&mut`, no field of a validated definition can change.
/// fn rename(def: &mut daeda_catalog::ServiceDef) { def.name.push('x'); }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    def: Definition,
    /// See [`ServiceDef::fingerprint`].
    fingerprint: String,
}

impl std::ops::Deref for ServiceDef {
    type Target = Definition;

    fn deref(&self) -> &Definition {
        &self.def
    }
}

/// A feature service's fields, as its YAML file defines them.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    /// `YYYY-MM-DD` or `YYYY-MM-DD.N`.
    pub version: String,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// Entity key columns, in order; composite keys have several.
    pub join_keys: Vec<String>,
    /// The event-time column; the online row is the latest per entity by it.
    pub timestamp: String,
    pub source: Source,
    /// The served schema in declared order, join keys and timestamp included.
    pub columns: Vec<Column>,
    pub serving: Serving,
    /// The YAML file this came from.
    pub file: PathBuf,
}

/// Where the service's offline output lives. Paths are absolute, resolved from
/// the YAML file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A glob of Parquet files (hive partitions allowed).
    Parquet { path: String },
    /// A table in a DuckDB database file.
    DuckDb { database: PathBuf, table: String },
    /// A DuckLake table, optionally pinned to a snapshot.
    DuckLake { catalog: PathBuf, data_path: PathBuf, table: String, snapshot: Option<u64> },
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Parquet { .. } => "parquet",
            Source::DuckDb { .. } => "duckdb",
            Source::DuckLake { .. } => "ducklake",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// Join keys and the timestamp are never nullable.
    pub nullable: bool,
    /// Lineage: the `view:column` this feature is derived from.
    pub lineage: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// `serving_allowed`: when false the service is never materialized online and
    /// never served, on any plane.
    pub allowed: bool,
    /// Rows whose event time is older than this are reported stale.
    pub ttl: Option<Duration>,
}

impl ServiceDef {
    /// Seals a definition [`crate::validate`] found consistent, with its
    /// fingerprint computed here, from the very fields it will serve.
    pub(crate) fn new(def: Definition) -> ServiceDef {
        let fingerprint = compute_fingerprint(&def.join_keys, &def.timestamp, &def.columns);
        ServiceDef { def, fingerprint }
    }

    /// A digest of everything that decides how an online row is encoded and read:
    /// column names, logical types and order, join keys and timestamp column.
    /// Equivalent spellings (`FLOAT[8]`, `float[]` + `dimension: 8`) give the same
    /// fingerprint; descriptions, owner, tags, version and nullability do not enter.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl Definition {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_join_key(&self, name: &str) -> bool {
        self.join_keys.iter().any(|k| k == name)
    }

    /// The join key columns, in key order.
    pub fn key_columns(&self) -> Vec<&Column> {
        self.join_keys.iter().filter_map(|k| self.column(k)).collect()
    }

    /// The columns stored in an online row's value: all but the join keys (they
    /// are in the Redis key) and the timestamp (it is in the row header).
    pub fn value_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !self.is_join_key(&c.name) && c.name != self.timestamp)
    }

    /// The timestamp column's type (TIMESTAMP or TIMESTAMPTZ).
    pub fn timestamp_type(&self) -> ScalarType {
        self.column(&self.timestamp).and_then(|c| c.ty.scalar()).unwrap_or(ScalarType::Timestamp)
    }
}

fn compute_fingerprint(join_keys: &[String], timestamp: &str, columns: &[Column]) -> String {
    let mut canon = format!("daeda-row-v1\nkeys={}\nts={timestamp}\n", join_keys.join(","));
    for c in columns {
        canon.push_str(&format!("{}:{}\n", c.name, c.ty));
    }
    let digest = Sha256::digest(canon.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}
