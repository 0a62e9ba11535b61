//! Offline outputs on S3-compatible object storage, read through DuckDB's
//! `httpfs` extension with one session secret.
//!
//! Credentials come the standard way, from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (never from a file daeda
//! reads, so they stay out of `daeda.toml`). The store's address comes from
//! `daeda.toml`'s `[s3]` table with the environment winning: `AWS_ENDPOINT_URL`
//! (an endpoint means path-style addressing, and its scheme says TLS or not),
//! `AWS_REGION` / `AWS_DEFAULT_REGION`, `DAEDA_S3_URL_STYLE`, `DAEDA_S3_USE_SSL`.
//!
//! Invariants:
//! - httpfs is loaded and the secret created only in sessions whose source is
//!   on S3 ([`is_remote`]);
//! - no credential reaches a log, a run record or an error: [`S3Settings`]'s
//!   `Debug` hides them, the secret's SQL is never echoed, and every DuckDB
//!   message that leaves this crate goes through [`redact`].

use std::sync::OnceLock;

use duckdb::Connection;

use crate::sql::literal;
use crate::OfflineError;

/// `[s3]` in `daeda.toml`: where the store is, not who we are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3File {
    /// `http(s)://host:port` or `host:port`; `AWS_ENDPOINT_URL` wins.
    pub endpoint: Option<String>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`) wins.
    pub region: Option<String>,
    /// `path` or `vhost`; `DAEDA_S3_URL_STYLE` wins. Default: `path` with an endpoint.
    pub url_style: Option<String>,
    /// `DAEDA_S3_USE_SSL` wins; default: the endpoint's scheme, else true.
    pub use_ssl: Option<bool>,
}

/// The S3 settings after every layer is applied.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub key_id: Option<String>,
    pub secret: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    /// `host[:port]`, without a scheme (DuckDB's `ENDPOINT`).
    pub endpoint: Option<String>,
    pub url_style: Option<String>,
    pub use_ssl: Option<bool>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("key_id", &hidden(&self.key_id))
            .field("secret", &hidden(&self.secret))
            .field("session_token", &hidden(&self.session_token))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("url_style", &self.url_style)
            .field("use_ssl", &self.use_ssl)
            .finish()
    }
}

/// Why the S3 settings are invalid (a usage error for the CLI).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3ConfigError(String);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl S3Settings {
    /// `file` (the `[s3]` table), then the environment, which wins.
    pub fn load(file: &S3File) -> Result<S3Settings, S3ConfigError> {
        let raw_endpoint =
            env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")).or_else(|| file.endpoint.clone());
        let (endpoint, scheme_ssl) = match raw_endpoint.as_deref().map(str::trim) {
            None => (None, None),
            Some(e) => {
                let (rest, ssl) = if let Some(r) = e.strip_prefix("https://") {
                    (r, Some(true))
                } else if let Some(r) = e.strip_prefix("http://") {
                    (r, Some(false))
                } else if e.contains("://") {
                    return Err(S3ConfigError(format!("the S3 endpoint `{e}` is neither http:// nor https://")));
                } else {
                    (e, None)
                };
                (Some(rest.trim_end_matches('/').to_string()), ssl)
            }
        };
        let use_ssl = match env("DAEDA_S3_USE_SSL") {
            Some(v) => Some(
                v.parse::<bool>().map_err(|_| S3ConfigError(format!("DAEDA_S3_USE_SSL={v} is not true or false")))?,
            ),
            None => scheme_ssl.or(file.use_ssl),
        };
        let url_style = env("DAEDA_S3_URL_STYLE")
            .or_else(|| file.url_style.clone())
            .or_else(|| endpoint.as_ref().map(|_| "path".into()));
        if let Some(s) = &url_style {
            if s != "path" && s != "vhost" {
                return Err(S3ConfigError(format!(
                    "s3.url_style (DAEDA_S3_URL_STYLE) is `{s}`, expected `path` or `vhost`"
                )));
            }
        }
        Ok(S3Settings {
            key_id: env("AWS_ACCESS_KEY_ID"),
            secret: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).or_else(|| file.region.clone()),
            endpoint,
            url_style,
            use_ssl,
        })
    }

    /// The `CREATE SECRET` statement, valid for URLs under `scopes` only when
    /// any are given. It holds the credentials: never log it.
    fn secret_sql(&self, scopes: &[String]) -> String {
        let mut opts = vec!["TYPE s3".to_string()];
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                opts.push(format!("{k} {}", literal(v)));
            }
        };
        put("KEY_ID", &self.key_id);
        put("SECRET", &self.secret);
        put("SESSION_TOKEN", &self.session_token);
        put("REGION", &self.region);
        put("ENDPOINT", &self.endpoint);
        put("URL_STYLE", &self.url_style);
        if let Some(ssl) = self.use_ssl {
            opts.push(format!("USE_SSL {ssl}"));
        }
        if !scopes.is_empty() {
            let list = scopes.iter().map(|s| literal(s)).collect::<Vec<_>>().join(", ");
            opts.push(format!("SCOPE [{list}]"));
        }
        format!("CREATE OR REPLACE SECRET daeda_s3 ({})", opts.join(", "))
    }
}

static CONFIGURED: OnceLock<S3Settings> = OnceLock::new();

/// Sets the process's S3 settings (the CLI does, from `daeda.toml` and the
/// environment). Without it, sessions read the environment alone.
pub fn configure(settings: S3Settings) {
    let _ = CONFIGURED.set(settings);
}

fn settings() -> S3Settings {
    CONFIGURED.get().cloned().unwrap_or_else(|| S3Settings::load(&S3File::default()).unwrap_or_default())
}

/// Whether `path` names an S3 location rather than a local file. Only
/// `s3://`: other stores (`gs://`, `r2://`, `az://`) need other secret types.
pub fn is_remote(path: &str) -> bool {
    path.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("s3://"))
}

/// Whether `source` reads anything from object storage (a Parquet glob on
/// S3, a DuckLake data path on S3).
pub fn source_is_remote(source: &daeda_catalog::Source) -> bool {
    match source {
        daeda_catalog::Source::Parquet { path } => is_remote(path),
        daeda_catalog::Source::DuckLake { data_path, .. } => is_remote(&data_path.to_string_lossy()),
        daeda_catalog::Source::DuckDb { .. } => false,
    }
}

/// Loads httpfs and creates the session's S3 secret. Called only for sources
/// on S3, so local-only sessions never load httpfs.
pub fn prepare(conn: &Connection) -> Result<(), OfflineError> {
    prepare_scoped(conn, &[])
}

/// As [`prepare`], with the secret valid only for URLs that start with one
/// of `scopes` (DuckDB picks a secret by longest matching scope, and a URL
/// that matches none is sent unsigned). The SQL plane scopes it to the
/// approved services' prefixes, so a read that slipped past its other walls
/// carries no credentials to another prefix or bucket.
pub fn prepare_scoped(conn: &Connection, scopes: &[String]) -> Result<(), OfflineError> {
    if conn.execute_batch("LOAD httpfs").is_err() {
        conn.execute_batch("INSTALL httpfs; LOAD httpfs")
            .map_err(|e| OfflineError::NoHttpfs(redact(&first_line(&e.to_string()))))?;
    }
    // DuckDB's message for a bad option may quote the statement; say only what failed.
    conn.execute_batch(&settings().secret_sql(scopes)).map_err(|_| OfflineError::S3Secret)?;
    // Loading httpfs copies AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    // AWS_SESSION_TOKEN from the environment into instance-wide settings:
    // readable with `current_setting`, and used to sign any URL no secret's
    // scope covers. The secret above carries the credentials; the settings
    // are blanked so that neither holds.
    conn.execute_batch(
        "SET GLOBAL s3_access_key_id = ''; SET GLOBAL s3_secret_access_key = ''; SET GLOBAL s3_session_token = '';",
    )
    .map_err(|_| OfflineError::S3Secret)?;
    Ok(())
}

/// The environment variables [`S3Settings::load`] reads credentials from.
const CREDENTIAL_VARIABLES: [&str; 3] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Removes the credentials from this process's environment once [`configure`]
/// holds them, so nothing that reads the environment later (an extension
/// loaded in a DuckDB session, a credential provider) finds them. The SQL
/// worker calls it before it opens DuckDB.
///
/// Call it before the process starts threads that read the environment:
/// changing the environment races with a concurrent `getenv`.
pub fn forget_environment_credentials() {
    for name in CREDENTIAL_VARIABLES {
        std::env::remove_var(name);
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// `msg` with every configured credential replaced by `***`.
pub fn redact(msg: &str) -> String {
    let s = settings();
    let mut out = msg.to_string();
    for v in [&s.secret, &s.session_token, &s.key_id].into_iter().flatten() {
        if v.len() >= 4 {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// One sentence for a failed read of `url`: what S3 answered, without
/// DuckDB's multi-line context and without credentials.
pub fn read_error(url: &str, err: &duckdb::Error) -> OfflineError {
    let msg = err.to_string();
    let reason = if msg.contains("NoSuchBucket") {
        "the bucket does not exist".to_string()
    } else if msg.contains("403")
        || msg.contains("InvalidAccessKeyId")
        || msg.contains("SignatureDoesNotMatch")
        || msg.contains("AccessDenied")
    {
        "access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)".to_string()
    } else if msg.contains("Could not establish connection")
        || msg.contains("Connection refused")
        || msg.contains("Failed to connect")
    {
        "the S3 endpoint cannot be reached: check AWS_ENDPOINT_URL / s3.endpoint".to_string()
    } else if msg.contains("404") {
        // A HEAD (one object, no glob) gets no body saying which is missing.
        "the object or its bucket does not exist".to_string()
    } else {
        redact(&first_line(&msg))
    };
    OfflineError::S3 { url: url.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_credentials() {
        let s = S3Settings {
            key_id: Some("AKIAEXAMPLE".into()),
            secret: Some("s3cr3t-value".into()),
            ..Default::default()
        };
        let d = format!("{s:?}");
        assert!(!d.contains("AKIAEXAMPLE") && !d.contains("s3cr3t-value"), "{d}");
    }

    #[test]
    fn a_scoped_secret_names_its_scopes() {
        let s = S3Settings { region: Some("eu-west-1".into()), ..Default::default() };
        assert!(!s.secret_sql(&[]).contains("SCOPE"));
        let sql = s.secret_sql(&["s3://b/a/".into(), "s3://b/it's/".into()]);
        assert!(sql.ends_with("SCOPE ['s3://b/a/', 's3://b/it''s/'])"), "{sql}");
    }

    #[test]
    fn remote_paths_are_recognised() {
        assert!(is_remote("s3://bucket/x/*.parquet"));
        assert!(is_remote("S3://bucket/x"));
        assert!(!is_remote("/data/s3/x.parquet"));
        assert!(!is_remote("s3"));
    }
}
