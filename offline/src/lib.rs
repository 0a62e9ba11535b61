//! The offline side of daeda, in DuckDB: everything that reads a service's
//! offline output, shared by the materializer, the skew checker and the SQL
//! plane so that the three read the same relation the same way.
//!
//! - [`session`]: a DuckDB session set up alike everywhere (UTC, extension
//!   directory, thread and memory bounds) and loading DuckLake;
//! - [`source`]: a service's source (Parquet, DuckDB file, DuckLake) made one
//!   SQL relation, with the snapshot of what was read;
//! - [`query`]: the source's schema checked against the definition, and the one
//!   query that defines "the online row";
//! - [`s3`]: sources on S3-compatible object storage (httpfs, the session
//!   secret, credential redaction);
//! - [`sql`]: quoting and the `ATTACH` statements, written once;
//! - [`stream`]: Arrow batches of a query as DuckDB produces them.
//!
//! Invariants:
//! - every string that reaches SQL text goes through [`sql::literal`] or
//!   [`sql::ident`];
//! - sources are attached read-only; nothing here writes to a source;
//! - this crate knows nothing of Redis or of the online row format (the
//!   materializer's encoder turns Arrow into online rows), so the SQL plane
//!   links DuckDB without the online store.

mod error;
pub mod query;
pub mod s3;
pub mod session;
pub mod source;
pub mod sql;
pub mod stream;

pub use error::OfflineError;
pub use session::{load_ducklake, session, EXTENSION_DIR_ENV};
