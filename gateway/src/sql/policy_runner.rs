//! The policy, run where a hostile query cannot hurt the gateway: on a few
//! dedicated threads whose stack is sized for the policy's limits (see
//! `daeda_policy::Limits::stack_bytes`), never on the async workers, with
//! decisions cached by (text, grants) so a repeated query costs a lookup.
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

struct Job {
    sql: String,
    grants: Vec<String>,
    reply: oneshot::Sender<Decision>,
}

/// Why the policy gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the SQL policy is busy; retry shortly")]
    Busy,
    #[error("the SQL policy thread stopped")]
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
            let (rx, cache) = (rx.clone(), cache.clone());
            std::thread::Builder::new()
                .name(format!("sql-policy-{i}"))
                .stack_size(Limits::default().stack_bytes())
                .spawn(move || check_loop(&rx, &cache))
                .expect("a thread for the SQL policy");
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
        let (reply, rx) = oneshot::channel();
        let (sql, grants) = key;
        match self.jobs.try_send(Job { sql, grants, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(RunnerError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(RunnerError::Stopped),
        }
        rx.await.map_err(|_| RunnerError::Stopped)
    }
}

fn check_loop(rx: &Mutex<Receiver<Job>>, cache: &Mutex<lru::LruCache<Key, Decision>>) {
    loop {
        let job = match rx.lock().expect("policy queue lock").recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        // The tree is built, checked and dropped on this thread's big stack.
        let decision = daeda_policy::check(&job.sql, &Grants::new(&job.grants));
        if job.sql.len() <= CACHE_MAX_SQL {
            cache.lock().expect("policy cache lock").put((job.sql, job.grants), decision.clone());
        }
        let _ = job.reply.send(decision);
    }
}
