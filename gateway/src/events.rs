//! What happens to requests and connections, each outcome written in one
//! place that both logs it and counts it (Vector's internal events): a handler
//! reports an outcome to [`Events`]; it never touches a counter or writes the
//! outcome's log line itself. [`Metrics`] is private to this type, so a metric
//! without its log line (or the reverse) cannot be added elsewhere.
//!
//! Failure logging an outage cannot turn into a flood ([`FailureLog`]). While
//! Redis is down every lookup fails; one warning per request would bury
//! everything else in the log. The first failure of each interval is logged in
//! full; the others are counted and reported in one summary line when the
//! interval ends (or the gateway stops). Each failure is still counted, by route
//! and error code, in `/metrics`, so nothing is lost but the repetition.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::{ConnEvent, Gauges, Metrics};
use crate::ApiError;

/// The gateway's outcomes: counted in `/metrics` and logged, together.
#[derive(Default)]
pub struct Events {
    metrics: Metrics,
    failures: FailureLog,
}

impl Events {
    /// A request answered with `status` after `took`; `error` when it failed.
    /// Server-side failures are logged at most once per interval (see [`FailureLog`]).
    pub fn request(&self, route: &'static str, status: u16, took: Duration, error: Option<&ApiError>) {
        if let Some(e) = error {
            self.metrics.error(route, e.code());
            if e.status().is_server_error() {
                self.failures.failed(route, status, e);
            }
            if matches!(e, ApiError::Unavailable(_)) {
                self.metrics.redis_error();
            }
        }
        tracing::debug!(route, status, micros = took.as_micros() as u64, "request");
        self.metrics.observe(route, status, took);
    }

    /// A lookup's Redis round trip and row decoding took `took`.
    pub fn lookup_fetched(&self, took: Duration) {
        self.metrics.redis_latency(took);
    }

    /// A lookup answered these many entities by status.
    pub fn entities_served(&self, ok: u64, missing: u64, stale: u64) {
        self.metrics.entities(ok, missing, stale);
    }

    /// The policy refused a query of `sub`, come `via` HTTP or Quack.
    pub fn sql_denied(&self, via: &'static str, sub: &str, reason: &str) {
        self.metrics.sql_denied();
        tracing::debug!(via, sub, reason, "a SQL query was denied");
    }

    /// The policy approved a query and DuckDB's parser read it differently: denied.
    pub fn sql_disagreement(&self, sub: &str, reason: &str) {
        self.metrics.sql_disagreement();
        tracing::warn!(sub, reason, "the policy and DuckDB's parser disagree; query denied");
    }

    /// A connection refused past `max_connections`.
    pub fn connection_refused(&self) {
        self.metrics.connection_event(ConnEvent::Refused);
    }

    /// `accept` failed (e.g. out of file descriptors); logged like a server failure.
    pub fn accept_failed(&self, error: &std::io::Error) {
        self.metrics.connection_event(ConnEvent::AcceptFailed);
        self.failures.failed("accept", 0, error);
    }

    /// A connection ended with an error; `timed_out` when its request head was too slow.
    pub fn connection_failed(&self, peer: SocketAddr, timed_out: bool, error: &dyn std::fmt::Display) {
        if timed_out {
            self.metrics.connection_event(ConnEvent::HeaderTimeout);
        }
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    }

    /// A connection closed after `idle_timeout` without a request.
    pub fn idle_closed(&self, peer: SocketAddr) {
        self.metrics.connection_event(ConnEvent::IdleClosed);
        tracing::debug!(%peer, "closed an idle connection");
    }

    /// The `/metrics` exposition.
    pub fn render_metrics(&self, gauges: &Gauges<'_>) -> String {
        self.metrics.render(gauges)
    }

    /// Writes the failure summary of an ended interval (with `now`, the open one too).
    pub fn flush(&self, now: bool) {
        self.failures.flush(now);
    }
}

/// How often a failure is logged in full.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct FailureLog {
    interval: Duration,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// When the failure logged in full was; None when no interval is open.
    opened: Option<Instant>,
    /// Failures since then that were only counted.
    suppressed: u64,
    /// The latest of them, for the summary line.
    last: Option<Failure>,
}

struct Failure {
    route: &'static str,
    status: u16,
    error: String,
}

impl Default for FailureLog {
    fn default() -> Self {
        FailureLog::new(FAILURE_LOG_INTERVAL)
    }
}

impl FailureLog {
    pub fn new(interval: Duration) -> FailureLog {
        FailureLog { interval, window: Mutex::new(Window::default()) }
    }

    /// A request failed with a server-side error.
    pub fn failed(&self, route: &'static str, status: u16, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut w = self.window.lock().expect("failure log lock");
        if w.opened.is_some_and(|t| now.duration_since(t) < self.interval) {
            w.suppressed += 1;
            w.last = Some(Failure { route, status, error: error.to_string() });
            return;
        }
        let ended = std::mem::take(&mut *w);
        w.opened = Some(now);
        drop(w);
        self.summarize(ended);
        tracing::warn!(
            route,
            status,
            error = %error,
            "request failed; further failures in the next {} s are counted and reported in one line",
            self.interval.as_secs()
        );
    }

    /// Reports an interval that has ended; with `now`, the open one too (at
    /// shutdown). Called periodically, so a summary does not wait for the next failure.
    pub fn flush(&self, now: bool) {
        let mut w = self.window.lock().expect("failure log lock");
        if w.opened.is_some_and(|t| now || t.elapsed() >= self.interval) {
            let ended = std::mem::take(&mut *w);
            drop(w);
            self.summarize(ended);
        }
    }

    fn summarize(&self, w: Window) {
        if let (Some(opened), Some(last)) = (w.opened, w.last) {
            tracing::warn!(
                suppressed = w.suppressed,
                last_route = last.route,
                last_status = last.status,
                last_error = %last.error,
                "{} more requests failed in the {} s after the one logged",
                w.suppressed,
                opened.elapsed().as_secs().min(self.interval.as_secs())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One call counts the request, its error code and (for Redis) the Redis error.
    #[test]
    fn a_failed_request_is_counted_everywhere_it_belongs_by_one_call() {
        let events = Events::default();
        let e = ApiError::Unavailable("redis is down".into());
        events.request("/v1/features/{service}", 503, Duration::from_millis(1), Some(&e));
        events.request("/healthz", 200, Duration::from_micros(50), None);
        let g = Gauges {
            pool: (0, 0),
            connections_open: 0,
            max_connections: 1,
            live: vec![],
            now: chrono::Utc::now(),
            sql: None,
            cache: None,
        };
        let text = events.render_metrics(&g);
        for line in [
            r#"daeda_requests_total{route="/v1/features/{service}",status="503"} 1"#,
            r#"daeda_request_errors_total{route="/v1/features/{service}",code="redis_unavailable"} 1"#,
            "daeda_redis_errors_total 1",
            r#"daeda_requests_total{route="/healthz",status="200"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        assert!(!text.contains(r#"route="/healthz",code="#), "a success has no error code:\n{text}");
    }
}
