//! A query's result as Arrow batches, one DuckDB chunk at a time.
//!
//! duckdb-rs's Arrow iterator panics on an error in the middle of a result (an
//! interrupt, a failed cast); this streams through `step()` instead, which
//! returns the error. Memory holds one chunk, not the result.

use duckdb::arrow::datatypes::SchemaRef;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{Connection, Statement};

/// A running query whose batches are read with [`ArrowStream::next_batch`].
pub struct ArrowStream<'conn> {
    stmt: Statement<'conn>,
}

impl<'conn> ArrowStream<'conn> {
    /// Prepares and starts `sql`. An error here is DuckDB's, from the parse,
    /// the bind or the first chunk.
    pub fn start(conn: &'conn Connection, sql: &str) -> Result<ArrowStream<'conn>, duckdb::Error> {
        let mut stmt = conn.prepare(sql)?;
        // Executes the statement; the panicking iterator it returns is never used.
        drop(stmt.stream_arrow([])?);
        Ok(ArrowStream { stmt })
    }

    /// The result's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        self.stmt.schema()
    }

    /// The next chunk (it may hold no rows), or None at the end of the result.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, duckdb::Error> {
        Ok(self.stmt.step()?.map(|chunk| RecordBatch::from(&chunk)))
    }
}

/// Environment variable: source rows above which [`latest_rows`] stages the
/// result in a temporary table before streaming it (`0`: always).
pub const STAGE_ABOVE_ROWS_ENV: &str = "DAEDA_STAGE_ABOVE_ROWS";

/// The default of [`STAGE_ABOVE_ROWS_ENV`]: 3M entities × 2 rows streamed in
/// the measurements, 6M × 2 stalled.
pub const STAGE_ABOVE_ROWS: u64 = 4_000_000;

/// Streams the latest-rows query `sql` over a source of `source_rows` rows.
///
/// Why staging: DuckDB 1.5.5's streaming execution of that query stalls on
/// large inputs (measured: 6M and 10M entities × 2 rows of the benchmark
/// schema; the threads wait and never finish, in stock DuckDB too), while the
/// same query written into a table completes. Above the threshold the result
/// goes to a temporary table first (it spills under `memory_limit`) and is
/// streamed from there; below it, where streaming is measured to work, rows
/// stream straight through, holding one chunk.
pub fn latest_rows<'conn>(
    conn: &'conn Connection,
    sql: &str,
    source_rows: u64,
) -> Result<ArrowStream<'conn>, duckdb::Error> {
    let above =
        std::env::var(STAGE_ABOVE_ROWS_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(STAGE_ABOVE_ROWS);
    if source_rows <= above && above > 0 {
        return ArrowStream::start(conn, sql);
    }
    tracing::info!(source_rows, above, "staging the latest rows in a temporary table before streaming them");
    conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE daeda_latest_rows AS {sql}"))?;
    ArrowStream::start(conn, "SELECT * FROM daeda_latest_rows")
}
