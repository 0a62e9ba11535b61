//! The SQL plane's DuckDB session: the relations a query may see, in a catalog
//! no query can change, and the one-statement, bounded execution of a query.
//!
//! Invariants (walls 3 and 4 of the SQL plane; each holds with the policy
//! switched off, which the tests below do):
//! - the service views live in a database file built once at start-up and
//!   then opened READ_ONLY: CREATE, DROP, ALTER and macro creation fail;
//! - every query runs on a fresh connection, so per-connection state a
//!   statement could leave (temporary objects, temporary macros shadowing
//!   built-ins, `search_path`, profiling) dies with it;
//! - external access is off but for the local sources' own folders and the
//!   exact objects of the S3 sources, listed at build (see [`crate::exposure`]),
//!   read only; the configuration is locked, extension loading is off;
//! - exactly one statement runs, and only if DuckDB's own parser reads the
//!   text as one SELECT; `Connection::prepare` would run the earlier
//!   statements of a batch, so a batch never reaches it;
//! - after each query the attached databases and the secrets are compared
//!   with those at start-up (a DETACH or a CREATE SECRET is instance-wide, and
//!   neither a read-only database nor `lock_configuration` refuses it); a
//!   difference marks the session damaged and the worker replaces it;
//! - the S3 credentials live only in the secret, scoped to the approved
//!   services' prefixes: the instance settings httpfs fills from the
//!   environment are blanked, and the worker drops them from its environment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use daeda_catalog::{Catalog, Source};
use daeda_offline::sql::literal;
use daeda_offline::stream::ArrowStream;
use daeda_offline::OfflineError;
use daeda_sql_wire::{Query, Reply};
use duckdb::{AccessMode, Config, Connection};

use crate::exposure::{expose, s3_scope, Exposure};

/// Resource bounds of the session.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// DuckDB's `memory_limit` (e.g. `1GB`).
    pub memory_limit: String,
    /// DuckDB's worker threads.
    pub threads: u32,
}

pub struct Session {
    /// Read-only instance holding the views; queries run on clones.
    base: Mutex<Connection>,
    /// An empty in-memory instance whose only use is `json_serialize_sql`:
    /// DuckDB's parser, with nothing to read or change.
    scratch: Mutex<Connection>,
    /// [`instance_state`] at start-up.
    state: String,
    damaged: AtomicBool,
    /// Folder holding the views database (and DuckDB's spill files).
    _dir: PathBuf,
}

/// Why the session could not be built, or a connection or parse of it had.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// DuckDB refused a step of building, opening or using the session.
    #[error("{0}")]
    DuckDb(#[from] duckdb::Error),
    /// The instance could not be prepared (extension directory, DuckLake).
    #[error(transparent)]
    Offline(#[from] OfflineError),
    /// A service's source could not be attached, or its view created.
    #[error("service `{service}`: {source}")]
    Service { service: String, source: duckdb::Error },
    /// A service's objects on S3 could not be listed or attached (the
    /// message is redacted of credentials).
    #[error("service `{service}`: {source}")]
    Remote { service: String, source: OfflineError },
    /// The settings that lock the session down could not be applied.
    #[error("locking the session: {0}")]
    Lock(duckdb::Error),
    /// A thread panicked holding one of the session's connections.
    #[error("{0} lock poisoned")]
    Poisoned(&'static str),
    /// The caller's preparation before the lock (the Quack worker's
    /// extensions and callbacks) failed.
    #[error("{0}")]
    Prepare(String),
    /// DuckDB's parse is not JSON.
    #[error("{0}")]
    ParseJson(#[from] serde_json::Error),
}

impl Session {
    /// Builds the views of every service of `catalog` whose serving is allowed
    /// into `dir/views.duckdb`, then opens that file read-only and locks it down.
    pub fn open(catalog: &Catalog, dir: &Path, limits: &SessionLimits) -> Result<Session, SessionError> {
        Self::open_with(catalog, dir, limits, &|_| Ok(()))
    }

    /// As [`Session::open`], running `before_lock` on the base connection
    /// just before the configuration is locked (the Quack worker loads its
    /// extensions and sets its callbacks there; nothing can change them after).
    pub fn open_with(
        catalog: &Catalog,
        dir: &Path,
        limits: &SessionLimits,
        before_lock: &dyn Fn(&Connection) -> Result<(), String>,
    ) -> Result<Session, SessionError> {
        let file = dir.join("views.duckdb");
        let exposed: Vec<_> = catalog.services().filter(|s| s.serving.allowed).collect();
        let needs_ducklake = exposed.iter().any(|s| matches!(s.source, Source::DuckLake { .. }));
        // httpfs and the S3 secret only when a served service is on S3, the
        // secret valid for those services' prefixes alone.
        let scopes: BTreeSet<String> = exposed.iter().filter_map(|s| s3_scope(&s.source)).collect();
        let scopes: Vec<String> = scopes.into_iter().collect();
        let prepare = |conn: &Connection| -> Result<(), SessionError> {
            prepare_instance(conn, needs_ducklake)?;
            if !scopes.is_empty() {
                daeda_offline::s3::prepare_scoped(conn, &scopes)?;
            }
            Ok(())
        };
        let exposures: Vec<(String, Exposure)> = {
            let build = Connection::open_with_flags(&file, no_persistent_secrets()?)?;
            prepare(&build)?;
            let mut exposures = Vec::new();
            for (i, s) in exposed.iter().enumerate() {
                match expose(&build, s, i) {
                    Ok(e) => exposures.push((s.name.clone(), e)),
                    // An unreachable store must not take the local services down with it.
                    Err(e) if daeda_offline::s3::source_is_remote(&s.source) => eprintln!(
                        "daeda sql-worker: warning: `{}` is not served over SQL until the worker restarts: {}",
                        s.name,
                        daeda_offline::s3::redact(&e.to_string())
                    ),
                    Err(e) => return Err(e),
                }
            }
            build.execute_batch("CHECKPOINT")?;
            exposures
        };
        let config = no_persistent_secrets()?
            .access_mode(AccessMode::ReadOnly)
            .and_then(|c| c.threads(i64::from(limits.threads.max(1))))
            .and_then(|c| c.max_memory(&limits.memory_limit))
            .and_then(|c| c.enable_autoload_extension(false))?;
        let base = Connection::open_with_flags(&file, config)?;
        prepare(&base)?;
        let (mut dirs, mut paths) = (BTreeSet::new(), BTreeSet::new());
        for (name, e) in &exposures {
            for a in &e.attach {
                base.execute_batch(a).map_err(|source| SessionError::Service { service: name.clone(), source })?;
            }
            dirs.extend(e.dirs.iter().map(|d| format!("{}/", d.trim_end_matches('/'))));
            paths.extend(e.paths.iter().cloned());
        }
        let list = |set: &BTreeSet<String>| set.iter().map(|d| literal(d)).collect::<Vec<_>>().join(", ");
        // Exact URLs only: DuckDB compares remote paths uncanonicalised.
        let allowed_paths =
            if paths.is_empty() { String::new() } else { format!("SET allowed_paths = [{}];", list(&paths)) };
        let dirs = list(&dirs);
        before_lock(&base).map_err(SessionError::Prepare)?;
        let spill = dir.join("spill");
        base.execute_batch(&format!(
            "SET temp_directory = {};
             SET allowed_directories = [{dirs}];
             {allowed_paths}
             SET enable_external_access = false;
             SET autoinstall_known_extensions = false;
             SET autoload_known_extensions = false;
             SET lock_configuration = true;",
            literal(&spill.display().to_string())
        ))
        .map_err(SessionError::Lock)?;
        let scratch = Connection::open_in_memory_with_flags(
            no_persistent_secrets()?.enable_external_access(false).and_then(|c| c.enable_autoload_extension(false))?,
        )?;
        scratch.execute_batch("SET lock_configuration = true")?;
        let state = instance_state(&base)?;
        Ok(Session {
            base: Mutex::new(base),
            scratch: Mutex::new(scratch),
            state,
            damaged: AtomicBool::new(false),
            _dir: dir.to_path_buf(),
        })
    }

    /// A fresh connection, as each query gets. Tests use it to show what the
    /// session refuses with every wall in front of it switched off.
    pub fn query_connection(&self) -> Result<Connection, SessionError> {
        Ok(self.base.lock().map_err(|_| SessionError::Poisoned("session"))?.try_clone()?)
    }

    /// Compares the attached databases and secrets with those at start-up; on a
    /// difference the session is marked damaged for good. A check that
    /// cannot run (e.g. under memory pressure) proves nothing either way and
    /// is retried after the next query.
    pub fn verify_intact(&self) -> bool {
        let now = self.base.lock().map_err(|_| SessionError::Poisoned("session")).and_then(|c| instance_state(&c));
        match now {
            Ok(now) if now != self.state => {
                self.damaged.store(true, Ordering::SeqCst);
                false
            }
            Ok(_) => true,
            Err(e) => {
                eprintln!(
                    "daeda sql-worker: warning: could not check the session's attached databases and secrets: {e}"
                );
                true
            }
        }
    }

    /// Whether a query changed instance-wide state; the worker then exits
    /// after answering, and its supervisor starts a fresh one.
    pub fn damaged(&self) -> bool {
        self.damaged.load(Ordering::SeqCst)
    }

    /// DuckDB's own parse of `sql`, as `json_serialize_sql` gives it. Parses
    /// and executes nothing else.
    pub fn duckdb_parse(&self, sql: &str) -> Result<serde_json::Value, SessionError> {
        let text: String = {
            let scratch = self.scratch.lock().map_err(|_| SessionError::Poisoned("parser"))?;
            scratch.query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0))?
        };
        // The tree is as deep as the query; the caller's thread has the stack
        // for it (the worker runs queries on threads sized for the policy's limits).
        let mut de = serde_json::Deserializer::from_str(&text);
        de.disable_recursion_limit();
        Ok(serde::Deserialize::deserialize(&mut de)?)
    }

    /// Runs one query with no policy in front: walls 3 and 4 only. The worker
    /// calls [`crate::worker::answer`], which puts wall 2 first.
    pub fn execute(&self, q: &Query, cancel: &CancelSlot, started: Instant) -> Reply {
        let deadline = started + Duration::from_millis(q.timeout_ms);
        if Instant::now() >= deadline {
            return Reply::Timeout("the query did not start before its deadline; it was not run".into());
        }
        // Wall 3: DuckDB's own parser must see exactly one SELECT.
        match self.duckdb_parse(&q.sql) {
            Ok(parse) => {
                if parse.get("error").and_then(serde_json::Value::as_bool) != Some(false) {
                    let msg = parse.get("error_message").and_then(serde_json::Value::as_str).unwrap_or("not a SELECT");
                    return Reply::Refused(format!("only a single SELECT may run here ({msg})"));
                }
                let n = parse.get("statements").and_then(serde_json::Value::as_array).map_or(0, Vec::len);
                if n != 1 {
                    return Reply::Refused(format!("exactly one statement may run; DuckDB reads {n}"));
                }
            }
            Err(e) => return Reply::Refused(format!("DuckDB cannot parse the query: {e}")),
        }
        let conn = match self.query_connection() {
            Ok(c) => c,
            Err(e) => return Reply::Internal(e.to_string()),
        };
        let interrupt = conn.interrupt_handle();
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        cancel.arm(interrupt.clone());
        // Re-interrupts until the query ends: one interrupt can land between
        // two pipeline tasks and be missed.
        let watchdog = {
            let done = done.clone();
            std::thread::Builder::new()
                .name("sql-deadline".into())
                .spawn(move || {
                    let (lock, cv) = &*done;
                    let mut finished = lock.lock().expect("deadline lock");
                    while !*finished {
                        let now = Instant::now();
                        if now >= deadline {
                            interrupt.interrupt();
                            finished = cv.wait_timeout(finished, Duration::from_millis(20)).expect("deadline lock").0;
                        } else {
                            finished = cv.wait_timeout(finished, deadline - now).expect("deadline lock").0;
                        }
                    }
                })
                .ok()
        };
        let outcome = run_statement(&conn, q, deadline);
        {
            let (lock, cv) = &*done;
            *lock.lock().expect("deadline lock") = true;
            cv.notify_all();
        }
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        cancel.disarm();
        drop(conn);
        self.verify_intact();
        outcome
    }
}

/// The configuration every instance of the session starts from: it never
/// reads DuckDB's persistent secrets (`~/.duckdb/stored_secrets`): an operator's own S3, GCS or Azure
/// keys must not be loaded into the SQL plane. Also, once external access is
/// off, a first look at the secrets (the check after each query) would fail
/// on that folder instead of reading the in-memory ones.
fn no_persistent_secrets() -> Result<Config, duckdb::Error> {
    Config::default().with("allow_persistent_secrets", "false")
}

/// Sets the time zone and loads DuckLake (before anything is locked).
fn prepare_instance(conn: &Connection, ducklake: bool) -> Result<(), SessionError> {
    daeda_offline::session::prepare(conn)?;
    if ducklake {
        daeda_offline::load_ducklake(conn)?;
    }
    Ok(())
}

/// The instance-wide state no query may change, and `lock_configuration`
/// does not freeze: the attached databases (ATTACH/DETACH) and the secrets
/// (CREATE/DROP SECRET still run on a locked instance; a secret's redacted
/// text names its scope and endpoint, never its key).
fn instance_state(conn: &Connection) -> Result<String, SessionError> {
    conn.query_row(
        "SELECT (SELECT coalesce(string_agg(database_name || ':' || readonly::VARCHAR || ':' || coalesce(path, ''), ',' ORDER BY database_name), '') FROM duckdb_databases())
             || '|' || (SELECT coalesce(string_agg(secret_string, ',' ORDER BY name), '') FROM duckdb_secrets())",
        [],
        |r| r.get(0),
    )
    .map_err(Into::into)
}

fn run_statement(conn: &Connection, q: &Query, deadline: Instant) -> Reply {
    let timed_out = |e: &duckdb::Error| Instant::now() >= deadline || e.to_string().contains("INTERRUPT");
    let mut stream = match ArrowStream::start(conn, &q.sql) {
        Ok(s) => s,
        Err(e) if timed_out(&e) => {
            return Reply::Timeout(format!("the query ran past its deadline of {} ms", q.timeout_ms))
        }
        Err(e) => return Reply::QueryError(e.to_string()),
    };
    // Each batch is encoded as it arrives, so the byte cap is exact and
    // applies before the whole result is held.
    let schema = stream.schema();
    let too_large = || {
        Reply::TooLarge(format!("the result is over {} bytes; select fewer columns or rows, or aggregate", q.max_bytes))
    };
    let mut w = match arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema) {
        Ok(w) => w,
        Err(e) => return Reply::Internal(format!("encoding the result: {e}")),
    };
    let (mut rows, mut truncated) = (0usize, false);
    loop {
        let mut batch = match stream.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) if timed_out(&e) => {
                return Reply::Timeout(format!("the query ran past its deadline of {} ms", q.timeout_ms))
            }
            Err(e) => return Reply::QueryError(e.to_string()),
        };
        if rows + batch.num_rows() > q.max_rows {
            batch = batch.slice(0, q.max_rows - rows);
            truncated = true;
        }
        rows += batch.num_rows();
        if let Err(e) = w.write(&batch) {
            return Reply::Internal(format!("encoding the result: {e}"));
        }
        if w.get_ref().len() > q.max_bytes {
            return too_large();
        }
        if truncated {
            break;
        }
    }
    match w.finish().and_then(|()| w.into_inner()) {
        Ok(buf) if buf.len() > q.max_bytes => too_large(),
        Ok(buf) => Reply::Rows { arrow_ipc: buf, truncated },
        Err(e) => Reply::Internal(format!("encoding the result: {e}")),
    }
}

/// Where the worker finds a running query's interrupt handle to cancel it.
#[derive(Default, Clone)]
pub struct CancelSlot(Arc<Mutex<(Option<Arc<duckdb::InterruptHandle>>, bool)>>);

impl CancelSlot {
    fn arm(&self, h: Arc<duckdb::InterruptHandle>) {
        let mut g = self.0.lock().expect("cancel lock");
        if g.1 {
            h.interrupt();
        }
        g.0 = Some(h);
    }

    fn disarm(&self) {
        self.0.lock().expect("cancel lock").0 = None;
    }

    /// Interrupts the query now, or as soon as it starts.
    pub fn cancel(&self) {
        let mut g = self.0.lock().expect("cancel lock");
        g.1 = true;
        if let Some(h) = &g.0 {
            h.interrupt();
        }
    }
}
