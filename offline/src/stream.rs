//! A query's result as Arrow batches, one DuckDB chunk at a time.
//!
//! duckdb-rs's Arrow iterator panics on an error in the middle of a result (an
//! interrupt, a failed cast); this streams through `step()` instead, which
//! returns the error. Memory holds one chunk, not the result.

use duckdb::arrow::datatypes::SchemaRef;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{Connection, Statement};

use crate::query::KeySlice;

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

/// Environment variable: entities one pass of the latest-rows query covers
/// ([`LatestRows`]; `0`: one pass whatever the size).
pub const ENTITIES_PER_PASS_ENV: &str = "DAEDA_ENTITIES_PER_PASS";

/// The default of [`ENTITIES_PER_PASS_ENV`]. DuckDB holds per-entity state
/// for the entities of one pass (about 170 bytes each): 1M entities peak near
/// 340 MiB in the benchmark, which runs in one pass as before passes. Passes
/// follow entities, not rows: a source with a long history per entity
/// (daily snapshots) needs no more passes than its entities call for.
pub const ENTITIES_PER_PASS: u64 = 1_000_000;

/// At most this many passes, whatever [`ENTITIES_PER_PASS_ENV`] says: each
/// rescans the source.
pub const MAX_PASSES: u64 = 1024;

/// Environment variable: source rows above which each pass is staged in a
/// temporary table before it streams (`0`: always).
pub const STAGE_ABOVE_ROWS_ENV: &str = "DAEDA_STAGE_ABOVE_ROWS";

/// The default of [`STAGE_ABOVE_ROWS_ENV`]: 3M entities × 2 rows streamed in
/// the measurements, 6M × 2 stalled.
pub const STAGE_ABOVE_ROWS: u64 = 4_000_000;

fn env_rows(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The latest-rows query over a source of `source_rows` rows, in passes over
/// disjoint slices of the key space, streamed one after another.
///
/// Why passes: DuckDB's state for the query grows with the entities it sees
/// (4.5 GiB at 10M entities in one pass), and a memory limit makes it spill
/// (3.4× slower, measured). A pass over 1/K of the entities holds 1/K of that
/// state and rescans the source, which costs less than spilling.
///
/// Why staging: DuckDB 1.5.5's streaming execution of that query stalls on
/// large sources (measured: 6M and 10M entities × 2 rows of the benchmark
/// schema, in one pass or in ten; the consumer waits in
/// `Executor::WaitForTask` while the scheduler's threads sleep, in stock
/// DuckDB too), while the same query written into a table completes. Over
/// the threshold each pass goes to a temporary table first (it spills under
/// `memory_limit`) and is streamed from there.
pub struct LatestRows<'conn> {
    conn: &'conn Connection,
    passes: std::collections::VecDeque<String>,
    stage: bool,
    current: Option<ArrowStream<'conn>>,
}

impl<'conn> LatestRows<'conn> {
    /// Starts the first pass. `sql` builds the query of one slice;
    /// `entities` estimates the source's entities (a scan of its keys), asked
    /// only when the source has more rows than one pass takes entities.
    pub fn start(
        conn: &'conn Connection,
        source_rows: u64,
        entities: impl FnOnce() -> Result<u64, duckdb::Error>,
        sql: impl Fn(KeySlice) -> String,
    ) -> Result<LatestRows<'conn>, duckdb::Error> {
        let count = match env_rows(ENTITIES_PER_PASS_ENV, ENTITIES_PER_PASS) {
            0 => 1,
            per_pass if source_rows <= per_pass => 1,
            // The estimate samples the key space: a pass may take 5% more
            // entities than asked rather than add a pass for an estimate's error.
            per_pass => entities()?.div_ceil(per_pass + per_pass / 20).clamp(1, MAX_PASSES),
        };
        let above = env_rows(STAGE_ABOVE_ROWS_ENV, STAGE_ABOVE_ROWS);
        // The stall follows the size of the source scanned, not of the slice:
        // a pass over a tenth of 10M entities stalls as the whole query does.
        let stage = above == 0 || source_rows > above;
        if count > 1 {
            tracing::info!(
                source_rows,
                passes = count,
                "reading the latest rows in passes over slices of the key space"
            );
        }
        let passes = KeySlice::all_of(count).map(sql).collect();
        let mut rows = LatestRows { conn, passes, stage, current: None };
        rows.next_pass()?;
        Ok(rows)
    }

    /// The next chunk (it may hold no rows), or None after the last pass.
    /// After an error, later calls return None and no later pass runs: the
    /// caller has the error, so nothing can read on past it.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, duckdb::Error> {
        let next = self.advance();
        if next.is_err() {
            self.passes.clear();
            self.current = None;
        }
        next
    }

    fn advance(&mut self) -> Result<Option<RecordBatch>, duckdb::Error> {
        loop {
            let Some(stream) = self.current.as_mut() else { return Ok(None) };
            if let Some(batch) = stream.next_batch()? {
                return Ok(Some(batch));
            }
            self.next_pass()?;
        }
    }

    fn next_pass(&mut self) -> Result<(), duckdb::Error> {
        // The previous pass's statement goes first: staging replaces its table.
        self.current = None;
        let Some(sql) = self.passes.pop_front() else { return Ok(()) };
        self.current = Some(if self.stage {
            tracing::info!("staging the latest rows in a temporary table before streaming them");
            self.conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE daeda_latest_rows AS {sql}"))?;
            ArrowStream::start(self.conn, "SELECT * FROM daeda_latest_rows")?
        } else {
            ArrowStream::start(self.conn, &sql)?
        });
        Ok(())
    }
}
