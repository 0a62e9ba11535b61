//! The gateway: batched online feature lookups over HTTP/1.1 and HTTP/2
//! (hyper on tokio), bearer tokens (jsonwebtoken), optional TLS (rustls).
//!
//! Invariants:
//! - every route but `/healthz`, `/readyz`, `/metrics` and `/openapi.json` verifies a bearer
//!   token, and every access to a service goes through [`auth::authorize`],
//!   which refuses a service whose serving is not allowed whatever the token says;
//! - a lookup reads one generation with one MGET, so a response never mixes
//!   two generations, and decodes it with the schema stored with that
//!   generation (never the loaded definition's guess), so a schema change
//!   flips without a failed lookup; a generation whose row keys the loaded
//!   definition does not build is refused, never decoded;
//! - the catalog can be replaced while serving ([`Reloader`]); each request
//!   reads one catalog snapshot from start to end;
//! - a non-loopback address is only bound with TLS and `allow_remote`;
//! - Redis calls are bounded by timeouts: a dead Redis answers 503 quickly;
//! - connections are bounded too: at most `max_connections` at once (the next
//!   one is answered 503 and closed), a request head must arrive within
//!   `header_read_timeout`, and a connection with no request for
//!   `idle_timeout` is closed, so idle or slow clients cannot hold the
//!   gateway's file descriptors.

pub mod auth;
mod error;
mod events;
mod generations;
mod handlers;
mod limits;
mod metrics;
mod openapi;
mod server;
pub mod sql;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use daeda_catalog::Catalog;
use daeda_online::OnlineStore;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use auth::{AuthSettings, Plane};
pub use error::ApiError;
pub use tls::TlsError;

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
    /// Connections open at once; past it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// How long a request head (request line and headers) may take to arrive,
    /// counted from when the connection starts waiting for it: a new HTTP/1.1
    /// connection, or a kept-alive one after its last response. Also bounds the
    /// TLS handshake.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (any
    /// protocol, before a first request too).
    pub idle_timeout: Duration,
    /// SQL plane: rows returned at most, and how long a query may run.
    pub sql_max_rows: usize,
    pub sql_timeout: Duration,
    /// SQL plane: a result's in-memory size at most, in bytes.
    pub sql_max_bytes: usize,
    /// SQL plane: queries running at once; more wait, then answer 503.
    pub sql_concurrency: usize,
    pub auth: AuthSettings,
    /// When `/readyz` answers ready.
    pub ready_when: ReadyWhen,
    /// A second address serving only `/metrics`, `/healthz` and `/readyz`
    /// (no token; TLS as configured); `/metrics` then leaves the main address.
    /// A non-loopback one needs TLS and `allow_remote`, as `listen` does.
    pub admin_listen: Option<SocketAddr>,
    /// Serve Quack (DuckDB's remote protocol) here from a worker process of
    /// its own; needs the SQL plane. A non-loopback one needs `allow_remote`.
    pub quack_listen: Option<SocketAddr>,
    /// A Quack query running longer restarts the Quack worker (DuckDB cannot
    /// interrupt one Quack connection); its token then cools down.
    pub quack_timeout: Duration,
    /// The hot-entity row cache's size bound in bytes; 0 (the default) turns
    /// it off (see [`daeda_online::cache`]). Not used on a Redis Cluster or
    /// with replica reads, where it could not be kept consistent.
    pub cache_max_bytes: usize,
}

/// `/readyz` is ready when Redis answers, and every (`All`) or at least one
/// (`Any`) service whose serving is allowed has a live generation whose
/// fingerprint matches its loaded definition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadyWhen {
    #[default]
    All,
    Any,
}

impl GatewayConfig {
    pub fn new(listen: SocketAddr, auth: AuthSettings) -> GatewayConfig {
        GatewayConfig {
            listen,
            tls: None,
            allow_remote: false,
            quack_listen: None,
            quack_timeout: Duration::from_secs(60),
            max_batch: 1000,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(5),
            refresh: Duration::from_millis(500),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            sql_max_rows: 10_000,
            sql_timeout: Duration::from_secs(4),
            sql_max_bytes: 16 << 20,
            sql_concurrency: 4,
            auth,
            ready_when: ReadyWhen::All,
            admin_listen: None,
            cache_max_bytes: 0,
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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthConfigError),
    /// A connection or time limit that cannot work (zero).
    #[error("{0}")]
    Limits(String),
}

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) cfg: GatewayConfig,
    /// The loaded catalog; replaced whole by [`Reloader::reload`].
    catalog: std::sync::RwLock<Arc<Catalog>>,
    pub(crate) store: OnlineStore,
    pub(crate) verifier: auth::Verifier,
    pub(crate) generations: Arc<generations::Generations>,
    /// Every outcome, logged and counted in one place.
    pub(crate) events: events::Events,
    /// One permit per open connection, `max_connections` in all.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) sql: Option<SqlPlane>,
    /// The Quack endpoint, when `quack_listen` is set.
    pub(crate) quack: std::sync::OnceLock<Arc<sql::quack::QuackGate>>,
    /// The hot-entity row cache, when on and supported by the topology.
    pub(crate) cache: Option<Arc<daeda_online::cache::RowCache>>,
    /// Row schemas by service, of the generations lately served (see [`State::schema_for`]).
    schemas: std::sync::Mutex<std::collections::HashMap<String, Vec<CachedSchema>>>,
}

/// A generation's decoded row schema, valid for one loaded definition. Keyed
/// on the generation's fingerprint too: an id reused after a purge may hold
/// another schema.
struct CachedSchema {
    generation: String,
    online: String,
    fingerprint: String,
    schema: Arc<daeda_online::codec::RowSchema>,
}

/// Schemas kept per service: the live generation and the one before it, which
/// in-flight lookups may still read around a flip.
const SCHEMAS_PER_SERVICE: usize = 2;

impl State {
    /// The catalog as loaded now; hold it for the whole request.
    /// The services `who` may read over SQL, lower-case: approved for
    /// serving and granted by the token ([`auth::authorize`]). Both SQL
    /// front doors, HTTP and Quack, hand exactly this to the policy.
    pub(crate) fn sql_grants(&self, who: &auth::Principal) -> Vec<String> {
        self.catalog()
            .services()
            .filter(|s| auth::authorize(who, s, Plane::Sql).is_ok())
            .map(|s| s.name.to_ascii_lowercase())
            .collect()
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// The row schema `meta`'s rows are decoded with, built once per
    /// generation (and loaded definition) and cached.
    pub(crate) fn schema_for(
        &self,
        def: &daeda_catalog::ServiceDef,
        meta: &daeda_online::GenerationMeta,
    ) -> Result<Arc<daeda_online::codec::RowSchema>, daeda_online::lookup::LookupError> {
        let hit = |c: &CachedSchema| {
            c.generation == meta.generation && c.online == meta.fingerprint && c.fingerprint == def.fingerprint()
        };
        if let Some(list) = self.schemas.lock().expect("schema cache lock").get(&def.name) {
            if let Some(c) = list.iter().find(|c| hit(c)) {
                return Ok(c.schema.clone());
            }
        }
        let schema = Arc::new(daeda_online::lookup::generation_schema(def, meta)?);
        let mut cache = self.schemas.lock().expect("schema cache lock");
        let list = cache.entry(def.name.clone()).or_default();
        if !list.iter().any(hit) {
            list.push(CachedSchema {
                generation: meta.generation.clone(),
                online: meta.fingerprint.clone(),
                fingerprint: def.fingerprint().to_string(),
                schema: schema.clone(),
            });
            if list.len() > SCHEMAS_PER_SERVICE {
                list.remove(0);
            }
        }
        Ok(schema)
    }

    /// Services whose serving is allowed in the loaded catalog.
    pub(crate) fn served(&self) -> Vec<String> {
        served(&self.catalog())
    }
}

fn served(catalog: &Catalog) -> Vec<String> {
    catalog.services().filter(|s| s.serving.allowed).map(|s| s.name.clone()).collect()
}

/// Replaces a running gateway's catalog (on SIGHUP in `daeda serve`): a
/// service whose serving is no longer allowed, or a grant that changed, takes
/// effect with the next request; when the approved services or their
/// definitions changed, the SQL and Quack workers are rebuilt too.
#[derive(Clone)]
pub struct Reloader(Arc<State>);

impl Reloader {
    pub fn reload(&self, catalog: Catalog) {
        let state = &self.0;
        let exposed = |c: &Catalog| -> Vec<(String, String)> {
            c.services().filter(|s| s.serving.allowed).map(|s| (s.name.clone(), s.fingerprint().to_string())).collect()
        };
        let views_changed = exposed(&state.catalog()) != exposed(&catalog);
        state.generations.set_services(served(&catalog));
        *state.catalog.write().expect("catalog lock") = Arc::new(catalog);
        state.schemas.lock().expect("schema cache lock").clear();
        // The SQL workers' views (walls 3 and 4) were built from the old
        // catalog: a service no longer approved must leave them too, and a
        // new one must appear.
        if views_changed {
            if let Some(sql) = &state.sql {
                sql.worker.recycle();
            }
            if let Some(quack) = state.quack.get() {
                quack.recycle();
            }
        }
    }

    /// Re-reads the JWT key set (`jwt.jwks`); see [`auth::Verifier::reload_keys`].
    pub fn reload_keys(&self) -> Result<usize, auth::AuthConfigError> {
        self.0.verifier.reload_keys()
    }
}

/// The SQL plane as the gateway holds it: its policy threads, its worker
/// process, and the slots that bound how many queries run at once.
pub(crate) struct SqlPlane {
    pub(crate) policy: sql::policy_runner::PolicyRunner,
    /// Renders results as JSON, apart from the policy's threads.
    pub(crate) render: sql::policy_runner::CpuPool,
    pub(crate) worker: Arc<sql::SqlWorker>,
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Tokens (by `sub`) whose query had to be killed, and until when their
    /// SQL is refused: one client cannot keep the worker restarting.
    pub(crate) cooldown: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl SqlPlane {
    /// How long `sub`'s SQL (HTTP and Quack) is still refused, if at all.
    pub(crate) fn cooling(&self, sub: &str) -> Option<std::time::Duration> {
        let until = self.cooldown.lock().expect("cooldown lock").get(sub).copied()?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Refuses `sub`'s SQL for [`handlers::SQL_COOLDOWN`]: a query of it had
    /// to be killed with its worker.
    pub(crate) fn cool_down(&self, sub: &str) {
        let now = std::time::Instant::now();
        let mut cooldown = self.cooldown.lock().expect("cooldown lock");
        cooldown.retain(|_, until| *until > now);
        cooldown.insert(sub.to_string(), now + handlers::SQL_COOLDOWN);
    }
}

/// A bound, ready gateway.
pub struct Gateway {
    state: Arc<State>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Gateway {
    /// Checks the settings, loads keys and certificates, and binds; no SQL plane.
    pub async fn bind(cfg: GatewayConfig, catalog: Catalog, store: OnlineStore) -> Result<Gateway, StartError> {
        Self::bind_with_sql(cfg, catalog, store, None).await
    }

    /// As [`Gateway::bind`], with `POST /v1/sql` served by a worker process
    /// started (and restarted) with `sql`.
    pub async fn bind_with_sql(
        cfg: GatewayConfig,
        catalog: Catalog,
        store: OnlineStore,
        sql: Option<sql::WorkerCommand>,
    ) -> Result<Gateway, StartError> {
        for addr in std::iter::once(cfg.listen).chain(cfg.admin_listen) {
            if !addr.ip().is_loopback() {
                if cfg.tls.is_none() {
                    return Err(StartError::RemoteWithoutTls(addr));
                }
                if !cfg.allow_remote {
                    return Err(StartError::RemoteNotAllowed(addr));
                }
            }
        }
        if let Some(addr) = cfg.quack_listen {
            // Quack is plain HTTP: beyond loopback only when the operator says so.
            if !addr.ip().is_loopback() && !cfg.allow_remote {
                return Err(StartError::RemoteNotAllowed(addr));
            }
            if sql.is_none() {
                return Err(StartError::Limits("quack.listen needs the SQL plane (sql.enabled)".into()));
            }
        }
        if cfg.max_connections == 0 {
            return Err(StartError::Limits("max_connections must be at least 1".into()));
        }
        for (name, d) in [
            ("request_timeout", cfg.request_timeout),
            ("header_read_timeout", cfg.header_read_timeout),
            ("idle_timeout", cfg.idle_timeout),
            ("refresh", cfg.refresh),
        ] {
            if d.is_zero() {
                return Err(StartError::Limits(format!("{name} must be longer than zero")));
            }
        }
        limits::ensure_open_files(cfg.max_connections);
        let verifier = auth::Verifier::new(&cfg.auth)?;
        let tls = match &cfg.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
        let admin = match cfg.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        let generations = Arc::new(generations::Generations::new(store.clone(), served(&catalog)));
        if let Err(e) = generations.refresh().await {
            tracing::warn!(error = %e, "Redis is not reachable yet; lookups answer 503 until it is");
        }
        let cache = daeda_online::cache::RowCache::new(cfg.cache_max_bytes, store.keys().clone());
        let cache = match (cache, store.cache_unsupported()) {
            (Some(_), Some(why)) => {
                tracing::warn!("the row cache is off: {why}, where it could not be kept consistent");
                None
            }
            (cache, _) => cache,
        };
        if let Some(cache) = &cache {
            let generations = Arc::downgrade(&generations);
            cache.on_pointer_change(move |_| {
                if let Some(g) = generations.upgrade() {
                    g.pointer_changed();
                }
            });
        }
        let quack_cmd = sql.clone();
        let sql = sql.map(|cmd| {
            let (worker, supervisor) = sql::SqlWorker::spawn(cmd);
            SqlPlane {
                policy: sql::policy_runner::PolicyRunner::start(2, 64),
                render: sql::policy_runner::CpuPool::start("sql-render", 1, 8),
                worker,
                slots: Arc::new(tokio::sync::Semaphore::new(cfg.sql_concurrency.max(1))),
                cooldown: Default::default(),
                supervisor,
            }
        });
        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        let catalog = std::sync::RwLock::new(Arc::new(catalog));
        let schemas = Default::default();
        let state = Arc::new(State {
            cfg,
            catalog,
            store,
            verifier,
            generations,
            events: Default::default(),
            slots,
            sql,
            cache,
            schemas,
            quack: std::sync::OnceLock::new(),
        });
        if let (Some(addr), Some(cmd)) = (state.cfg.quack_listen, quack_cmd) {
            let _ = state.quack.set(sql::quack::spawn(Arc::downgrade(&state), cmd, addr));
        }
        Ok(Gateway { state, listener, admin, tls })
    }

    /// A handle that replaces the catalog while the gateway runs.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.state.clone())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The admin address, when `admin_listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }
}
