use daeda_offline::OfflineError;
use daeda_online::OnlineError;

/// Why a materialization failed. Every variant leaves the live generation as it was.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The service's `serving.allowed` is false: it is never materialized online.
    #[error("service `{0}` is not approved for serving (serving.allowed: false); it is never materialized online")]
    NotAllowed(String),
    /// The source is missing or unreadable, its schema drifted, or DuckDB
    /// refused the query (e.g. an array of the wrong length fails its cast).
    #[error(transparent)]
    Offline(#[from] OfflineError),
    /// DuckDB returned a column of another Arrow type than the declared one casts to.
    #[error("{service}: column `{column}` came back from DuckDB as {found}")]
    UnexpectedColumn { service: String, column: String, found: String },
    /// A NULL in a column declared `nullable: false`.
    #[error("`{service}`: column `{column}` is declared nullable: false but is NULL for entity ({entity})")]
    NullValue { service: String, column: String, entity: String },
    /// A value the row format cannot hold faithfully.
    #[error("`{service}`: column `{column}` of entity ({entity}): {reason}")]
    BadValue { service: String, column: String, entity: String, reason: String },
    /// Redis failed or is unreachable.
    #[error(transparent)]
    Online(#[from] OnlineError),
    /// Redis has no room for a second generation beside the live one.
    #[error(
        "Redis has no room for a new generation of `{service}`: it needs about {need} bytes beside the live one, \
         {used} of maxmemory {max} are used; raise maxmemory or free memory (the live generation is untouched)"
    )]
    NoRoom { service: String, need: u64, used: u64, max: u64 },
    /// An incremental run needs a live generation to update.
    #[error("`{0}` has no live generation to update; run a full materialization first (--mode full)")]
    NoLiveGeneration(String),
    /// The definition changed since the live generation was written.
    #[error(
        "the live generation of `{service}` was written with schema fingerprint {online}, the definition now has \
         {defined}; an incremental run cannot mix them, run a full materialization (--mode full)"
    )]
    FingerprintChanged { service: String, online: String, defined: String },
    /// Fewer rows reached Redis than were read.
    #[error("`{service}`: {written} of {expected} rows were written; the generation was not made live")]
    Incomplete { service: String, written: u64, expected: u64 },
    /// The run was asked to stop (SIGTERM / SIGINT) and did, cleanly.
    #[error(
        "the run of `{0}` was interrupted before it finished: no generation was flipped or advanced, and its unfinished rows were removed"
    )]
    Interrupted(String),
    /// The MetadataStore failed.
    #[error(transparent)]
    Records(#[from] daeda_metadata_store::StoreError),
    /// A task of the run (the DuckDB reader, a writer) panicked or was cancelled.
    #[error("internal error: {task} died: {source}")]
    TaskDied { task: &'static str, source: tokio::task::JoinError },
}

/// DuckDB errors of the materializer's own queries are offline errors too.
impl From<duckdb::Error> for MaterializeError {
    fn from(e: duckdb::Error) -> Self {
        MaterializeError::Offline(e.into())
    }
}
