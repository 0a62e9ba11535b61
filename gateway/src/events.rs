//! Failure logging an outage cannot turn into a flood. While Redis is down
//! every lookup fails; one warning per request would bury everything else in
//! the log. The first failure of each interval is logged in full; the others
//! are counted and reported in one summary line when the interval ends (or the
//! gateway stops). Each failure is still counted, by route and error code, in
//! `/metrics` (see `handlers::handle`), so nothing is lost but the repetition.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
