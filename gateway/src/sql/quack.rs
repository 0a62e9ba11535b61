//! The gateway's side of the Quack endpoint: it starts a Quack worker
//! (`daeda sql-worker --quack ADDR`, a process of its own beside the SQL
//! worker), restarts it when it dies, and answers its callbacks' questions.
//! Tokens, grants and the policy live here only; the worker just relays.
//!
//! Deny by default. What a session may run:
//! - the two catalog queries an `ATTACH` client sends, byte for byte, each
//!   answered with a constant SELECT listing only the services the token may
//!   read (as views: the client then scans them with `FROM main.<name>`,
//!   which the policy reads like any query);
//! - anything the policy approves for the token's grants, as for
//!   `POST /v1/sql` (same cache, same reasons), replaced by the policy's
//!   printed text.
//!
//! Invariants:
//! - a session is admitted only with a token that verifies and grants the
//!   `sql` plane; the token is verified again before every query, so an
//!   expired or revoked token stops working mid-session;
//! - at most [`MAX_SESSIONS`] sessions are open, [`MAX_SESSIONS_PER_SUB`] per
//!   token subject; past either, a new connection is refused (never another
//!   session evicted: a session the gateway forgot stays open in the Quack
//!   server, so eviction would bound nothing there). The bound is the Quack
//!   server's own: DuckDB 1.5.5's quack extension crashes (`free(): invalid
//!   pointer`, or SIGSEGV) when its connection table grows past about 2048
//!   while `quack_active_connections()` lists it, which the worker's sweep
//!   does; a stock server with the same sweep reproduces it. A session is
//!   forgotten only when the server no longer lists it: there is no
//!   disconnect callback, so twice a second the worker lists the server's
//!   live connections and the gateway forgets the rest (a `quack_query`
//!   call's session ends with the call);
//! - an unknown session is refused whatever it sends.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use daeda_sql_wire::quack::{Answer, Ask};
use daeda_sql_wire::quote::literal;
use daeda_sql_wire::{frame_len, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::Command;

use super::WorkerCommand;
use crate::auth::Plane;
use crate::State;

/// Open sessions in all; well below the ~2048 at which the Quack server crashes.
pub const MAX_SESSIONS: usize = 1536;
/// Open sessions one `sub` may hold: past it, its new connections are refused,
/// so one token holder alone can neither crash the server nor fill it. A
/// `quack_query` call's session counts until a sweep sees it gone (up to
/// [`SWEEP_GRACE`] and a sweep later), so this leaves room for a client
/// issuing a couple of hundred calls a second.
pub const MAX_SESSIONS_PER_SUB: usize = 512;
/// A session admitted this recently survives a sweep it is not listed in.
const SWEEP_GRACE: Duration = Duration::from_secs(2);

/// What an `ATTACH` client sends first: the remote's catalogs and schemas.
pub const SCHEMATA_QUERY: &str =
    "\nSELECT catalog_name, schema_name\nFROM information_schema.schemata\nWHERE catalog_name NOT IN ('system', 'temp')\nORDER BY ALL\n\t";
/// ... then its tables (with their SQL) and views.
pub const RELATIONS_QUERY: &str =
    "\nSELECT schema_name, sql, 'table'\nFROM duckdb_tables()\nUNION ALL\nSELECT schema_name, view_name, 'view'\nFROM duckdb_views()\n\t";

/// The Quack endpoint's state in the gateway.
pub struct QuackGate {
    /// Session id → (the token it was admitted with, its `sub`, when).
    sessions: Mutex<lru::LruCache<String, (String, String, Instant)>>,
    up: AtomicBool,
    restarts: AtomicU64,
    /// Ends the worker so one with the reloaded catalog's views replaces it.
    recycle: tokio::sync::Notify,
}

impl QuackGate {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Replaces the worker with one built from the catalog on disk now. Its
    /// attached clients lose their sessions and attach again: Quack has no
    /// way to move a session, and stale views must not outlive a reload.
    pub fn recycle(&self) {
        self.recycle.notify_one();
    }

    /// Sessions remembered now.
    pub fn sessions(&self) -> usize {
        self.sessions.lock().expect("session lock").len()
    }
}

/// Starts the supervisor of the Quack worker serving on `listen`.
pub(crate) fn spawn(state: Weak<State>, cmd: WorkerCommand, listen: std::net::SocketAddr) -> Arc<QuackGate> {
    let gate = Arc::new(QuackGate {
        sessions: Mutex::new(lru::LruCache::new(NonZeroUsize::new(MAX_SESSIONS).expect("non-zero"))),
        up: AtomicBool::new(false),
        restarts: AtomicU64::new(0),
        recycle: tokio::sync::Notify::new(),
    });
    tokio::spawn(supervise(state, cmd, listen, gate.clone()));
    gate
}

async fn supervise(state: Weak<State>, cmd: WorkerCommand, listen: std::net::SocketAddr, gate: Arc<QuackGate>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        if state.strong_count() == 0 {
            return;
        }
        if !first {
            gate.restarts.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let (served, why) = run_one(&state, &cmd, listen, &gate).await;
        gate.up.store(false, Ordering::Relaxed);
        tracing::warn!(error = %why, "the Quack worker stopped");
        backoff = if served { Duration::from_millis(100) } else { (backoff * 2).min(Duration::from_secs(5)) };
        tokio::time::sleep(backoff).await;
    }
}

/// One Quack worker's life; returns whether it came up, and why it ended.
async fn run_one(
    state: &Weak<State>,
    cmd: &WorkerCommand,
    listen: std::net::SocketAddr,
    gate: &QuackGate,
) -> (bool, String) {
    let dir = match super::worker::private_dir() {
        Ok(d) => d,
        Err(e) => return (false, e),
    };
    let socket = dir.join("quack.sock");
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => return (false, format!("binding {}: {e}", socket.display())),
    };
    let child = Command::new(&cmd.program)
        .args(&cmd.args)
        .arg("--socket")
        .arg(&socket)
        .arg("--quack")
        .arg(listen.to_string())
        .arg("--quack-deadline-ms")
        .arg(state.upgrade().map_or(60_000, |s| s.cfg.quack_timeout.as_millis() as u64).to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("starting {}: {e}", cmd.program.display())),
    };
    let accepted = tokio::select! {
        a = tokio::time::timeout(Duration::from_secs(120), listener.accept()) => a,
        status = child.wait() => {
            let _ = std::fs::remove_dir_all(&dir);
            return (false, format!("it exited before connecting ({status:?})"));
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut stream = match accepted {
        Ok(Ok((s, _))) => s,
        Ok(Err(e)) => return (false, e.to_string()),
        Err(_) => return (false, "it did not connect within 120 s".into()),
    };
    tracing::info!(pid = child.id(), %listen, "the Quack worker is connected");
    gate.up.store(true, Ordering::Relaxed);
    // The worker asks one question at a time: answer each in turn.
    let questions = async {
        loop {
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
            let mut payload = vec![0u8; frame_len(prefix).map_err(|e| e.to_string())?];
            stream.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
            let (id, ask) = Ask::decode(&payload).map_err(|e| e.to_string())?;
            let Some(state) = state.upgrade() else { return Err("the gateway is stopping".to_string()) };
            let answer = answer(&state, gate, ask).await;
            stream.write_all(&answer.encode(id)).await.map_err(|e| e.to_string())?;
        }
        #[allow(unreachable_code)]
        Ok::<(), String>(())
    };
    let why = tokio::select! {
        r = questions => format!("its socket closed ({})", r.err().unwrap_or_default()),
        status = child.wait() => format!("it exited ({status:?})"),
        _ = gate.recycle.notified() => "it was recycled to serve the reloaded catalog".to_string(),
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    // Sessions die with the worker that held them.
    gate.sessions.lock().expect("session lock").clear();
    (true, why)
}

/// The gateway's decision on one question, counted in `/metrics` under
/// `route="quack"` (the worker's own sweeps are not).
async fn answer(state: &State, gate: &QuackGate, ask: Ask) -> Answer {
    let started = Instant::now();
    let counted = !matches!(ask, Ask::Alive { .. });
    let (answer, status) = decide(state, gate, ask).await;
    if counted {
        state.events.request("quack", status, started.elapsed(), None);
    }
    answer
}

fn refuse(status: u16, why: impl Into<String>) -> (Answer, u16) {
    (Answer::Refused(why.into()), status)
}

async fn decide(state: &State, gate: &QuackGate, ask: Ask) -> (Answer, u16) {
    let Some(plane) = state.sql.as_ref() else { return refuse(404, "the SQL plane is not enabled on this gateway") };
    match ask {
        Ask::Authenticate { session, token } => {
            let who = match state.verifier.verify(Some(&format!("Bearer {token}"))) {
                Ok(w) => w,
                Err(e) => return refuse(401, format!("daeda: {e}")),
            };
            if !who.planes.contains(&Plane::Sql) {
                return refuse(403, "daeda: the token does not grant the sql plane");
            }
            let mut sessions = gate.sessions.lock().expect("session lock");
            if sessions.len() >= MAX_SESSIONS {
                return refuse(
                    503,
                    format!("daeda: the Quack endpoint holds {MAX_SESSIONS} open connections; retry later"),
                );
            }
            if sessions.iter().filter(|(_, (_, sub, _))| *sub == who.sub).count() >= MAX_SESSIONS_PER_SUB {
                return refuse(
                    429,
                    format!(
                        "daeda: this token's subject holds {MAX_SESSIONS_PER_SUB} open Quack connections (a quack_query call's counts for a few seconds after it ends); DETACH some or retry shortly"
                    ),
                );
            }
            sessions.put(session, (token, who.sub, Instant::now()));
            (Answer::Admitted, 200)
        }
        Ask::Overran { session } => {
            // The same cooldown as a killed HTTP query: one client cannot keep
            // the worker restarting. The subject is the one the session was
            // admitted with, not the token verified again: a token that expired
            // while its query ran (say, one sent at the end of its leeway) must
            // not spare its subject the cooldown.
            let sub = gate.sessions.lock().expect("session lock").get(&session).map(|(_, sub, _)| sub.clone());
            if let Some(sub) = sub {
                tracing::warn!(sub = %sub, "a Quack query ran past its deadline; the Quack worker restarts");
                plane.cool_down(&sub);
            }
            (Answer::Admitted, 504)
        }
        Ask::Alive { sessions: live } => {
            // Forget sessions the server no longer holds; a session admitted
            // just now may not be listed yet, so those stay.
            let live: std::collections::HashSet<String> = live.into_iter().collect();
            let mut sessions = gate.sessions.lock().expect("session lock");
            let gone: Vec<String> = sessions
                .iter()
                .filter(|(id, (_, _, at))| !live.contains(*id) && at.elapsed() > SWEEP_GRACE)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                sessions.pop(&id);
            }
            (Answer::Admitted, 200)
        }
        Ask::Authorize { session, query } => {
            let token = gate.sessions.lock().expect("session lock").get(&session).map(|(t, _, _)| t.clone());
            let Some(token) = token else { return refuse(401, "daeda: unknown session; connect again with a token") };
            let who = match state.verifier.verify(Some(&format!("Bearer {token}"))) {
                Ok(w) if w.planes.contains(&Plane::Sql) => w,
                Ok(_) => return refuse(403, "daeda: the token does not grant the sql plane"),
                // The session stays counted until the server drops it (the
                // sweep): forgetting it here would not close it there.
                Err(e) => return refuse(401, format!("daeda: {e}")),
            };
            if let Some(left) = plane.cooling(&who.sub) {
                return refuse(
                    429,
                    format!("daeda: a query of this token had to be stopped; retry in {} s", left.as_secs().max(1)),
                );
            }
            let granted = state.sql_grants(&who);
            let query_for = |sql: String, grants: Vec<String>, relations: Vec<String>| Query {
                sql,
                grants,
                relations,
                max_rows: state.cfg.sql_max_rows,
                max_bytes: state.cfg.sql_max_bytes,
                timeout_ms: state.cfg.sql_timeout.as_millis() as u64,
            };
            if let Some(sql) = introspection(&query, &granted) {
                return (Answer::Approved(query_for(sql, vec![], vec![])), 200);
            }
            let decision = match plane.policy.check(&query, granted.clone()).await {
                Ok(d) => d,
                Err(e) => return refuse(503, format!("daeda: {e}")),
            };
            match decision {
                Ok(a) => (Answer::Approved(query_for(a.sql, granted, a.relations.into_iter().collect())), 200),
                Err(d) => {
                    state.events.sql_denied("quack", &who.sub, &d.reason);
                    refuse(403, format!("daeda: {}", d.reason))
                }
            }
        }
    }
}

/// The answer to an `ATTACH` client's catalog queries, built from the grants
/// (never from DuckDB's catalog): a constant SELECT, no relation, no function.
pub fn introspection(query: &str, granted: &[String]) -> Option<String> {
    if query == SCHEMATA_QUERY {
        return Some("SELECT 'views' AS catalog_name, 'main' AS schema_name".into());
    }
    if query != RELATIONS_QUERY {
        return None;
    }
    if granted.is_empty() {
        return Some("SELECT 'main' AS schema_name, '' AS sql, 'view' AS kind WHERE false".into());
    }
    Some(
        granted
            .iter()
            .map(|name| format!("SELECT 'main' AS schema_name, {} AS sql, 'view' AS kind", literal(name)))
            .collect::<Vec<_>>()
            .join(" UNION ALL "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn introspection_lists_only_grants_and_only_for_the_exact_texts() {
        let sql = introspection(RELATIONS_QUERY, &["a".into(), "b".into()]).unwrap();
        assert!(sql.contains("'a'") && sql.contains("'b'") && !sql.contains("pii"));
        assert!(introspection(&RELATIONS_QUERY.replace('\t', ""), &["a".into()]).is_none());
        assert!(introspection(SCHEMATA_QUERY, &[]).is_some());
        assert!(introspection("SELECT * FROM duckdb_views()", &[]).is_none());
    }
}
