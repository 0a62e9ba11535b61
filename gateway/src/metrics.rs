//! Prometheus text-format metrics: requests and latency by route and status,
//! errors by code, Redis errors, pool usage, entities served by status,
//! connections, and for operators the freshness of each service's live
//! generation (read from its metadata in Redis at scrape time) and the build.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use daeda_online::GenerationMeta;

const BUCKETS: [f64; 13] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn record(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        self.count += 1;
        self.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
    }
}

/// Request count and latency per (route, status).
type ByRoute = BTreeMap<(&'static str, u16), (u64, Histogram)>;

/// What happened to a connection outside of its requests.
#[derive(Debug, Clone, Copy)]
pub enum ConnEvent {
    /// Past `max_connections`: answered 503 and closed.
    Refused,
    /// A request head did not arrive within `header_read_timeout`.
    HeaderTimeout,
    /// No request for `idle_timeout`.
    IdleClosed,
    /// `accept` failed (e.g. out of file descriptors).
    AcceptFailed,
}

impl ConnEvent {
    const ALL: [ConnEvent; 4] =
        [ConnEvent::Refused, ConnEvent::HeaderTimeout, ConnEvent::IdleClosed, ConnEvent::AcceptFailed];

    fn label(self) -> &'static str {
        match self {
            ConnEvent::Refused => "refused",
            ConnEvent::HeaderTimeout => "header_timeout",
            ConnEvent::IdleClosed => "idle_closed",
            ConnEvent::AcceptFailed => "accept_failed",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    connections: [AtomicU64; 4],
    requests: Mutex<ByRoute>,
    /// Failed requests by route and error code (`ApiError::code`).
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    redis: Mutex<Histogram>,
    redis_errors: AtomicU64,
    entities_ok: AtomicU64,
    entities_missing: AtomicU64,
    entities_stale: AtomicU64,
    sql_denied: AtomicU64,
    sql_disagreements: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &'static str, status: u16, took: Duration) {
        let mut m = self.requests.lock().expect("metrics lock");
        let (n, h) = m.entry((route, status)).or_default();
        *n += 1;
        h.record(took);
    }

    pub fn connection_event(&self, e: ConnEvent) {
        self.connections[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request that failed, by its error code.
    pub fn error(&self, route: &'static str, code: &'static str) {
        *self.errors.lock().expect("metrics lock").entry((route, code)).or_default() += 1;
    }

    /// Time of one lookup's Redis round trip and row decoding.
    pub fn redis_latency(&self, took: Duration) {
        self.redis.lock().expect("metrics lock").record(took);
    }

    pub fn redis_error(&self) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn entities(&self, ok: u64, missing: u64, stale: u64) {
        self.entities_ok.fetch_add(ok, Ordering::Relaxed);
        self.entities_missing.fetch_add(missing, Ordering::Relaxed);
        self.entities_stale.fetch_add(stale, Ordering::Relaxed);
    }

    /// A query the policy refused.
    pub fn sql_denied(&self) {
        self.sql_denied.fetch_add(1, Ordering::Relaxed);
    }

    /// A query the policy approved and DuckDB's parser read differently.
    pub fn sql_disagreement(&self) {
        self.sql_disagreements.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, g: &Gauges<'_>) -> String {
        let pool = g.pool;
        let mut out = String::new();
        let m = self.requests.lock().expect("metrics lock");
        out.push_str(
            "# HELP daeda_requests_total HTTP requests by route and status.\n# TYPE daeda_requests_total counter\n",
        );
        for ((route, status), (n, _)) in m.iter() {
            let _ = writeln!(out, "daeda_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str(
            "# HELP daeda_request_duration_seconds Request latency by route and status.\n# TYPE daeda_request_duration_seconds histogram\n",
        );
        for ((route, status), (_, h)) in m.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "daeda_request_duration_seconds_bucket{{route=\"{route}\",status=\"{status}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "daeda_request_duration_seconds_bucket{{route=\"{route}\",status=\"{status}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ =
                writeln!(out, "daeda_request_duration_seconds_sum{{route=\"{route}\",status=\"{status}\"}} {}", h.sum);
            let _ = writeln!(
                out,
                "daeda_request_duration_seconds_count{{route=\"{route}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        drop(m);
        out.push_str(
            "# HELP daeda_request_errors_total Failed requests by route and error code.\n# TYPE daeda_request_errors_total counter\n",
        );
        for ((route, code), n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "daeda_request_errors_total{{route=\"{route}\",code=\"{code}\"}} {n}");
        }
        let h = self.redis.lock().expect("metrics lock");
        out.push_str("# HELP daeda_redis_lookup_seconds Redis round trip and row decoding of a lookup.\n# TYPE daeda_redis_lookup_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "daeda_redis_lookup_seconds_bucket{{le=\"{b}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "daeda_redis_lookup_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "daeda_redis_lookup_seconds_sum {}\ndaeda_redis_lookup_seconds_count {}", h.sum, h.count);
        drop(h);
        let _ = writeln!(out, "# HELP daeda_redis_errors_total Redis commands that failed.\n# TYPE daeda_redis_errors_total counter\ndaeda_redis_errors_total {}", self.redis_errors.load(Ordering::Relaxed));
        out.push_str("# HELP daeda_entities_served_total Entities answered by status.\n# TYPE daeda_entities_served_total counter\n");
        for (status, v) in
            [("ok", &self.entities_ok), ("missing", &self.entities_missing), ("stale", &self.entities_stale)]
        {
            let _ = writeln!(out, "daeda_entities_served_total{{status=\"{status}\"}} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP daeda_sql_policy_denied_total SQL queries the policy refused.\n# TYPE daeda_sql_policy_denied_total counter\ndaeda_sql_policy_denied_total {}", self.sql_denied.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP daeda_sql_parser_disagreements_total SQL queries the policy approved but DuckDB's parser read differently (denied).\n# TYPE daeda_sql_parser_disagreements_total counter\ndaeda_sql_parser_disagreements_total {}", self.sql_disagreements.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP daeda_redis_pool_connections Pooled Redis connections.\n# TYPE daeda_redis_pool_connections gauge\ndaeda_redis_pool_connections{{state=\"open\"}} {}\ndaeda_redis_pool_connections{{state=\"idle\"}} {}", pool.0, pool.1);
        let _ = writeln!(
            out,
            "# HELP daeda_connections_open Client connections open now.\n# TYPE daeda_connections_open gauge\ndaeda_connections_open {}",
            g.connections_open
        );
        let _ = writeln!(out, "# HELP daeda_connections_max Client connections allowed at once (max_connections).\n# TYPE daeda_connections_max gauge\ndaeda_connections_max {}", g.max_connections);
        out.push_str("# HELP daeda_connection_events_total Connections refused past max_connections, closed for a slow request head or for idleness, and failed accepts.\n# TYPE daeda_connection_events_total counter\n");
        for e in ConnEvent::ALL {
            let _ = writeln!(
                out,
                "daeda_connection_events_total{{event=\"{}\"}} {}",
                e.label(),
                self.connections[e as usize].load(Ordering::Relaxed)
            );
        }
        render_freshness(&mut out, g);
        let _ = writeln!(
            out,
            "# HELP daeda_build_info The running build.\n# TYPE daeda_build_info gauge\ndaeda_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// What `/metrics` reads from the rest of the gateway at scrape time.
pub struct Gauges<'a> {
    /// Pooled Redis connections: open, idle.
    pub pool: (usize, usize),
    pub connections_open: usize,
    pub max_connections: usize,
    /// Each served service and its live generation, if it has one.
    pub live: Vec<(&'a str, Option<Arc<GenerationMeta>>)>,
    pub now: DateTime<Utc>,
}

/// Per service with a live generation: how old it is, how old its data bound
/// is, how many rows it holds. A service with nothing live has no series
/// (alert on it with `absent()`).
fn render_freshness(out: &mut String, g: &Gauges<'_>) {
    /// A gauge per service: its name, help and value from the live generation's metadata.
    type Series = (&'static str, &'static str, fn(&GenerationMeta, DateTime<Utc>) -> Option<f64>);
    fn since(t: &str, now: DateTime<Utc>) -> Option<f64> {
        DateTime::parse_from_rfc3339(t).ok().map(|t| (now - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
    }
    const SERIES: [Series; 4] = [
        (
            "daeda_live_generation_age_seconds",
            "Seconds since the live generation was materialized (its materialized_at: the flip of a full run, or the last incremental run).",
            |m, now| since(&m.materialized_at, now),
        ),
        (
            "daeda_live_generation_as_of_age_seconds",
            "Seconds since the live generation's as-of, the event-time bound of the run that wrote it: how old its newest possible feature row is.",
            |m, now| since(&m.as_of, now),
        ),
        ("daeda_live_generation_rows", "Entities in the live generation.", |m, _| Some(m.row_count as f64)),
        (
            "daeda_seconds_since_last_materialization",
            "Seconds since the last successful materialization (full or incremental) of the service, from the live generation's metadata in Redis.",
            |m, now| since(&m.materialized_at, now),
        ),
    ];
    let live: Vec<_> = g.live.iter().filter_map(|(s, m)| m.as_ref().map(|m| (*s, m))).collect();
    for (name, help, value) in SERIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (service, meta) in &live {
            if let Some(v) = value(meta, g.now) {
                let _ = writeln!(out, "{name}{{service=\"{service}\"}} {v}");
            }
        }
    }
}

/// The SQL worker's state: up (1) or restarting (0), and restarts so far.
pub fn render_sql_worker(up: bool, restarts: u64) -> String {
    format!(
        "# HELP daeda_sql_worker_up Whether the SQL worker process is connected.\n# TYPE daeda_sql_worker_up gauge\ndaeda_sql_worker_up {}\n\
         # HELP daeda_sql_worker_restarts_total SQL worker processes started after the first (deaths, kills).\n# TYPE daeda_sql_worker_restarts_total counter\ndaeda_sql_worker_restarts_total {restarts}\n",
        u8::from(up)
    )
}

/// The row cache's counters (see `daeda_online::cache::CacheStats`).
pub fn render_cache(s: &daeda_online::cache::CacheStats, max_bytes: usize) -> String {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    for (name, help, v) in [
        ("hits", "Entities answered from the row cache.", n(&s.hits)),
        ("misses", "Entities read from Redis while the row cache was in use.", n(&s.misses)),
        ("invalidations", "Keys named by Redis invalidation messages.", n(&s.invalidations)),
        ("evictions", "Rows dropped from the row cache to stay within its bound.", n(&s.evictions)),
        ("refused_inserts", "Rows read on a miss and not cached: an invalidation raced the read.", n(&s.refused)),
        ("flushes", "Times the row cache was emptied (tracking lost, FLUSHALL).", n(&s.flushes)),
        ("tracking_connects", "Row cache tracking connections established.", n(&s.connects)),
    ] {
        let _ = writeln!(out, "# HELP daeda_cache_{name}_total {help}\n# TYPE daeda_cache_{name}_total counter\ndaeda_cache_{name}_total {v}");
    }
    for (name, help, v) in [
        ("bytes", "Bytes held by the row cache.", n(&s.bytes)),
        ("max_bytes", "The row cache's bound (cache_max_bytes).", max_bytes as u64),
        ("entries", "Rows held by the row cache.", n(&s.entries)),
        (
            "tracking_up",
            "Whether the row cache's tracking connection is up (the cache is used only then).",
            u64::from(s.tracking.load(Ordering::Relaxed)),
        ),
    ] {
        let _ =
            writeln!(out, "# HELP daeda_cache_{name} {help}\n# TYPE daeda_cache_{name} gauge\ndaeda_cache_{name} {v}");
    }
    out
}
