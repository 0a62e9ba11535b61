use std::path::PathBuf;

use crate::session::EXTENSION_DIR_ENV;

/// Why the offline side could not be read. The materializer, the skew checker
/// and the SQL plane carry it as their own error's cause.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A Parquet source whose glob matches nothing.
    #[error("the source path matches no file: {0}")]
    NoFiles(String),
    /// A DuckDB source whose database file is missing.
    #[error("the DuckDB database {} does not exist", .0.display())]
    NoDatabase(PathBuf),
    /// A DuckLake source whose catalog file is missing.
    #[error("the DuckLake catalog {} does not exist", .0.display())]
    NoLakeCatalog(PathBuf),
    /// A file the live generation read is gone, so that read cannot be repeated.
    #[error("{0}, read by the live generation, no longer exists")]
    RecordedFileGone(String),
    /// A source file's size and modification time cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Stat { path: PathBuf, source: std::io::Error },
    /// The DuckLake extension can be neither loaded nor installed.
    #[error("the DuckLake extension is not available ({0}); run scripts/bootstrap.sh or set {EXTENSION_DIR_ENV}")]
    NoDuckLake(#[source] duckdb::Error),
    /// The httpfs extension (for sources on S3) can be neither loaded nor installed.
    #[error("the httpfs extension (needed for sources on S3) is not available ({0}); run scripts/bootstrap.sh or set {EXTENSION_DIR_ENV}")]
    NoHttpfs(String),
    /// DuckDB refused the S3 secret built from the settings (its text holds credentials, so it is not quoted).
    #[error(
        "the S3 settings were refused by DuckDB: check s3.endpoint, s3.region, s3.url_style and the AWS_* variables"
    )]
    S3Secret,
    /// Reading or listing an S3 location failed; `reason` is one clause, credential-free.
    #[error("cannot read {url}: {reason}")]
    S3 { url: String, reason: String },
    /// DuckDB refused a query (bad file, cast failure such as an array of the wrong length).
    /// Credentials are redacted from its message (see [`crate::s3::redact`]).
    #[error("DuckDB: {}", crate::s3::redact(&.0.to_string()))]
    DuckDb(#[from] duckdb::Error),
    /// The source's schema does not match the declared columns.
    #[error("schema drift in `{service}`: {mismatches} declared column(s) do not match the source:\n{diff}")]
    SchemaDrift { service: String, mismatches: usize, diff: String },
}
