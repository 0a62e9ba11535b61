//! Rows: a full run's batches (one fenced MSET each), an incremental run's
//! conditional writes, and reads.
//!
//! Every write of a run is fenced by the service's lease: on one server a
//! full run's batch is a transaction that `WATCH`es the lease, an incremental
//! row's script reads it first, atomically; on a
//! cluster (where the lease and a row live in different slots) the lease is
//! read before each batch. A run that lost its lease therefore stops writing
//! within a batch (one server: before it) instead of writing rows into a
//! generation another run may already have retired, where nobody would find
//! them again.

use std::collections::HashMap;

use super::scripts::PUT_IF_NEWER;
use super::{Connection, OnlineStore};
use crate::{OnlineError, RowBatch};

/// What a conditional (incremental) write did to each row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConditionalWrites {
    /// Entities that were not online before.
    pub inserted: u64,
    /// Entities whose online row was older and got replaced.
    pub replaced: u64,
    /// Entities whose online row was as new or newer and was kept.
    pub kept: u64,
}

/// Attempts of one batch whose transaction touches of the lease keep aborting
/// while the lease stays this run's. Renewals come a third of the ttl apart,
/// so a second attempt almost always succeeds; the bound only keeps a
/// pathological stream of touches from looping forever.
const PUT_ATTEMPTS: usize = 64;

impl OnlineStore {
    /// Writes a full run's rows as long as `run_id` holds the service's lease:
    /// on one server `WATCH` the lease, read it, then `MULTI`/`MSET`/`EXEC`,
    /// which Redis aborts if the lease changed (or expired) in between; on a
    /// cluster a lease read then one MSET. One MSET for the batch instead of a
    /// command per row, which is what Redis spends its CPU on (a script doing
    /// the check and the MSET cost about a third of the run's throughput: Lua
    /// copies every row). A lost lease is [`OnlineError::LeaseLost`], and
    /// nothing of the batch is written (on one server).
    pub async fn put_rows(
        &self,
        conn: &mut Connection,
        rows: &RowBatch,
        service: &str,
        run_id: &str,
    ) -> Result<(), OnlineError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut mset = redis::cmd("MSET");
        for (k, v) in rows.iter() {
            mset.arg(k).arg(v);
        }
        if self.cluster {
            self.check_lease(conn, service, run_id).await?;
            return mset.query_async::<()>(&mut **conn).await.map_err(|e| self.err(e));
        }
        let lease = self.keys.lease(service);
        let mut tx = redis::pipe();
        tx.atomic().add_command(mset).ignore();
        // EXEC answers nil when the watched lease was touched in between:
        // nothing was written. That is also what this run's own renewal does
        // (PEXPIRE touches the key), so an aborted batch is retried while the
        // lease is still ours; a run writing for longer than a third of the
        // lease's ttl would otherwise fail as if it had lost it.
        for _ in 0..PUT_ATTEMPTS {
            let ((), holder): ((), Option<String>) = redis::pipe()
                .cmd("WATCH")
                .arg(&lease)
                .cmd("GET")
                .arg(&lease)
                .query_async(&mut **conn)
                .await
                .map_err(|e| self.err(e))?;
            if holder.as_deref() != Some(run_id) {
                let _: () = redis::cmd("UNWATCH").query_async(&mut **conn).await.map_err(|e| self.err(e))?;
                return Err(OnlineError::LeaseLost { service: service.to_string() });
            }
            let done: Option<()> = tx.query_async(&mut **conn).await.map_err(|e| self.err(e))?;
            if done.is_some() {
                return Ok(());
            }
        }
        Err(OnlineError::LeaseLost { service: service.to_string() })
    }

    /// Writes each row unless the online one is as new or newer, in one pipeline,
    /// as long as `run_id` holds the service's lease: on one server every write
    /// checks it atomically; on a cluster (where the lease and a row live in
    /// different slots) it is checked before the batch. A lost lease is
    /// [`OnlineError::LeaseLost`].
    pub async fn put_rows_if_newer(
        &self,
        conn: &mut Connection,
        rows: &RowBatch,
        service: &str,
        run_id: &str,
    ) -> Result<ConditionalWrites, OnlineError> {
        // EVALSHA in a pipeline cannot fall back to EVAL, so make sure the script is loaded.
        let _: String = PUT_IF_NEWER.prepare_invoke().load_async(&mut **conn).await.map_err(|e| self.err(e))?;
        let lease = self.keys.lease(service);
        // A pipeline may only span one slot of a cluster: group the rows by slot.
        type Rows<'r> = Vec<(&'r [u8], &'r [u8])>;
        let mut groups: Vec<Rows<'_>> = Vec::new();
        if self.cluster {
            self.check_lease(conn, service, run_id).await?;
            let mut by_slot: HashMap<redis::cluster_routing::Slot, Rows<'_>> = HashMap::new();
            for (k, v) in rows.iter() {
                by_slot.entry(redis::cluster_routing::Slot::for_key(k)).or_default().push((k, v));
            }
            groups.extend(by_slot.into_values());
        } else {
            groups.push(rows.iter().collect());
        }
        let mut results: Vec<i64> = Vec::with_capacity(rows.len());
        for group in groups {
            let mut p = redis::pipe();
            for (k, v) in group {
                let cmd = p.cmd("EVALSHA").arg(PUT_IF_NEWER.get_hash());
                if self.cluster {
                    cmd.arg(1).arg(k).arg(v);
                } else {
                    cmd.arg(2).arg(k).arg(&lease).arg(v).arg(run_id);
                }
            }
            let r: Vec<i64> = p.query_async(&mut **conn).await.map_err(|e| self.err(e))?;
            results.extend(r);
        }
        let mut w = ConditionalWrites::default();
        for r in results {
            match r {
                -1 => return Err(OnlineError::LeaseLost { service: service.to_string() }),
                1 => w.inserted += 1,
                2 => w.replaced += 1,
                _ => w.kept += 1,
            }
        }
        Ok(w)
    }

    /// The rows under `keys`, in order, in one round trip.
    pub async fn get_rows<K: redis::ToRedisArgs + Sync>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        redis::cmd("MGET").arg(keys).query_async(&mut *c).await.map_err(|e| self.err(e))
    }

    /// Counts the row keys of a generation with SCAN, holding one page at a time.
    pub async fn count_rows(&self, service: &str, generation: &str) -> Result<u64, OnlineError> {
        let mut c = self.conn().await?;
        let mut scan = self.key_scan(&mut c, &self.keys.row_pattern(service, generation), 5000).await?;
        let mut n = 0u64;
        while let Some(page) = scan.next(self, &mut c).await? {
            n += page.len() as u64;
        }
        Ok(n)
    }
}
