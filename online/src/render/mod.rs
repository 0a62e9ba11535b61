//! Every body daeda renders from rows, in one place: a lookup as JSON
//! ([`json`]) or as an Arrow IPC stream ([`arrow`]), a SQL result as JSON
//! ([`sql`]), and the date, timestamp and decimal text all of them share
//! ([`text`]). The gateway, `daeda online get` and the skew checker's report
//! render through here, so the same value reads the same everywhere.
//!
//! Pure: no I/O, no Redis. Rendering never fails on a value (non-finite floats
//! are null, dates outside chrono's range are null); it fails only when Arrow
//! itself refuses a batch.

pub mod arrow;
pub mod json;
pub mod sql;
pub mod text;
