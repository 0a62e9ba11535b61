//! Batched online lookups: request entities (columnar JSON) to Redis keys, rows
//! back to the response body. `daeda online get` and the gateway's
//! `POST /v1/features/{service}` share this, so they answer the same bytes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use daeda_catalog::{ColumnType, ScalarType, ServiceDef};
use serde_json::{Map, Value as Json};

use crate::cache::{RowCache, Slot};
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
    Ok(json_body(def, meta, req, &fetched))
}

/// The JSON body of a fetched batch, in one buffer sized up front (from the
/// wanted columns' types) so a large batch is not copied as it grows.
pub fn json_body(def: &ServiceDef, meta: &GenerationMeta, req: &LookupRequest, f: &Fetched) -> Vec<u8> {
    let per_row: usize = 48 + f.wanted.iter().map(|&i| json_width(f.schema.types[i])).sum::<usize>();
    let mut out = Vec::with_capacity(256 + f.rows.len() * per_row);
    write_json(def, meta, req, f, &mut out);
    out
}

/// Writes the JSON body of SPEC §5 straight into `out` (no intermediate value
/// tree: this is the gateway's hot path): join keys echoed, the wanted
/// features, `status`, `event_ts`.
pub fn write_json(def: &ServiceDef, meta: &GenerationMeta, req: &LookupRequest, f: &Fetched, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"service\":");
    write_str(out, &def.name);
    out.extend_from_slice(b",\"version\":");
    write_str(out, &meta.version);
    out.extend_from_slice(b",\"generation\":");
    write_str(out, &meta.generation);
    out.extend_from_slice(b",\"columns\":{");
    for (i, k) in def.join_keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        let echoed = req.entities.get(k).unwrap_or(&Json::Null);
        serde_json::to_writer(&mut *out, echoed).expect("writing JSON to a Vec");
    }
    for &idx in &f.wanted {
        out.push(b',');
        write_str(out, &f.schema.names[idx]);
        out.extend_from_slice(b":[");
        for (i, (row, status)) in f.rows.iter().zip(&f.status).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let hide = *status == EntityStatus::Stale && !req.include_stale;
            match row {
                Some(r) if !hide => write_value(out, &r.values[idx]),
                _ => out.extend_from_slice(b"null"),
            }
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"status\":[");
    for (i, s) in f.status.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(s.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"],\"event_ts\":[");
    for (i, row) in f.rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match row {
            Some(r) => write_timestamp(out, r.event_ts_micros),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"]}");
}

/// About how many bytes a value of `ty` takes in the JSON body (a sizing
/// guess, not a bound).
fn json_width(ty: ColumnType) -> usize {
    match ty {
        ColumnType::Scalar(
            ScalarType::Float | ScalarType::Double | ScalarType::Varchar | ScalarType::Decimal { .. },
        ) => 16,
        ColumnType::Scalar(ScalarType::Date | ScalarType::Timestamp | ScalarType::TimestampTz) => 30,
        ColumnType::Scalar(_) => 8,
        ColumnType::FixedArray { elem, len } => 2 + len as usize * if elem.width() == 8 { 20 } else { 11 },
        ColumnType::List { .. } => 64,
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec");
}

/// The shortest round-trip form of a finite float, as ryu prints it (the
/// bytes daeda has always answered): zmij is 2-3x faster than ryu and differs
/// only in writing a positive exponent as `e+N`, so the `+` is dropped.
fn write_float(out: &mut Vec<u8>, text: &str) {
    let b = text.as_bytes();
    match b.iter().position(|&c| c == b'+') {
        None => out.extend_from_slice(b),
        Some(p) => {
            out.extend_from_slice(&b[..p]);
            out.extend_from_slice(&b[p + 1..]);
        }
    }
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        write_float(out, zmij::Buffer::new().format_finite(v));
    } else {
        out.extend_from_slice(b"null");
    }
}

/// FLOAT values print in their shortest float32 form ("0.502", not
/// "0.5019999742507935"): parsed back as float32 they are the stored value.
fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        write_float(out, zmij::Buffer::new().format_finite(v));
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn write_list<T: Copy>(out: &mut Vec<u8>, xs: &[T], mut each: impl FnMut(&mut Vec<u8>, T)) {
    out.push(b'[');
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, *x);
    }
    out.push(b']');
}

/// The JSON form of a value (SPEC §5): non-finite floats are null, decimals are
/// exact strings, dates `YYYY-MM-DD`, timestamps RFC 3339 with microseconds.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(out, *i),
        Value::BigInt(i) => write_int(out, *i),
        Value::Float(f) => write_f32(out, *f),
        Value::Double(f) => write_f64(out, *f),
        Value::Decimal { unscaled, scale } => write_decimal(out, *unscaled, *scale),
        Value::Str(s) => write_str(out, s),
        Value::Date(d) => write_date(out, *d),
        Value::Timestamp(us) => write_timestamp(out, *us),
        Value::Array(a) => match a {
            Array::Int(xs) => write_list(out, xs, write_int),
            Array::BigInt(xs) => write_list(out, xs, write_int),
            Array::Float(xs) => write_list(out, xs, write_f32),
            Array::Double(xs) => write_list(out, xs, write_f64),
        },
    }
}

/// (year, month, day) of days since 1970-01-01, proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes `v` as exactly `N` decimal digits (v < 10^N).
fn digits<const N: usize>(out: &mut [u8], v: u32) {
    let mut v = v;
    for b in out[..N].iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `"YYYY-MM-DD"` (quoted) without an allocation; the same text as
/// [`date_text`], which years outside 0..=9999 still go through.
fn write_date(out: &mut Vec<u8>, days: i32) {
    match civil(i64::from(days)) {
        (y @ 0..=9999, m, d) => {
            let mut b = *b"\"0000-00-00\"";
            digits::<4>(&mut b[1..], y as u32);
            digits::<2>(&mut b[6..], m);
            digits::<2>(&mut b[9..], d);
            out.extend_from_slice(&b);
        }
        _ => match date_text(days) {
            Some(t) => write_str(out, &t),
            None => out.extend_from_slice(b"null"),
        },
    }
}

/// `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` (quoted) without an allocation; the same
/// text as [`timestamp_text`], which years outside 0..=9999 still go through.
fn write_timestamp(out: &mut Vec<u8>, us: i64) {
    let (secs, micros) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) as u32);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    match civil(days) {
        (y @ 0..=9999, m, d) => {
            let mut b = *b"\"0000-00-00T00:00:00.000000Z\"";
            digits::<4>(&mut b[1..], y as u32);
            digits::<2>(&mut b[6..], m);
            digits::<2>(&mut b[9..], d);
            digits::<2>(&mut b[12..], sod / 3600);
            digits::<2>(&mut b[15..], sod / 60 % 60);
            digits::<2>(&mut b[18..], sod % 60);
            digits::<6>(&mut b[21..], micros);
            out.extend_from_slice(&b);
        }
        _ => match timestamp_text(us) {
            Some(t) => write_str(out, &t),
            None => out.extend_from_slice(b"null"),
        },
    }
}

/// [`decimal_text`] quoted, written without an allocation.
fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: u8) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(unscaled.unsigned_abs()).as_bytes();
    let scale = scale as usize;
    out.push(b'"');
    if unscaled < 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
    }
    out.push(b'"');
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn date_text(days: i32) -> Option<String> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(719_163)?).map(|d| d.format("%Y-%m-%d").to_string())
}

/// RFC 3339 UTC with microseconds, as every timestamp in daeda's JSON.
pub fn timestamp_text(us: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
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

    fn json(v: Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, &v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_print_as_ryu_prints_them() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let check32 = |v: f32| {
            let mut out = Vec::new();
            write_f32(&mut out, v);
            if v.is_finite() {
                assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(v), "{v:e}");
            }
        };
        for v in [0.0, -0.0, 1.0, 0.502, 1e-7, 1e7, 1e16, 1e17, 3.4e38, f32::MIN_POSITIVE, 1e-45, 123456790.0] {
            check32(v);
        }
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check32(f32::from_bits(x as u32));
            let v = f64::from_bits(x);
            let mut out = Vec::new();
            write_f64(&mut out, v);
            if v.is_finite() {
                assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(v), "{v:e}");
            }
        }
        for v in [0.0, 1.0, 0.1, 1e15, 1e16, 1e17, 1e21, 1e22, 1e300, 5e-324, -2.5e-8, 1.7976931348623157e308] {
            let mut out = Vec::new();
            write_f64(&mut out, v);
            assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(v), "{v:e}");
        }
    }

    #[test]
    fn times_and_decimals_write_what_their_text_functions_say() {
        let quoted = |t: Option<String>| t.map_or("null".to_string(), |t| format!("\"{t}\""));
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut us_cases: Vec<i64> = vec![
            0,
            -1,
            1,
            951_782_400_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            i64::MIN,
            i64::MAX,
        ];
        let mut day_cases: Vec<i32> = vec![0, -1, 11_016, 2_932_896, 2_932_897, -719_528, -719_529, i32::MIN, i32::MAX];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            us_cases.push((x as i64) >> (x % 10)); // all magnitudes
            us_cases.push((x as i64) % 400_000_000_000_000_000); // years -10700..14600
            day_cases.push((x as i32) >> (x % 20));
        }
        for us in us_cases {
            let mut out = Vec::new();
            write_timestamp(&mut out, us);
            assert_eq!(String::from_utf8(out).unwrap(), quoted(timestamp_text(us)), "{us}");
        }
        for d in day_cases {
            let mut out = Vec::new();
            write_date(&mut out, d);
            assert_eq!(String::from_utf8(out).unwrap(), quoted(date_text(d)), "{d}");
        }
        for (u, sc) in [
            (12345i128, 2u8),
            (-5, 3),
            (0, 2),
            (42, 0),
            (-42, 0),
            (i128::MAX, 10),
            (i128::MIN, 38),
            (7, 1),
            (-123, 2),
            (99, 2),
        ] {
            let mut out = Vec::new();
            write_decimal(&mut out, u, sc);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{}\"", decimal_text(u, sc)), "{u} {sc}");
        }
    }

    #[test]
    fn json_forms() {
        assert_eq!(json(Value::Float(f32::NAN)), "null");
        assert_eq!(json(Value::Double(f64::INFINITY)), "null");
        assert_eq!(json(Value::Float(0.502)), "0.502");
        assert_eq!(json(Value::Double(0.1)), "0.1");
        assert_eq!(json(Value::BigInt(i64::MAX)), "9223372036854775807");
        assert_eq!(json(Value::Date(0)), r#""1970-01-01""#);
        assert_eq!(json(Value::Timestamp(1_782_548_100_000_000)), r#""2026-06-27T08:15:00.000000Z""#);
        assert_eq!(json(Value::Str("a\"b".into())), r#""a\"b""#);
        assert_eq!(json(Value::Decimal { unscaled: -5, scale: 3 }), r#""-0.005""#);
        assert_eq!(json(Value::Array(Array::Float(vec![1.5, f32::NAN]))), "[1.5,null]");
        assert_eq!(json(Value::Bool(true)), "true");
    }
}
