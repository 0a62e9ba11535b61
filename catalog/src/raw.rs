//! The YAML as written: serde structs that reject unknown keys, so a typo is an
//! error rather than a silently ignored setting. Converted once into
//! [`crate::ServiceDef`] by `service.rs`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: String,
    pub version: String,
    pub owner: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub entity: RawEntity,
    pub timestamp: String,
    pub source: RawSource,
    pub columns: Vec<RawColumn>,
    pub serving: Option<RawServing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntity {
    pub join_keys: Vec<String>,
}

/// All source fields in one struct: which ones are required depends on `kind`,
/// and checking that by hand gives clearer errors than serde's tagged enums.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub kind: String,
    pub path: Option<String>,
    pub database: Option<String>,
    pub table: Option<String>,
    pub catalog: Option<String>,
    pub data_path: Option<String>,
    pub snapshot: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: Option<bool>,
    pub shape: Option<RawShape>,
    #[serde(rename = "ref")]
    pub lineage: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShape {
    pub dimension: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServing {
    pub allowed: bool,
    pub ttl: Option<String>,
}
