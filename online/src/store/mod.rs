//! [`OnlineStore`]: every Redis operation daeda performs, over a deadpool-redis pool.
//!
//! By concern: [`lease`], [`generations`] (numbering, pointer, flip),
//! [`removal`] (retire, drop, purge), [`rows`], [`topology`] (a cluster's
//! primaries, SCAN over all of them), [`info`] (`INFO memory`); the Lua
//! scripts are files under `lua/`, each with its contract (see [`scripts`]).
//!
//! Invariants:
//! - readers follow `current`; a generation becomes current only through
//!   [`OnlineStore::flip`], which runs after all its rows are written and checks,
//!   in the same atomic script, that the writer still holds the service's lease;
//! - a generation is registered in the service's `gens` set before its first row
//!   is written, so rows of a run that died are always found and removed later;
//! - every row write is fenced by the lease (see [`rows`]): on one server a
//!   full run's batch is a transaction that `WATCH`es it, an incremental row's
//!   script checks it, both atomically; on a cluster it is read before each batch (lease and rows
//!   live in different slots), so a run that lost its lease stops writing
//!   into a generation that another run may be retiring;
//! - removal never blocks Redis: SCAN + batched UNLINK, never KEYS;
//! - on a Redis Cluster every whole-keyspace command (SCAN, INFO) visits each
//!   primary, and a pipeline never spans two slots.

mod generations;
mod info;
mod lease;
mod removal;
mod rows;
mod scripts;
mod topology;

use std::time::Duration;

use deadpool::Runtime;
use redis::AsyncConnectionConfig;

pub use self::info::MemoryInfo;
pub use self::rows::ConditionalWrites;
use crate::connect::Topology;
use crate::keys;
use crate::pool::{Pool, RedisManager};
use crate::redact::redact;
use crate::OnlineError;

/// Connection settings. Timeouts are explicit: without them a dead Redis hangs
/// callers instead of failing them.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub pool_size: usize,
    /// Bounds connecting, waiting for a pooled connection, and each reply.
    pub timeout: Duration,
    /// Every command goes to a replica when one is up (Cluster `READONLY`
    /// connections, a replica named by Sentinel), else to the primary. For
    /// readers only (the gateway): replicas lag, and a writer must not read
    /// its lease or rows back from one.
    pub read_from_replicas: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings { pool_size: 16, timeout: Duration::from_secs(5), read_from_replicas: false }
    }
}

/// A pooled handle on the online store. Cheap to clone.
#[derive(Clone)]
pub struct OnlineStore {
    pool: Pool,
    /// The URL with any password removed, for messages.
    display_url: String,
    /// A Redis Cluster: SCAN and INFO go to every primary, conditional writes
    /// are grouped by slot.
    cluster: bool,
    /// The namespace's key layout: every key this handle reads or writes.
    keys: keys::Keys,
    /// How long a flip waits for replicas to confirm the rows (below the reply timeout).
    replica_wait: Duration,
    /// Reads may go to replicas (see [`StoreSettings::read_from_replicas`]).
    replica_reads: bool,
    timeout: Duration,
}

impl std::fmt::Debug for OnlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineStore").field("url", &self.display_url).finish()
    }
}

pub use crate::pool::Connection;

impl OnlineStore {
    /// Builds the pool; no connection is made until the first command.
    pub fn connect(url: &str, settings: &StoreSettings) -> Result<OnlineStore, OnlineError> {
        let display_url = redact(url);
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout));
        let topology =
            Topology::parse(url).map_err(|reason| OnlineError::BadUrl { url: display_url.clone(), reason })?;
        let cluster = topology.is_cluster();
        let manager = RedisManager::new(&topology, settings.timeout, settings.read_from_replicas, conn_config)
            .map_err(|e| OnlineError::BadUrl { url: display_url.clone(), reason: e.to_string() })?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| OnlineError::BadUrl { url: display_url.clone(), reason: e.to_string() })?;
        Ok(OnlineStore {
            pool,
            display_url,
            cluster,
            keys: keys::Keys::default(),
            replica_wait: settings.timeout / 2,
            replica_reads: settings.read_from_replicas,
            timeout: settings.timeout,
        })
    }

    /// Connections the pool holds at most.
    pub fn pool_size(&self) -> usize {
        self.pool.status().max_size
    }

    /// The same store in `namespace` (see [`keys`]); the default is `default`.
    pub fn in_namespace(mut self, namespace: &str) -> Result<OnlineStore, OnlineError> {
        self.keys = keys::Keys::new(namespace).map_err(OnlineError::BadNamespace)?;
        Ok(self)
    }

    /// The key layout of this store's namespace.
    pub fn keys(&self) -> &keys::Keys {
        &self.keys
    }

    /// Why the row cache cannot be kept consistent on this deployment, if it
    /// cannot: a cluster's keys live on many primaries, each of which would
    /// need its own tracking connection followed through resharding and
    /// failover; a replica may answer a read with a row older than an
    /// invalidation already received from the primary, which would then be
    /// cached for good.
    pub fn cache_unsupported(&self) -> Option<&'static str> {
        if self.cluster {
            Some("the online store is a Redis Cluster")
        } else if self.replica_reads {
            Some("reads go to replicas (redis_read_from_replicas)")
        } else {
            None
        }
    }

    /// The reply timeout, which also bounds the row cache's health checks.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn manager(&self) -> &RedisManager {
        self.pool.manager()
    }

    pub fn url(&self) -> &str {
        &self.display_url
    }

    /// Pool size and idle connections, for metrics.
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }

    /// A pooled connection.
    pub async fn conn(&self) -> Result<Connection, OnlineError> {
        self.pool.get().await.map_err(|e| OnlineError::unavailable(&self.display_url, e))
    }

    fn err(&self, e: redis::RedisError) -> OnlineError {
        OnlineError::from_redis(&self.display_url, e)
    }

    pub async fn ping(&self) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut *c).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A script's error reply with the [`scripts::LEASE_LOST`] code is
    /// [`OnlineError::LeaseLost`]; anything else is a Redis failure.
    fn lease_or(&self, e: redis::RedisError, service: &str) -> OnlineError {
        if e.code() == Some(scripts::LEASE_LOST) {
            OnlineError::LeaseLost { service: service.to_string() }
        } else {
            self.err(e)
        }
    }
}
