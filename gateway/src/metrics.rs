//! Prometheus metrics (`prometheus-client`, text format 0.0.4): requests and
//! latency by route and status, errors by code, Redis errors, pool usage,
//! entities served by status, connections, and for operators the freshness of
//! each service's live generation (read from its metadata in Redis at scrape
//! time) and the build.
//!
//! Counters and histograms live in one registry for the process; values that
//! are read at scrape time (pool, connections, freshness, the SQL worker) are
//! encoded from a registry built for that scrape. Names below are registered
//! without `_total` (the encoder appends it to counters) and HELP without its
//! final period (the registry appends it).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use daeda_online::GenerationMeta;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const BUCKETS: [f64; 13] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Event {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

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

/// The process's counters and histograms. Written through [`crate::events`]
/// (one place per outcome logs it and counts it); read by [`Metrics::render`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteStatus, Histogram>,
    /// Failed requests by route and error code (`ApiError::code`).
    errors: Family<RouteCode, Counter>,
    redis: Histogram,
    redis_errors: Counter,
    entities: Family<Status, Counter>,
    sql_denied: Counter,
    sql_disagreements: Counter,
    connections: Family<Event, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(histogram),
            errors: Family::default(),
            redis: histogram(),
            redis_errors: Counter::default(),
            entities: Family::default(),
            sql_denied: Counter::default(),
            sql_disagreements: Counter::default(),
            connections: Family::default(),
        };
        // Series that exist from the start, at 0, so a rate() has a baseline.
        for status in ["ok", "missing", "stale"] {
            let _ = m.entities.get_or_create(&Status { status });
        }
        for e in ConnEvent::ALL {
            let _ = m.connections.get_or_create(&Event { event: e.label() });
        }
        let mut r = m.registry;
        r.register("daeda_requests", "HTTP requests by route and status", m.requests.clone());
        r.register("daeda_request_duration_seconds", "Request latency by route and status", m.latency.clone());
        r.register("daeda_request_errors", "Failed requests by route and error code", m.errors.clone());
        r.register("daeda_redis_lookup_seconds", "Redis round trip and row decoding of a lookup", m.redis.clone());
        r.register("daeda_redis_errors", "Redis commands that failed", m.redis_errors.clone());
        r.register("daeda_entities_served", "Entities answered by status", m.entities.clone());
        r.register("daeda_sql_policy_denied", "SQL queries the policy refused", m.sql_denied.clone());
        r.register(
            "daeda_sql_parser_disagreements",
            "SQL queries the policy approved but DuckDB's parser read differently (denied)",
            m.sql_disagreements.clone(),
        );
        r.register(
            "daeda_connection_events",
            "Connections refused past max_connections, closed for a slow request head or for idleness, \
             and failed accepts",
            m.connections.clone(),
        );
        r.register("daeda_build", "The running build", Info::new([("version", env!("CARGO_PKG_VERSION"))]));
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    pub(crate) fn observe(&self, route: &'static str, status: u16, took: Duration) {
        let labels = RouteStatus { route, status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub(crate) fn connection_event(&self, e: ConnEvent) {
        self.connections.get_or_create(&Event { event: e.label() }).inc();
    }

    /// A request that failed, by its error code.
    pub(crate) fn error(&self, route: &'static str, code: &'static str) {
        self.errors.get_or_create(&RouteCode { route, code }).inc();
    }

    /// Time of one lookup's Redis round trip and row decoding.
    pub(crate) fn redis_latency(&self, took: Duration) {
        self.redis.observe(took.as_secs_f64());
    }

    pub(crate) fn redis_error(&self) {
        self.redis_errors.inc();
    }

    pub(crate) fn entities(&self, ok: u64, missing: u64, stale: u64) {
        for (status, n) in [("ok", ok), ("missing", missing), ("stale", stale)] {
            self.entities.get_or_create(&Status { status }).inc_by(n);
        }
    }

    /// A query the policy refused.
    pub(crate) fn sql_denied(&self) {
        self.sql_denied.inc();
    }

    /// A query the policy approved and DuckDB's parser read differently.
    pub(crate) fn sql_disagreement(&self) {
        self.sql_disagreements.inc();
    }

    /// The whole exposition: the process's series, then those read now.
    pub fn render(&self, g: &Gauges<'_>) -> String {
        let mut out = String::new();
        let now = scrape_registry(g);
        // Writing to a String cannot fail, and every value here encodes.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &now);
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
    /// The SQL plane, when on.
    pub sql: Option<SqlGauges>,
    /// The row cache, when on: its counters and its bound in bytes.
    pub cache: Option<(&'a daeda_online::cache::CacheStats, usize)>,
}

/// The SQL plane's state at scrape time.
pub struct SqlGauges {
    /// Whether the worker process is connected.
    pub worker_up: bool,
    /// Workers started after the first.
    pub worker_restarts: u64,
    /// Queries holding one of the `sql_concurrency` slots: running in the
    /// worker, including those whose client already hung up.
    pub queries_running: usize,
}

/// The series read at scrape time.
fn scrape_registry(g: &Gauges<'_>) -> Registry {
    let mut r = Registry::default();
    let pool: Family<State, prometheus_client::metrics::gauge::Gauge> = Family::default();
    pool.get_or_create(&State { state: "open" }).set(g.pool.0 as i64);
    pool.get_or_create(&State { state: "idle" }).set(g.pool.1 as i64);
    r.register("daeda_redis_pool_connections", "Pooled Redis connections", pool);
    r.register("daeda_connections_open", "Client connections open now", ConstGauge::new(g.connections_open as i64));
    r.register(
        "daeda_connections_max",
        "Client connections allowed at once (max_connections)",
        ConstGauge::new(g.max_connections as i64),
    );
    register_freshness(&mut r, g);
    if let Some(sql) = &g.sql {
        r.register(
            "daeda_sql_worker_up",
            "Whether the SQL worker process is connected",
            ConstGauge::new(i64::from(sql.worker_up)),
        );
        r.register(
            "daeda_sql_worker_restarts",
            "SQL worker processes started after the first (deaths, kills)",
            ConstCounter::new(sql.worker_restarts),
        );
        r.register(
            "daeda_sql_queries_running",
            "SQL queries holding a slot now (sql_concurrency in all), hung-up ones included",
            ConstGauge::new(sql.queries_running as i64),
        );
    }
    if let Some((stats, max_bytes)) = g.cache {
        register_cache(&mut r, stats, max_bytes);
    }
    r
}

/// The row cache's counters and gauges (see `daeda_online::cache::CacheStats`).
fn register_cache(r: &mut Registry, s: &daeda_online::cache::CacheStats, max_bytes: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, help, v) in [
        ("hits", "Entities answered from the row cache", &s.hits),
        ("misses", "Entities read from Redis while the row cache was in use", &s.misses),
        ("invalidations", "Keys named by Redis invalidation messages", &s.invalidations),
        ("evictions", "Rows dropped from the row cache to stay within its bound", &s.evictions),
        ("refused_inserts", "Rows read on a miss and not cached: an invalidation raced the read", &s.refused),
        ("flushes", "Times the row cache was emptied (tracking lost, FLUSHALL)", &s.flushes),
        ("tracking_connects", "Row cache tracking connections established", &s.connects),
    ] {
        r.register(format!("daeda_cache_{name}"), help, ConstCounter::new(v.load(Relaxed)));
    }
    for (name, help, v) in [
        ("bytes", "Bytes held by the row cache", s.bytes.load(Relaxed)),
        ("max_bytes", "The row cache's bound (cache_max_bytes)", max_bytes as u64),
        ("entries", "Rows held by the row cache", s.entries.load(Relaxed)),
        (
            "tracking_up",
            "Whether the row cache's tracking connection is up (the cache is used only then)",
            u64::from(s.tracking.load(Relaxed)),
        ),
    ] {
        r.register(format!("daeda_cache_{name}"), help, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)));
    }
}

/// Per service with a live generation: how old it is, how old its data bound
/// is, how many rows it holds. A service with nothing live has no series
/// (alert on it with `absent()`).
fn register_freshness(r: &mut Registry, g: &Gauges<'_>) {
    type Gauge = prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>;
    /// A gauge per service: its name, help and value from the live generation's metadata.
    type Series = (&'static str, &'static str, fn(&GenerationMeta, DateTime<Utc>) -> Option<f64>);
    fn since(t: &str, now: DateTime<Utc>) -> Option<f64> {
        DateTime::parse_from_rfc3339(t).ok().map(|t| (now - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
    }
    const SERIES: [Series; 3] = [
        (
            "daeda_live_generation_age_seconds",
            "Seconds since the live generation was materialized (its materialized_at: the flip of a full run, \
             or the last incremental run)",
            |m, now| since(&m.materialized_at, now),
        ),
        (
            "daeda_live_generation_as_of_age_seconds",
            "Seconds since the live generation's as-of, the event-time bound of the run that wrote it: \
             how old its newest possible feature row is",
            |m, now| since(&m.as_of, now),
        ),
        (
            "daeda_seconds_since_last_materialization",
            "Seconds since the last successful materialization (full or incremental) of the service, \
             from the live generation's metadata in Redis",
            |m, now| since(&m.materialized_at, now),
        ),
    ];
    let live: Vec<_> = g.live.iter().filter_map(|(s, m)| m.as_ref().map(|m| (*s, m))).collect();
    for (name, help, value) in SERIES {
        let family: Family<ServiceLabel, Gauge> = Family::default();
        for (service, meta) in &live {
            if let Some(v) = value(meta, g.now) {
                family.get_or_create(&ServiceLabel { service: service.to_string() }).set(v);
            }
        }
        r.register(name, help, family);
    }
    let rows: Family<ServiceLabel, prometheus_client::metrics::gauge::Gauge> = Family::default();
    for (service, meta) in &live {
        rows.get_or_create(&ServiceLabel { service: service.to_string() }).set(meta.row_count as i64);
    }
    r.register("daeda_live_generation_rows", "Entities in the live generation", rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rows: u64) -> Arc<GenerationMeta> {
        let now = Utc::now().to_rfc3339();
        Arc::new(GenerationMeta {
            service: "user_features".into(),
            version: "1".into(),
            fingerprint: "f".into(),
            generation: "1".into(),
            run_id: "r".into(),
            as_of: now.clone(),
            row_count: rows,
            bytes: 0,
            materialized_at: now,
            source_snapshot: "{}".into(),
            watermark_micros: 0,
            schema: None,
        })
    }

    /// The names, labels, buckets and values the hand-written exposition had,
    /// and the text format's rules: every sample follows its family's HELP and
    /// TYPE, and each family is declared once.
    #[test]
    fn the_exposition_keeps_its_series_and_is_prometheus_text() {
        let m = Metrics::default();
        m.observe("/v1/features/{service}", 403, Duration::from_micros(300));
        m.error("/v1/features/{service}", "forbidden");
        m.redis_latency(Duration::from_millis(2));
        m.redis_error();
        m.entities(2, 1, 0);
        m.connection_event(ConnEvent::Refused);
        let g = Gauges {
            pool: (3, 2),
            connections_open: 1,
            max_connections: 10,
            live: vec![("user_features", Some(meta(42))), ("empty", None)],
            now: Utc::now(),
            sql: Some(SqlGauges { worker_up: true, worker_restarts: 2, queries_running: 3 }),
            cache: None,
        };
        let text = m.render(&g);
        for line in [
            "# HELP daeda_requests_total HTTP requests by route and status.",
            "# TYPE daeda_requests_total counter",
            r#"daeda_requests_total{route="/v1/features/{service}",status="403"} 1"#,
            "# TYPE daeda_request_duration_seconds histogram",
            r#"daeda_request_duration_seconds_bucket{route="/v1/features/{service}",status="403",le="0.00025"} 0"#,
            r#"daeda_request_duration_seconds_bucket{route="/v1/features/{service}",status="403",le="0.0005"} 1"#,
            r#"daeda_request_duration_seconds_bucket{route="/v1/features/{service}",status="403",le="5"} 1"#,
            r#"daeda_request_duration_seconds_bucket{route="/v1/features/{service}",status="403",le="+Inf"} 1"#,
            r#"daeda_request_duration_seconds_count{route="/v1/features/{service}",status="403"} 1"#,
            r#"daeda_request_errors_total{route="/v1/features/{service}",code="forbidden"} 1"#,
            r#"daeda_redis_lookup_seconds_bucket{le="0.0025"} 1"#,
            "daeda_redis_lookup_seconds_count 1",
            "daeda_redis_errors_total 1",
            r#"daeda_entities_served_total{status="ok"} 2"#,
            r#"daeda_entities_served_total{status="missing"} 1"#,
            r#"daeda_entities_served_total{status="stale"} 0"#,
            "daeda_sql_policy_denied_total 0",
            "daeda_sql_parser_disagreements_total 0",
            r#"daeda_redis_pool_connections{state="open"} 3"#,
            r#"daeda_redis_pool_connections{state="idle"} 2"#,
            "daeda_connections_open 1",
            "daeda_connections_max 10",
            r#"daeda_connection_events_total{event="refused"} 1"#,
            r#"daeda_connection_events_total{event="accept_failed"} 0"#,
            "# TYPE daeda_live_generation_age_seconds gauge",
            r#"daeda_live_generation_rows{service="user_features"} 42"#,
            "# TYPE daeda_build_info gauge",
            concat!(r#"daeda_build_info{version=""#, env!("CARGO_PKG_VERSION"), r#""} 1"#),
            "daeda_sql_worker_up 1",
            "# TYPE daeda_sql_worker_restarts_total counter",
            "daeda_sql_worker_restarts_total 2",
            "daeda_sql_queries_running 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        for name in ["age_seconds", "as_of_age_seconds"] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("daeda_live_generation_{name}{{service=\"user_features\"}} ")))
                .unwrap_or_else(|| panic!("no {name}:\n{text}"));
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!((0.0..60.0).contains(&v), "{line}");
        }
        assert!(!text.contains("service=\"empty\""), "a service with nothing live has no series:\n{text}");

        let mut declared = std::collections::HashSet::new();
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap().to_string();
                assert!(declared.insert(family.clone()), "{family} declared twice:\n{text}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest.split(' ').next().unwrap(), family, "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                assert!(name == family || base == family, "`{line}` is outside its family {family}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "`{line}` has no number");
            }
        }
    }

    #[test]
    fn without_the_sql_plane_there_is_no_worker_series() {
        let g = Gauges {
            pool: (0, 0),
            connections_open: 0,
            max_connections: 1,
            live: vec![],
            now: Utc::now(),
            sql: None,
            cache: None,
        };
        let text = Metrics::default().render(&g);
        assert!(!text.contains("daeda_sql_worker") && !text.contains("daeda_sql_queries"), "{text}");
    }
}
