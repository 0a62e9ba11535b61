//! Batched online lookups: request entities (columnar JSON) to Redis keys, rows
//! back to the response body. `daeda online get` and the gateway's
//! `POST /v1/features/{service}` share this, so they answer the same bytes.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use daeda_catalog::{ColumnType, ScalarType, ServiceDef};
use serde_json::{Map, Value as Json};

use crate::codec::{self, Array, DecodedRow, RowSchema, Value};
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
    /// The live generation was written for another schema (409).
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
pub fn entity_keys(def: &ServiceDef, entities: &Map<String, Json>, max_batch: usize) -> Result<Vec<String>, LookupError> {
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
        let mut key = String::new();
        keys::push_entity(&mut key, &parts);
        out.push(key);
    }
    Ok(out)
}

/// Which value columns to answer, as indexes into the row schema.
fn selected(def: &ServiceDef, schema: &RowSchema, features: Option<&[String]>) -> Result<Vec<usize>, LookupError> {
    let Some(features) = features else { return Ok((0..schema.len()).collect()) };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(features.len());
    for f in features {
        if def.is_join_key(f) || f == &def.timestamp {
            continue; // always answered
        }
        let idx = schema.names.iter().position(|n| n == f).ok_or_else(|| LookupError::UnknownFeature {
            service: def.name.clone(),
            feature: f.clone(),
        })?;
        if seen.insert(idx) {
            out.push(idx);
        }
    }
    Ok(out)
}

/// Checks that the live generation can be decoded with `def`.
pub fn check_generation(def: &ServiceDef, meta: &GenerationMeta) -> Result<(), LookupError> {
    if meta.fingerprint != def.fingerprint() {
        return Err(LookupError::FingerprintMismatch {
            service: def.name.clone(),
            generation: meta.generation.clone(),
            online: meta.fingerprint.clone(),
            defined: def.fingerprint().to_string(),
        });
    }
    Ok(())
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
    pub schema: RowSchema,
    /// The answered value columns, as indexes into `schema`.
    pub wanted: Vec<usize>,
    /// Per entity: the decoded row, or None when missing. Stale rows are here
    /// too; renderers blank them unless the request asks `include_stale`.
    pub rows: Vec<Option<DecodedRow>>,
    pub status: Vec<EntityStatus>,
}

impl Fetched {
    pub fn count(&self, s: EntityStatus) -> u64 {
        self.status.iter().filter(|x| **x == s).count() as u64
    }
}

/// Looks up a batch against the generation `meta`: one MGET, rows decoded.
pub async fn fetch(
    store: &OnlineStore,
    def: &ServiceDef,
    meta: &GenerationMeta,
    req: &LookupRequest,
    max_batch: usize,
) -> Result<Fetched, LookupError> {
    let schema = RowSchema::of(def);
    let wanted = selected(def, &schema, req.features.as_deref())?;
    let entities = entity_keys(def, &req.entities, max_batch)?;
    check_generation(def, meta)?;
    let prefix = keys::row_prefix(&def.name, &meta.generation);
    let redis_keys: Vec<String> = entities.iter().map(|e| format!("{prefix}{e}")).collect();
    let raw = store.get_rows(&redis_keys).await?;
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros() as i64;
    let stale_before = def.serving.ttl.map(|ttl| now_us - ttl.as_micros() as i64);
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
        rows.push(Some(row));
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
) -> Result<Json, LookupError> {
    let fetched = fetch(store, def, meta, req, max_batch).await?;
    Ok(to_json(def, meta, req, &fetched))
}

/// The JSON body of SPEC §5: join keys echoed, the wanted features, status, event_ts.
pub fn to_json(def: &ServiceDef, meta: &GenerationMeta, req: &LookupRequest, f: &Fetched) -> Json {
    let mut columns: Vec<Vec<Json>> = vec![Vec::with_capacity(f.rows.len()); f.wanted.len()];
    let mut event_ts = Vec::with_capacity(f.rows.len());
    for (row, status) in f.rows.iter().zip(&f.status) {
        event_ts.push(row.as_ref().map_or(Json::Null, |r| timestamp_json(r.event_ts_micros)));
        let hide = *status == EntityStatus::Stale && !req.include_stale;
        for (out, &idx) in columns.iter_mut().zip(&f.wanted) {
            out.push(match row {
                Some(r) if !hide => value_json(&r.values[idx], f.schema.types[idx]),
                _ => Json::Null,
            });
        }
    }
    let mut cols = Map::new();
    for k in &def.join_keys {
        cols.insert(k.clone(), req.entities.get(k).cloned().unwrap_or(Json::Null));
    }
    for (values, &idx) in columns.into_iter().zip(&f.wanted) {
        cols.insert(f.schema.names[idx].clone(), Json::Array(values));
    }
    let mut body = Map::new();
    body.insert("service".into(), def.name.clone().into());
    body.insert("version".into(), meta.version.clone().into());
    body.insert("generation".into(), meta.generation.clone().into());
    body.insert("columns".into(), Json::Object(cols));
    body.insert("status".into(), Json::Array(f.status.iter().map(|s| Json::from(s.as_str())).collect()));
    body.insert("event_ts".into(), Json::Array(event_ts));
    Json::Object(body)
}

/// RFC 3339 UTC with microseconds, as every timestamp in daeda's JSON.
pub fn timestamp_text(us: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn timestamp_json(us: i64) -> Json {
    timestamp_text(us).map(Json::from).unwrap_or(Json::Null)
}

fn float_json(v: f64) -> Json {
    serde_json::Number::from_f64(v).map(Json::Number).unwrap_or(Json::Null)
}

/// An exact decimal string: unscaled 12345 at scale 2 is "123.45".
pub fn decimal_text(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// The JSON form of a value (SPEC §5): non-finite floats are null, decimals are
/// exact strings, dates `YYYY-MM-DD`, timestamps RFC 3339 with microseconds.
pub fn value_json(v: &Value, _ty: ColumnType) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::BigInt(i) => Json::from(*i),
        Value::Float(f) => float_json(f64::from(*f)),
        Value::Double(f) => float_json(*f),
        Value::Decimal { unscaled, scale } => Json::from(decimal_text(*unscaled, *scale)),
        Value::Str(s) => Json::from(s.as_str()),
        Value::Date(d) => NaiveDate::from_num_days_from_ce_opt(*d + 719_163)
            .map(|d| Json::from(d.format("%Y-%m-%d").to_string()))
            .unwrap_or(Json::Null),
        Value::Timestamp(us) => timestamp_json(*us),
        Value::Array(a) => Json::Array(match a {
            Array::Int(v) => v.iter().map(|x| Json::from(*x)).collect(),
            Array::BigInt(v) => v.iter().map(|x| Json::from(*x)).collect(),
            Array::Float(v) => v.iter().map(|x| float_json(f64::from(*x))).collect(),
            Array::Double(v) => v.iter().map(|x| float_json(*x)).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_exact_digits() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(decimal_text(42, 0), "42");
        assert_eq!(decimal_text(i128::MAX, 10), "17014118346046923173168730371.5884105727");
    }

    #[test]
    fn json_forms() {
        assert_eq!(value_json(&Value::Float(f32::NAN), ColumnType::Scalar(ScalarType::Float)), Json::Null);
        assert_eq!(value_json(&Value::Date(0), ColumnType::Scalar(ScalarType::Date)), Json::from("1970-01-01"));
        assert_eq!(
            value_json(&Value::Timestamp(1_782_548_100_000_000), ColumnType::Scalar(ScalarType::Timestamp)),
            Json::from("2026-06-27T08:15:00.000000Z")
        );
    }
}
