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
