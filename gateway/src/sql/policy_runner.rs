//! The SQL plane's CPU work inside the gateway, kept where a hostile query
//! cannot hurt the online plane: small pools of dedicated threads with a
//! stack sized for the policy's limits (see `daeda_policy::Limits::stack_bytes`)
//! and a lower CPU priority than the async workers, so on a busy machine
//! lookups are scheduled first. The policy runs on one pool, with decisions
//! cached by (text, grants) so a repeated query costs a lookup; rendering
//! results as JSON runs on another, so a flood of either cannot starve the
//! other. A job whose requester has gone is skipped, not run.

use std::num::NonZeroUsize;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use daeda_policy::{Approved, Denied, Grants, Limits};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

type Decision = Result<Approved, Denied>;
/// SHA-256 of the text and the sorted grants: 32 bytes whatever the query's size.
type Key = [u8; 32];
type Job = Box<dyn FnOnce() + Send>;

pub const CACHE_ENTRIES: usize = 4096;

/// Niceness of these threads: below the async workers (0), like the worker
/// process's.
pub const NICE: i32 = 19;

/// Why a job got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the SQL plane is busy; retry shortly")]
    Busy,
    #[error("the SQL plane's threads stopped")]
    Stopped,
}

/// A few niced, big-stack threads behind a bounded queue.
pub struct CpuPool {
    jobs: SyncSender<Job>,
}

impl CpuPool {
    /// `threads` threads named `name-N`, with room for `queue` waiting jobs.
    pub fn start(name: &str, threads: usize, queue: usize) -> CpuPool {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(Limits::default().stack_bytes())
                .spawn(move || {
                    // On Linux niceness is per thread: this one only.
                    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
                        tracing::warn!(error = %e, "could not lower the SQL threads' CPU priority");
                    }
                    job_loop(&rx)
                })
                .expect("a thread for the SQL plane");
        }
        CpuPool { jobs }
    }

    /// Runs `f` on one of these threads, unless the caller has gone by then.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, RunnerError> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            if !reply.is_closed() {
                let _ = reply.send(f());
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(RunnerError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(RunnerError::Stopped),
        }
        rx.await.map_err(|_| RunnerError::Stopped)
    }
}

fn job_loop(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().expect("SQL queue lock").recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        job();
    }
}

/// The policy on its pool, behind a decision cache.
pub struct PolicyRunner {
    pool: CpuPool,
    cache: Arc<Mutex<lru::LruCache<Key, Decision>>>,
}

impl PolicyRunner {
    pub fn start(threads: usize, queue: usize) -> PolicyRunner {
        let cache = Arc::new(Mutex::new(lru::LruCache::new(NonZeroUsize::new(CACHE_ENTRIES).expect("non-zero"))));
        PolicyRunner { pool: CpuPool::start("sql-policy", threads, queue), cache }
    }

    /// The policy's decision on `sql` for a caller granted `grants`.
    pub async fn check(&self, sql: &str, mut grants: Vec<String>) -> Result<Decision, RunnerError> {
        grants.sort();
        grants.dedup();
        let mut h = Sha256::new();
        h.update(sql.as_bytes());
        for g in &grants {
            h.update([0]);
            h.update(g.as_bytes());
        }
        let key: Key = h.finalize().into();
        if let Some(hit) = self.cache.lock().expect("policy cache lock").get(&key) {
            return Ok(hit.clone());
        }
        let (cache, sql) = (self.cache.clone(), sql.to_string());
        self.pool
            .run(move || {
                // The tree is built, checked and dropped on this thread's big stack.
                let decision = daeda_policy::check(&sql, &Grants::new(&grants));
                cache.lock().expect("policy cache lock").put(key, decision.clone());
                decision
            })
            .await
    }
}
