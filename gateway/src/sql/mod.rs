//! `POST /v1/sql`: the policy decides (on its own threads, [`policy_runner`]),
//! a separate worker process runs what it approved ([`worker`]), and
//! `daeda_online::render::sql` renders the worker's Arrow result as JSON (or
//! the handler passes it through).
//!
//! The gateway links no DuckDB: everything a query can do to an engine
//! happens in another process.

pub mod policy_runner;
pub mod quack;
pub mod worker;

pub use worker::{SqlWorker, WorkerCommand, WorkerError};
