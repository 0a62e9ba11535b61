//! The skew checker: are the online rows exactly the offline rows?
//!
//! It recomputes the latest row per entity from the source as the live
//! generation read it (same Parquet files, same DuckLake snapshot, same as-of,
//! and the materializer's own query and encoder), reads the online rows from
//! Redis, and compares them value by value. Both sides stream in DuckDB-sized
//! batches, so `--all` holds a batch, not a table, in memory.

mod compare;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use daeda_catalog::ServiceDef;
use daeda_materializer::encode::Encoder;
use daeda_materializer::{MaterializeError, Progress};
use daeda_metadata_store::{timestamp as rfc3339, MetadataStore, RunKind, RunRecord, RunStatus, StoreError};
use daeda_offline::stream::LatestRows;
use daeda_offline::{query, source, OfflineError};
use daeda_online::codec::{self, RowSchema, Value};
use daeda_online::{GenerationMeta, OnlineError, OnlineStore, RowBatch};
use serde::Serialize;
use tokio::sync::mpsc;

pub use compare::same;

/// What to check and how strictly.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Entities drawn uniformly from the offline side; None compares all of
    /// them, both directions.
    pub sample: Option<usize>,
    /// Defaults to the live generation's as-of.
    pub as_of: Option<DateTime<Utc>>,
    pub float_tolerance: f64,
    pub max_mismatch_rate: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SkewError {
    #[error("service `{0}` is not approved for serving; it has nothing online to check")]
    NotAllowed(String),
    #[error("service `{0}` has no live generation to check; materialize it first")]
    NoLiveGeneration(String),
    #[error("the live generation of `{service}` has fingerprint {online} but the definition has {defined}: the schema changed since it was written; rematerialize it")]
    Fingerprint { service: String, online: String, defined: String },
    #[error("the live generation's as-of `{0}` is not RFC 3339")]
    BadAsOf(String),
    #[error("an online row of entity {entity} is unreadable: {reason}")]
    Corrupt { entity: String, reason: codec::DecodeError },
    /// The source as the generation read it cannot be read again.
    #[error(transparent)]
    Offline(#[from] OfflineError),
    /// The materializer's encoder refused an offline row.
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    /// The DuckDB reader panicked.
    #[error("internal error: the DuckDB reader died: {0}")]
    ReaderDied(tokio::task::JoinError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Records(#[from] StoreError),
}

/// One differing value.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub entity: String,
    pub offline: serde_json::Value,
    pub online: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ColumnSkew {
    pub mismatches: u64,
    /// Up to three.
    pub examples: Vec<Example>,
}

/// The result of a check (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct SkewReport {
    pub run_id: String,
    pub service: String,
    pub generation: String,
    pub as_of: String,
    /// `sample N` or `all`.
    pub mode: String,
    pub entities_compared: u64,
    pub matched: u64,
    /// Entities with at least one differing column.
    pub mismatched: u64,
    pub missing_online: u64,
    /// Online entities with no offline row (only with `--all`).
    pub extra_online: Option<u64>,
    /// Online rows older than the service's ttl (reported, not counted as skew).
    pub stale: u64,
    /// (mismatched + missing + extra) / (compared + extra).
    pub mismatch_rate: f64,
    pub max_mismatch_rate: f64,
    pub passed: bool,
    /// Per column, only those with mismatches.
    pub columns: BTreeMap<String, ColumnSkew>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub entities_per_sec: f64,
}

const MAX_EXAMPLES: usize = 3;

fn value_json(v: &Value) -> serde_json::Value {
    let mut out = Vec::new();
    daeda_online::render::json::write_value(&mut out, v);
    serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
}

/// Checks `def`'s live generation and records the check in `records`.
pub async fn check(
    store: &OnlineStore,
    def: Arc<ServiceDef>,
    opts: &CheckOptions,
    records: &MetadataStore,
    progress: Arc<dyn Progress>,
) -> Result<SkewReport, SkewError> {
    if !def.serving.allowed {
        return Err(SkewError::NotAllowed(def.name.clone()));
    }
    let started = Utc::now();
    let run_id = daeda_metadata_store::new_run_id(&format!("skew-{}", def.name), started);
    let recorded = records.start(RunRecord {
        run_id: run_id.clone(),
        kind: RunKind::SkewCheck,
        service: def.name.clone(),
        version: def.version.clone(),
        mode: opts.sample.map_or("all".to_string(), |n| format!("sample {n}")),
        started_at: rfc3339(started),
        ..Default::default()
    })?;
    let result = run(store, &def, opts, run_id, progress).await;
    recorded.finish(&result, |record, outcome| {
        if let Ok(r) = outcome {
            record.status = if r.passed { RunStatus::Passed } else { RunStatus::Skewed };
            record.row_count = Some(r.entities_compared);
            record.generation = Some(r.generation.clone());
            record.as_of = Some(r.as_of.clone());
            record.details = serde_json::to_value(r).ok();
        }
    })?;
    result
}

async fn run(
    store: &OnlineStore,
    def: &Arc<ServiceDef>,
    opts: &CheckOptions,
    run_id: String,
    progress: Arc<dyn Progress>,
) -> Result<SkewReport, SkewError> {
    let t0 = Instant::now();
    let meta = store.current(&def.name).await?.ok_or_else(|| SkewError::NoLiveGeneration(def.name.clone()))?;
    if meta.fingerprint != def.fingerprint() {
        return Err(SkewError::Fingerprint {
            service: def.name.clone(),
            online: meta.fingerprint.clone(),
            defined: def.fingerprint().to_string(),
        });
    }
    let as_of = match opts.as_of {
        Some(t) => t,
        None => DateTime::parse_from_rfc3339(&meta.as_of)
            .map_err(|_| SkewError::BadAsOf(meta.as_of.clone()))?
            .with_timezone(&Utc),
    };

    // Counting the generation's keys (a SCAN of the whole keyspace, for the
    // extra-online figure) is Redis work that depends on nothing else here: it
    // runs beside the comparison, not after it. Same snapshot semantics as a
    // count at the end: neither is atomic with the MGETs. The SCAN holds a
    // pooled connection throughout, so a pool too small to leave one for each
    // read in flight counts at the end instead.
    let count_beside = opts.sample.is_none() && store.pool_size() > READS_IN_FLIGHT;
    let online_count = count_beside.then(|| {
        let (store, service, generation) = (store.clone(), def.name.clone(), meta.generation.clone());
        tokio::spawn(async move { store.count_rows(&service, &generation).await })
    });

    let (tx, mut rx) = mpsc::channel::<RowBatch>(8);
    let producer = {
        let (def, meta, sample) = (def.clone(), meta.clone(), opts.sample);
        let prefix = store.keys().row_prefix(&def.name, &meta.generation);
        tokio::task::spawn_blocking(move || offline_rows(&def, &meta, prefix, as_of, sample, tx))
    };

    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    let online = Online {
        store,
        def,
        schema: RowSchema::of(def),
        prefix: store.keys().row_prefix(&def.name, &meta.generation),
        stale_before: def.serving.ttl.map(|ttl| now_us - ttl.as_micros() as i64),
        tol: opts.float_tolerance,
    };
    let mut tally = Tally::default();
    let mut failure = None;
    // Up to READS_IN_FLIGHT batches are read from Redis at once while the
    // earliest read is compared: the round trip and Redis's work overlap the
    // comparison and DuckDB's next batch instead of following them.
    let mut reads = VecDeque::new();
    let mut more = true;
    loop {
        while more && reads.len() < READS_IN_FLIGHT {
            let next = if reads.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            match next {
                Some(batch) => reads.push_back(online.read(batch)),
                None => more = false,
            }
        }
        let Some(read) = reads.pop_front() else { break };
        let compared = match read.await {
            Ok(Ok((batch, rows))) => online.compare(&batch, rows, &mut tally).map(|()| batch.len()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(SkewError::ReaderDied(e)),
        };
        match compared {
            Ok(n) => progress.rows_done(n as u64),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    reads.iter().for_each(tokio::task::JoinHandle::abort);
    drop(rx);
    let warnings = match (producer.await.map_err(SkewError::ReaderDied).and_then(|w| w), failure) {
        (Ok(w), None) => w,
        (Err(e), _) | (Ok(_), Some(e)) => {
            online_count.iter().for_each(tokio::task::JoinHandle::abort);
            return Err(e);
        }
    };

    let online_total = match (opts.sample, online_count) {
        (Some(_), _) => None,
        (None, Some(count)) => Some(count.await.map_err(SkewError::ReaderDied)??),
        (None, None) => Some(store.count_rows(&def.name, &meta.generation).await?),
    };
    let extra_online = online_total.map(|total| total.saturating_sub(tally.compared - tally.missing));
    let bad = tally.mismatched + tally.missing + extra_online.unwrap_or(0);
    let total = tally.compared + extra_online.unwrap_or(0);
    let rate = if total == 0 { 0.0 } else { bad as f64 / total as f64 };
    let seconds = t0.elapsed().as_secs_f64();
    Ok(SkewReport {
        run_id,
        service: def.name.clone(),
        generation: meta.generation.clone(),
        as_of: rfc3339(as_of),
        mode: opts.sample.map_or("all".to_string(), |n| format!("sample {n}")),
        entities_compared: tally.compared,
        matched: tally.compared - tally.mismatched - tally.missing,
        mismatched: tally.mismatched,
        missing_online: tally.missing,
        extra_online,
        stale: tally.stale,
        mismatch_rate: rate,
        max_mismatch_rate: opts.max_mismatch_rate,
        passed: rate <= opts.max_mismatch_rate,
        columns: tally.columns,
        warnings,
        seconds,
        entities_per_sec: if seconds > 0.0 { tally.compared as f64 / seconds } else { 0.0 },
    })
}

#[derive(Default)]
struct Tally {
    compared: u64,
    mismatched: u64,
    missing: u64,
    stale: u64,
    columns: BTreeMap<String, ColumnSkew>,
}

impl Tally {
    fn mismatch(&mut self, column: &str, entity: &str, offline: serde_json::Value, online: serde_json::Value) {
        let c = self.columns.entry(column.to_string()).or_default();
        c.mismatches += 1;
        if c.examples.len() < MAX_EXAMPLES {
            c.examples.push(Example { entity: entity.to_string(), offline, online });
        }
    }
}

/// The online side of a check: the live generation's rows, read by batch and
/// compared with the offline rows of the same entities.
struct Online<'a> {
    store: &'a OnlineStore,
    def: &'a ServiceDef,
    schema: RowSchema,
    /// The live generation's row key prefix; the rest of a key is the entity.
    prefix: String,
    /// Online rows older than this (microseconds) are stale; None without a ttl.
    stale_before: Option<i64>,
    tol: f64,
}

/// Online rows read for a batch, or why they could not be.
type Read = tokio::task::JoinHandle<Result<(RowBatch, Vec<Option<Vec<u8>>>), SkewError>>;

/// How many batches' Redis reads a check keeps in flight.
const READS_IN_FLIGHT: usize = 4;

impl Online<'_> {
    /// Starts reading the online rows of `batch`'s keys (one MGET).
    fn read(&self, batch: RowBatch) -> Read {
        let store = self.store.clone();
        tokio::spawn(async move {
            let keys: Vec<&[u8]> = batch.iter().map(|(k, _)| k).collect();
            let rows = store.get_rows(&keys).await?;
            drop(keys);
            Ok((batch, rows))
        })
    }

    fn compare(&self, batch: &RowBatch, online: Vec<Option<Vec<u8>>>, tally: &mut Tally) -> Result<(), SkewError> {
        for ((key, offline_bytes), online_bytes) in batch.iter().zip(online) {
            tally.compared += 1;
            let key = String::from_utf8_lossy(key);
            let entity = key.strip_prefix(self.prefix.as_str()).unwrap_or(&key);
            let Some(online_bytes) = online_bytes else {
                tally.missing += 1;
                continue;
            };
            // The common case: the online row is the very bytes the offline side
            // encodes. Decoding is a function of the bytes and `same` is
            // reflexive (NaN included), so they match without decoding either.
            if offline_bytes == online_bytes.as_slice() {
                if let Some(t) = self.stale_before {
                    let ts = codec::event_ts(&online_bytes)
                        .map_err(|reason| SkewError::Corrupt { entity: entity.to_string(), reason })?;
                    tally.stale += u64::from(ts < t);
                }
                continue;
            }
            let offline = codec::decode(offline_bytes, &self.schema).expect("rows the encoder wrote decode");
            let online = codec::decode(&online_bytes, &self.schema)
                .map_err(|reason| SkewError::Corrupt { entity: entity.to_string(), reason })?;
            if self.stale_before.is_some_and(|t| online.event_ts_micros < t) {
                tally.stale += 1;
            }
            let mut differs = false;
            if offline.event_ts_micros != online.event_ts_micros {
                differs = true;
                let ts = |us| {
                    daeda_online::render::text::timestamp_text(us).map(serde_json::Value::from).unwrap_or_default()
                };
                tally.mismatch(&self.def.timestamp, entity, ts(offline.event_ts_micros), ts(online.event_ts_micros));
            }
            for (i, name) in self.schema.names.iter().enumerate() {
                if !same(&offline.values[i], &online.values[i], self.tol) {
                    differs = true;
                    tally.mismatch(name, entity, value_json(&offline.values[i]), value_json(&online.values[i]));
                }
            }
            if differs {
                tally.mismatched += 1;
            }
        }
        Ok(())
    }
}

/// The offline side (blocking): the latest rows as the generation's source
/// snapshot holds them, encoded exactly as the materializer encodes them.
/// With `sample`, a uniform reservoir sample of that many entities.
fn offline_rows(
    def: &ServiceDef,
    meta: &GenerationMeta,
    row_prefix: String,
    as_of: DateTime<Utc>,
    sample: Option<usize>,
    tx: mpsc::Sender<RowBatch>,
) -> Result<Vec<String>, SkewError> {
    let conn = daeda_offline::session()?;
    let recorded: serde_json::Value = serde_json::from_str(&meta.source_snapshot).unwrap_or_default();
    let (opened, warnings) = source::reopen(&conn, &def.source, &recorded)?;
    query::check_schema(&conn, def, &opened.relation)?;
    let encoder = Encoder::new(def, row_prefix);
    // The source's size picks the passes (see `LatestRows`).
    let source_rows: u64 = conn
        .query_row(&format!("SELECT count(*) FROM {}", opened.relation), [], |r| r.get(0))
        .map_err(OfflineError::from)?;
    let mut stream = LatestRows::start(
        &conn,
        source_rows,
        || query::entity_estimate(&conn, def, &opened.relation, as_of),
        |slice| query::latest_rows_sql(def, &opened.relation, as_of, None, slice),
    )
    .map_err(OfflineError::from)?;
    let mut reservoir: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut seen = 0u64;
    // Seeded: the same generation samples the same entities on every check.
    let mut rng = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
    while let Some(batch) = stream.next_batch().map_err(OfflineError::from)? {
        if batch.num_rows() == 0 {
            continue;
        }
        let encoded = encoder.encode(&batch)?;
        let Some(n) = sample else {
            if tx.blocking_send(encoded.rows).is_err() {
                break;
            }
            continue;
        };
        for (k, v) in encoded.rows.iter() {
            seen += 1;
            if reservoir.len() < n {
                reservoir.push((k.to_vec(), v.to_vec()));
            } else {
                let j = rng.u64(..seen) as usize;
                if j < n {
                    reservoir[j] = (k.to_vec(), v.to_vec());
                }
            }
        }
    }
    for chunk in reservoir.chunks(1000) {
        let mut b = RowBatch::with_capacity(chunk.len(), 0);
        for (k, v) in chunk {
            b.push(k, v);
        }
        if tx.blocking_send(b).is_err() {
            break;
        }
    }
    Ok(warnings)
}
