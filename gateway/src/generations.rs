//! The live generation of each service, cached so a lookup costs one Redis
//! round trip (the MGET) and not two. A background task re-reads the pointers
//! every `refresh` (500 ms by default), so a flip is picked up within that
//! without a restart. A lookup that finds rows missing re-checks the pointer
//! first (see `handlers`), so the window between a flip and the refresh never
//! shows a retired generation as missing rows.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use daeda_online::{GenerationMeta, OnlineError, OnlineStore};

pub struct Generations {
    store: OnlineStore,
    /// The services served; replaced when the catalog is reloaded.
    services: RwLock<Vec<String>>,
    live: RwLock<HashMap<String, Arc<GenerationMeta>>>,
}

impl Generations {
    pub fn new(store: OnlineStore, services: Vec<String>) -> Generations {
        Generations { store, services: RwLock::new(services), live: RwLock::new(HashMap::new()) }
    }

    /// After a catalog reload: serve these; forget the cached generations of others.
    pub fn set_services(&self, services: Vec<String>) {
        self.live.write().expect("generation cache lock").retain(|s, _| services.contains(s));
        *self.services.write().expect("generation services lock") = services;
    }

    pub fn get(&self, service: &str) -> Option<Arc<GenerationMeta>> {
        self.live.read().expect("generation cache lock").get(service).cloned()
    }

    fn set(&self, service: &str, meta: Option<GenerationMeta>) -> Option<Arc<GenerationMeta>> {
        let mut live = self.live.write().expect("generation cache lock");
        match meta {
            Some(m) => {
                let m = Arc::new(m);
                live.insert(service.to_string(), m.clone());
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
        let meta = self.store.current(service).await?;
        Ok(self.set(service, meta))
    }

    /// The cached generation, or a fresh read when none is cached.
    pub async fn live(&self, service: &str) -> Result<Option<Arc<GenerationMeta>>, OnlineError> {
        match self.get(service) {
            Some(m) => Ok(Some(m)),
            None => self.reload(service).await,
        }
    }

    /// Re-reads every pointer (one round trip) and the metadata of those that
    /// moved, or that name the cached id under another run (an id issued again
    /// after Redis lost its data): a generation is its id *and* its run.
    pub async fn refresh(&self) -> Result<(), OnlineError> {
        let services = self.services.read().expect("generation services lock").clone();
        let cached: Vec<Option<Arc<GenerationMeta>>> = services.iter().map(|s| self.get(s)).collect();
        let known: Vec<Option<String>> = cached.iter().map(|m| m.as_ref().map(|m| m.generation.clone())).collect();
        let current = self.store.pointers_and_runs(&services, &known).await?;
        for ((service, (generation, run)), cached) in services.iter().zip(current).zip(cached) {
            let same_run = cached.as_ref().is_some_and(|m| run.as_deref() == Some(m.run_id.as_str()));
            let cached = cached.map(|m| m.generation.clone());
            if cached != generation || (generation.is_some() && !same_run) {
                let meta = match &generation {
                    Some(g) => self.store.generation_meta(service, g).await?,
                    None => None,
                };
                tracing::info!(service, from = ?cached, to = ?generation, "live generation changed");
                self.set(service, meta);
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
