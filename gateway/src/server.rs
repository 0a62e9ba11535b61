//! Connections: accepting them within `max_connections`, serving each with
//! hyper (TLS when configured) until it is idle for `idle_timeout`, the admin
//! listener, and the graceful shutdown that lets requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::{events, handlers, ApiError, Gateway, State};

impl Gateway {
    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// (up to 10 s).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let refresher = self.state.generations.spawn_refresher(self.state.cfg.refresh);
        let tracker = self.state.cache.clone().and_then(|c| {
            daeda_online::cache::tracking::spawn(self.state.store.clone(), c)
                .map_err(|why| tracing::warn!("the row cache is off: {why}"))
                .ok()
        });
        let admin = self.admin.take().map(|l| tokio::spawn(serve_admin(l, self.state.clone(), self.tls.clone())));
        let flusher = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(events::FAILURE_LOG_INTERVAL / 2);
                loop {
                    tick.tick().await;
                    state.events.flush(false);
                }
            })
        };
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.state.cfg.header_read_timeout);
        let slots = self.state.slots.clone();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        self.state.events.accept_failed(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.state.events.connection_refused();
                if self.tls.is_none() {
                    // Best effort, without waiting: a fresh socket's send buffer is empty.
                    let _ = stream.try_write(&refusal(self.state.cfg.max_connections));
                }
                continue; // dropping the stream closes it
            };
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            let activity = Arc::new(Activity::default());
            let svc = {
                let activity = activity.clone();
                service_fn(move |req| {
                    let state = state.clone();
                    let busy = Busy::new(activity.clone());
                    async move {
                        let resp = handlers::handle(state, req).await;
                        drop(busy);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                })
            };
            let (builder, watcher, state, tls) =
                (builder.clone(), graceful.watcher(), self.state.clone(), self.tls.clone());
            let (header_timeout, idle) = (state.cfg.header_read_timeout, state.cfg.idle_timeout);
            tokio::spawn(async move {
                let _slot = slot;
                let served = async {
                    match tls {
                        None => watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await,
                        Some(acceptor) => {
                            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                            };
                            watcher.watch(builder.serve_connection(TokioIo::new(tls), svc).into_owned()).await
                        }
                    }
                    .unwrap_or_else(|e| {
                        let timed_out = e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout());
                        state.events.connection_failed(peer, timed_out, &e);
                    })
                };
                tokio::select! {
                    () = served => {}
                    () = activity.idle_for(idle) => {
                        // No request in flight: dropping the connection closes it.
                        state.events.idle_closed(peer);
                    }
                }
            });
        }
        drop(self.listener);
        if let Some(a) = admin {
            a.abort();
        }
        refresher.abort();
        if let Some(t) = tracker {
            t.abort();
        }
        // Requests in flight finish first (SQL queries need their worker),
        // then the worker goes and the last failures are logged.
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
            tracing::warn!("some connections were still open 10 s after shutdown began");
        }
        if let Some(sql) = &self.state.sql {
            sql.supervisor.abort(); // drops the worker's process handle, which kills it
        }
        flusher.abort();
        self.state.events.flush(true);
    }
}

/// The admin address: operations routes only, each connection bounded by the
/// same header and idle timeouts (as one request deadline), few enough that
/// they need no slots of their own.
async fn serve_admin(listener: TcpListener, state: Arc<State>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.cfg.header_read_timeout);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (state, builder, tls) = (state.clone(), builder.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handlers::handle_admin(state, req).await) }
            });
            let idle = tokio::time::sleep(Duration::from_secs(60));
            let served = async {
                let _ = match tls {
                    None => builder.serve_connection(TokioIo::new(stream), svc).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => builder.serve_connection(TokioIo::new(s), svc).await,
                        Err(_) => return,
                    },
                };
            };
            tokio::select! {
                () = served => {}
                () = idle => {}
            }
        });
    }
}

/// The answer to a connection past `max_connections`, written before closing it.
fn refusal(max: usize) -> Vec<u8> {
    let e = ApiError::TooManyConnections(max);
    let body = e.body();
    let status = e.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(secs) = e.retry_after() {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// Requests in flight on one connection, and when it last had one.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    since: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { in_flight: 0.into(), since: std::sync::Mutex::new(tokio::time::Instant::now()) }
    }
}

impl Activity {
    fn touch(&self) {
        *self.since.lock().expect("activity lock") = tokio::time::Instant::now();
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = *self.since.lock().expect("activity lock") + idle;
            let now = tokio::time::Instant::now();
            if now < deadline {
                tokio::time::sleep_until(deadline).await;
            } else if self.in_flight.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            } else {
                // A request is running (bounded by request_timeout); look again later.
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// A request in flight; its drop (the response made, or the request dropped)
/// restarts the idle clock.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Busy {
        a.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        a.touch();
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
