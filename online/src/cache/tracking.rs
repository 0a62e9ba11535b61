//! The row cache's tracking connection: one RESP3 connection to the primary
//! with `CLIENT TRACKING ON BCAST` over the namespace's row keys and
//! per-service keys. In BCAST mode Redis sends the name of every key written
//! under those prefixes (batched per event-loop turn), whether this connection
//! read it or not, so lookups can use the ordinary pooled connections.
//!
//! The invalidations are applied in the connection's reader itself (the push
//! sender calls [`RowCache::invalidate`]), never queued: when the reply to a
//! command sent after a write arrives, that write's invalidation was applied.
//!
//! Lost tracking means lost invalidations: a dropped connection (Redis
//! restart, failover, `CLIENT KILL`) or a health check (`PING` every
//! [`HEALTH_EVERY`]) that fails within the store's reply timeout empties the
//! cache and bypasses it until a new connection has tracking on. The health
//! check bounds how long a silently dead connection (a partition, no RST) can
//! go unnoticed: [`HEALTH_EVERY`] plus the reply timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{AsyncPushSender, SendError};
use redis::{PushInfo, PushKind, Value};

use super::RowCache;
use crate::OnlineStore;

/// How often the tracking connection is checked with a PING.
pub const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// The name the tracking connection shows in `CLIENT LIST`.
pub const CLIENT_NAME: &str = "daeda-row-cache";

/// Applies one connection's push messages to the cache.
struct Pushes {
    cache: Arc<RowCache>,
    /// Which connection this is; a late disconnect of an old one is ignored.
    conn: u64,
    current: Arc<AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
}

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for k in keys {
                        if let Value::BulkString(k) = k {
                            self.cache.invalidate(k);
                        }
                    }
                }
                // FLUSHALL / FLUSHDB: a null instead of the keys.
                Some(Value::Nil) => self.cache.flush(),
                _ => {}
            },
            PushKind::Disconnection if self.current.load(Ordering::Acquire) == self.conn => {
                self.cache.lost();
                self.wake.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// Keeps `cache` tracked on `store`'s primary until the task is aborted.
/// Refused (with the reason) where the cache cannot be kept consistent.
pub fn spawn(store: OnlineStore, cache: Arc<RowCache>) -> Result<tokio::task::JoinHandle<()>, &'static str> {
    if let Some(why) = store.cache_unsupported() {
        return Err(why);
    }
    Ok(tokio::spawn(run(store, cache)))
}

async fn run(store: OnlineStore, cache: Arc<RowCache>) {
    let current = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut backoff = Duration::from_millis(50);
    for conn_id in 1u64.. {
        current.store(conn_id, Ordering::Release);
        let pushes = Pushes { cache: cache.clone(), conn: conn_id, current: current.clone(), wake: wake.clone() };
        match connect(&store, pushes).await {
            Ok(mut conn) => {
                backoff = Duration::from_millis(50);
                cache.tracked();
                tracing::info!(url = store.url(), "row cache tracking on");
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(HEALTH_EVERY) => {}
                        () = wake.notified() => break,
                    }
                    let ping = redis::cmd("PING");
                    let pong = tokio::time::timeout(store.timeout(), ping.query_async::<String>(&mut conn)).await;
                    if pong.map_or(true, |r| r.is_err()) {
                        break;
                    }
                }
                // Whatever ended it, nothing from this connection counts any more.
                current.store(0, Ordering::Release);
                cache.lost();
                tracing::warn!(url = store.url(), "row cache tracking lost; the cache is bypassed until it is back");
            }
            Err(e) => {
                cache.lost();
                tracing::debug!(error = %e, "row cache tracking could not connect");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn connect(store: &OnlineStore, pushes: Pushes) -> Result<redis::aio::MultiplexedConnection, String> {
    let mut conn = tokio::time::timeout(store.timeout(), store.manager().push_connection(pushes))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("no single primary to track")?;
    let keys = store.keys();
    let mut track = redis::pipe();
    track
        .cmd("CLIENT")
        .arg("SETNAME")
        .arg(CLIENT_NAME)
        .ignore()
        .cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(keys.all_rows_prefix())
        .arg("PREFIX")
        .arg(keys.all_service_keys_prefix())
        .ignore();
    tokio::time::timeout(store.timeout(), track.query_async::<()>(&mut conn))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(conn)
}
