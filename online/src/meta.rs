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
    /// The served schema the rows were encoded with ([`ServedSchema`] as JSON),
    /// so a reader decodes this generation with its own schema whatever
    /// definition it loaded. None for generations written before it was stored.
    pub schema: Option<String>,
}

/// The served schema of a generation as stored in its metadata: every column
/// in definition order with its type, and which are the join keys and the
/// timestamp. Plain JSON, readable with `HGET ... schema`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServedSchema {
    pub join_keys: Vec<String>,
    pub timestamp: String,
    pub columns: Vec<ServedColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServedColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

impl ServedSchema {
    pub fn of(def: &daeda_catalog::ServiceDef) -> ServedSchema {
        ServedSchema {
            join_keys: def.join_keys.clone(),
            timestamp: def.timestamp.clone(),
            columns: def.columns.iter().map(|c| ServedColumn { name: c.name.clone(), ty: c.ty.to_string() }).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a schema serializes")
    }

    pub fn from_json(text: &str) -> Result<ServedSchema, String> {
        serde_json::from_str(text).map_err(|e| format!("the stored schema is not readable: {e}"))
    }

    fn column_type(&self, name: &str) -> Option<&str> {
        self.columns.iter().find(|c| c.name == name).map(|c| c.ty.as_str())
    }

    /// Whether `def` builds the same row keys and reads the same timestamp:
    /// the join keys (names, order and types) and the timestamp column. Value
    /// columns may differ; they are decoded with this schema.
    pub fn same_keys_as(&self, def: &daeda_catalog::ServiceDef) -> bool {
        let ty = |n: &str| def.column(n).map(|c| c.ty.to_string());
        self.join_keys == def.join_keys
            && self.timestamp == def.timestamp
            && self.join_keys.iter().chain([&self.timestamp]).all(|k| self.column_type(k).map(str::to_string) == ty(k))
    }

    /// The row schema of the value columns (all but join keys and timestamp),
    /// in stored order, as the codec reads them.
    pub fn row_schema(&self) -> Result<crate::codec::RowSchema, String> {
        let mut names = Vec::new();
        let mut types = Vec::new();
        for c in &self.columns {
            if self.join_keys.contains(&c.name) || c.name == self.timestamp {
                continue;
            }
            let ty = daeda_catalog::ColumnType::parse(&c.ty, None).map_err(|e| format!("column `{}`: {e}", c.name))?;
            names.push(c.name.clone());
            types.push(ty);
        }
        Ok(crate::codec::RowSchema { names, types })
    }
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
        .into_iter()
        .chain(self.schema.clone().map(|s| ("schema", s)))
        .collect()
    }

    pub(crate) fn from_fields(mut m: HashMap<String, String>) -> Result<GenerationMeta, String> {
        let schema = m.remove("schema");
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
            schema,
        })
    }
}
