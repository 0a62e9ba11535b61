//! The gateway: batched online feature lookups over HTTP/1.1 and HTTP/2
//! (hyper on tokio), bearer tokens (jsonwebtoken), optional TLS (rustls).
//!
//! Invariants:
//! - every route but `/healthz`, `/readyz` and `/metrics` verifies a bearer
//!   token, and every access to a service goes through [`auth::authorize`],
//!   which refuses a service whose serving is not allowed whatever the token says;
//! - a lookup reads one generation with one MGET, so a response never mixes
//!   two generations; rows of a generation whose fingerprint differs from the
//!   loaded definition are refused, never decoded;
//! - a non-loopback address is only bound with TLS and `allow_remote`;
//! - Redis calls are bounded by timeouts: a dead Redis answers 503 quickly.

pub mod arrow;
pub mod auth;
mod error;
mod events;
mod generations;
mod handlers;
mod metrics;
pub mod sql;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use daeda_catalog::Catalog;
use daeda_online::OnlineStore;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use auth::{AuthSettings, Plane};
pub use error::ApiError;

/// Runtime settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Certificate and key PEM files; TLS is on when given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Permit a non-loopback address (TLS required as well).
    pub allow_remote: bool,
    /// Entities per lookup.
    pub max_batch: usize,
    pub max_body_bytes: usize,
    /// Past this a request answers 504.
    pub request_timeout: Duration,
    /// How often live generation pointers are re-read.
    pub refresh: Duration,
    /// SQL plane: rows returned at most, and how long a query may run.
    pub sql_max_rows: usize,
    pub sql_timeout: Duration,
    pub auth: AuthSettings,
}

impl GatewayConfig {
    pub fn new(listen: SocketAddr, auth: AuthSettings) -> GatewayConfig {
        GatewayConfig {
            listen,
            tls: None,
            allow_remote: false,
            max_batch: 1000,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(5),
            refresh: Duration::from_millis(500),
            sql_max_rows: 10_000,
            sql_timeout: Duration::from_secs(4),
            auth,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("refusing to listen on {0}: a non-loopback address needs TLS (tls_cert and tls_key)")]
    RemoteWithoutTls(SocketAddr),
    #[error("refusing to listen on {0}: a non-loopback address needs allow_remote (DAEDA_ALLOW_REMOTE=true or --allow-remote)")]
    RemoteNotAllowed(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Auth(#[from] auth::AuthConfigError),
}

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) cfg: GatewayConfig,
    pub(crate) catalog: Catalog,
    pub(crate) store: OnlineStore,
    pub(crate) verifier: auth::Verifier,
    pub(crate) generations: Arc<generations::Generations>,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) failures: events::FailureLog,
    pub(crate) sql: Option<Arc<dyn sql::SqlEngine>>,
    /// Each served service's row schema, built once at start-up.
    pub(crate) schemas: std::collections::HashMap<String, Arc<daeda_online::codec::RowSchema>>,
}

/// A bound, ready gateway.
pub struct Gateway {
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Gateway {
    /// Checks the settings, loads keys and certificates, and binds; no SQL plane.
    pub async fn bind(cfg: GatewayConfig, catalog: Catalog, store: OnlineStore) -> Result<Gateway, StartError> {
        Self::bind_with_sql(cfg, catalog, store, None).await
    }

    /// As [`Gateway::bind`], with `POST /v1/sql` served by `sql`.
    pub async fn bind_with_sql(
        cfg: GatewayConfig,
        catalog: Catalog,
        store: OnlineStore,
        sql: Option<Arc<dyn sql::SqlEngine>>,
    ) -> Result<Gateway, StartError> {
        if !cfg.listen.ip().is_loopback() {
            if cfg.tls.is_none() {
                return Err(StartError::RemoteWithoutTls(cfg.listen));
            }
            if !cfg.allow_remote {
                return Err(StartError::RemoteNotAllowed(cfg.listen));
            }
        }
        let verifier = auth::Verifier::new(&cfg.auth)?;
        let tls = match &cfg.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(StartError::Tls)?),
            None => None,
        };
        let listener = TcpListener::bind(cfg.listen).await.map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
        let served: Vec<String> = catalog.services().filter(|s| s.serving.allowed).map(|s| s.name.clone()).collect();
        let generations = Arc::new(generations::Generations::new(store.clone(), served));
        if let Err(e) = generations.refresh().await {
            tracing::warn!(error = %e, "Redis is not reachable yet; lookups answer 503 until it is");
        }
        let schemas = catalog
            .services()
            .filter(|s| s.serving.allowed)
            .map(|s| (s.name.clone(), Arc::new(daeda_online::codec::RowSchema::of(s))))
            .collect();
        let state = Arc::new(State { cfg, catalog, store, verifier, generations, metrics: Default::default(), failures: Default::default(), sql, schemas });
        Ok(Gateway { state, listener, tls })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// (up to 10 s).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let refresher = self.state.generations.spawn_refresher(self.state.cfg.refresh);
        let flusher = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(events::FAILURE_LOG_INTERVAL / 2);
                loop {
                    tick.tick().await;
                    state.failures.flush(false);
                }
            })
        };
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: logged like failed requests, not once per attempt.
                        self.state.failures.failed("accept", 0, &e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handlers::handle(state, req).await) }
            });
            match &self.tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(self.listener);
        refresher.abort();
        flusher.abort();
        self.state.failures.flush(true);
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
            tracing::warn!("some connections were still open 10 s after shutdown began");
        }
    }
}
