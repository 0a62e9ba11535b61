//! One materialization run of one service, start to finish, recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use daeda_catalog::ServiceDef;
use daeda_metadata_store::{timestamp as rfc3339, MetadataStore, RunKind, RunRecord, RunStatus};
use daeda_online::{GenerationMeta, OnlineStore};
use tokio::sync::mpsc;

use crate::encode::EncodedBatch;
use crate::produce::{self, Produced};
use crate::write::{self, LeaseWatch};
use crate::{MaterializeError, Mode, Progress, RunRequest, RunSummary, Settings};

pub struct Materializer {
    store: OnlineStore,
    settings: Settings,
    /// Set from outside (the CLI's SIGTERM handler) to stop every run.
    stop: Arc<AtomicBool>,
}

fn micros_to_rfc3339(us: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(us).map(rfc3339)
}

impl Materializer {
    pub fn new(store: OnlineStore, settings: Settings) -> Materializer {
        Materializer { store, settings, stop: Arc::default() }
    }

    /// Setting the flag stops runs the way a failure does, cleanly: the
    /// writers stop at their next batch (within a fraction of a second), the
    /// generation is neither flipped nor advanced, the unfinished one is
    /// removed, the lease released, and the run recorded as failed
    /// ([`MaterializeError::Interrupted`]). A run not yet started fails at once.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Runs one service and records the run (start and end) in `records`.
    pub async fn run(
        &self,
        def: Arc<ServiceDef>,
        req: &RunRequest,
        records: &MetadataStore,
        progress: Arc<dyn Progress>,
    ) -> Result<RunSummary, MaterializeError> {
        if !def.serving.allowed {
            return Err(MaterializeError::NotAllowed(def.name.clone()));
        }
        let floor = records.highest_generation(&def.name)?;
        let mut run = Run {
            m: self,
            id: daeda_metadata_store::new_run_id(&def.name, Utc::now()),
            def,
            req,
            progress,
            t0: Instant::now(),
            partial: None,
            warnings: Vec::new(),
            floor,
        };
        let recorded = records.start(RunRecord {
            run_id: run.id.clone(),
            kind: RunKind::Materialize,
            service: run.def.name.clone(),
            version: run.def.version.clone(),
            mode: req.mode.as_str().into(),
            started_at: rfc3339(Utc::now()),
            as_of: Some(rfc3339(req.as_of)),
            git_sha: req.git_sha.clone(),
            details: run.notes(None),
            ..Default::default()
        })?;
        let result = run.execute().await;
        if result.is_err() && !req.dry_run {
            run.clean_up_failed().await;
        }
        recorded.finish(&result, |record, outcome| match outcome {
            Ok(s) => {
                record.status = if req.dry_run { RunStatus::DryRun } else { RunStatus::Succeeded };
                record.row_count = Some(s.entities);
                record.generation = s.generation.clone();
                record.source_snapshot = Some(s.source_snapshot.clone());
                record.event_ts_min = s.event_ts_min.clone();
                record.event_ts_max = s.event_ts_max.clone();
                record.join_key_null_rates = Some(s.join_key_null_rates.clone().into());
                record.details = run.notes(serde_json::to_value(s).ok());
            }
            Err(e) => {
                if matches!(e, MaterializeError::Online(daeda_online::OnlineError::LeaseHeld { .. })) {
                    record.status = RunStatus::Skipped;
                }
                record.generation = run.partial.clone();
                record.details = run.notes(None);
            }
        })?;
        result
    }
}

/// One run in progress: what it runs, and what it has gathered on the way.
struct Run<'a> {
    m: &'a Materializer,
    def: Arc<ServiceDef>,
    req: &'a RunRequest,
    id: String,
    progress: Arc<dyn Progress>,
    t0: Instant,
    /// The generation this run writes into and has not yet made live (full)
    /// or advanced (incremental): if the run fails, it is removed unless live.
    partial: Option<String>,
    warnings: Vec<String>,
    /// The highest generation id the run history has seen: new ids go above it.
    floor: u64,
}

/// What the Redis side of a run did, for its summary.
struct Written {
    generation: Option<String>,
    previous: Option<String>,
    rows_written: u64,
    rows_kept: u64,
    bytes_written: u64,
}

impl Run<'_> {
    /// `details` with the request's notes added as `notes` (when there are any).
    fn notes(&self, details: Option<serde_json::Value>) -> Option<serde_json::Value> {
        if self.req.notes.is_empty() {
            return details;
        }
        let mut d = match details {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        d.insert("notes".into(), self.req.notes.clone().into());
        Some(serde_json::Value::Object(d))
    }

    /// Best effort after a failure: drop the generation this run wrote into
    /// unless it is live, and the lease. The writers have stopped by now, so
    /// this SCAN sees every row they wrote: it also removes rows an incremental
    /// run that lost its lease wrote into a generation another run retired
    /// meanwhile (on a cluster, where the lease is checked per batch, not per
    /// row). If Redis is gone this fails too; the next full run removes the
    /// leftovers of a generation still registered.
    async fn clean_up_failed(&self) {
        let (store, service) = (&self.m.store, self.def.name.as_str());
        if let Some(g) = self.partial.as_deref() {
            // Never the live generation: an incremental run's, or a full run's
            // whose flip went through but whose reply was lost.
            match store.current_generation(service).await {
                Ok(live) if live.as_deref() != Some(g) => {
                    if let Err(e) = store.retire(service, g).await {
                        tracing::info!(service, generation = g, error = %e, "could not remove the unfinished generation; the next full run will");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(service, generation = g, error = %e, "could not check the live generation; the next full run removes leftovers")
                }
            }
        }
        if let Err(e) = store.release_lease(service, &self.id).await {
            tracing::debug!(service, error = %e, "could not release the lease; it expires on its own");
        }
    }

    async fn execute(&mut self) -> Result<RunSummary, MaterializeError> {
        if self.req.dry_run {
            return self.dry_run().await;
        }
        let (store, service) = (&self.m.store, self.def.name.clone());
        if self.m.stop.load(Ordering::Relaxed) {
            return Err(MaterializeError::Interrupted(service));
        }
        store.ping().await?;
        store.acquire_lease(&service, &self.id, self.m.settings.lease_ttl).await?;
        let lease = LeaseWatch::new(&service, &self.id, self.m.stop.clone());
        let renewer = write::spawn_lease_renewal(store.clone(), &lease, self.m.settings.lease_ttl);
        let result = match self.req.mode {
            Mode::Full => self.full(&lease).await,
            Mode::Incremental => self.incremental(&lease).await,
        };
        renewer.abort();
        if result.is_ok() {
            // The run is done and live; a lease we cannot release expires on its own.
            if let Err(e) = store.release_lease(&service, &self.id).await {
                tracing::warn!(service = %service, error = %e, "could not release the lease; it expires on its own");
            }
        }
        result
    }

    /// Reads, checks and encodes everything; writes nothing.
    async fn dry_run(&mut self) -> Result<RunSummary, MaterializeError> {
        let (tx, mut rx) = mpsc::channel::<EncodedBatch>(self.m.settings.queue);
        let producer = self.spawn_producer(None, "dry-run", tx);
        let mut entities = 0;
        while let Some(b) = rx.recv().await {
            entities += b.rows.len() as u64;
            self.progress.rows_done(b.rows.len() as u64);
        }
        let produced = produce::join(producer).await?;
        debug_assert_eq!(entities, produced.entities);
        let written =
            Written { generation: None, previous: None, rows_written: 0, rows_kept: 0, bytes_written: produced.bytes };
        Ok(self.summary(&produced, written))
    }

    /// Checks there is room for a second generation and warns about eviction.
    async fn check_room(&mut self, live: Option<&GenerationMeta>) -> Result<(), MaterializeError> {
        let mem = self.m.store.memory().await?;
        if mem.policy != "noeviction" {
            let w = format!(
                "Redis maxmemory-policy is {}: under memory pressure it may evict live feature rows; set it to noeviction",
                mem.policy
            );
            self.warnings.push(w);
        }
        if mem.maxmemory == 0 {
            return Ok(());
        }
        // The new generation is estimated by the live one: its value bytes plus
        // per-key overhead (key, dict entry, robj, allocator slack).
        let need = live.map_or(0, |m| m.bytes + m.row_count * (96 + self.def.name.len() as u64));
        if mem.used.saturating_add(need) > mem.maxmemory {
            return Err(MaterializeError::NoRoom {
                service: self.def.name.clone(),
                need,
                used: mem.used,
                max: mem.maxmemory,
            });
        }
        Ok(())
    }

    async fn full(&mut self, lease: &LeaseWatch) -> Result<RunSummary, MaterializeError> {
        let (store, def) = (&self.m.store, self.def.clone());
        let live = store.current(&def.name).await?;
        // Generations that are neither live nor ours are leftovers of runs that died.
        for g in store.generations(&def.name).await? {
            if Some(&g) != live.as_ref().map(|m| &m.generation) {
                let n = store.retire(&def.name, &g).await?;
                tracing::info!(service = %def.name, generation = %g, keys = n, "removed a generation left by a failed run");
            }
        }
        self.check_room(live.as_ref()).await?;

        let generation = store.new_generation(&def.name, self.floor).await?;
        self.partial = Some(generation.clone());
        let (tx, rx) = mpsc::channel::<EncodedBatch>(self.m.settings.queue);
        let producer = self.spawn_producer(None, &generation, tx);
        let written = self.write_all(rx, false, lease).await;
        let produced = produce::join(producer).await;
        let (written, _) = written?;
        let produced = produced?;
        if written != produced.entities {
            return Err(MaterializeError::Incomplete {
                service: def.name.clone(),
                written,
                expected: produced.entities,
            });
        }
        let meta = GenerationMeta {
            service: def.name.clone(),
            version: def.version.clone(),
            fingerprint: def.fingerprint().to_string(),
            generation: generation.clone(),
            run_id: self.id.clone(),
            as_of: rfc3339(self.req.as_of),
            row_count: produced.entities,
            bytes: produced.bytes,
            materialized_at: rfc3339(Utc::now()),
            source_snapshot: produced.opened.snapshot.to_string(),
            watermark_micros: produced.max_event_ts.unwrap_or(i64::MIN),
            schema: Some(daeda_online::ServedSchema::of(&def).to_json()),
        };
        lease.check()?;
        let previous = store.flip(&meta).await?;
        self.partial = None;
        if let Some(old) = &previous {
            if old != &generation {
                if let Err(e) = store.retire(&def.name, old).await {
                    let w = format!(
                        "generation {old} could not be removed yet ({e}); the next full run or `daeda online gc` will"
                    );
                    self.warnings.push(w);
                }
            }
        }
        let bytes_written = produced.bytes;
        Ok(self.summary(
            &produced,
            Written { generation: Some(generation), previous, rows_written: written, rows_kept: 0, bytes_written },
        ))
    }

    async fn incremental(&mut self, lease: &LeaseWatch) -> Result<RunSummary, MaterializeError> {
        let (store, def) = (&self.m.store, self.def.clone());
        let Some(live) = store.current(&def.name).await? else {
            return Err(MaterializeError::NoLiveGeneration(def.name.clone()));
        };
        if live.fingerprint != def.fingerprint() {
            return Err(MaterializeError::FingerprintChanged {
                service: def.name.clone(),
                online: live.fingerprint.clone(),
                defined: def.fingerprint().to_string(),
            });
        }
        self.check_room(None).await?;
        let watermark = DateTime::<Utc>::from_timestamp_micros(live.watermark_micros);
        let (tx, rx) = mpsc::channel::<EncodedBatch>(self.m.settings.queue);
        let producer = self.spawn_producer(watermark, &live.generation, tx);
        // If the run fails, this generation is removed unless it is still live
        // (another run may have retired it while this one was writing).
        self.partial = Some(live.generation.clone());
        let written = self.write_all(rx, true, lease).await;
        let produced = produce::join(producer).await;
        let (_, writes) = written?;
        let produced = produced?;
        let mut meta = live.clone();
        meta.run_id = self.id.clone();
        meta.materialized_at = rfc3339(Utc::now());
        meta.as_of = rfc3339(self.req.as_of);
        meta.source_snapshot = produced.opened.snapshot.to_string();
        let wm = produced.max_event_ts.unwrap_or(live.watermark_micros).max(live.watermark_micros);
        lease.check()?;
        store.advance(&meta, wm, writes.inserted, writes.bytes).await?;
        self.partial = None;
        let written = Written {
            generation: Some(live.generation.clone()),
            previous: None,
            rows_written: writes.inserted + writes.replaced,
            rows_kept: writes.kept,
            bytes_written: writes.bytes,
        };
        Ok(self.summary(&produced, written))
    }

    fn summary(&self, p: &Produced, w: Written) -> RunSummary {
        let (def, req) = (&self.def, self.req);
        let seconds = self.t0.elapsed().as_secs_f64();
        RunSummary {
            run_id: self.id.clone(),
            service: def.name.clone(),
            version: def.version.clone(),
            mode: req.mode,
            dry_run: req.dry_run,
            as_of: rfc3339(req.as_of),
            generation: w.generation,
            previous_generation: w.previous,
            rows_read: p.stats.rows,
            skipped_null_keys: p.stats.skipped_null_keys,
            entities: p.entities,
            rows_written: w.rows_written,
            rows_kept: w.rows_kept,
            bytes_written: w.bytes_written,
            seconds,
            rows_per_sec: if seconds > 0.0 { p.entities as f64 / seconds } else { 0.0 },
            source_snapshot: p.opened.snapshot.clone(),
            event_ts_min: p.stats.event_ts_min_micros.and_then(micros_to_rfc3339),
            event_ts_max: p.stats.event_ts_max_micros.and_then(micros_to_rfc3339),
            join_key_null_rates: p.stats.join_key_null_rates.clone(),
            warnings: self.warnings.clone(),
        }
    }

    /// Starts the DuckDB side on a blocking thread, encoding rows for `generation`.
    fn spawn_producer(
        &self,
        newer_than: Option<DateTime<Utc>>,
        generation: &str,
        tx: mpsc::Sender<EncodedBatch>,
    ) -> tokio::task::JoinHandle<Result<Produced, MaterializeError>> {
        let row_prefix = self.m.store.keys().row_prefix(&self.def.name, generation);
        produce::spawn(self.def.clone(), self.req.as_of, newer_than, row_prefix, tx)
    }

    async fn write_all(
        &self,
        rx: mpsc::Receiver<EncodedBatch>,
        conditional: bool,
        lease: &LeaseWatch,
    ) -> Result<(u64, write::IncrementalWrites), MaterializeError> {
        let writers = write::Writers {
            store: self.m.store.clone(),
            count: self.m.settings.writers,
            progress: self.progress.clone(),
        };
        writers.write_all(rx, conditional, lease.clone()).await
    }
}
