//! The gateway's side of the SQL worker process (wall 6): starts it, talks to
//! it over a private Unix socket, restarts it when it dies, and kills it when
//! a query cannot be stopped. The gateway itself never links DuckDB, so
//! nothing a query does can abort, exhaust or stall the online plane.
//!
//! Invariants:
//! - every query gets exactly one answer: the worker's reply, or an error if
//!   the worker died (503) or had to be killed (504);
//! - a query is never sent to a worker that is not connected; while one
//!   restarts, SQL answers 503 at once;
//! - the worker is killed with the gateway (`kill_on_drop`, and it exits by
//!   itself when its socket closes);
//! - a recycled worker (the catalog was reloaded: its views are stale) takes
//!   no new query and ends once its queries in flight have answered.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daeda_sql_wire::{frame_len, Query, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

/// How to start a worker: the gateway appends `--socket <path>`.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Why a query got no reply from the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the SQL worker is starting or restarting; retry shortly")]
    NotReady,
    #[error("the SQL worker stopped while running this query (it is being restarted)")]
    Died,
    #[error("the query ran past its deadline and could not be stopped; the SQL worker was restarted")]
    Killed,
}

struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    kill: mpsc::Sender<()>,
}

/// A supervised worker process.
pub struct SqlWorker {
    conn: Mutex<Option<Arc<Conn>>>,
    /// Flips to true each time a worker connects.
    ready: tokio::sync::watch::Sender<bool>,
    next_id: AtomicU64,
    restarts: AtomicU64,
    up: AtomicBool,
    /// Asks the connected worker to make way for one built from the catalog
    /// on disk now (a permit is kept if none is connected yet).
    recycle: tokio::sync::Notify,
}

impl SqlWorker {
    /// Starts the supervisor (it starts the first worker at once).
    pub fn spawn(cmd: WorkerCommand) -> (Arc<SqlWorker>, tokio::task::JoinHandle<()>) {
        let w = Arc::new(SqlWorker {
            conn: Mutex::new(None),
            ready: tokio::sync::watch::Sender::new(false),
            next_id: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
            up: AtomicBool::new(false),
            recycle: tokio::sync::Notify::new(),
        });
        let task = tokio::spawn(supervise(w.clone(), cmd));
        (w, task)
    }

    /// Workers started after the first, because one died or was killed.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Replaces the worker with one that reads the catalog again (its views,
    /// and so walls 3 and 4, follow a reload): new queries wait for the new
    /// worker; queries in flight finish on the old one first.
    pub fn recycle(&self) {
        self.recycle.notify_one();
    }

    /// The connected worker, waiting up to `wait` for one that is starting.
    async fn connection(&self, wait: Duration) -> Result<Arc<Conn>, WorkerError> {
        let mut ready = self.ready.subscribe();
        let current = || self.conn.lock().expect("worker lock").clone();
        if let Some(c) = current() {
            return Ok(c);
        }
        let _ = tokio::time::timeout(wait, ready.wait_for(|up| *up)).await;
        current().ok_or(WorkerError::NotReady)
    }

    /// Sends `q` and waits for its reply. The worker stops the query at
    /// `q.timeout_ms` by itself; past that plus `grace` the gateway cancels
    /// it, and past twice `grace` kills the worker.
    pub async fn run(&self, mut q: Query, grace: Duration) -> Result<Reply, WorkerError> {
        // Waiting for a starting worker spends the query's own time.
        let asked = std::time::Instant::now();
        let conn = self.connection(Duration::from_millis(q.timeout_ms)).await?;
        q.timeout_ms = q.timeout_ms.saturating_sub(asked.elapsed().as_millis() as u64);
        if q.timeout_ms == 0 {
            return Ok(Reply::Timeout("the query's deadline passed while the SQL worker was starting".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let deadline = Duration::from_millis(q.timeout_ms) + grace;
        if conn.writer.lock().await.write_all(&Request::Query(q).encode(id)).await.is_err() {
            conn.pending.lock().expect("pending lock").remove(&id);
            return Err(WorkerError::Died);
        }
        match tokio::time::timeout(deadline, &mut rx).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(_)) => return Err(WorkerError::Died),
            Err(_) => {}
        }
        let _ = conn.writer.lock().await.write_all(&Request::Cancel.encode(id)).await;
        match tokio::time::timeout(grace, &mut rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(WorkerError::Died),
            Err(_) => {
                tracing::warn!(id, "an SQL query could not be stopped; killing the SQL worker");
                let _ = conn.kill.try_send(());
                Err(WorkerError::Killed)
            }
        }
    }
}

/// Starts workers forever, one at a time, with a backoff between failures.
async fn supervise(w: Arc<SqlWorker>, cmd: WorkerCommand) {
    let mut backoff = Duration::from_millis(100);
    let mut replacing = false;
    loop {
        if replacing {
            w.restarts.fetch_add(1, Ordering::Relaxed);
        }
        let ended = run_one(&w, &cmd).await;
        if ended.recycled {
            tracing::info!("the SQL worker made way for one with the reloaded catalog");
        } else {
            tracing::warn!(error = %ended.why, "the SQL worker stopped");
        }
        // A recycled worker is replaced at once and is not a restart.
        replacing = !ended.recycled;
        let served = ended.served;
        w.up.store(false, Ordering::Relaxed);
        if ended.recycled {
            continue;
        }
        // A worker that came up and was then killed or died under a query is
        // replaced at once; one that cannot start backs off (a crash loop).
        if served {
            backoff = Duration::from_millis(100);
        } else {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tokio::time::sleep(backoff).await;
    }
}

/// How a worker's life ended.
struct Ended {
    why: String,
    /// It connected and served before it ended.
    served: bool,
    /// It ended because it was recycled, after its queries in flight.
    recycled: bool,
}

impl From<String> for Ended {
    fn from(why: String) -> Ended {
        Ended { why, served: false, recycled: false }
    }
}

/// One worker's life: start, connect, serve replies, and clean up after it.
async fn run_one(w: &Arc<SqlWorker>, cmd: &WorkerCommand) -> Ended {
    match serve_one(w, cmd).await {
        Ok(ended) | Err(ended) => ended,
    }
}

async fn serve_one(w: &Arc<SqlWorker>, cmd: &WorkerCommand) -> Result<Ended, Ended> {
    let dir = private_dir()?;
    let socket = dir.join("sql.sock");
    let listener = UnixListener::bind(&socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .arg("--socket")
        .arg(&socket)
        .stdin(std::process::Stdio::null())
        // DuckDB may print (e.g. profiling output); never into anything we parse.
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cmd.program.display()))?;
    let accepted = tokio::select! {
        a = tokio::time::timeout(Duration::from_secs(120), listener.accept()) => a,
        status = child.wait() => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("it exited before connecting ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())).into());
        }
    };
    let _ = std::fs::remove_dir_all(&dir); // the socket is connected; nobody else may join
    let (stream, _) =
        accepted.map_err(|_| "it did not connect within 120 s".to_string())?.map_err(|e| e.to_string())?;
    let (mut reader, writer) = stream.into_split();
    let (kill, mut kill_rx) = mpsc::channel(1);
    let conn = Arc::new(Conn { writer: tokio::sync::Mutex::new(writer), pending: Mutex::new(HashMap::new()), kill });
    *w.conn.lock().expect("worker lock") = Some(conn.clone());
    w.up.store(true, Ordering::Relaxed);
    w.ready.send_replace(true);
    tracing::info!(pid = child.id(), "the SQL worker is up");
    let replies = {
        let conn = conn.clone();
        async move {
            loop {
                let mut prefix = [0u8; 4];
                reader.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
                let len = frame_len(prefix).map_err(|e| e.to_string())?;
                let mut payload = vec![0u8; len];
                reader.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
                let (id, reply) = Reply::decode(&payload).map_err(|e| e.to_string())?;
                if let Some(tx) = conn.pending.lock().expect("pending lock").remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        }
    };
    // Recycling: no new query reaches this worker; its replies keep flowing
    // (the `replies` branch still runs) until nothing is pending.
    let drained = async {
        w.recycle.notified().await;
        *w.conn.lock().expect("worker lock") = None;
        w.ready.send_replace(false);
        while !conn.pending.lock().expect("pending lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (outcome, recycled) = tokio::select! {
        r = replies => (format!("its socket closed ({})", r.err().unwrap_or_default()), false),
        status = child.wait() => (format!("it exited ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())), false),
        _ = kill_rx.recv() => ("it was killed".to_string(), false),
        _ = drained => ("it was recycled".to_string(), true),
    };
    *w.conn.lock().expect("worker lock") = None;
    w.up.store(false, Ordering::Relaxed);
    w.ready.send_replace(false);
    let _ = child.start_kill();
    let _ = child.wait().await;
    // Every query still waiting learns the worker is gone (its sender drops).
    conn.pending.lock().expect("pending lock").clear();
    Ok(Ended { why: outcome, served: true, recycled })
}

/// A fresh folder only this user can enter, for the socket.
pub(crate) fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "daeda-gw-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}
