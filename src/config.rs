//! Runtime settings: `daeda.toml`, then the environment (which wins), then the
//! command line's `--catalog`, `--redis` and `--run-root` (which win over both).
//! TOML is for runtime settings only; definitions stay YAML.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// `daeda.toml` as written; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    redis_url: Option<String>,
    catalog: Option<PathBuf>,
    run_root: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    allow_remote: Option<bool>,
    /// `daeda serve` reads from replicas (Cluster `READONLY`, Sentinel replicas).
    redis_read_from_replicas: Option<bool>,
    max_batch: Option<usize>,
    /// `daeda serve`'s hot-entity row cache bound in bytes; 0 (default) is off.
    cache_max_bytes: Option<usize>,
    /// Prefixes every Redis key daeda writes (see `daeda_online::keys`).
    namespace: Option<String>,
    /// `/readyz`: `all` (default) or `any` serving service must be ready.
    ready_when: Option<String>,
    /// A second address for `/metrics` (and `/healthz`, `/readyz`).
    admin_listen: Option<String>,
    // `daeda serve`'s bounds, see `ServeLimits`.
    redis_pool_size: Option<usize>,
    redis_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    refresh_interval_ms: Option<u64>,
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    jwt: Option<JwtFile>,
    sql: Option<SqlFile>,
    quack: Option<QuackFile>,
    /// `[s3]`: where an S3-compatible store is (credentials stay in `AWS_*`).
    s3: Option<daeda_offline::s3::S3File>,
}

/// `[quack]`: DuckDB's remote protocol, off unless `listen` is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuackFile {
    /// host:port (`DAEDA_QUACK_LISTEN`); loopback unless `allow_remote`.
    listen: Option<String>,
    /// A query running longer ends the Quack worker (`DAEDA_QUACK_TIMEOUT_MS`).
    timeout_ms: Option<u64>,
}

/// `[sql]`: the SQL plane's bounds. Each key also reads `DAEDA_SQL_<KEY>`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlFile {
    enabled: Option<bool>,
    timeout_ms: Option<u64>,
    max_rows: Option<usize>,
    max_result_bytes: Option<usize>,
    concurrency: Option<usize>,
    memory_limit: Option<String>,
    threads: Option<u32>,
    max_address_space_mb: Option<u64>,
}

/// The SQL plane's settings after every layer is applied.
#[derive(Debug, Clone)]
pub struct SqlSettings {
    /// Serve `POST /v1/sql` (with a worker process).
    pub enabled: bool,
    /// A query's deadline; the request's own deadline caps it too.
    pub timeout_ms: u64,
    pub max_rows: usize,
    /// A result's in-memory size at most.
    pub max_result_bytes: usize,
    /// Queries running at once.
    pub concurrency: usize,
    /// DuckDB's `memory_limit` in the worker.
    pub memory_limit: String,
    /// DuckDB's threads in the worker.
    pub threads: u32,
    /// The worker's address-space cap (`RLIMIT_AS`), MiB; 0 = none.
    pub max_address_space_mb: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtFile {
    secret: Option<String>,
    public_key: Option<PathBuf>,
    /// A JWKS file: several keys at once, chosen by a token's `kid`; re-read on SIGHUP.
    jwks: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
}

/// Settings after every layer is applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub redis_url: String,
    pub catalog: PathBuf,
    pub run_root: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_remote: bool,
    /// `daeda serve` looks rows up on replicas; off by default (they may lag).
    pub redis_read_from_replicas: bool,
    pub max_batch: usize,
    /// `cache_max_bytes` (`DAEDA_CACHE_MAX_BYTES`): the row cache's bound; 0 is off.
    pub cache_max_bytes: usize,
    /// The Redis key namespace (`namespace`, `DAEDA_NAMESPACE`), default `default`.
    pub namespace: String,
    /// When `/readyz` says ready (`ready_when`, `DAEDA_READY_WHEN`).
    pub ready_when: ReadyWhen,
    /// `admin_listen` (`DAEDA_ADMIN_LISTEN`): `/metrics` there instead of on `listen`.
    pub admin_listen: Option<String>,
    pub limits: ServeLimits,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_jwks: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub sql: SqlSettings,
    /// `quack.listen` (`DAEDA_QUACK_LISTEN`): serve Quack here; off when unset.
    pub quack_listen: Option<String>,
    /// `quack.timeout_ms` (`DAEDA_QUACK_TIMEOUT_MS`, default 60 s).
    pub quack_timeout_ms: u64,
}

/// The flags every command that needs them shares.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Folder of feature service YAML [env: DAEDA_CATALOG] [default: feature_services]
    #[arg(long, global = true)]
    pub catalog: Option<PathBuf>,
    /// Redis URL [env: DAEDA_REDIS_URL] [default: redis://127.0.0.1:6379/0]
    #[arg(long, global = true)]
    pub redis: Option<String>,
    /// Where the MetadataStore lives [env: DAEDA_RUN_ROOT] [default: .daeda]
    #[arg(long, global = true)]
    pub run_root: Option<PathBuf>,
    /// Runtime settings file [default: ./daeda.toml when it exists]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match env(name) {
        None => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| crate::UsageError(format!("{name}={v} is not a valid value")).into())
        }
    }
}

impl Config {
    pub fn load(o: &Overrides) -> Result<Config> {
        let file = match &o.config {
            Some(p) => read(p)?,
            None if Path::new("daeda.toml").is_file() => read(Path::new("daeda.toml"))?,
            None => FileConfig::default(),
        };
        let limits = ServeLimits::load(&file)?;

        let jwt = file.jwt.unwrap_or_default();
        let sql = file.sql.unwrap_or_default();
        let sql = SqlSettings {
            enabled: env_parse("DAEDA_SQL_ENABLED")?.or(sql.enabled).unwrap_or(true),
            timeout_ms: env_parse("DAEDA_SQL_TIMEOUT_MS")?.or(sql.timeout_ms).unwrap_or(4000),
            max_rows: env_parse("DAEDA_SQL_MAX_ROWS")?.or(sql.max_rows).unwrap_or(10_000),
            max_result_bytes: env_parse("DAEDA_SQL_MAX_RESULT_BYTES")?.or(sql.max_result_bytes).unwrap_or(16 << 20),
            concurrency: env_parse("DAEDA_SQL_CONCURRENCY")?.or(sql.concurrency).unwrap_or(4),
            memory_limit: env("DAEDA_SQL_MEMORY_LIMIT").or(sql.memory_limit).unwrap_or_else(|| "1GB".into()),
            threads: env_parse("DAEDA_SQL_THREADS")?.or(sql.threads).unwrap_or(2),
            max_address_space_mb: env_parse("DAEDA_SQL_MAX_ADDRESS_SPACE_MB")?
                .or(sql.max_address_space_mb)
                .unwrap_or(8192),
        };
        if sql.timeout_ms == 0 || sql.max_rows == 0 || sql.concurrency == 0 || sql.threads == 0 {
            return Err(crate::UsageError(
                "sql.timeout_ms, sql.max_rows, sql.concurrency and sql.threads must be greater than 0".into(),
            )
            .into());
        }
        let namespace =
            env("DAEDA_NAMESPACE").or(file.namespace).unwrap_or_else(|| daeda_online::keys::DEFAULT_NAMESPACE.into());
        daeda_online::keys::Keys::new(&namespace)
            .map_err(|e| crate::UsageError(format!("namespace (DAEDA_NAMESPACE or daeda.toml): {e}")))?;
        let ready_when = match env("DAEDA_READY_WHEN").or(file.ready_when).as_deref() {
            None | Some("all") => ReadyWhen::All,
            Some("any") => ReadyWhen::Any,
            Some(other) => {
                return Err(crate::UsageError(format!(
                    "ready_when (DAEDA_READY_WHEN or daeda.toml) is `{other}`, expected `all` or `any`"
                ))
                .into())
            }
        };
        let quack = file.quack.unwrap_or_default();
        let quack_timeout_ms = env_parse("DAEDA_QUACK_TIMEOUT_MS")?.or(quack.timeout_ms).unwrap_or(60_000);
        if quack_timeout_ms == 0 {
            return Err(crate::UsageError("quack.timeout_ms must be greater than 0".into()).into());
        }
        // Every DuckDB session of this process that reads S3 uses these; the
        // environment wins over the file (see `daeda_offline::s3`).
        let s3 = daeda_offline::s3::S3Settings::load(&file.s3.unwrap_or_default())
            .map_err(|e| crate::UsageError(format!("s3 (daeda.toml or the environment): {e}")))?;
        daeda_offline::s3::configure(s3);
        Ok(Config {
            namespace,
            ready_when,
            admin_listen: env("DAEDA_ADMIN_LISTEN").or(file.admin_listen),
            listen: env("DAEDA_LISTEN").or(file.listen).unwrap_or_else(|| "127.0.0.1:7070".into()),
            redis_url: o
                .redis
                .clone()
                .or_else(|| env("DAEDA_REDIS_URL"))
                .or(file.redis_url)
                .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
            catalog: o
                .catalog
                .clone()
                .or_else(|| env("DAEDA_CATALOG").map(PathBuf::from))
                .or(file.catalog)
                .unwrap_or_else(|| "feature_services".into()),
            run_root: o
                .run_root
                .clone()
                .or_else(|| env("DAEDA_RUN_ROOT").map(PathBuf::from))
                .or(file.run_root)
                .unwrap_or_else(|| ".daeda".into()),
            tls_cert: env("DAEDA_TLS_CERT").map(PathBuf::from).or(file.tls_cert),
            tls_key: env("DAEDA_TLS_KEY").map(PathBuf::from).or(file.tls_key),
            allow_remote: env_parse("DAEDA_ALLOW_REMOTE")?.or(file.allow_remote).unwrap_or(false),
            redis_read_from_replicas: env_parse("DAEDA_REDIS_READ_FROM_REPLICAS")?
                .or(file.redis_read_from_replicas)
                .unwrap_or(false),
            max_batch: env_parse("DAEDA_MAX_BATCH")?.or(file.max_batch).unwrap_or(1000),
            cache_max_bytes: env_parse("DAEDA_CACHE_MAX_BYTES")?.or(file.cache_max_bytes).unwrap_or(0),
            limits,
            jwt_secret: env("DAEDA_JWT_SECRET").or(jwt.secret),
            jwt_public_key: env("DAEDA_JWT_PUBLIC_KEY").map(PathBuf::from).or(jwt.public_key),
            jwt_jwks: env("DAEDA_JWT_JWKS").map(PathBuf::from).or(jwt.jwks),
            jwt_issuer: env("DAEDA_JWT_ISSUER").or(jwt.issuer),
            jwt_audience: env("DAEDA_JWT_AUDIENCE").or(jwt.audience),
            sql,
            quack_listen: env("DAEDA_QUACK_LISTEN").or(quack.listen),
            quack_timeout_ms,
        })
    }
}

pub use daeda_gateway::ReadyWhen;

fn read(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // Name the line (and so the key) of a type error; toml's message alone does not.
        let at = e.span().and_then(|span| {
            let line = text.as_bytes()[..span.start.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1;
            text.lines().nth(line - 1).map(|l| format!(" line {line} (`{}`)", l.trim()))
        });
        crate::UsageError(format!("{}{}: {}", path.display(), at.unwrap_or_default(), e.message())).into()
    })
}

/// `daeda serve`'s pools, timeouts and connection limits: without explicit
/// bounds a dead Redis or an idle client holds resources forever. Each is a
/// key of `daeda.toml` and `DAEDA_<KEY>` (which wins); times are in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// `redis_pool_size`: pooled Redis connections.
    pub redis_pool_size: usize,
    /// `redis_timeout_ms`: connecting, waiting for a pooled connection, each reply.
    pub redis_timeout_ms: u64,
    /// `request_timeout_ms`: past it a request answers 504.
    pub request_timeout_ms: u64,
    /// `refresh_interval_ms`: how often live generation pointers are re-read.
    pub refresh_interval_ms: u64,
    /// `max_connections`: client connections at once; past it, 503 and close.
    pub max_connections: usize,
    /// `header_read_timeout_ms`: for a request head to arrive (also the wait
    /// for the next request on a kept-alive HTTP/1.1 connection).
    pub header_read_timeout_ms: u64,
    /// `idle_timeout_ms`: a connection with no request for this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            redis_pool_size: 32,
            redis_timeout_ms: 1000,
            request_timeout_ms: 5000,
            refresh_interval_ms: 500,
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl ServeLimits {
    /// The file's values, then the environment's; each must be at least 1,
    /// and a bad one is a usage error naming its key.
    fn load(file: &FileConfig) -> Result<ServeLimits> {
        fn pick<T: std::str::FromStr + Copy + PartialOrd + From<u8>>(
            key: &str,
            from_file: Option<T>,
            default: T,
        ) -> Result<T> {
            let var = format!("DAEDA_{}", key.to_ascii_uppercase());
            let v = env_parse(&var)
                .map_err(|_| {
                    crate::UsageError(format!(
                        "{var}: `{}` is not a whole number for {key}",
                        env(&var).unwrap_or_default()
                    ))
                })?
                .or(from_file)
                .unwrap_or(default);
            if v < T::from(1) {
                return Err(crate::UsageError(format!("{key} must be at least 1 (from {var} or daeda.toml)")).into());
            }
            Ok(v)
        }
        let d = ServeLimits::default();
        Ok(ServeLimits {
            redis_pool_size: pick("redis_pool_size", file.redis_pool_size, d.redis_pool_size)?,
            redis_timeout_ms: pick("redis_timeout_ms", file.redis_timeout_ms, d.redis_timeout_ms)?,
            request_timeout_ms: pick("request_timeout_ms", file.request_timeout_ms, d.request_timeout_ms)?,
            refresh_interval_ms: pick("refresh_interval_ms", file.refresh_interval_ms, d.refresh_interval_ms)?,
            max_connections: pick("max_connections", file.max_connections, d.max_connections)?,
            header_read_timeout_ms: pick(
                "header_read_timeout_ms",
                file.header_read_timeout_ms,
                d.header_read_timeout_ms,
            )?,
            idle_timeout_ms: pick("idle_timeout_ms", file.idle_timeout_ms, d.idle_timeout_ms)?,
        })
    }
}
