//! One materialization run of one service, start to finish, recorded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use daeda_catalog::ServiceDef;
use daeda_metadata_store::{MetadataStore, RunKind, RunRecord, RunStatus};
use daeda_offline::stream::ArrowStream;
use daeda_offline::{query, source};
use daeda_online::{GenerationMeta, OnlineError, OnlineStore};
use tokio::sync::{mpsc, Mutex};

use crate::encode::{EncodedBatch, Encoder};
use crate::MaterializeError;

/// `full` writes a new generation and flips to it; `incremental` updates the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Full,
    Incremental,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub mode: Mode,
    /// Event-time bound: rows with `timestamp <= as_of`.
    pub as_of: DateTime<Utc>,
    /// Read, check and encode everything; write nothing to Redis.
    pub dry_run: bool,
    /// HEAD of the catalog's git repository, recorded with the run.
    pub git_sha: Option<String>,
    /// Why this run went ahead despite a warning (e.g. a definition that does
    /// not match `registry.lock.json`), recorded as `details.notes`.
    pub notes: Vec<String>,
}

/// Tuning of the writers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent pipelines to Redis.
    pub writers: usize,
    /// Encoded batches buffered between DuckDB and the writers; with DuckDB's
    /// 2,048-row chunks this bounds the rows held in memory.
    pub queue: usize,
    /// The lease expires this long after the last renewal (a killed run frees
    /// the service on its own).
    pub lease_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { writers: 4, queue: 16, lease_ttl: Duration::from_secs(30) }
    }
}

/// Reports progress (rows written, or compared by the skew checker); the CLI
/// draws a spinner on a terminal, nothing otherwise.
pub trait Progress: Send + Sync {
    fn rows_done(&self, _n: u64) {}
}

impl Progress for () {}

/// The outcome of a successful run (`--json` prints it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub service: String,
    pub version: String,
    pub mode: Mode,
    pub dry_run: bool,
    pub as_of: String,
    /// The generation written (full) or updated (incremental); none on a dry run.
    pub generation: Option<String>,
    /// The generation that was live before a full run.
    pub previous_generation: Option<String>,
    /// Source rows with event time <= as_of (or none).
    pub rows_read: u64,
    /// Source rows skipped for a NULL join key or timestamp.
    pub skipped_null_keys: u64,
    /// Latest-per-entity rows produced by the query.
    pub entities: u64,
    /// Rows written to Redis (incremental: inserted + replaced).
    pub rows_written: u64,
    /// Rows an incremental run kept because the online row was as new or newer.
    pub rows_kept: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    pub rows_per_sec: f64,
    pub source_snapshot: serde_json::Value,
    /// Event-time range of the servable source rows (RFC 3339).
    pub event_ts_min: Option<String>,
    pub event_ts_max: Option<String>,
    /// Fraction of source rows with a NULL, per join key.
    pub join_key_null_rates: serde_json::Map<String, serde_json::Value>,
    pub warnings: Vec<String>,
}

pub struct Materializer {
    store: OnlineStore,
    settings: Settings,
    /// Set from outside (the CLI's SIGTERM handler) to stop every run.
    stop: Arc<AtomicBool>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn micros_to_rfc3339(us: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(us).map(rfc3339)
}

/// `details` with the request's notes added as `notes` (when there are any).
fn notes(req: &RunRequest, details: Option<serde_json::Value>) -> Option<serde_json::Value> {
    if req.notes.is_empty() {
        return details;
    }
    let mut d = match details {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    d.insert("notes".into(), req.notes.clone().into());
    Some(serde_json::Value::Object(d))
}

/// `20261126T071502Z-user_features-5f3a`: sortable, unique enough per service.
fn new_run_id(service: &str) -> String {
    let now = Utc::now();
    let salt = (now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{service}-{salt:04x}", now.format("%Y%m%dT%H%M%SZ"))
}

/// What the DuckDB side produced.
struct Produced {
    opened: source::Opened,
    stats: query::SourceStats,
    entities: u64,
    bytes: u64,
    max_event_ts: Option<i64>,
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
        let run_id = new_run_id(&def.name);
        let started = Utc::now();
        let mut record = RunRecord {
            run_id: run_id.clone(),
            kind: RunKind::Materialize,
            service: def.name.clone(),
            version: def.version.clone(),
            mode: req.mode.as_str().into(),
            status: RunStatus::Running,
            attempt: records.next_attempt(&def.name, RunKind::Materialize)?,
            started_at: rfc3339(started),
            as_of: Some(rfc3339(req.as_of)),
            git_sha: req.git_sha.clone(),
            details: notes(req, None),
            ..Default::default()
        };
        records.append(&record)?;

        let mut partial: Option<String> = None;
        let result = self.run_inner(&def, req, &run_id, progress, &mut partial).await;
        record.ended_at = Some(rfc3339(Utc::now()));
        match &result {
            Ok(s) => {
                record.status = if req.dry_run { RunStatus::DryRun } else { RunStatus::Succeeded };
                record.row_count = Some(s.entities);
                record.generation = s.generation.clone();
                record.source_snapshot = Some(s.source_snapshot.clone());
                record.event_ts_min = s.event_ts_min.clone();
                record.event_ts_max = s.event_ts_max.clone();
                record.join_key_null_rates = Some(s.join_key_null_rates.clone().into());
                record.details = notes(req, serde_json::to_value(s).ok());
            }
            Err(e) => {
                record.status = RunStatus::Failed;
                record.error = Some(e.to_string());
                record.generation = partial.clone();
                record.details = notes(req, None);
            }
        }
        if result.is_err() && !req.dry_run {
            self.clean_up_failed(&def.name, &run_id, partial.as_deref()).await;
        }
        records.append(&record)?;
        result
    }

    /// Best effort after a failure: drop the generation this run wrote into
    /// unless it is live, and the lease. The writers have stopped by now, so
    /// this SCAN sees every row they wrote: it also removes rows an incremental
    /// run that lost its lease wrote into a generation another run retired
    /// meanwhile (on a cluster, where the lease is checked per batch, not per
    /// row). If Redis is gone this fails too; the next full run removes the
    /// leftovers of a generation still registered.
    async fn clean_up_failed(&self, service: &str, run_id: &str, partial: Option<&str>) {
        if let Some(g) = partial {
            // Never the live generation: an incremental run's, or a full run's
            // whose flip went through but whose reply was lost.
            match self.store.current_generation(service).await {
                Ok(live) if live.as_deref() != Some(g) => {
                    if let Err(e) = self.store.retire(service, g).await {
                        tracing::info!(service, generation = g, error = %e, "could not remove the unfinished generation; the next full run will");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(service, generation = g, error = %e, "could not check the live generation; the next full run removes leftovers")
                }
            }
        }
        if let Err(e) = self.store.release_lease(service, run_id).await {
            tracing::debug!(service, error = %e, "could not release the lease; it expires on its own");
        }
    }

    async fn run_inner(
        &self,
        def: &Arc<ServiceDef>,
        req: &RunRequest,
        run_id: &str,
        progress: Arc<dyn Progress>,
        partial: &mut Option<String>,
    ) -> Result<RunSummary, MaterializeError> {
        let t0 = Instant::now();
        let mut warnings = Vec::new();
        if req.dry_run {
            let (tx, mut rx) = mpsc::channel::<EncodedBatch>(self.settings.queue);
            let producer = self.spawn_producer(def, req, None, "dry-run".into(), tx);
            let mut entities = 0;
            while let Some(b) = rx.recv().await {
                entities += b.rows.len() as u64;
                progress.rows_done(b.rows.len() as u64);
            }
            let produced = join(producer).await?;
            debug_assert_eq!(entities, produced.entities);
            return Ok(self.summary(def, req, run_id, t0, None, None, &produced, 0, 0, produced.bytes, warnings));
        }

        if self.stop.load(Ordering::Relaxed) {
            return Err(MaterializeError::Interrupted(def.name.clone()));
        }
        self.store.ping().await?;
        self.store.acquire_lease(&def.name, run_id, self.settings.lease_ttl).await?;
        let lease_lost = Arc::new(AtomicBool::new(false));
        let renewer = self.spawn_lease_renewal(&def.name, run_id, lease_lost.clone());
        let lease = LeaseWatch { service: def.name.clone(), run_id: run_id.to_string(), lost: lease_lost, stop: self.stop.clone() };
        let result = match req.mode {
            Mode::Full => self.full(def, req, run_id, progress, partial, &mut warnings, t0, &lease).await,
            Mode::Incremental => self.incremental(def, req, run_id, progress, partial, &mut warnings, t0, &lease).await,
        };
        renewer.abort();
        if result.is_ok() {
            // The run is done and live; a lease we cannot release expires on its own.
            if let Err(e) = self.store.release_lease(&def.name, run_id).await {
                tracing::warn!(service = %def.name, error = %e, "could not release the lease; it expires on its own");
            }
        }
        result
    }

    fn spawn_lease_renewal(&self, service: &str, run_id: &str, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let (store, service, run_id, ttl) = (self.store.clone(), service.to_string(), run_id.to_string(), self.settings.lease_ttl);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.renew_lease(&service, &run_id, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Writers stop at their next batch; the flip checks the lease too.
                        lost.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => tracing::warn!(service, error = %e, "could not renew the lease"),
                }
            }
        })
    }

    /// Checks there is room for a second generation and warns about eviction.
    async fn check_room(
        &self,
        def: &ServiceDef,
        live: Option<&GenerationMeta>,
        warnings: &mut Vec<String>,
    ) -> Result<(), MaterializeError> {
        let mem = self.store.memory().await?;
        if mem.policy != "noeviction" {
            let w = format!(
                "Redis maxmemory-policy is {}: under memory pressure it may evict live feature rows; set it to noeviction",
                mem.policy
            );
            warnings.push(w);
        }
        if mem.maxmemory == 0 {
            return Ok(());
        }
        // The new generation is estimated by the live one: its value bytes plus
        // per-key overhead (key, dict entry, robj, allocator slack).
        let need = live.map_or(0, |m| m.bytes + m.row_count * (96 + def.name.len() as u64));
        if mem.used.saturating_add(need) > mem.maxmemory {
            return Err(MaterializeError::NoRoom { service: def.name.clone(), need, used: mem.used, max: mem.maxmemory });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn full(
        &self,
        def: &Arc<ServiceDef>,
        req: &RunRequest,
        run_id: &str,
        progress: Arc<dyn Progress>,
        partial: &mut Option<String>,
        warnings: &mut Vec<String>,
        t0: Instant,
        lease: &LeaseWatch,
    ) -> Result<RunSummary, MaterializeError> {
        let live = self.store.current(&def.name).await?;
        // Generations that are neither live nor ours are leftovers of runs that died.
        for g in self.store.generations(&def.name).await? {
            if Some(&g) != live.as_ref().map(|m| &m.generation) {
                let n = self.store.retire(&def.name, &g).await?;
                tracing::info!(service = %def.name, generation = %g, keys = n, "removed a generation left by a failed run");
            }
        }
        self.check_room(def, live.as_ref(), warnings).await?;

        let generation = self.store.new_generation(&def.name).await?;
        *partial = Some(generation.clone());
        let (tx, rx) = mpsc::channel::<EncodedBatch>(self.settings.queue);
        let producer = self.spawn_producer(def, req, None, generation.clone(), tx);
        let written = self.write_all(rx, false, progress, lease).await;
        let produced = join(producer).await;
        let (written, _) = written?;
        let produced = produced?;
        if written != produced.entities {
            return Err(MaterializeError::Incomplete { service: def.name.clone(), written, expected: produced.entities });
        }
        let meta = GenerationMeta {
            service: def.name.clone(),
            version: def.version.clone(),
            fingerprint: def.fingerprint().to_string(),
            generation: generation.clone(),
            run_id: run_id.to_string(),
            as_of: rfc3339(req.as_of),
            row_count: produced.entities,
            bytes: produced.bytes,
            materialized_at: rfc3339(Utc::now()),
            source_snapshot: produced.opened.snapshot.to_string(),
            watermark_micros: produced.max_event_ts.unwrap_or(i64::MIN),
            schema: Some(daeda_online::ServedSchema::of(def).to_json()),
        };
        lease.check()?;
        let previous = self.store.flip(&meta).await?;
        *partial = None;
        if let Some(old) = &previous {
            if old != &generation {
                if let Err(e) = self.store.retire(&def.name, old).await {
                    let w = format!("generation {old} could not be removed yet ({e}); the next full run or `daeda online gc` will");
                    warnings.push(w);
                }
            }
        }
        Ok(self.summary(def, req, run_id, t0, Some(generation), previous, &produced, written, 0, produced.bytes, warnings.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn incremental(
        &self,
        def: &Arc<ServiceDef>,
        req: &RunRequest,
        run_id: &str,
        progress: Arc<dyn Progress>,
        partial: &mut Option<String>,
        warnings: &mut Vec<String>,
        t0: Instant,
        lease: &LeaseWatch,
    ) -> Result<RunSummary, MaterializeError> {
        let Some(live) = self.store.current(&def.name).await? else {
            return Err(MaterializeError::NoLiveGeneration(def.name.clone()));
        };
        if live.fingerprint != def.fingerprint() {
            return Err(MaterializeError::FingerprintChanged {
                service: def.name.clone(),
                online: live.fingerprint.clone(),
                defined: def.fingerprint().to_string(),
            });
        }
        self.check_room(def, None, warnings).await?;
        let watermark = DateTime::<Utc>::from_timestamp_micros(live.watermark_micros);
        let (tx, rx) = mpsc::channel::<EncodedBatch>(self.settings.queue);
        let producer = self.spawn_producer(def, req, watermark, live.generation.clone(), tx);
        // If the run fails, this generation is removed unless it is still live
        // (another run may have retired it while this one was writing).
        *partial = Some(live.generation.clone());
        let written = self.write_all(rx, true, progress, lease).await;
        let produced = join(producer).await;
        let (_, writes) = written?;
        let produced = produced?;
        let mut meta = live.clone();
        meta.run_id = run_id.to_string();
        meta.materialized_at = rfc3339(Utc::now());
        meta.as_of = rfc3339(req.as_of);
        meta.source_snapshot = produced.opened.snapshot.to_string();
        let wm = produced.max_event_ts.unwrap_or(live.watermark_micros).max(live.watermark_micros);
        lease.check()?;
        self.store.advance(&meta, wm, writes.inserted, writes.bytes).await?;
        *partial = None;
        Ok(self.summary(
            def,
            req,
            run_id,
            t0,
            Some(live.generation.clone()),
            None,
            &produced,
            writes.inserted + writes.replaced,
            writes.kept,
            writes.bytes,
            warnings.clone(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn summary(
        &self,
        def: &ServiceDef,
        req: &RunRequest,
        run_id: &str,
        t0: Instant,
        generation: Option<String>,
        previous: Option<String>,
        p: &Produced,
        rows_written: u64,
        rows_kept: u64,
        bytes_written: u64,
        warnings: Vec<String>,
    ) -> RunSummary {
        let seconds = t0.elapsed().as_secs_f64();
        RunSummary {
            run_id: run_id.to_string(),
            service: def.name.clone(),
            version: def.version.clone(),
            mode: req.mode,
            dry_run: req.dry_run,
            as_of: rfc3339(req.as_of),
            generation,
            previous_generation: previous,
            rows_read: p.stats.rows,
            skipped_null_keys: p.stats.skipped_null_keys,
            entities: p.entities,
            rows_written,
            rows_kept,
            bytes_written,
            seconds,
            rows_per_sec: if seconds > 0.0 { p.entities as f64 / seconds } else { 0.0 },
            source_snapshot: p.opened.snapshot.clone(),
            event_ts_min: p.stats.event_ts_min_micros.and_then(micros_to_rfc3339),
            event_ts_max: p.stats.event_ts_max_micros.and_then(micros_to_rfc3339),
            join_key_null_rates: p.stats.join_key_null_rates.clone(),
            warnings,
        }
    }

    /// Starts the DuckDB side on a blocking thread: open, check, stats, then
    /// stream the latest-rows query into `tx`, encoded.
    fn spawn_producer(
        &self,
        def: &Arc<ServiceDef>,
        req: &RunRequest,
        newer_than: Option<DateTime<Utc>>,
        generation: String,
        tx: mpsc::Sender<EncodedBatch>,
    ) -> tokio::task::JoinHandle<Result<Produced, MaterializeError>> {
        let def = def.clone();
        let as_of = req.as_of;
        let row_prefix = self.store.keys().row_prefix(&def.name, &generation);
        tokio::task::spawn_blocking(move || produce(&def, as_of, newer_than, row_prefix, tx))
    }

    /// Drains the queue with `writers` concurrent pipelines. Returns rows written
    /// (and, for conditional writes, what happened to them).
    async fn write_all(
        &self,
        rx: mpsc::Receiver<EncodedBatch>,
        conditional: bool,
        progress: Arc<dyn Progress>,
        lease: &LeaseWatch,
    ) -> Result<(u64, IncrementalWrites), MaterializeError> {
        let rx = Arc::new(Mutex::new(rx));
        let written = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.settings.writers.max(1) {
            let (rx, store, written, progress) = (rx.clone(), self.store.clone(), written.clone(), progress.clone());
            let lease = lease.clone();
            tasks.spawn(async move {
                let mut conn = store.conn().await?;
                let mut w = IncrementalWrites::default();
                loop {
                    let next = lease.next(&rx).await?;
                    let Some(batch) = next else { return Ok::<_, MaterializeError>(w) };
                    // Another run owns the service now, or the run was asked to stop.
                    lease.check()?;
                    let n = batch.rows.len() as u64;
                    if conditional {
                        let r = store.put_rows_if_newer(&mut conn, &batch.rows, &lease.service, &lease.run_id).await?;
                        w.inserted += r.inserted;
                        w.replaced += r.replaced;
                        w.kept += r.kept;
                        w.bytes += batch.bytes;
                    } else {
                        store.put_rows(&mut conn, &batch.rows).await?;
                    }
                    written.fetch_add(n, Ordering::Relaxed);
                    progress.rows_done(n);
                }
            });
        }
        let mut total = IncrementalWrites::default();
        let mut first_err = None;
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(Ok(w)) => {
                    total.inserted += w.inserted;
                    total.replaced += w.replaced;
                    total.kept += w.kept;
                    total.bytes += w.bytes;
                }
                Ok(Err(e)) => {
                    // Stop the producer: closing the queue makes its next send fail.
                    rx.lock().await.close();
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    rx.lock().await.close();
                    first_err.get_or_insert(MaterializeError::TaskDied { task: "a Redis writer", source: e });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((written.load(Ordering::Relaxed), total)),
        }
    }
}

/// What a run's writes depend on: its lease (`lost` is set by the renewal
/// task) and not being asked to stop.
#[derive(Clone)]
struct LeaseWatch {
    service: String,
    run_id: String,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl LeaseWatch {
    fn check(&self) -> Result<(), MaterializeError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(MaterializeError::Interrupted(self.service.clone()));
        }
        if self.lost.load(Ordering::Relaxed) {
            return Err(OnlineError::LeaseLost { service: self.service.clone() }.into());
        }
        Ok(())
    }

    /// The next batch from the queue, waking up every 100 ms to notice a stop
    /// or a lost lease while DuckDB is still producing.
    async fn next(&self, rx: &Mutex<mpsc::Receiver<EncodedBatch>>) -> Result<Option<EncodedBatch>, MaterializeError> {
        let mut rx = rx.lock().await;
        loop {
            self.check()?;
            // recv is cancel-safe: a batch is never lost to the timeout.
            if let Ok(next) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                return Ok(next);
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct IncrementalWrites {
    inserted: u64,
    replaced: u64,
    kept: u64,
    bytes: u64,
}

async fn join<T>(h: tokio::task::JoinHandle<Result<T, MaterializeError>>) -> Result<T, MaterializeError> {
    h.await.map_err(|source| MaterializeError::TaskDied { task: "the DuckDB reader", source })?
}

/// The DuckDB side of a run (blocking).
fn produce(
    def: &ServiceDef,
    as_of: DateTime<Utc>,
    newer_than: Option<DateTime<Utc>>,
    row_prefix: String,
    tx: mpsc::Sender<EncodedBatch>,
) -> Result<Produced, MaterializeError> {
    let t0 = std::time::Instant::now();
    let conn = daeda_offline::session()?;
    let opened = source::open(&conn, &def.source)?;
    query::check_schema(&conn, def, &opened.relation)?;
    tracing::debug!(service = %def.name, elapsed = ?t0.elapsed(), "source opened and checked");
    let stats = query::stats(&conn, def, &opened.relation, as_of)?;
    tracing::debug!(service = %def.name, elapsed = ?t0.elapsed(), rows = stats.rows, "source stats");
    let sql = query::latest_rows_sql(def, &opened.relation, as_of, newer_than);
    let encoder = Encoder::new(def, row_prefix);
    let mut stream = ArrowStream::start(&conn, &sql)?;
    let (mut entities, mut bytes, mut max_ts) = (0u64, 0u64, None::<i64>);
    while let Some(batch) = stream.next_batch()? {
        if batch.num_rows() == 0 {
            continue;
        }
        let encoded = encoder.encode(&batch)?;
        entities += encoded.rows.len() as u64;
        bytes += encoded.bytes;
        if let Some(t) = encoded.max_event_ts {
            max_ts = Some(max_ts.map_or(t, |m| m.max(t)));
        }
        if tx.blocking_send(encoded).is_err() {
            // The writers stopped; their error is the one reported.
            break;
        }
    }
    tracing::debug!(service = %def.name, elapsed = ?t0.elapsed(), entities, "latest rows streamed and encoded");
    Ok(Produced { opened, stats, entities, bytes, max_event_ts: max_ts })
}
