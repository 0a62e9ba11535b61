//! The SQL plane's engine, run in its own process (`daeda sql-worker`):
//! [`session`] holds the DuckDB session no query can change and runs one
//! statement at a time under bounds; [`worker`] confines the process and
//! answers the gateway's query frames, checking DuckDB's own parse against
//! the policy's before anything runs.
//!
//! The walls of the SQL plane, each of which stops the known attacks alone:
//! 1. the policy's lexical wall and fixed point (`daeda-policy`);
//! 2. DuckDB's parse of the exact text agrees with the policy ([`worker::answer`]);
//! 3. exactly one SELECT runs ([`session::Session::execute`]);
//! 4. a read-only catalog, a fresh connection per query, external access off,
//!    configuration locked, writes confined by Landlock ([`session`], [`worker::confine`]);
//! 5. bounded work: limits before recursion, capped allocation functions,
//!    DuckDB memory/thread limits, a deadline that re-interrupts, result caps;
//! 6. this process: its address space capped, its death a 503, never the
//!    gateway's.

mod exposure;
pub mod quack;
pub mod session;
pub mod worker;

pub use session::{Session, SessionLimits};
pub use worker::{serve, WorkerSettings};
