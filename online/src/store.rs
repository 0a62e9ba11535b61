//! [`OnlineStore`]: every Redis operation daeda performs, over a deadpool-redis pool.
//!
//! Invariants:
//! - readers follow `current`; a generation becomes current only through
//!   [`OnlineStore::flip`], which runs after all its rows are written and checks,
//!   in the same atomic script, that the writer still holds the service's lease;
//! - a generation is registered in the service's `gens` set before its first row
//!   is written, so rows of a run that died are always found and removed later;
//! - conditional (incremental) writes are fenced by the lease: on one server
//!   each write checks it in the same script, on a cluster before each batch
//!   (lease and rows live in different slots), so a run that lost its lease
//!   stops writing into a generation that another run may be retiring;
//! - removal never blocks Redis: SCAN + batched UNLINK, never KEYS;
//! - on a Redis Cluster every whole-keyspace command (SCAN, INFO) visits each
//!   primary, and a pipeline never spans two slots.

use std::collections::HashMap;
use std::time::Duration;

use deadpool::Runtime;
use redis::{AsyncCommands, AsyncConnectionConfig, Script};

use crate::connect::Topology;
use crate::pool::{Pool, RedisManager};

use crate::keys;
use crate::meta::GenerationMeta;
use crate::OnlineError;
use crate::RowBatch;

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

/// Redis memory figures from `INFO memory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryInfo {
    pub used: u64,
    /// 0 means no limit.
    pub maxmemory: u64,
    pub policy: String,
}

/// What a conditional (incremental) write did to each row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConditionalWrites {
    /// Entities that were not online before.
    pub inserted: u64,
    /// Entities whose online row was older and got replaced.
    pub replaced: u64,
    /// Entities whose online row was as new or newer and was kept.
    pub kept: u64,
}

const FLIP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DAEDA_LEASE_LOST the lease is no longer held by this run')
end
redis.call('HSET', KEYS[3], unpack(ARGV, 3))
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[2])
return old
"#;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Writes a row unless the stored one is as new or newer (event time at byte 2
/// of both, see `codec`). 1 = inserted, 2 = replaced, 0 = kept. With a second
/// key (the service's lease; one server only, where it may share a script with
/// a row key), nothing is written and -1 returned unless the lease still holds
/// the run id in ARGV[2]: a run that lost its lease cannot write a single row.
const PUT_IF_NEWER: &str = r#"
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local cur = redis.call('GET', KEYS[1])
if cur then
  if struct.unpack('<i8', cur, 2) >= struct.unpack('<i8', ARGV[1], 2) then return 0 end
  redis.call('SET', KEYS[1], ARGV[1])
  return 2
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// The next generation id, never at or below ARGV[1], registered in the
/// service's set of generations. KEYS: genseq, generations (one slot).
const NEXT_GENERATION: &str = r#"
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if n <= floor then
  n = floor + 1
  redis.call('SET', KEYS[1], n)
end
redis.call('SADD', KEYS[2], tostring(n))
return n
"#;

/// After an incremental run: the watermark only moves forward, and the row count
/// grows by the entities that were new.
const ADVANCE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DAEDA_LEASE_LOST the lease is no longer held by this run')
end
local wm = tonumber(redis.call('HGET', KEYS[2], 'watermark_micros') or '0')
if tonumber(ARGV[2]) > wm then redis.call('HSET', KEYS[2], 'watermark_micros', ARGV[2]) end
redis.call('HINCRBY', KEYS[2], 'row_count', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[4])
redis.call('HSET', KEYS[2], 'run_id', ARGV[1], 'materialized_at', ARGV[5], 'as_of', ARGV[6], 'source_snapshot', ARGV[7])
return 1
"#;

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
}

/// A primary of a cluster, for commands that must visit each one.
#[derive(Debug, Clone)]
struct Node {
    host: String,
    port: u16,
}

/// A SCAN over every node, page by page: the one loop behind retirement,
/// gc and counting.
struct KeyScan {
    /// `[None]` for one server; each primary of a cluster.
    nodes: Vec<Option<Node>>,
    node: usize,
    cursor: u64,
    pattern: String,
    count: usize,
}

impl KeyScan {
    /// The next page of keys (possibly empty), or None when every node is done.
    async fn next(&mut self, store: &OnlineStore, c: &mut Connection) -> Result<Option<Vec<String>>, OnlineError> {
        let Some(node) = self.nodes.get(self.node) else { return Ok(None) };
        let cmd = redis::cmd("SCAN").arg(self.cursor).arg("MATCH").arg(&self.pattern).arg("COUNT").arg(self.count).clone();
        let (next, page): (u64, Vec<String>) = store.on_node(c, node.as_ref(), cmd).await?;
        if next == 0 {
            self.node += 1;
        }
        self.cursor = next;
        Ok(Some(page))
    }
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
        let conn_config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(settings.timeout)).set_response_timeout(Some(settings.timeout));
        let topology = Topology::parse(url).map_err(|reason| OnlineError::BadUrl { url: display_url.clone(), reason })?;
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
        Ok(OnlineStore { pool, display_url, cluster, keys: keys::Keys::default(), replica_wait: settings.timeout / 2 })
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

    /// Memory figures; on a cluster, summed over the primaries (the policy is
    /// the first one that is not `noeviction`, the one worth a warning).
    pub async fn memory(&self) -> Result<MemoryInfo, OnlineError> {
        let mut c = self.conn().await?;
        let mut total = MemoryInfo { used: 0, maxmemory: 0, policy: "noeviction".into() };
        let mut unlimited = false;
        for node in self.nodes(&mut c).await? {
            let info: String = self.on_node(&mut c, node.as_ref(), redis::cmd("INFO").arg("memory").clone()).await?;
            let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim);
            total.used += field("used_memory").and_then(|v| v.parse().ok()).unwrap_or(0);
            let max: u64 = field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0);
            unlimited |= max == 0;
            total.maxmemory += max;
            let policy = field("maxmemory_policy").unwrap_or("unknown");
            if policy != "noeviction" && total.policy == "noeviction" {
                total.policy = policy.to_string();
            }
        }
        if unlimited {
            total.maxmemory = 0;
        }
        Ok(total)
    }

    /// The nodes a whole-keyspace command must visit: `[None]` for one server
    /// (the connection itself), every primary of a cluster.
    async fn nodes(&self, c: &mut Connection) -> Result<Vec<Option<Node>>, OnlineError> {
        if !self.cluster {
            return Ok(vec![None]);
        }
        let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut **c).await.map_err(|e| self.err(e))?;
        let mut nodes = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                continue;
            }
            let hostport = addr.split('@').next().unwrap_or(addr);
            if let Some((host, port)) = hostport.rsplit_once(':') {
                if let Ok(port) = port.parse() {
                    nodes.push(Some(Node { host: host.to_string(), port }));
                }
            }
        }
        Ok(nodes)
    }

    /// Runs `cmd` on `node` (or on the connection's server when None).
    async fn on_node<T: redis::FromRedisValue>(&self, c: &mut Connection, node: Option<&Node>, cmd: redis::Cmd) -> Result<T, OnlineError> {
        let (Some(node), crate::pool::Inner::Cluster(cluster)) = (node, &mut c.inner) else {
            return cmd.query_async(&mut **c).await.map_err(|e| self.err(e));
        };
        let routing = redis::cluster_routing::RoutingInfo::SingleNode(redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
            host: node.host.clone(),
            port: node.port,
        });
        let value = cluster.route_command(cmd, routing).await.map_err(|e| self.err(e))?;
        redis::FromRedisValue::from_redis_value(value).map_err(|e| self.err(e.into()))
    }

    // ---- the lease ------------------------------------------------------

    /// Takes the service's lease for `ttl`, or fails with the holder's run id.
    pub async fn acquire_lease(&self, service: &str, run_id: &str, ttl: Duration) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        let key = self.keys.lease(service);
        let ok: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(run_id)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        if ok.is_some() {
            return Ok(());
        }
        let holder: Option<String> = c.get(&key).await.map_err(|e| self.err(e))?;
        Err(OnlineError::LeaseHeld { service: service.to_string(), holder: holder.unwrap_or_else(|| "?".into()) })
    }

    /// Extends the lease; false when this run no longer holds it.
    pub async fn renew_lease(&self, service: &str, run_id: &str, ttl: Duration) -> Result<bool, OnlineError> {
        let mut c = self.conn().await?;
        let n: i64 = Script::new(RENEW)
            .key(self.keys.lease(service))
            .arg(run_id)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub async fn release_lease(&self, service: &str, run_id: &str) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        let _: i64 = Script::new(RELEASE).key(self.keys.lease(service)).arg(run_id).invoke_async(&mut *c).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn lease_holder(&self, service: &str) -> Result<Option<String>, OnlineError> {
        let mut c = self.conn().await?;
        c.get(self.keys.lease(service)).await.map_err(|e| self.err(e))
    }

    // ---- generations ----------------------------------------------------

    /// Numbers and registers a new generation; its rows may be written next.
    /// Numbers a new generation above both the counter and `floor` (the
    /// highest id this service's run history has seen): the counter lives in
    /// Redis, so a Redis that lost its data would otherwise issue ids again.
    pub async fn new_generation(&self, service: &str, floor: u64) -> Result<String, OnlineError> {
        let mut c = self.conn().await?;
        let n: u64 = Script::new(NEXT_GENERATION)
            .key(self.keys.genseq(service))
            .key(self.keys.generations(service))
            .arg(floor)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(n.to_string())
    }

    pub async fn current_generation(&self, service: &str) -> Result<Option<String>, OnlineError> {
        let mut c = self.conn().await?;
        c.get(self.keys.current(service)).await.map_err(|e| self.err(e))
    }

    /// The live generation of several services, in one round trip.
    pub async fn current_generations(&self, services: &[String]) -> Result<Vec<Option<String>>, OnlineError> {
        let none = vec![None; services.len()];
        Ok(self.pointers_and_runs(services, &none).await?.into_iter().map(|(g, _)| g).collect())
    }

    /// Each service's pointer and, for each `known[i]` (a generation the caller
    /// cached), the run id its metadata records now (None when it is gone): in
    /// one round trip on one server, one per service on a cluster. A pointer
    /// that names the cached id under another run means the id was issued
    /// again (Redis lost its data, and the counter with it).
    pub async fn pointers_and_runs(
        &self,
        services: &[String],
        known: &[Option<String>],
    ) -> Result<Vec<(Option<String>, Option<String>)>, OnlineError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let pipe_for = |pairs: &[(&String, &Option<String>)]| {
            let mut p = redis::pipe();
            for (s, g) in pairs {
                p.cmd("GET").arg(self.keys.current(s));
                p.cmd("HGET").arg(self.keys.generation_meta(s, g.as_deref().unwrap_or("none"))).arg("run_id");
            }
            p
        };
        let pairs: Vec<(&String, &Option<String>)> = services.iter().zip(known).collect();
        let mut flat: Vec<Option<String>> = Vec::with_capacity(2 * services.len());
        if self.cluster {
            // Each service's keys live in its own slot: one pipeline each.
            for pair in &pairs {
                let v: Vec<Option<String>> = pipe_for(std::slice::from_ref(pair)).query_async(&mut *c).await.map_err(|e| self.err(e))?;
                flat.extend(v);
            }
        } else {
            flat = pipe_for(&pairs).query_async(&mut *c).await.map_err(|e| self.err(e))?;
        }
        Ok(flat.chunks(2).zip(known).map(|(v, k)| (v[0].clone(), k.as_ref().and(v[1].clone()))).collect())
    }

    pub async fn generation_meta(&self, service: &str, generation: &str) -> Result<Option<GenerationMeta>, OnlineError> {
        let mut c = self.conn().await?;
        let key = self.keys.generation_meta(service, generation);
        let m: HashMap<String, String> = c.hgetall(&key).await.map_err(|e| self.err(e))?;
        if m.is_empty() {
            return Ok(None);
        }
        GenerationMeta::from_fields(m).map(Some).map_err(|reason| OnlineError::CorruptMeta { key, reason })
    }

    /// The live generation's metadata, if the service has one. The pointer can
    /// move, and the generation it named be retired, between the two reads:
    /// metadata missing under a pointer means "read the pointer again", not
    /// "nothing is live" (a few times; a pointer without metadata for good is None).
    pub async fn current(&self, service: &str) -> Result<Option<GenerationMeta>, OnlineError> {
        for _ in 0..3 {
            match self.current_generation(service).await? {
                None => return Ok(None),
                Some(g) => {
                    if let Some(m) = self.generation_meta(service, &g).await? {
                        return Ok(Some(m));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every generation of the service that may still hold rows.
    pub async fn generations(&self, service: &str) -> Result<Vec<String>, OnlineError> {
        let mut c = self.conn().await?;
        let mut v: Vec<String> = c.smembers(self.keys.generations(service)).await.map_err(|e| self.err(e))?;
        v.sort_by_key(|g| g.parse::<u64>().unwrap_or(u64::MAX));
        Ok(v)
    }

    /// Services that have anything online, found with SCAN.
    pub async fn services_online(&self) -> Result<Vec<String>, OnlineError> {
        let mut c = self.conn().await?;
        let found: Vec<String> = self.scan_all(&mut c, &self.keys.all_generation_sets()).await?;
        let mut names: Vec<String> = found.iter().filter_map(|k| self.keys.service_of_generation_set(k)).map(str::to_string).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Starts a SCAN over every node that holds keys (each primary of a cluster).
    async fn key_scan(&self, c: &mut Connection, pattern: &str, count: usize) -> Result<KeyScan, OnlineError> {
        Ok(KeyScan { nodes: self.nodes(c).await?, node: 0, cursor: 0, pattern: pattern.to_string(), count })
    }

    async fn scan_all(&self, c: &mut Connection, pattern: &str) -> Result<Vec<String>, OnlineError> {
        let mut scan = self.key_scan(c, pattern, 1000).await?;
        let mut out = Vec::new();
        while let Some(page) = scan.next(self, c).await? {
            out.extend(page);
        }
        Ok(out)
    }

    /// Makes `meta.generation` the live one, atomically, if `run_id` still holds
    /// the lease. Returns the generation it replaced.
    ///
    /// With replicas (a Sentinel set, or any primary with connected replicas),
    /// the flip first waits until every replica has the generation's rows: a
    /// failover right after the flip then cannot promote a replica whose
    /// pointer names rows it never received. When they do not confirm in time
    /// the run fails with the pointer untouched.
    pub async fn flip(&self, meta: &GenerationMeta) -> Result<Option<String>, OnlineError> {
        let mut c = self.conn().await?;
        let s = &meta.service;
        if !self.cluster {
            let (acked, connected) =
                crate::connect::replicas_acknowledge(&mut *c, &self.keys.genseq(s), self.replica_wait).await.map_err(|e| self.err(e))?;
            if acked < connected {
                return Err(OnlineError::unavailable(
                    &self.display_url,
                    format!(
                        "{acked} of {connected} replicas confirmed generation {} within {:?}; not flipped",
                        meta.generation, self.replica_wait
                    ),
                ));
            }
        }
        let script = Script::new(FLIP);
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.lease(s))
            .key(self.keys.current(s))
            .key(self.keys.generation_meta(s, &meta.generation))
            .key(self.keys.generations(s))
            .arg(&meta.run_id)
            .arg(&meta.generation);
        for (k, v) in meta.to_fields() {
            inv.arg(k).arg(v);
        }
        inv.invoke_async(&mut *c).await.map_err(|e| self.lease_or(e, s))
    }

    fn lease_or(&self, e: redis::RedisError, service: &str) -> OnlineError {
        if e.to_string().contains("DAEDA_LEASE_LOST") {
            OnlineError::LeaseLost { service: service.to_string() }
        } else {
            self.err(e)
        }
    }

    /// Records an incremental run on the live generation (see `ADVANCE`): its
    /// run id, as-of, source snapshot and time; the watermark moves forward only.
    pub async fn advance(
        &self,
        meta: &GenerationMeta,
        watermark_micros: i64,
        added_rows: u64,
        added_bytes: u64,
    ) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        let s = &meta.service;
        let _: i64 = Script::new(ADVANCE)
            .key(self.keys.lease(s))
            .key(self.keys.generation_meta(s, &meta.generation))
            .arg(&meta.run_id)
            .arg(watermark_micros)
            .arg(added_rows)
            .arg(added_bytes)
            .arg(&meta.materialized_at)
            .arg(&meta.as_of)
            .arg(&meta.source_snapshot)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.lease_or(e, s))?;
        Ok(())
    }

    /// Removes every key of a generation (rows, metadata, registration) without
    /// blocking Redis. Returns the number of row keys removed.
    pub async fn retire(&self, service: &str, generation: &str) -> Result<u64, OnlineError> {
        let mut c = self.conn().await?;
        let mut scan = self.key_scan(&mut c, &self.keys.row_pattern(service, generation), 2000).await?;
        let mut removed = 0u64;
        while let Some(page) = scan.next(self, &mut c).await? {
            if !page.is_empty() {
                let n: u64 = redis::cmd("UNLINK").arg(&page).query_async(&mut *c).await.map_err(|e| self.err(e))?;
                removed += n;
            }
        }
        let _: () = redis::pipe()
            .cmd("UNLINK")
            .arg(self.keys.generation_meta(service, generation))
            .ignore()
            .cmd("SREM")
            .arg(self.keys.generations(service))
            .arg(generation)
            .ignore()
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Removes what is left of a service that left the catalog: every generation,
    /// then its pointer, counter and registration.
    pub async fn drop_service(&self, service: &str) -> Result<u64, OnlineError> {
        let mut removed = 0;
        for g in self.generations(service).await? {
            removed += self.retire(service, &g).await?;
        }
        let mut c = self.conn().await?;
        let _: () = redis::cmd("UNLINK")
            .arg(self.keys.current(service))
            .arg(self.keys.genseq(service))
            .arg(self.keys.generations(service))
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Purges a service while `holder` holds its lease (renewed for
    /// `lease_ttl` after each generation; a lost lease stops the purge with
    /// [`OnlineError::LeaseLost`]): the pointer first, so lookups answer "no
    /// live generation" rather than missing rows, then every registered
    /// generation, then any row key of the service left outside them, then the
    /// registration. The generation counter is kept, so a generation id is
    /// never reused. Never blocks Redis (SCAN + UNLINK). Returns the row keys removed.
    pub async fn purge_service(&self, service: &str, holder: &str, lease_ttl: Duration) -> Result<u64, OnlineError> {
        let mut c = self.conn().await?;
        let _: () = redis::cmd("UNLINK").arg(self.keys.current(service)).query_async(&mut *c).await.map_err(|e| self.err(e))?;
        drop(c);
        let mut removed = 0;
        for g in self.generations(service).await? {
            removed += self.retire(service, &g).await?;
            if !self.renew_lease(service, holder, lease_ttl).await? {
                return Err(OnlineError::LeaseLost { service: service.to_string() });
            }
        }
        let mut c = self.conn().await?;
        let mut scan = self.key_scan(&mut c, &self.keys.service_row_pattern(service), 2000).await?;
        while let Some(page) = scan.next(self, &mut c).await? {
            if !page.is_empty() {
                let n: u64 = redis::cmd("UNLINK").arg(&page).query_async(&mut *c).await.map_err(|e| self.err(e))?;
                removed += n;
            }
        }
        let _: () = redis::cmd("UNLINK").arg(self.keys.generations(service)).query_async(&mut *c).await.map_err(|e| self.err(e))?;
        Ok(removed)
    }

    // ---- rows -----------------------------------------------------------

    /// Writes rows with one MSET on `conn`: one command and one reply for the
    /// batch instead of one per row, which is what Redis spends its CPU on.
    pub async fn put_rows(&self, conn: &mut Connection, rows: &RowBatch) -> Result<(), OnlineError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in rows.iter() {
            cmd.arg(k).arg(v);
        }
        cmd.query_async::<()>(&mut **conn).await.map_err(|e| self.err(e))
    }

    /// Writes each row unless the online one is as new or newer, in one pipeline,
    /// as long as `run_id` holds the service's lease: on one server every write
    /// checks it atomically; on a cluster (where the lease and a row live in
    /// different slots) it is checked before the batch. A lost lease is
    /// [`OnlineError::LeaseLost`].
    pub async fn put_rows_if_newer(
        &self,
        conn: &mut Connection,
        rows: &RowBatch,
        service: &str,
        run_id: &str,
    ) -> Result<ConditionalWrites, OnlineError> {
        let script = Script::new(PUT_IF_NEWER);
        // EVALSHA in a pipeline cannot fall back to EVAL, so make sure the script is loaded.
        let _: String = script.prepare_invoke().load_async(&mut **conn).await.map_err(|e| self.err(e))?;
        let lease = self.keys.lease(service);
        // A pipeline may only span one slot of a cluster: group the rows by slot.
        type Rows<'r> = Vec<(&'r [u8], &'r [u8])>;
        let mut groups: Vec<Rows<'_>> = Vec::new();
        if self.cluster {
            let holder: Option<String> = conn.get(&lease).await.map_err(|e| self.err(e))?;
            if holder.as_deref() != Some(run_id) {
                return Err(OnlineError::LeaseLost { service: service.to_string() });
            }
            let mut by_slot: HashMap<redis::cluster_routing::Slot, Rows<'_>> = HashMap::new();
            for (k, v) in rows.iter() {
                by_slot.entry(redis::cluster_routing::Slot::for_key(k)).or_default().push((k, v));
            }
            groups.extend(by_slot.into_values());
        } else {
            groups.push(rows.iter().collect());
        }
        let mut results: Vec<i64> = Vec::with_capacity(rows.len());
        for group in groups {
            let mut p = redis::pipe();
            for (k, v) in group {
                let cmd = p.cmd("EVALSHA").arg(script.get_hash());
                if self.cluster {
                    cmd.arg(1).arg(k).arg(v);
                } else {
                    cmd.arg(2).arg(k).arg(&lease).arg(v).arg(run_id);
                }
            }
            let r: Vec<i64> = p.query_async(&mut **conn).await.map_err(|e| self.err(e))?;
            results.extend(r);
        }
        let mut w = ConditionalWrites::default();
        for r in results {
            match r {
                -1 => return Err(OnlineError::LeaseLost { service: service.to_string() }),
                1 => w.inserted += 1,
                2 => w.replaced += 1,
                _ => w.kept += 1,
            }
        }
        Ok(w)
    }

    /// The rows under `keys`, in order, in one round trip.
    pub async fn get_rows(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        redis::cmd("MGET").arg(keys).query_async(&mut *c).await.map_err(|e| self.err(e))
    }

    /// Counts the row keys of a generation with SCAN, holding one page at a time.
    pub async fn count_rows(&self, service: &str, generation: &str) -> Result<u64, OnlineError> {
        let mut c = self.conn().await?;
        let mut scan = self.key_scan(&mut c, &self.keys.row_pattern(service, generation), 5000).await?;
        let mut n = 0u64;
        while let Some(page) = scan.next(self, &mut c).await? {
            n += page.len() as u64;
        }
        Ok(n)
    }
}

/// `redis://user:secret@host/0` -> `redis://user:***@host/0`, for each URL of
/// a seed list.
pub fn redact(url: &str) -> String {
    let url = match url.split_once("sentinel_password=") {
        Some((head, tail)) => {
            let rest = tail.find('&').map(|i| &tail[i..]).unwrap_or("");
            format!("{head}sentinel_password=***{rest}")
        }
        None => url.to_string(),
    };
    url.split(',').map(|u| redact_one(u.trim())).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    let user = auth.split_once(':').map(|(u, _)| u).unwrap_or("");
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(super::redact("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(super::redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(super::redact("redis://:a@h1:1,redis://:b@h2:2"), "redis://:***@h1:1,redis://:***@h2:2");
        assert_eq!(
            super::redact("redis+sentinel://u:p@s1:1,s2:2/m?sentinel_password=q&sentinel_username=v"),
            "redis+sentinel://u:***@s1:1,s2:2/m?sentinel_password=***&sentinel_username=v"
        );
    }
}
