//! A definition as JSON, for the two places that list services: the gateway's
//! `GET /v1/services` (what a client of the service reads) and
//! `daeda services --json` (what its owner reads). One function, so the fields
//! both show cannot drift apart.

use serde_json::{json, Map, Value};

use crate::ServiceDef;

/// Who a listing is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// A client of the service: its schema and ttl, nothing about where it comes from.
    Client,
    /// Its owner: also the source kind, each column's lineage and description,
    /// the serving block and the definition's file.
    Owner,
}

impl ServiceDef {
    /// The definition as a JSON object, fields in a fixed order; the gateway
    /// appends the live generation's to a [`Listing::Client`] one.
    pub fn listing_json(&self, who: Listing) -> Map<String, Value> {
        let owner = who == Listing::Owner;
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("version".into(), json!(self.version));
        m.insert("owner".into(), json!(self.owner));
        m.insert("tags".into(), json!(self.tags));
        m.insert("description".into(), json!(self.description));
        m.insert("join_keys".into(), json!(self.join_keys));
        m.insert("timestamp".into(), json!(self.timestamp));
        if owner {
            m.insert("source".into(), json!({"kind": self.source.kind()}));
        }
        let columns = self.columns.iter().map(|c| {
            let mut col = json!({"name": c.name, "type": c.ty.to_string(), "nullable": c.nullable});
            if owner {
                col["ref"] = json!(c.lineage);
                col["description"] = json!(c.description);
            }
            col
        });
        m.insert("columns".into(), Value::Array(columns.collect()));
        let ttl_seconds = self.serving.ttl.map(|t| t.as_secs());
        if owner {
            m.insert("serving".into(), json!({"allowed": self.serving.allowed, "ttl_seconds": ttl_seconds}));
        } else {
            m.insert("ttl_seconds".into(), json!(ttl_seconds));
        }
        m.insert("fingerprint".into(), json!(self.fingerprint()));
        if owner {
            m.insert("file".into(), json!(self.file.display().to_string()));
        }
        m
    }
}
