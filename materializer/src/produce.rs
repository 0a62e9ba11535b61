//! The DuckDB side of a run, on a blocking thread: open the source, check it,
//! gather its stats, then stream the latest-rows query into the writers'
//! queue, encoded. Memory holds the batches in the queue, not the table.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use daeda_catalog::ServiceDef;
use daeda_offline::stream::LatestRows;
use daeda_offline::{query, source};
use tokio::sync::mpsc;

use crate::encode::{EncodedBatch, Encoder};
use crate::MaterializeError;

/// What the DuckDB side produced.
pub(crate) struct Produced {
    pub(crate) opened: source::Opened,
    pub(crate) stats: query::SourceStats,
    pub(crate) entities: u64,
    pub(crate) bytes: u64,
    pub(crate) max_event_ts: Option<i64>,
}

/// Starts [`produce`] on a blocking thread.
pub(crate) fn spawn(
    def: Arc<ServiceDef>,
    as_of: DateTime<Utc>,
    newer_than: Option<DateTime<Utc>>,
    row_prefix: String,
    tx: mpsc::Sender<EncodedBatch>,
) -> tokio::task::JoinHandle<Result<Produced, MaterializeError>> {
    tokio::task::spawn_blocking(move || produce(&def, as_of, newer_than, row_prefix, tx))
}

/// The producer's result; its panic is an error of the run.
pub(crate) async fn join(
    h: tokio::task::JoinHandle<Result<Produced, MaterializeError>>,
) -> Result<Produced, MaterializeError> {
    h.await.map_err(|source| MaterializeError::TaskDied { task: "the DuckDB reader", source })?
}

/// The DuckDB side of a run (blocking).
fn produce(
    def: &ServiceDef,
    as_of: DateTime<Utc>,
    newer_than: Option<DateTime<Utc>>,
    row_prefix: String,
    tx: mpsc::Sender<EncodedBatch>,
) -> Result<Produced, MaterializeError> {
    let t0 = std::time::Instant::now();
    let conn = daeda_offline::session()?;
    let opened = source::open(&conn, &def.source)?;
    query::check_schema(&conn, def, &opened.relation)?;
    tracing::debug!(service = %def.name, elapsed = ?t0.elapsed(), "source opened and checked");
    let stats = query::stats(&conn, def, &opened.relation, as_of)?;
    tracing::debug!(service = %def.name, elapsed = ?t0.elapsed(), rows = stats.rows, "source stats");
    let encoder = Encoder::new(def, row_prefix);
    let mut stream = LatestRows::start(
        &conn,
        stats.rows,
        || query::entity_estimate(&conn, def, &opened.relation, as_of),
        |slice| query::latest_rows_sql(def, &opened.relation, as_of, newer_than, slice),
    )?;
    let (mut entities, mut bytes, mut max_ts) = (0u64, 0u64, None::<i64>);
    while let Some(batch) = stream.next_batch()? {
        if batch.num_rows() == 0 {
            continue;
        }
        let encoded = encoder.encode(&batch)?;
        entities += encoded.rows.len() as u64;
        bytes += encoded.bytes;
        if let Some(t) = encoded.max_event_ts {
            max_ts = Some(max_ts.map_or(t, |m| m.max(t)));
        }
        if tx.blocking_send(encoded).is_err() {
            // The writers stopped; their error is the one reported.
            break;
        }
    }
    tracing::debug!(service = %def.name, elapsed = ?t0.elapsed(), entities, "latest rows streamed and encoded");
    Ok(Produced { opened, stats, entities, bytes, max_event_ts: max_ts })
}
