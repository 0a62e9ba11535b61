//! `daeda serve` and `daeda token mint`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use daeda_gateway::auth::{self, MintRequest};
use daeda_gateway::{AuthSettings, Gateway, GatewayConfig, Plane};

use crate::config::{Config, Overrides};
use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [env: DAEDA_LISTEN] [default: 127.0.0.1:7070]
    #[arg(long)]
    listen: Option<String>,
    /// Permit a non-loopback address (TLS must be configured too).
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Sign an HS256 token with DAEDA_JWT_SECRET; prints the token alone.
    Mint {
        #[arg(long)]
        sub: String,
        /// Services the token grants (comma-separated; `*` = every approved service).
        #[arg(long)]
        services: String,
        /// Planes: online, sql.
        #[arg(long, default_value = "online")]
        planes: String,
        /// Lifetime: <int><s|m|h|d|w>.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn auth_settings(cfg: &Config) -> AuthSettings {
    AuthSettings {
        secret: cfg.jwt_secret.clone(),
        public_key: cfg.jwt_public_key.clone(),
        jwks: cfg.jwt_jwks.clone(),
        issuer: cfg.jwt_issuer.clone(),
        audience: cfg.jwt_audience.clone(),
    }
}

pub fn serve(o: &Overrides, a: &ServeArgs) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let listen_text = a.listen.clone().unwrap_or_else(|| cfg.listen.clone());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| UsageError(format!("listen address `{listen_text}` is not host:port (e.g. 127.0.0.1:7070)")))?;
    let mut gw = GatewayConfig::new(listen, auth_settings(&cfg));
    gw.allow_remote = a.allow_remote || cfg.allow_remote;
    gw.admin_listen = match &cfg.admin_listen {
        None => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| UsageError(format!("admin_listen `{text}` is not host:port (e.g. 127.0.0.1:9090)")))?,
        ),
    };
    gw.max_batch = cfg.max_batch;
    gw.cache_max_bytes = cfg.cache_max_bytes;
    gw.request_timeout = Duration::from_millis(cfg.limits.request_timeout_ms);
    gw.refresh = Duration::from_millis(cfg.limits.refresh_interval_ms);
    gw.max_connections = cfg.limits.max_connections;
    gw.header_read_timeout = Duration::from_millis(cfg.limits.header_read_timeout_ms);
    gw.idle_timeout = Duration::from_millis(cfg.limits.idle_timeout_ms);
    gw.tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err(UsageError("TLS needs both tls_cert and tls_key".into()).into()),
    };
    // A lookup must fail fast when Redis is gone: bound every Redis call.
    let store = daeda_online::OnlineStore::connect(
        &cfg.redis_url,
        &daeda_online::StoreSettings {
            pool_size: cfg.limits.redis_pool_size,
            timeout: Duration::from_millis(cfg.limits.redis_timeout_ms),
            read_from_replicas: cfg.redis_read_from_replicas,
        },
    )?
    .in_namespace(&cfg.namespace)?;
    gw.ready_when = cfg.ready_when;
    gw.sql_timeout = Duration::from_millis(cfg.sql.timeout_ms);
    gw.sql_max_rows = cfg.sql.max_rows;
    gw.sql_max_bytes = cfg.sql.max_result_bytes;
    gw.sql_concurrency = cfg.sql.concurrency;
    gw.quack_timeout = Duration::from_millis(cfg.quack_timeout_ms);
    gw.quack_listen = match &cfg.quack_listen {
        None => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| UsageError(format!("quack.listen `{text}` is not host:port (e.g. 127.0.0.1:9494)")))?,
        ),
    };
    // The SQL plane runs in a worker process this one starts and supervises:
    // the same binary, `daeda sql-worker`, on the same catalog. If it cannot
    // start, online serving goes on and /v1/sql answers 503 saying so.
    let sql = cfg.sql.enabled.then(|| -> Result<daeda_gateway::sql::WorkerCommand> {
        let program = std::env::current_exe().context("finding this program to start the SQL worker")?;
        Ok(daeda_gateway::sql::WorkerCommand { program, args: worker_args(o, &cfg) })
    });
    let sql = sql.transpose()?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM or SIGHUP that arrives once the port
        // accepts connections must never meet the default action (exit).
        let shutdown = shutdown_signal();
        #[cfg(unix)]
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let gateway = Gateway::bind_with_sql(gw, catalog, store, sql).await.map_err(|e| match e {
            e @ (daeda_gateway::StartError::RemoteWithoutTls(_)
            | daeda_gateway::StartError::RemoteNotAllowed(_)
            | daeda_gateway::StartError::Auth(_)
            | daeda_gateway::StartError::Limits(_)) => anyhow::Error::new(UsageError(e.to_string())),
            e => anyhow::Error::new(e),
        })?;
        let scheme = if cfg.tls_cert.is_some() { "https" } else { "http" };
        eprintln!("daeda: serving on {scheme}://{}", gateway.local_addr());
        if let Some(admin) = gateway.admin_addr() {
            eprintln!("daeda: /metrics, /healthz and /readyz on {scheme}://{admin}");
        }
        #[cfg(unix)]
        let reloads = tokio::spawn(reload_on_sighup(hup, gateway.reloader(), cfg.catalog.clone()));
        #[cfg(not(unix))]
        let reloads = tokio::spawn(async {});
        gateway.run(shutdown).await;
        reloads.abort();
        eprintln!("daeda: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `daeda sql-worker` with this gateway's catalog and SQL bounds.
fn worker_args(o: &Overrides, cfg: &Config) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["--catalog".into(), cfg.catalog.clone().into_os_string()];
    // The worker reads daeda.toml's [s3] (where the store is) as the gateway did.
    if let Some(config) = &o.config {
        args.extend(["--config".into(), config.clone().into_os_string()]);
    }
    args.push("sql-worker".into());
    for (flag, value) in [
        ("--memory-limit", cfg.sql.memory_limit.clone()),
        ("--threads", cfg.sql.threads.to_string()),
        ("--max-address-space-mb", cfg.sql.max_address_space_mb.to_string()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The gateway's Unix socket to connect to.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// DuckDB's memory_limit.
    #[arg(long, default_value = "1GB")]
    memory_limit: String,
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Address-space cap in MiB (0: none).
    #[arg(long, default_value_t = 8192)]
    max_address_space_mb: u64,
    /// Serve Quack on this host:port instead of answering the gateway's queries.
    #[arg(long)]
    quack: Option<String>,
    /// With --quack: a query running longer than this ends the worker (ms).
    #[arg(long, default_value_t = 60_000)]
    quack_deadline_ms: u64,
}

/// `daeda sql-worker`: started by `daeda serve`, never by hand.
pub fn sql_worker(o: &Overrides, a: &WorkerArgs) -> Result<ExitCode> {
    let catalog_dir = o.catalog.clone().unwrap_or_else(|| "feature_services".into());
    let catalog = daeda_catalog::Catalog::load(&catalog_dir)?;
    // Sets the process's S3 settings (daeda.toml's [s3], the environment winning),
    // then drops the credentials from the environment: the session's scoped
    // secret holds them, and no query may find them anywhere else. This runs
    // before any thread is started.
    Config::load(o)?;
    daeda_offline::s3::forget_environment_credentials();
    let settings = daeda_sql_plane::WorkerSettings {
        socket: a.socket.clone(),
        limits: daeda_sql_plane::SessionLimits { memory_limit: a.memory_limit.clone(), threads: a.threads },
        max_address_space: a.max_address_space_mb.saturating_mul(1 << 20),
    };
    match &a.quack {
        None => daeda_sql_plane::serve(&catalog, &settings).map_err(|e| anyhow::anyhow!("sql-worker: {e}"))?,
        Some(listen) => {
            daeda_sql_plane::quack::serve(&catalog, &settings, listen, Duration::from_millis(a.quack_deadline_ms))
                .map_err(|e| anyhow::anyhow!("sql-worker --quack: {e}"))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// On each SIGHUP, loads the catalog (and the JWKS file, when configured)
/// again and serves it: serving, grant and key changes take effect at once.
/// A catalog or key set that does not load is reported and the one in use kept.
#[cfg(unix)]
async fn reload_on_sighup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    reloader: daeda_gateway::Reloader,
    dir: std::path::PathBuf,
) {
    {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "no SIGHUP handler; the catalog is not reloadable"),
        };
        while hup.recv().await.is_some() {
            match reloader.reload_keys() {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "SIGHUP: reloaded the JWT key set"),
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: the JWT key set did not load; still verifying with the previous one")
                }
            }
            match tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || daeda_catalog::Catalog::load(&dir)
            })
            .await
            {
                Ok(Ok(catalog)) => {
                    let n = catalog.services().count();
                    reloader.reload(catalog);
                    tracing::info!(services = n, "SIGHUP: reloaded the catalog");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "SIGHUP: the catalog did not load; still serving the previous one")
                }
                Err(e) => tracing::warn!(error = %e, "SIGHUP: reloading the catalog failed"),
            }
        }
    }
}

/// SIGTERM or SIGINT; the SIGTERM handler is installed by this call, not
/// when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    }
}

pub fn token(o: &Overrides, c: TokenCommand) -> Result<ExitCode> {
    let TokenCommand::Mint { sub, services, planes, ttl } = c;
    let cfg = Config::load(o)?;
    let secret = cfg.jwt_secret.clone().ok_or_else(|| UsageError("set DAEDA_JWT_SECRET to mint tokens".into()))?;
    let ttl = daeda_catalog::parse_ttl(&ttl)
        .ok_or_else(|| UsageError(format!("--ttl `{ttl}` is not a duration (e.g. 1h)")))?;
    let planes = super::split_list(&[planes])
        .iter()
        .map(|p| match p.as_str() {
            "online" => Ok(Plane::Online),
            "sql" => Ok(Plane::Sql),
            other => Err(UsageError(format!("unknown plane `{other}` (expected online or sql)"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if sub.trim().is_empty() {
        return Err(UsageError("--sub must name the caller (the gateway refuses a blank sub)".into()).into());
    }
    let services = super::split_list(&[services]);
    if services.is_empty() {
        return Err(UsageError("--services needs at least one service (or *)".into()).into());
    }
    let token = auth::mint(MintRequest {
        secret: &secret,
        sub: &sub,
        services,
        planes,
        ttl_secs: ttl.as_secs(),
        issuer: cfg.jwt_issuer.clone(),
        audience: cfg.jwt_audience.clone(),
    })
    .context("signing the token")?;
    outln!("{token}");
    Ok(ExitCode::SUCCESS)
}
