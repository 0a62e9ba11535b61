//! The online store: daeda's binary row format ([`codec`]), its Redis key layout
//! ([`keys`]), generation metadata ([`GenerationMeta`]) and every Redis operation
//! ([`OnlineStore`]), and the rendering of rows as JSON and Arrow ([`render`]).
//! Shared by the materializer (writes), the gateway and `daeda online get`
//! (reads) and the skew checker (reads), and free of DuckDB.

mod batch;
pub mod cache;
pub mod codec;
mod connect;
mod error;
pub mod keys;
pub mod lookup;
mod meta;
mod pool;
mod redact;
pub mod render;
mod store;

pub use batch::RowBatch;
pub use error::OnlineError;
pub use meta::{GenerationMeta, ServedColumn, ServedSchema};
pub use redact::redact;
pub use store::{ConditionalWrites, Connection, MemoryInfo, OnlineStore, StoreSettings};
