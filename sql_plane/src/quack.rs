//! `daeda sql-worker --quack ADDR`: DuckDB's own remote protocol (Quack)
//! served from a worker process of its own, so a Quack client that crashes
//! or exhausts its engine never takes HTTP SQL or the online plane with it.
//!
//! The session is the SQL worker's (same read-only views, Landlock,
//! `RLIMIT_AS`, memory and thread limits, locked configuration). The Quack
//! server's two callbacks are thin: each asks the gateway over the worker's
//! socket ([`daeda_sql_wire::quack`]) — the gateway verifies the JWT, computes
//! the grants and runs the policy — and the authorization callback returns
//! the approved text as VARCHAR, so the server runs exactly what was approved.
//!
//! Invariants:
//! - deny by default: a callback that cannot reach the gateway, gets a
//!   refusal, or whose approved text DuckDB's parser reads differently
//!   (wall 2) fails, and the Quack server refuses the request;
//! - the callbacks and `quack_*` settings are set before the configuration
//!   is locked; no query can change them afterwards (and the policy never
//!   approves a call to them);
//! - the server token is random per process: no client can present it;
//! - a query still running past the Quack deadline ends with its worker:
//!   DuckDB offers no way to interrupt one Quack connection, so the worker
//!   tells the gateway whose it was (that token then cools down) and exits,
//!   and the gateway starts a fresh one.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use daeda_catalog::Catalog;
use daeda_policy::{duckdb::agree, Approved, Grants, Limits};
use daeda_sql_wire::frame_len;
use daeda_sql_wire::quack::{Answer, Ask};
use duckdb::arrow::array::{
    Array, ArrayRef, BooleanArray, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use duckdb::arrow::datatypes::DataType;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};
use duckdb::Connection;

use crate::session::Session;
use crate::worker::{confine_process, WorkerSettings};
use daeda_offline::sql::literal;

/// The callbacks' names in the session's catalog.
pub const AUTHENTICATE_FN: &str = "daeda_quack_authenticate";
pub const AUTHORIZE_FN: &str = "daeda_quack_authorize";

/// The longest token a client may present. A JWT is a few hundred bytes; the
/// bound keeps a question to the gateway small (a frame over the link's
/// limit ends the link, and with it this worker).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How long a callback waits for the gateway before the worker gives up on
/// it (and exits: the link is out of step).
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The worker's side of the link to the gateway: one question at a time.
struct Link {
    stream: Mutex<UnixStream>,
    next: AtomicU64,
    /// Set once the session is open; until then every query is refused.
    session: OnceLock<Arc<Session>>,
}

impl Link {
    fn ask(&self, ask: &Ask) -> Answer {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut s = match self.stream.lock() {
            Ok(s) => s,
            Err(_) => return Answer::Refused("the Quack gate is broken".into()),
        };
        let exchange = (|| -> Result<Answer, String> {
            s.write_all(&ask.encode(id)).map_err(|e| e.to_string())?;
            let mut prefix = [0u8; 4];
            s.read_exact(&mut prefix).map_err(|e| e.to_string())?;
            let mut payload = vec![0u8; frame_len(prefix).map_err(|e| e.to_string())?];
            s.read_exact(&mut payload).map_err(|e| e.to_string())?;
            let (got, answer) = Answer::decode(&payload).map_err(|e| e.to_string())?;
            if got != id {
                return Err(format!("answer {got} to question {id}"));
            }
            Ok(answer)
        })();
        match exchange {
            Ok(a) => a,
            Err(e) => {
                // The gateway is gone or out of step: nothing can be authorized any more.
                eprintln!("daeda sql-worker --quack: the link to the gateway broke ({e}); exiting");
                std::process::exit(0);
            }
        }
    }
}

/// The callbacks' state: the link (an `Option` only because DuckDB's trait
/// wants a default; the default refuses everything).
#[derive(Default, Clone)]
pub struct Gate(Option<Arc<Link>>);

type CallbackResult = Result<ArrayRef, Box<dyn std::error::Error>>;

fn strings(col: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    let any = col.as_any();
    let get = |i: usize| -> Option<String> {
        if col.is_null(i) {
            return None;
        }
        if let Some(a) = any.downcast_ref::<StringArray>() {
            return Some(a.value(i).to_string());
        }
        if let Some(a) = any.downcast_ref::<LargeStringArray>() {
            return Some(a.value(i).to_string());
        }
        any.downcast_ref::<StringViewArray>().map(|a| a.value(i).to_string())
    };
    if !matches!(col.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return Err(format!("a VARCHAR argument arrived as {}", col.data_type()));
    }
    Ok((0..col.len()).map(get).collect())
}

/// `daeda_quack_authenticate(session_id, client_token, server_token)`.
pub struct Authenticate;

impl VArrowScalar for Authenticate {
    type State = Gate;

    fn invoke(gate: &Gate, input: RecordBatch) -> CallbackResult {
        let link = gate.0.as_ref().ok_or("the Quack gate is not connected")?;
        let (sessions, tokens) = (strings(input.column(0))?, strings(input.column(1))?);
        let mut out = Vec::with_capacity(sessions.len());
        for (session, token) in sessions.into_iter().zip(tokens) {
            let (Some(session), Some(token)) = (session, token) else { return Err("no session or token".into()) };
            if token.len() > MAX_TOKEN_BYTES {
                return Err(
                    format!("daeda: the token is {} bytes; at most {MAX_TOKEN_BYTES} are read", token.len()).into()
                );
            }
            match link.ask(&Ask::Authenticate { session, token }) {
                Answer::Admitted => out.push(true),
                Answer::Refused(why) => return Err(why.into()),
                Answer::Approved(_) => return Err("the gateway answered out of turn".into()),
            }
        }
        Ok(Arc::new(BooleanArray::from(out)))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8], DataType::Boolean)]
    }

    fn volatile() -> bool {
        true
    }
}

/// `daeda_quack_authorize(connection_id, query)`: the text to run instead.
pub struct Authorize;

impl VArrowScalar for Authorize {
    type State = Gate;

    fn invoke(gate: &Gate, input: RecordBatch) -> CallbackResult {
        let link = gate.0.as_ref().ok_or("the Quack gate is not connected")?;
        let session = link.session.get().ok_or("the SQL session is not open yet")?;
        let (ids, queries) = (strings(input.column(0))?, strings(input.column(1))?);
        let mut out = Vec::with_capacity(ids.len());
        for (id, query) in ids.into_iter().zip(queries) {
            let (Some(id), Some(query)) = (id, query) else { return Err("no connection or query".into()) };
            // Longer than the policy takes: refused here, never sent to the
            // gateway (a text over the link's frame limit ended the link and
            // this worker; a shorter huge one still cost the gateway its size).
            let max = Limits::default().max_bytes;
            if query.len() > max {
                out.push(refusal(&format!("the query is {} bytes; the limit is {max}", query.len())));
                continue;
            }
            // A refusal runs as a constant SELECT that raises the reason: the
            // Quack server shows a callback's own error only as "Authorization
            // failed", and the client should see why, as over HTTP.
            let text = match link.ask(&Ask::Authorize { session: id, query }) {
                Answer::Approved(q) => {
                    checked(session, &q.sql, &q.grants, &q.relations).unwrap_or_else(|why| refusal(&why))
                }
                Answer::Refused(why) => refusal(&why),
                Answer::Admitted => return Err("the gateway answered out of turn".into()),
            };
            out.push(text);
        }
        Ok(Arc::new(StringArray::from(out)))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(vec![DataType::Utf8, DataType::Utf8], DataType::Utf8)]
    }

    fn volatile() -> bool {
        true
    }
}

/// The text that refuses with `why` (a string literal: nothing of the
/// client's text is ever live SQL in it).
fn refusal(why: &str) -> String {
    // No control characters (a NUL could end the text early in C code).
    let why: String = why.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let why = if why.starts_with("daeda:") { why } else { format!("daeda: {why}") };
    format!("SELECT error({})", literal(&why))
}

/// Wall 2 on the text the server will run: DuckDB's parse must read one
/// SELECT over exactly the relations the policy approved.
fn checked(session: &Session, sql: &str, grants: &[String], relations: &[String]) -> Result<String, String> {
    let parse = session.duckdb_parse(sql).map_err(|e| format!("DuckDB cannot parse the query: {e}"))?;
    let approved = Approved { sql: sql.to_string(), relations: relations.iter().cloned().collect() };
    agree(&parse, &Grants::new(grants), &approved).map_err(|d| d.to_string())?;
    Ok(sql.to_string())
}

/// A token nobody else knows: the Quack server admits a client presenting
/// its own token, and ours is never shown to anyone.
fn server_token() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("random server token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The Quack worker's main: confine, connect to the gateway, open the
/// session with the callbacks in place, serve on `listen` (host:port), and
/// stay until the gateway goes away or a query damaged the session.
pub fn serve(catalog: &Catalog, settings: &WorkerSettings, listen: &str, deadline: Duration) -> Result<(), String> {
    let parent = std::os::unix::process::parent_id();
    let private = confine_process(settings)?;
    let stream = UnixStream::connect(&settings.socket).map_err(|e| format!("connecting to the gateway: {e}"))?;
    stream.set_read_timeout(Some(ASK_TIMEOUT)).map_err(|e| e.to_string())?;
    let link = Arc::new(Link { stream: Mutex::new(stream), next: AtomicU64::new(1), session: OnceLock::new() });
    let gate = Gate(Some(link.clone()));
    let hook = |conn: &Connection| -> Result<(), String> {
        conn.execute_batch("LOAD httpfs; LOAD quack;")
            .map_err(|e| format!("loading the httpfs and quack extensions ({e}); run scripts/bootstrap.sh"))?;
        conn.register_scalar_function_with_state::<Authenticate>(AUTHENTICATE_FN, &gate).map_err(|e| e.to_string())?;
        conn.register_scalar_function_with_state::<Authorize>(AUTHORIZE_FN, &gate).map_err(|e| e.to_string())?;
        conn.execute_batch(&format!(
            "SET GLOBAL quack_authentication_function = {}; SET GLOBAL quack_authorization_function = {};",
            literal(AUTHENTICATE_FN),
            literal(AUTHORIZE_FN)
        ))
        .map_err(|e| format!("setting the Quack callbacks: {e}"))
    };
    let session = Arc::new(
        Session::open_with(catalog, private.path(), &settings.limits, &hook)
            .map_err(|e| format!("SQL session: {e}"))?,
    );
    let _ = link.session.set(session.clone());
    let conn = session.query_connection().map_err(|e| e.to_string())?;
    let uri = format!("quack:{listen}");
    conn.execute_batch(&format!("CALL quack_serve({}, token => {})", literal(&uri), literal(&server_token()?)))
        .map_err(|e| format!("serving Quack on {listen}: {e}"))?;
    eprintln!("daeda sql-worker --quack: serving on {listen}");
    // When each running query was first seen, by (connection, start time).
    let mut running: HashMap<Running, Instant> = HashMap::new();
    loop {
        std::thread::sleep(WATCH_EVERY);
        if std::os::unix::process::parent_id() != parent {
            return Ok(()); // the gateway is gone
        }
        if !session.verify_intact() {
            eprintln!("daeda sql-worker --quack: a query changed the session's attached databases or secrets; exiting so a fresh session replaces it");
            #[allow(clippy::exit)] // the worker is its own process; the gateway restarts it
            std::process::exit(3);
        }
        let (live, now) = match connections(&conn) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("daeda sql-worker --quack: warning: could not list the Quack connections: {e}");
                continue;
            }
        };
        let _ = link.ask(&Ask::Alive { sessions: live });
        running.retain(|k, _| now.contains(k));
        for k in now {
            let since = *running.entry(k.clone()).or_insert_with(Instant::now);
            if since.elapsed() > deadline {
                eprintln!(
                    "daeda sql-worker --quack: a query of connection {} ran past {} ms and cannot be interrupted alone; exiting so a fresh worker replaces this one",
                    k.0,
                    deadline.as_millis()
                );
                let _ = link.ask(&Ask::Overran { session: k.0 });
                #[allow(clippy::exit)] // no per-connection interrupt: only a fresh worker ends the query
                std::process::exit(4);
            }
        }
    }
}

/// How often the worker checks its parent, its session and the deadline,
/// and tells the gateway which sessions still live.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A running query: (connection id, start time).
type Running = (String, String);

/// The Quack server's connections now, and those running a query as
/// (connection id, start time) pairs.
fn connections(conn: &Connection) -> Result<(Vec<String>, HashSet<Running>), String> {
    let mut stmt = conn
        .prepare("SELECT connection_id, state, query_started_at::VARCHAR FROM quack_active_connections() WHERE connection_id IS NOT NULL")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?)))
        .map_err(|e| e.to_string())?;
    let (mut live, mut running) = (Vec::new(), HashSet::new());
    for row in rows {
        let (id, state, started) = row.map_err(|e| e.to_string())?;
        if let (Some("active"), Some(started)) = (state.as_deref(), started) {
            running.insert((id.clone(), started));
        }
        live.push(id);
    }
    Ok((live, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_constant_select_whatever_the_reason_holds() {
        assert_eq!(refusal("no"), "SELECT error('daeda: no')");
        assert_eq!(refusal("daeda: it's\0'; DROP x --"), "SELECT error('daeda: it''s ''; DROP x --')");
    }
}
