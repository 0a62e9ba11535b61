//! The hot-entity cache: decoded rows kept in process, consistent with Redis
//! through server-assisted client-side caching (RESP3 `CLIENT TRACKING` in
//! `BCAST` mode, see [`tracking`]).
//!
//! Entries are keyed by the full Redis row key, which names the generation, so
//! a flip needs no invalidation of its own: the new generation's keys were
//! never cached. Each entry also remembers the row schema it was decoded with
//! and is only served to a lookup decoding with that same schema.
//!
//! Invariants:
//! - the cache is used only while its tracking connection is up (`usable`);
//!   losing it (Redis restart, failover, `CLIENT KILL`, a failed health check)
//!   empties the cache and bypasses it until tracking is on again, since
//!   invalidations may have been lost meanwhile;
//! - an invalidation (or a flush) removes the key and bumps its shard's
//!   sequence number under the shard's lock; a lookup that missed records that
//!   number *before* its MGET is sent and inserts the row it read only if the
//!   number is unchanged. A write that lands after the MGET read the key has its
//!   invalidation processed after the number was recorded: either before the
//!   insert (refused) or after it (removes it). No stale row is ever inserted.
//! - bytes are bounded per shard (`max_bytes / SHARDS` each), so the total is
//!   never over `max_bytes`; least recently used entries go first.

pub mod tracking;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;

use crate::codec::{Array, DecodedRow, RowSchema, Value};
use crate::keys::Keys;

/// Independently locked parts of the cache: fewer lookups wait on one lock,
/// and an invalidation only refuses the inserts racing it in its own shard.
const SHARDS: usize = 64;

/// Bookkeeping per entry beyond the key and row (LRU node, hash slot, Arcs).
const ENTRY_OVERHEAD: usize = 96;

/// Counters for `/metrics`; every field only grows except `bytes`, `entries`
/// and `tracking`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Entities answered from the cache.
    pub hits: AtomicU64,
    /// Entities read from Redis while the cache was usable.
    pub misses: AtomicU64,
    /// Keys named by invalidation messages (row keys and pointers).
    pub invalidations: AtomicU64,
    /// Entries dropped to stay within the byte bound.
    pub evictions: AtomicU64,
    /// Rows read on a miss but not inserted: an invalidation raced the read.
    pub refused: AtomicU64,
    /// Times the whole cache was emptied (tracking lost, FLUSHALL).
    pub flushes: AtomicU64,
    /// Tracking connections established (the first one included).
    pub connects: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
    /// Whether the tracking connection is up and the cache is used.
    pub tracking: AtomicBool,
}

struct Entry {
    schema: Arc<RowSchema>,
    row: Arc<DecodedRow>,
    size: usize,
}

struct Shard {
    map: LruCache<String, Entry>,
    bytes: usize,
    /// Bumped by every invalidation of a key of this shard and by flushes.
    seq: u64,
}

/// What the cache knows of one requested key.
#[derive(Debug)]
pub enum Slot {
    Hit(Arc<DecodedRow>),
    /// Not cached; the row read for it may be inserted with this ticket.
    Miss(u64),
}

/// Called with a service name when its live-generation pointer changed, with
/// None when any may have (tracking lost or regained).
type PointerHook = Box<dyn Fn(Option<&str>) + Send + Sync>;

pub struct RowCache {
    shards: Box<[Mutex<Shard>]>,
    shard_bytes: usize,
    max_bytes: usize,
    hasher: std::collections::hash_map::RandomState,
    usable: AtomicBool,
    stats: CacheStats,
    keys: Keys,
    on_pointer: OnceLock<PointerHook>,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache").field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

impl RowCache {
    /// A cache of at most `max_bytes` for the rows of `keys`' namespace; None when 0 (off).
    /// It is not used until [`tracking::spawn`] has its connection up.
    pub fn new(max_bytes: usize, keys: Keys) -> Option<Arc<RowCache>> {
        if max_bytes == 0 {
            return None;
        }
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { map: LruCache::unbounded(), bytes: 0, seq: 0 }))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Some(Arc::new(RowCache {
            shards,
            shard_bytes: max_bytes / SHARDS,
            max_bytes,
            hasher: Default::default(),
            usable: AtomicBool::new(false),
            stats: CacheStats::default(),
            keys,
            on_pointer: OnceLock::new(),
        }))
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Whether lookups use the cache now (its tracking connection is up).
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// Registers what to do when a service's `current` pointer is written (a
    /// flip): the gateway re-reads it at once instead of at its next refresh.
    pub fn on_pointer_change(&self, hook: impl Fn(Option<&str>) + Send + Sync + 'static) {
        let _ = self.on_pointer.set(Box::new(hook));
    }

    fn shard_of(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard lock leaves at worst an entry too many
        // counted; the data is still consistent (no insert happens half-way).
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `keys` up for a lookup decoding with `schema`; None when the cache
    /// is not usable now (every key is then read from Redis and nothing is inserted).
    pub fn probe(&self, keys: &[String], schema: &Arc<RowSchema>) -> Option<Vec<Slot>> {
        if !self.is_usable() {
            return None;
        }
        let mut out = Vec::with_capacity(keys.len());
        let (mut hits, mut misses) = (0, 0);
        for key in keys {
            let mut shard = Self::lock(self.shard_of(key.as_bytes()));
            match shard.map.get(key.as_str()) {
                Some(e) if Arc::ptr_eq(&e.schema, schema) => {
                    hits += 1;
                    out.push(Slot::Hit(e.row.clone()));
                }
                _ => {
                    misses += 1;
                    out.push(Slot::Miss(shard.seq));
                }
            }
        }
        self.stats.hits.fetch_add(hits, Ordering::Relaxed);
        self.stats.misses.fetch_add(misses, Ordering::Relaxed);
        Some(out)
    }

    /// Caches `row`, read from Redis under `key` after [`RowCache::probe`] gave
    /// `ticket`, unless an invalidation or flush of its shard came in between.
    pub fn insert(&self, key: &str, ticket: u64, schema: &Arc<RowSchema>, row: &Arc<DecodedRow>) {
        let size = key.len() + ENTRY_OVERHEAD + row_bytes(row);
        if size > self.shard_bytes {
            return;
        }
        let mut shard = Self::lock(self.shard_of(key.as_bytes()));
        if shard.seq != ticket || !self.is_usable() {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (mut gone, mut freed, mut evicted) = (0u64, 0usize, 0u64);
        if let Some(old) = shard.map.put(key.to_string(), Entry { schema: schema.clone(), row: row.clone(), size }) {
            gone += 1;
            freed += old.size;
        }
        shard.bytes = shard.bytes + size - freed;
        while shard.bytes > self.shard_bytes {
            let Some((_, e)) = shard.map.pop_lru() else { break };
            shard.bytes -= e.size;
            freed += e.size;
            evicted += 1;
        }
        // Under the shard's lock, as every change of the totals, so they never
        // dip below what the shards hold (a scrape never reads a wrapped value).
        self.stats.entries.fetch_add(1, Ordering::Relaxed);
        self.stats.entries.fetch_sub(gone + evicted, Ordering::Relaxed);
        self.stats.bytes.fetch_add(size as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(freed as u64, Ordering::Relaxed);
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Redis says `key` changed (or is gone): drop it, refuse racing inserts.
    pub fn invalidate(&self, key: &[u8]) {
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        let removed = {
            let mut shard = Self::lock(self.shard_of(key));
            shard.seq += 1;
            let removed = std::str::from_utf8(key).ok().and_then(|k| shard.map.pop(k));
            if let Some(e) = &removed {
                shard.bytes -= e.size;
                self.stats.entries.fetch_sub(1, Ordering::Relaxed);
                self.stats.bytes.fetch_sub(e.size as u64, Ordering::Relaxed);
            }
            removed.is_some()
        };
        if removed {
            return;
        }
        if let Some(service) = std::str::from_utf8(key).ok().and_then(|k| self.keys.service_of_current(k)) {
            if let Some(hook) = self.on_pointer.get() {
                hook(Some(service));
            }
        }
    }

    /// Empties the cache and refuses every insert racing it.
    pub fn flush(&self) {
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        for m in self.shards.iter() {
            let mut shard = Self::lock(m);
            shard.seq += 1;
            let (n, bytes) = (shard.map.len() as u64, shard.bytes as u64);
            shard.map.clear();
            shard.bytes = 0;
            self.stats.entries.fetch_sub(n, Ordering::Relaxed);
            self.stats.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Tracking is lost: stop using the cache, then empty it.
    /// Idempotent: the cache was emptied when it stopped being used, and
    /// nothing is inserted while it is not.
    pub(crate) fn lost(&self) {
        if !self.usable.swap(false, Ordering::AcqRel) {
            return;
        }
        self.stats.tracking.store(false, Ordering::Relaxed);
        self.flush();
        // Pointer invalidations may have been lost as well.
        if let Some(hook) = self.on_pointer.get() {
            hook(None);
        }
    }

    /// Tracking is on (again): start from empty and use the cache.
    pub(crate) fn tracked(&self) {
        self.flush();
        if let Some(hook) = self.on_pointer.get() {
            hook(None);
        }
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats.tracking.store(true, Ordering::Relaxed);
        self.usable.store(true, Ordering::Release);
    }
}

/// About how many bytes a decoded row holds, its heap included.
fn row_bytes(row: &DecodedRow) -> usize {
    let heap: usize = row
        .values
        .iter()
        .map(|v| match v {
            Value::Str(s) => s.capacity(),
            Value::Array(Array::Int(x)) => x.len() * 4,
            Value::Array(Array::Float(x)) => x.len() * 4,
            Value::Array(Array::BigInt(x)) => x.len() * 8,
            Value::Array(Array::Double(x)) => x.len() * 8,
            _ => 0,
        })
        .sum();
    std::mem::size_of::<DecodedRow>() + row.values.capacity() * std::mem::size_of::<Value>() + heap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: i64) -> Arc<DecodedRow> {
        Arc::new(DecodedRow { event_ts_micros: v, values: vec![Value::BigInt(v), Value::Str("x".repeat(40))] })
    }

    fn schema() -> Arc<RowSchema> {
        Arc::new(RowSchema { names: vec![], types: vec![] })
    }

    fn cache(bytes: usize) -> Arc<RowCache> {
        let c = RowCache::new(bytes, Keys::default()).unwrap();
        c.tracked();
        c
    }

    fn ticket(c: &RowCache, key: &str, s: &Arc<RowSchema>) -> u64 {
        match &c.probe(&[key.to_string()], s).unwrap()[0] {
            Slot::Miss(t) => *t,
            Slot::Hit(_) => panic!("{key} is cached"),
        }
    }

    fn cached(c: &RowCache, key: &str, s: &Arc<RowSchema>) -> Option<i64> {
        match &c.probe(&[key.to_string()], s).unwrap()[0] {
            Slot::Hit(r) => Some(r.event_ts_micros),
            Slot::Miss(_) => None,
        }
    }

    #[test]
    fn an_invalidation_between_the_read_and_the_insert_refuses_the_insert() {
        let (c, s) = (cache(1 << 20), schema());
        let t = ticket(&c, "k", &s);
        c.invalidate(b"k");
        c.insert("k", t, &s, &row(1));
        assert_eq!(cached(&c, "k", &s), None);
        assert_eq!(c.stats().refused.load(Ordering::Relaxed), 1);
        let t = ticket(&c, "k", &s);
        c.insert("k", t, &s, &row(2));
        assert_eq!(cached(&c, "k", &s), Some(2));
        c.invalidate(b"k");
        assert_eq!(cached(&c, "k", &s), None);
    }

    #[test]
    fn a_flush_or_lost_tracking_refuses_inserts_and_bypasses_the_cache() {
        let (c, s) = (cache(1 << 20), schema());
        let t = ticket(&c, "k", &s);
        c.lost();
        assert!(c.probe(&["k".into()], &s).is_none(), "bypassed while tracking is down");
        c.insert("k", t, &s, &row(1));
        c.tracked();
        assert_eq!(cached(&c, "k", &s), None);
        let t = ticket(&c, "k", &s);
        c.insert("k", t, &s, &row(1));
        assert_eq!(cached(&c, "k", &s), Some(1));
        c.lost();
        c.tracked();
        assert_eq!(cached(&c, "k", &s), None, "reconnecting starts empty");
        assert_eq!(c.stats().entries.load(Ordering::Relaxed), 0);
        assert_eq!(c.stats().bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn another_schema_is_a_miss_and_bytes_stay_within_the_bound() {
        let (c, s) = (cache(64 * 1024), schema());
        let t = ticket(&c, "k", &s);
        c.insert("k", t, &s, &row(1));
        assert_eq!(cached(&c, "k", &schema()), None, "decoded with another schema");
        for i in 0..10_000 {
            let k = format!("key-{i}");
            let t = ticket(&c, &k, &s);
            c.insert(&k, t, &s, &row(i));
            assert!(c.stats().bytes.load(Ordering::Relaxed) <= 64 * 1024);
        }
        let st = c.stats();
        assert!(st.evictions.load(Ordering::Relaxed) > 0);
        let real: usize = c.shards.iter().map(|m| RowCache::lock(m).bytes).sum();
        assert_eq!(st.bytes.load(Ordering::Relaxed), real as u64);
        let n: usize = c.shards.iter().map(|m| RowCache::lock(m).map.len()).sum();
        assert_eq!(st.entries.load(Ordering::Relaxed), n as u64);
        assert!(RowCache::new(0, Keys::default()).is_none(), "0 is off");
    }

    #[test]
    fn the_cache_is_refused_where_invalidations_cannot_keep_it_consistent() {
        use crate::{OnlineStore, StoreSettings};
        let single = StoreSettings::default();
        let replicas = StoreSettings { read_from_replicas: true, ..StoreSettings::default() };
        let on = |url: &str, s: &StoreSettings| OnlineStore::connect(url, s).unwrap().cache_unsupported();
        assert_eq!(on("redis://127.0.0.1:1/0", &single), None);
        assert_eq!(on("redis+sentinel://127.0.0.1:1/main", &single), None, "tracking follows the primary");
        assert!(on("redis://127.0.0.1:1,redis://127.0.0.1:2", &single).is_some_and(|w| w.contains("Cluster")));
        assert!(on("redis+sentinel://127.0.0.1:1/main", &replicas).is_some_and(|w| w.contains("replicas")));
        let store = OnlineStore::connect("redis://127.0.0.1:1,redis://127.0.0.1:2", &single).unwrap();
        let cache = RowCache::new(1 << 20, Keys::default()).unwrap();
        assert!(tracking::spawn(store, cache.clone()).is_err());
        assert!(!cache.is_usable());
    }

    #[test]
    fn a_pointer_invalidation_calls_the_hook_with_its_service() {
        let c = cache(1 << 20);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        c.on_pointer_change(move |s| s2.lock().unwrap().push(s.map(str::to_string)));
        c.invalidate(Keys::default().current("user_features").as_bytes());
        c.invalidate(Keys::default().lease("user_features").as_bytes());
        assert_eq!(*seen.lock().unwrap(), vec![Some("user_features".to_string())]);
    }
}
