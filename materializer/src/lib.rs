//! The materializer: offline output -> latest row per entity -> a new Redis
//! generation, flipped atomically.
//!
//! Pipeline of one run: `daeda-offline` opens the offline output in DuckDB,
//! checks its schema and streams the latest-per-entity query (`produce`, on a
//! blocking thread); [`encode`] turns the Arrow batches into online rows;
//! `write` drains them into Redis with pooled, pipelined connections under the
//! run's lease; `run` drives one run start to finish, moves the pointer and
//! records it.
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
mod produce;
mod request;
mod run;
mod write;

pub use error::MaterializeError;
pub use request::{Mode, Progress, RunRequest, RunSummary, Settings};
pub use run::Materializer;
