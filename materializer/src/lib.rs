//! The materializer: offline output -> latest row per entity -> a new Redis
//! generation, flipped atomically.
//!
//! Pipeline of one run: `daeda-offline` opens the offline output in DuckDB,
//! checks its schema and streams the latest-per-entity query; [`encode`] turns
//! the Arrow batches into online rows, and [`run`] writes them with pooled,
//! pipelined connections and moves the pointer.
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

pub mod encode;
mod error;
mod run;

pub use error::MaterializeError;
pub use run::{Materializer, Mode, Progress, RunRequest, RunSummary, Settings};
