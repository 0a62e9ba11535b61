//! Batched online lookups: request entities (columnar JSON) to Redis keys, rows
//! back, decoded and marked stale or missing ([`Fetched`]); [`crate::render`]
//! turns them into the body. `daeda online get` and the gateway's
//! `POST /v1/features/{service}` share both, so they answer the same bytes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use daeda_catalog::{ColumnType, ScalarType, ServiceDef};
use serde_json::{Map, Value as Json};

use crate::cache::{RowCache, Slot};
use crate::codec::{self, DecodedRow, RowSchema};
use crate::keys::{self, KeyPart};
use crate::{GenerationMeta, OnlineError, OnlineStore};

/// Why a lookup was refused or failed; the gateway maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The request body is not what the route takes (400).
    #[error("{0}")]
    BadRequest(String),
    /// More entities than the configured limit (400).
    #[error("batch of {got} entities is over the limit of {max}")]
    TooMany { got: usize, max: usize },
    /// A requested feature the service does not define (404).
    #[error("service `{service}` has no feature `{feature}`")]
    UnknownFeature { service: String, feature: String },
    /// Nothing has been materialized for the service yet (404).
    #[error("service `{0}` has no live generation; materialize it first")]
    NoLiveGeneration(String),
    /// The live generation's rows are keyed (join keys, timestamp) other than the
    /// loaded definition says, or it has no stored schema and another fingerprint (409).
    #[error(
        "the live generation {generation} of `{service}` was written with schema fingerprint {online}, but the \
         loaded definition has {defined}; rematerialize or reload, rows are not decoded"
    )]
    FingerprintMismatch { service: String, generation: String, online: String, defined: String },
    /// A stored row does not decode (500).
    #[error("row of entity {entity} in generation {generation} is unreadable: {reason}")]
    Corrupt { entity: usize, generation: String, reason: codec::DecodeError },
    /// Redis failed (503 when unreachable).
    #[error(transparent)]
    Online(#[from] OnlineError),
}

/// A parsed lookup request.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// One array per join key, all the same length.
    pub entities: Map<String, Json>,
    /// Feature subset, in the order wanted; all value columns when absent.
    pub features: Option<Vec<String>>,
    /// Return the values of stale rows instead of NULLs.
    #[serde(default)]
    pub include_stale: bool,
}

/// The entity part of each requested entity's Redis key, in request order.
pub fn entity_keys(
    def: &ServiceDef,
    entities: &Map<String, Json>,
    max_batch: usize,
) -> Result<Vec<String>, LookupError> {
    row_keys(def, entities, "", max_batch)
}

/// The Redis keys of the requested entities (`prefix` is the generation's row
/// key prefix, "" for the entity parts alone), in request order; each key is
/// built in one allocation.
pub fn row_keys(
    def: &ServiceDef,
    entities: &Map<String, Json>,
    prefix: &str,
    max_batch: usize,
) -> Result<Vec<String>, LookupError> {
    for name in entities.keys() {
        if !def.is_join_key(name) {
            return Err(LookupError::BadRequest(format!(
                "`{name}` is not a join key of `{}` (join keys: {})",
                def.name,
                def.join_keys.join(", ")
            )));
        }
    }
    let mut columns = Vec::with_capacity(def.join_keys.len());
    for col in def.key_columns() {
        let values = entities
            .get(&col.name)
            .ok_or_else(|| LookupError::BadRequest(format!("join key `{}` is missing from entities", col.name)))?
            .as_array()
            .ok_or_else(|| LookupError::BadRequest(format!("entities.{} must be an array", col.name)))?;
        columns.push((col, values));
    }
    let n = columns[0].1.len();
    if let Some((c, v)) = columns.iter().find(|(_, v)| v.len() != n) {
        return Err(LookupError::BadRequest(format!(
            "entities.{} has {} values but entities.{} has {n}; composite keys are parallel arrays",
            c.name,
            v.len(),
            columns[0].0.name
        )));
    }
    if n == 0 {
        return Err(LookupError::BadRequest("entities is empty: ask for at least one entity".into()));
    }
    if n > max_batch {
        return Err(LookupError::TooMany { got: n, max: max_batch });
    }
    let mut out = Vec::with_capacity(n);
    let mut parts = Vec::with_capacity(columns.len());
    for i in 0..n {
        parts.clear();
        for (col, values) in &columns {
            let v = &values[i];
            let part = match col.ty {
                ColumnType::Scalar(ScalarType::Varchar) => v.as_str().map(KeyPart::Str),
                ColumnType::Scalar(ScalarType::Integer) => {
                    v.as_i64().filter(|x| i32::try_from(*x).is_ok()).map(KeyPart::Int)
                }
                _ => v.as_i64().map(KeyPart::Int),
            };
            parts.push(part.ok_or_else(|| {
                LookupError::BadRequest(format!(
                    "entities.{}[{i}] is {v}, expected {}",
                    col.name,
                    if col.ty == ColumnType::Scalar(ScalarType::Varchar) { "a string" } else { "an integer" }
                ))
            })?);
        }
        let mut key = String::with_capacity(prefix.len() + 24);
        key.push_str(prefix);
        keys::push_entity(&mut key, &parts);
        out.push(key);
    }
    Ok(out)
}

/// Which value columns to answer, as indexes into the row schema.
pub fn selected(def: &ServiceDef, schema: &RowSchema, features: Option<&[String]>) -> Result<Vec<usize>, LookupError> {
    let Some(features) = features else { return Ok((0..schema.len()).collect()) };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(features.len());
    for f in features {
        if def.is_join_key(f) || f == &def.timestamp {
            continue; // always answered
        }
        let idx = schema
            .names
            .iter()
            .position(|n| n == f)
            .ok_or_else(|| LookupError::UnknownFeature { service: def.name.clone(), feature: f.clone() })?;
        if seen.insert(idx) {
            out.push(idx);
        }
    }
    Ok(out)
}

/// The row schema to decode `meta`'s rows with: the schema stored with the
/// generation, so a definition loaded before a schema change still reads a
/// generation written after it (and the other way round). Refused (409) only
/// when the definition would build other row keys (join keys or timestamp
/// changed), or, for a generation stored without its schema, when the
/// fingerprints differ.
pub fn generation_schema(def: &ServiceDef, meta: &GenerationMeta) -> Result<RowSchema, LookupError> {
    let mismatch = || LookupError::FingerprintMismatch {
        service: def.name.clone(),
        generation: meta.generation.clone(),
        online: meta.fingerprint.clone(),
        defined: def.fingerprint().to_string(),
    };
    match &meta.schema {
        None if meta.fingerprint == def.fingerprint() => Ok(RowSchema::of(def)),
        None => Err(mismatch()),
        Some(text) => {
            let stored = crate::ServedSchema::from_json(text).map_err(|reason| OnlineError::CorruptMeta {
                key: format!("{}/{}", def.name, meta.generation),
                reason,
            })?;
            if !stored.same_keys_as(def) {
                return Err(mismatch());
            }
            stored.row_schema().map_err(|reason| {
                OnlineError::CorruptMeta { key: format!("{}/{}", def.name, meta.generation), reason }.into()
            })
        }
    }
}

/// What an entity's lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityStatus {
    Ok,
    Missing,
    /// Older than the service's ttl.
    Stale,
}

impl EntityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityStatus::Ok => "ok",
            EntityStatus::Missing => "missing",
            EntityStatus::Stale => "stale",
        }
    }
}

/// A batch as read from one generation, before it is rendered.
#[derive(Debug)]
pub struct Fetched {
    pub schema: Arc<RowSchema>,
    /// The answered value columns, as indexes into `schema`.
    pub wanted: Vec<usize>,
    /// Per entity: the decoded row, or None when missing. Stale rows are here
    /// too; renderers blank them unless the request asks `include_stale`.
    /// Shared with the row cache when it answered them.
    pub rows: Vec<Option<Arc<DecodedRow>>>,
    pub status: Vec<EntityStatus>,
}

impl Fetched {
    pub fn count(&self, s: EntityStatus) -> u64 {
        self.status.iter().filter(|x| **x == s).count() as u64
    }
}

/// Looks up a batch against the generation `meta`: one MGET, rows decoded.
/// `schema` is [`generation_schema`] of `meta`, passed in so a server builds it
/// once per generation rather than once per request. With a usable `cache`,
/// only the entities it does not hold are read (none: no round trip), and the
/// rows read are offered to it.
pub async fn fetch(
    store: &OnlineStore,
    cache: Option<&RowCache>,
    def: &ServiceDef,
    schema: Arc<RowSchema>,
    meta: &GenerationMeta,
    req: &LookupRequest,
    max_batch: usize,
) -> Result<Fetched, LookupError> {
    let wanted = selected(def, &schema, req.features.as_deref())?;
    let redis_keys = row_keys(def, &req.entities, &store.keys().row_prefix(&def.name, &meta.generation), max_batch)?;
    let Some((cache, slots)) = cache.and_then(|c| Some((c, c.probe(&redis_keys, &schema)?))) else {
        let raw = store.get_rows(&redis_keys).await?;
        return decode_rows(def, schema, wanted, meta, &raw);
    };
    let missed: Vec<&String> =
        redis_keys.iter().zip(&slots).filter(|(_, s)| matches!(s, Slot::Miss(_))).map(|(k, _)| k).collect();
    let mut raw = store.get_rows(&missed).await?.into_iter();
    let stale_before = stale_before(def);
    let mut rows = Vec::with_capacity(slots.len());
    let mut status = Vec::with_capacity(slots.len());
    for (i, (key, slot)) in redis_keys.iter().zip(slots).enumerate() {
        let row = match slot {
            Slot::Hit(row) => row,
            Slot::Miss(ticket) => match raw.next().flatten() {
                None => {
                    rows.push(None);
                    status.push(EntityStatus::Missing);
                    continue;
                }
                Some(bytes) => {
                    let row = Arc::new(codec::decode(&bytes, &schema).map_err(|reason| LookupError::Corrupt {
                        entity: i,
                        generation: meta.generation.clone(),
                        reason,
                    })?);
                    cache.insert(key, ticket, &schema, &row);
                    row
                }
            },
        };
        let stale = stale_before.is_some_and(|t| row.event_ts_micros < t);
        status.push(if stale { EntityStatus::Stale } else { EntityStatus::Ok });
        rows.push(Some(row));
    }
    Ok(Fetched { schema, wanted, rows, status })
}

/// Rows with an event time before this (µs since the epoch) are stale; None
/// when the service has no ttl. Read at lookup time, so a cached row turns
/// stale on time.
fn stale_before(def: &ServiceDef) -> Option<i64> {
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros() as i64;
    def.serving.ttl.map(|ttl| now_us - ttl.as_micros() as i64)
}

/// The CPU half of [`fetch`] after the MGET: rows decoded, stale ones marked.
/// Public so the benches measure exactly what a lookup runs.
pub fn decode_rows(
    def: &ServiceDef,
    schema: Arc<RowSchema>,
    wanted: Vec<usize>,
    meta: &GenerationMeta,
    raw: &[Option<Vec<u8>>],
) -> Result<Fetched, LookupError> {
    let stale_before = stale_before(def);
    let mut rows = Vec::with_capacity(raw.len());
    let mut status = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let Some(bytes) = bytes else {
            rows.push(None);
            status.push(EntityStatus::Missing);
            continue;
        };
        let row = codec::decode(bytes, &schema).map_err(|reason| LookupError::Corrupt {
            entity: i,
            generation: meta.generation.clone(),
            reason,
        })?;
        let stale = stale_before.is_some_and(|t| row.event_ts_micros < t);
        status.push(if stale { EntityStatus::Stale } else { EntityStatus::Ok });
        rows.push(Some(Arc::new(row)));
    }
    Ok(Fetched { schema, wanted, rows, status })
}

/// Looks up a batch and renders the JSON body (what `daeda online get` prints).
pub async fn lookup(
    store: &OnlineStore,
    def: &ServiceDef,
    meta: &GenerationMeta,
    req: &LookupRequest,
    max_batch: usize,
) -> Result<Vec<u8>, LookupError> {
    let schema = generation_schema(def, meta)?;
    let fetched = fetch(store, None, def, Arc::new(schema), meta, req, max_batch).await?;
    Ok(crate::render::json::body(def, meta, req, &fetched))
}
