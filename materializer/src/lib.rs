//! The materializer: offline output -> latest row per entity -> a new Redis
//! generation, flipped atomically.
//!
//! Pipeline of one run: [`source`] opens the offline output in DuckDB,
//! [`offline`] checks its schema and runs the latest-per-entity query, [`encode`]
//! turns the streamed Arrow batches into online rows, and [`run`] writes them
//! with pooled, pipelined connections and moves the pointer.
//!
//! Invariants:
//! - the pointer flips only after every row of the generation is written and
//!   counted, and only while this run holds the service's lease;
//! - a run that fails, at any step, leaves the live generation whole and serving,
//!   and is recorded as failed in the MetadataStore; once its writers have
//!   stopped it removes the generation it wrote into unless that one is live
//!   (an incremental run that lost its lease may have written into a
//!   generation another run retired meanwhile);
//! - memory is bounded by a few batches in flight, not by the table size.

mod duck;
pub mod encode;
mod error;
pub mod offline;
mod run;
pub mod source;

pub use duck::{load_ducklake, session, EXTENSION_DIR_ENV};
pub use error::MaterializeError;
pub use run::{Materializer, Mode, Progress, RunRequest, RunSummary, Settings};
