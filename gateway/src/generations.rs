//! The live generation of each service, cached so a lookup costs one Redis
//! round trip (the MGET) and not two. A background task re-reads the pointers
//! every `refresh` (500 ms by default), so a flip is picked up within that
//! without a restart. With the row cache on, its tracking connection also
//! reports every write of a pointer ([`Generations::pointer_changed`]): the
//! next lookup then re-reads the pointer itself, so a flip is seen as soon as
//! its invalidation arrives rather than at the next refresh. A lookup that
//! finds rows missing re-checks the pointer first (see `handlers`), so the
//! window between a flip and the refresh never shows a retired generation as
//! missing rows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use daeda_online::{GenerationMeta, OnlineError, OnlineStore};

pub struct Generations {
    store: OnlineStore,
    /// The services served; replaced when the catalog is reloaded.
    services: RwLock<Vec<String>>,
    /// Each service's generation, with the value of `changes` read before the
    /// pointer was: an entry older than `changes` may be outdated.
    live: RwLock<HashMap<String, (Arc<GenerationMeta>, u64)>>,
    /// Pointer writes reported by the row cache's tracking (any service).
    changes: AtomicU64,
}

impl Generations {
    pub fn new(store: OnlineStore, services: Vec<String>) -> Generations {
        Generations {
            store,
            services: RwLock::new(services),
            live: RwLock::new(HashMap::new()),
            changes: AtomicU64::new(0),
        }
    }

    /// A pointer was written (or invalidations may have been lost): the next
    /// lookup of every service re-reads its pointer before using it.
    pub fn pointer_changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// After a catalog reload: serve these; forget the cached generations of others.
    pub fn set_services(&self, services: Vec<String>) {
        self.live.write().expect("generation cache lock").retain(|s, _| services.contains(s));
        *self.services.write().expect("generation services lock") = services;
    }

    pub fn get(&self, service: &str) -> Option<Arc<GenerationMeta>> {
        self.live.read().expect("generation cache lock").get(service).map(|(m, _)| m.clone())
    }

    fn set(&self, service: &str, meta: Option<GenerationMeta>, seen: u64) -> Option<Arc<GenerationMeta>> {
        let mut live = self.live.write().expect("generation cache lock");
        match meta {
            Some(m) => {
                let m = Arc::new(m);
                live.insert(service.to_string(), (m.clone(), seen));
                Some(m)
            }
            None => {
                live.remove(service);
                None
            }
        }
    }

    /// Reads one service's pointer and metadata from Redis now.
    pub async fn reload(&self, service: &str) -> Result<Option<Arc<GenerationMeta>>, OnlineError> {
        let seen = self.changes.load(Ordering::Acquire);
        let meta = self.store.current(service).await?;
        Ok(self.set(service, meta, seen))
    }

    /// The cached generation, or a fresh read when none is cached or a
    /// pointer was written since it was read.
    pub async fn live(&self, service: &str) -> Result<Option<Arc<GenerationMeta>>, OnlineError> {
        let changes = self.changes.load(Ordering::Acquire);
        let cached = self.live.read().expect("generation cache lock").get(service).cloned();
        match cached {
            Some((m, seen)) if seen >= changes => Ok(Some(m)),
            _ => self.reload(service).await,
        }
    }

    /// Re-reads every pointer (one round trip) and the metadata of those that
    /// moved, or that name the cached id under another run (an id issued again
    /// after Redis lost its data): a generation is its id *and* its run.
    pub async fn refresh(&self) -> Result<(), OnlineError> {
        let services = self.services.read().expect("generation services lock").clone();
        let seen = self.changes.load(Ordering::Acquire);
        let cached: Vec<Option<Arc<GenerationMeta>>> = services.iter().map(|s| self.get(s)).collect();
        let known: Vec<Option<String>> = cached.iter().map(|m| m.as_ref().map(|m| m.generation.clone())).collect();
        let current = self.store.pointers_and_runs(&services, &known).await?;
        for ((service, (generation, run)), cached) in services.iter().zip(current).zip(cached) {
            let same_run = cached.as_ref().is_some_and(|m| run.as_deref() == Some(m.run_id.as_str()));
            let cached_meta = cached.clone();
            let cached = cached.map(|m| m.generation.clone());
            if cached != generation || (generation.is_some() && !same_run) {
                let meta = match &generation {
                    Some(g) => self.store.generation_meta(service, g).await?,
                    None => None,
                };
                tracing::info!(service, from = ?cached, to = ?generation, "live generation changed");
                self.set(service, meta, seen);
            } else if let Some(m) = cached_meta {
                // Unchanged as of `seen`: no re-read needed for what came before.
                self.live.write().expect("generation cache lock").entry(service.clone()).and_modify(|e| {
                    if Arc::ptr_eq(&e.0, &m) {
                        e.1 = e.1.max(seen);
                    }
                });
            }
        }
        Ok(())
    }

    /// Refreshes every `every` until the task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.refresh().await {
                    tracing::debug!(error = %e, "could not refresh live generations");
                }
            }
        })
    }
}
