//! `daeda sql-worker`: the process the gateway starts to run SQL, so that an
//! abort, an out-of-memory kill or a runaway query in DuckDB never takes the
//! online plane with it (wall 6). It connects to the gateway's Unix socket,
//! answers each query frame with one reply frame, and exits when the gateway
//! goes away (end of stream) or when a query damaged its session.
//!
//! Before DuckDB starts any thread, the process confines itself:
//! - Landlock (Linux ≥ 5.13): no file may be created, written, truncated,
//!   renamed or removed anywhere but the worker's private folder, whatever a
//!   statement asks (COPY TO, EXPORT DATABASE, ATTACH of a new file);
//! - `RLIMIT_AS`: its address space is capped, so an allocation bomb fails
//!   inside the worker instead of growing until the machine's OOM killer
//!   picks a victim;
//! - nice [`NICE`]: on a busy machine the scheduler serves the gateway's
//!   lookups first; SQL gets the cores they leave idle.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use daeda_catalog::Catalog;
use daeda_policy::{duckdb::agree, Approved, Grants};
use daeda_sql_wire::{frame_len, Query, Reply, Request};

use crate::session::{CancelSlot, Session, SessionLimits};

/// Queries a worker runs at once, whatever the gateway sends: each holds a
/// thread with [`QUERY_STACK`] of stack inside the capped address space.
pub const MAX_IN_FLIGHT: usize = 16;

/// Stack of a query thread: DuckDB's parser and binder stop at an expression
/// depth of 1000, and the parse's JSON (read without serde's depth limit) is
/// a few frames per level, so 32 MiB is ample.
pub const QUERY_STACK: usize = 32 << 20;

/// The worker's CPU niceness (threads started later inherit it, DuckDB's too).
pub const NICE: i32 = 19;

/// How the gateway configured its worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub socket: PathBuf,
    pub limits: SessionLimits,
    /// Cap on the process's address space, bytes (0: no cap).
    pub max_address_space: u64,
}

/// How well the process could confine itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Landlock enforces the write rules.
    Enforced,
    /// The kernel has no Landlock: only DuckDB's own settings stop writes.
    Unavailable,
}

/// Forbids writes outside `private` for this thread and every thread it
/// starts later. Must run before DuckDB opens (its thread pool starts then).
pub fn confine(private: &std::path::Path) -> Result<Confinement, String> {
    use landlock::{path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI};
    let abi = ABI::V5;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_write(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules([private], AccessFs::from_write(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    Ok(match status.ruleset {
        RulesetStatus::NotEnforced => Confinement::Unavailable,
        _ => Confinement::Enforced,
    })
}

/// Confines this process (Landlock, nice, `RLIMIT_AS`) before DuckDB starts,
/// and returns the private folder the session may write (its views and spill files).
pub fn confine_process(settings: &WorkerSettings) -> Result<tempfile::TempDir, String> {
    let private =
        tempfile::Builder::new().prefix("daeda-sql-").tempdir().map_err(|e| format!("private folder: {e}"))?;
    match confine(private.path())? {
        Confinement::Enforced => {}
        Confinement::Unavailable => {
            eprintln!("daeda sql-worker: warning: this kernel has no Landlock; file writes are stopped by DuckDB's settings alone")
        }
    }
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        eprintln!("daeda sql-worker: warning: could not lower its CPU priority: {e}");
    }
    if settings.max_address_space > 0 {
        rlimit::setrlimit(rlimit::Resource::AS, settings.max_address_space, settings.max_address_space)
            .map_err(|e| format!("capping the address space: {e}"))?;
    }
    Ok(private)
}

/// The worker's main loop; returns when the gateway hangs up.
pub fn serve(catalog: &Catalog, settings: &WorkerSettings) -> Result<(), String> {
    let private = confine_process(settings)?;
    let session =
        Arc::new(Session::open(catalog, private.path(), &settings.limits).map_err(|e| format!("SQL session: {e}"))?);
    let stream = UnixStream::connect(&settings.socket).map_err(|e| format!("connecting to the gateway: {e}"))?;
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(|e| e.to_string())?));
    let running: Arc<Mutex<HashMap<u64, CancelSlot>>> = Arc::default();
    let mut reader = stream;
    loop {
        let mut prefix = [0u8; 4];
        if reader.read_exact(&mut prefix).is_err() {
            return Ok(()); // the gateway went away
        }
        let len = frame_len(prefix).map_err(|e| e.to_string())?;
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).map_err(|e| e.to_string())?;
        let (id, request) = Request::decode(&payload).map_err(|e| e.to_string())?;
        match request {
            Request::Cancel => {
                if let Some(slot) = running.lock().expect("running lock").get(&id) {
                    slot.cancel();
                }
            }
            Request::Query(q) => {
                let received = Instant::now();
                let slot = CancelSlot::default();
                {
                    let mut r = running.lock().expect("running lock");
                    if r.len() >= MAX_IN_FLIGHT {
                        drop(r);
                        let reply =
                            Reply::Internal(format!("the SQL worker is already running {MAX_IN_FLIGHT} queries"));
                        writer.lock().expect("writer lock").write_all(&reply.encode(id)).map_err(|e| e.to_string())?;
                        continue;
                    }
                    r.insert(id, slot.clone());
                }
                let (session, out, running) = (session.clone(), writer.clone(), running.clone());
                let spawned = std::thread::Builder::new().name(format!("sql-{id}")).stack_size(QUERY_STACK).spawn(move || {
                    let reply = answer(&session, &q, &slot, received);
                    running.lock().expect("running lock").remove(&id);
                    let sent = out.lock().expect("writer lock").write_all(&reply.encode(id));
                    if session.damaged() {
                        eprintln!(
                            "daeda sql-worker: a query changed the session's attached databases or secrets; exiting so a fresh session replaces it"
                        );
                        #[allow(clippy::exit)] // the worker is its own process; the gateway restarts it
                        std::process::exit(3);
                    }
                    if sent.is_err() {
                        #[allow(clippy::exit)] // the gateway hung up: nobody is left to answer
                        std::process::exit(0);
                    }
                });
                if let Err(e) = spawned {
                    let reply = Reply::Internal(format!("no thread for the query: {e}"));
                    writer.lock().expect("writer lock").write_all(&reply.encode(id)).map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

/// Wall 2, then walls 3 and 4: DuckDB's parse of the exact text must agree
/// with what the policy approved before the session runs it.
pub fn answer(session: &Session, q: &Query, cancel: &CancelSlot, received: Instant) -> Reply {
    let grants = Grants::new(&q.grants);
    let approved = Approved { sql: q.sql.clone(), relations: q.relations.iter().cloned().collect() };
    match session.duckdb_parse(&q.sql) {
        Ok(parse) => {
            if let Err(d) = agree(&parse, &grants, &approved) {
                return Reply::Disagreement(d.to_string());
            }
        }
        Err(e) => return Reply::Disagreement(format!("DuckDB cannot parse the query: {e}")),
    }
    session.execute(q, cancel, received)
}
