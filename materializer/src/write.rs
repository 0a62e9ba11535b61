//! The Redis side of a run: pooled, pipelined writers draining the encoded
//! batches, and the lease they write under.
//!
//! Invariant: no batch is written once the lease is lost or the run was asked
//! to stop: [`LeaseWatch::check`] before every batch notices a stop or a lost
//! renewal, and Redis itself refuses a batch (full or incremental) whose run
//! no longer holds the lease (see `OnlineStore::put_rows`); the flip checks again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use daeda_online::{OnlineError, OnlineStore};
use tokio::sync::{mpsc, Mutex};

use crate::encode::EncodedBatch;
use crate::{MaterializeError, Progress};

/// What a run's writes depend on: its lease (`lost` is set by the renewal
/// task) and not being asked to stop.
#[derive(Clone)]
pub(crate) struct LeaseWatch {
    service: String,
    run_id: String,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl LeaseWatch {
    pub(crate) fn new(service: &str, run_id: &str, stop: Arc<AtomicBool>) -> LeaseWatch {
        LeaseWatch { service: service.to_string(), run_id: run_id.to_string(), lost: Arc::default(), stop }
    }

    pub(crate) fn check(&self) -> Result<(), MaterializeError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(MaterializeError::Interrupted(self.service.clone()));
        }
        if self.lost.load(Ordering::Relaxed) {
            return Err(OnlineError::LeaseLost { service: self.service.clone() }.into());
        }
        Ok(())
    }

    /// The next batch from the queue, waking up every 100 ms to notice a stop
    /// or a lost lease while DuckDB is still producing.
    async fn next(&self, rx: &Mutex<mpsc::Receiver<EncodedBatch>>) -> Result<Option<EncodedBatch>, MaterializeError> {
        let mut rx = rx.lock().await;
        loop {
            self.check()?;
            // recv is cancel-safe: a batch is never lost to the timeout.
            if let Ok(next) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                return Ok(next);
            }
        }
    }
}

/// Renews the lease every third of its ttl until aborted; marks it lost when
/// another run holds it.
pub(crate) fn spawn_lease_renewal(
    store: OnlineStore,
    lease: &LeaseWatch,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    let (service, run_id, lost) = (lease.service.clone(), lease.run_id.clone(), lease.lost.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ttl / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match store.renew_lease(&service, &run_id, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    // Writers stop at their next batch; the flip checks the lease too.
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => tracing::warn!(service, error = %e, "could not renew the lease"),
            }
        }
    })
}

/// What conditional (incremental) writes did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IncrementalWrites {
    pub(crate) inserted: u64,
    pub(crate) replaced: u64,
    pub(crate) kept: u64,
    pub(crate) bytes: u64,
}

impl IncrementalWrites {
    fn add(&mut self, o: IncrementalWrites) {
        self.inserted += o.inserted;
        self.replaced += o.replaced;
        self.kept += o.kept;
        self.bytes += o.bytes;
    }
}

/// `count` concurrent pipelines to `store`.
pub(crate) struct Writers {
    pub(crate) store: OnlineStore,
    pub(crate) count: usize,
    pub(crate) progress: Arc<dyn Progress>,
}

impl Writers {
    /// Drains the queue. Returns rows written (and, for conditional writes,
    /// what happened to them). The first error closes the queue, which stops
    /// the producer at its next send.
    pub(crate) async fn write_all(
        self,
        rx: mpsc::Receiver<EncodedBatch>,
        conditional: bool,
        lease: LeaseWatch,
    ) -> Result<(u64, IncrementalWrites), MaterializeError> {
        let rx = Arc::new(Mutex::new(rx));
        let written = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.count.max(1) {
            let (rx, store, written, progress) =
                (rx.clone(), self.store.clone(), written.clone(), self.progress.clone());
            let lease = lease.clone();
            tasks.spawn(async move {
                let mut conn = store.conn().await?;
                let mut w = IncrementalWrites::default();
                loop {
                    let next = lease.next(&rx).await?;
                    let Some(batch) = next else { return Ok::<_, MaterializeError>(w) };
                    // Another run owns the service now, or the run was asked to stop.
                    lease.check()?;
                    let n = batch.rows.len() as u64;
                    if conditional {
                        let r = store.put_rows_if_newer(&mut conn, &batch.rows, &lease.service, &lease.run_id).await?;
                        w.add(IncrementalWrites {
                            inserted: r.inserted,
                            replaced: r.replaced,
                            kept: r.kept,
                            bytes: batch.bytes,
                        });
                    } else {
                        store.put_rows(&mut conn, &batch.rows, &lease.service, &lease.run_id).await?;
                    }
                    written.fetch_add(n, Ordering::Relaxed);
                    progress.rows_done(n);
                }
            });
        }
        let mut total = IncrementalWrites::default();
        let mut first_err = None;
        while let Some(res) = tasks.join_next().await {
            let err = match res {
                Ok(Ok(w)) => {
                    total.add(w);
                    continue;
                }
                Ok(Err(e)) => e,
                Err(e) => MaterializeError::TaskDied { task: "a Redis writer", source: e },
            };
            // Stop the producer: closing the queue makes its next send fail.
            rx.lock().await.close();
            first_err.get_or_insert(err);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((written.load(Ordering::Relaxed), total)),
        }
    }
}
