//! Generation metadata: what a generation is, readable from Redis by anyone
//! (`HGETALL daeda:{svc:NAME}:gen:GEN`), so an operator can tell what is served
//! without the MetadataStore.

use std::collections::HashMap;

/// Metadata of one generation of one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GenerationMeta {
    pub service: String,
    pub version: String,
    /// The schema fingerprint of the definition the rows were encoded with.
    pub fingerprint: String,
    pub generation: String,
    /// The run that wrote (or last updated) the generation.
    pub run_id: String,
    /// RFC 3339: the event-time bound of the run that wrote it.
    pub as_of: String,
    /// Entities in the generation.
    pub row_count: u64,
    /// Encoded row bytes (values only), a lower bound of its memory.
    pub bytes: u64,
    /// RFC 3339, when the pointer moved to it (or an incremental run updated it).
    pub materialized_at: String,
    /// JSON describing the source as read (file list, database file or snapshot id).
    pub source_snapshot: String,
    /// Greatest event time materialized, microseconds since the epoch; incremental
    /// runs only write entities newer than this.
    pub watermark_micros: i64,
}

impl GenerationMeta {
    pub(crate) fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("service", self.service.clone()),
            ("version", self.version.clone()),
            ("fingerprint", self.fingerprint.clone()),
            ("generation", self.generation.clone()),
            ("run_id", self.run_id.clone()),
            ("as_of", self.as_of.clone()),
            ("row_count", self.row_count.to_string()),
            ("bytes", self.bytes.to_string()),
            ("materialized_at", self.materialized_at.clone()),
            ("source_snapshot", self.source_snapshot.clone()),
            ("watermark_micros", self.watermark_micros.to_string()),
        ]
    }

    pub(crate) fn from_fields(mut m: HashMap<String, String>) -> Result<GenerationMeta, String> {
        let mut take = |k: &str| m.remove(k).ok_or_else(|| format!("field `{k}` is missing"));
        let num = |k: &str, v: String| v.parse::<i64>().map_err(|_| format!("field `{k}` is not a number: {v}"));
        Ok(GenerationMeta {
            service: take("service")?,
            version: take("version")?,
            fingerprint: take("fingerprint")?,
            generation: take("generation")?,
            run_id: take("run_id")?,
            as_of: take("as_of")?,
            row_count: num("row_count", take("row_count")?)? as u64,
            bytes: num("bytes", take("bytes")?)? as u64,
            materialized_at: take("materialized_at")?,
            source_snapshot: take("source_snapshot")?,
            watermark_micros: num("watermark_micros", take("watermark_micros")?)?,
        })
    }
}
