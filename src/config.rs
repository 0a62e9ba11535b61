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
    max_batch: Option<usize>,
    jwt: Option<JwtFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtFile {
    secret: Option<String>,
    public_key: Option<PathBuf>,
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
    pub max_batch: usize,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
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
        Some(v) => v.parse().map(Some).map_err(|_| anyhow::anyhow!("{name}={v} is not a valid value")),
    }
}

impl Config {
    pub fn load(o: &Overrides) -> Result<Config> {
        let file = match &o.config {
            Some(p) => read(p)?,
            None if Path::new("daeda.toml").is_file() => read(Path::new("daeda.toml"))?,
            None => FileConfig::default(),
        };
        let jwt = file.jwt.unwrap_or_default();
        Ok(Config {
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
            max_batch: env_parse("DAEDA_MAX_BATCH")?.or(file.max_batch).unwrap_or(1000),
            jwt_secret: env("DAEDA_JWT_SECRET").or(jwt.secret),
            jwt_public_key: env("DAEDA_JWT_PUBLIC_KEY").map(PathBuf::from).or(jwt.public_key),
            jwt_issuer: env("DAEDA_JWT_ISSUER").or(jwt.issuer),
            jwt_audience: env("DAEDA_JWT_AUDIENCE").or(jwt.audience),
        })
    }
}

fn read(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| crate::UsageError(format!("{}: {}", path.display(), e.message())).into())
}
