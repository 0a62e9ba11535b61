//! The SQL plane's CPU work inside the gateway, kept where a hostile query
//! cannot hurt the online plane: a few dedicated threads with a stack sized
//! for the policy's limits (see `daeda_policy::Limits::stack_bytes`) and a
//! lower CPU priority than the async workers, so on a busy machine lookups
//! are scheduled first. The policy runs there, with decisions cached by
//! (text, grants) so a repeated query costs a lookup; so does the rendering
//! of results as JSON.
//! The cache holds at most [`CACHE_ENTRIES`] queries of at most
//! [`CACHE_MAX_SQL`] bytes each, so it stays under ~16 MiB whatever is sent.

use std::num::NonZeroUsize;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use daeda_policy::{Approved, Denied, Grants, Limits};
use tokio::sync::oneshot;

type Decision = Result<Approved, Denied>;

pub const CACHE_ENTRIES: usize = 1024;
pub const CACHE_MAX_SQL: usize = 8 * 1024;
type Key = (String, Vec<String>);

type Job = Box<dyn FnOnce() + Send>;

/// Niceness of these threads: below the async workers (0), like the worker
/// process's.
pub const NICE: i32 = 10;

/// Why the policy gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the SQL plane is busy; retry shortly")]
    Busy,
    #[error("the SQL plane's threads stopped")]
    Stopped,
}

pub struct PolicyRunner {
    jobs: SyncSender<Job>,
    cache: Arc<Mutex<lru::LruCache<Key, Decision>>>,
}

impl PolicyRunner {
    /// `threads` checkers with room for `queue` waiting queries.
    pub fn start(threads: usize, queue: usize) -> PolicyRunner {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let cache = Arc::new(Mutex::new(lru::LruCache::new(NonZeroUsize::new(CACHE_ENTRIES).expect("non-zero"))));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sql-cpu-{i}"))
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
        PolicyRunner { jobs, cache }
    }

    /// The policy's decision on `sql` for a caller granted `grants`.
    pub async fn check(&self, sql: &str, mut grants: Vec<String>) -> Result<Decision, RunnerError> {
        grants.sort();
        grants.dedup();
        let key = (sql.to_string(), grants);
        if let Some(hit) = self.cache.lock().expect("policy cache lock").get(&key) {
            return Ok(hit.clone());
        }
        let cache = self.cache.clone();
        self.run(move || {
            // The tree is built, checked and dropped on this thread's big stack.
            let (sql, grants) = key;
            let decision = daeda_policy::check(&sql, &Grants::new(&grants));
            if sql.len() <= CACHE_MAX_SQL {
                cache.lock().expect("policy cache lock").put((sql, grants), decision.clone());
            }
            decision
        })
        .await
    }

    /// Runs `f` on one of these threads.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, RunnerError> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
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
