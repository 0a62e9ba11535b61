//! Generations: numbering one, reading the pointer and metadata, the flip
//! that makes one live, and recording an incremental run on the live one.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::scripts::{ADVANCE, FLIP, NEXT_GENERATION};
use super::OnlineStore;
use crate::meta::GenerationMeta;
use crate::OnlineError;

impl OnlineStore {
    /// Numbers and registers a new generation; its rows may be written next.
    /// Numbers a new generation above both the counter and `floor` (the
    /// highest id this service's run history has seen): the counter lives in
    /// Redis, so a Redis that lost its data would otherwise issue ids again.
    pub async fn new_generation(&self, service: &str, floor: u64) -> Result<String, OnlineError> {
        let mut c = self.conn().await?;
        let n: u64 = NEXT_GENERATION
            .key(self.keys.genseq(service))
            .key(self.keys.generations(service))
            .arg(floor)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(n.to_string())
    }

    pub async fn current_generation(&self, service: &str) -> Result<Option<String>, OnlineError> {
        let mut c = self.conn().await?;
        c.get(self.keys.current(service)).await.map_err(|e| self.err(e))
    }

    /// The live generation of several services, in one round trip.
    pub async fn current_generations(&self, services: &[String]) -> Result<Vec<Option<String>>, OnlineError> {
        let none = vec![None; services.len()];
        Ok(self.pointers_and_runs(services, &none).await?.into_iter().map(|(g, _)| g).collect())
    }

    /// Each service's pointer and, for each `known[i]` (a generation the caller
    /// cached), the run id its metadata records now (None when it is gone): in
    /// one round trip on one server, one per service on a cluster. A pointer
    /// that names the cached id under another run means the id was issued
    /// again (Redis lost its data, and the counter with it).
    pub async fn pointers_and_runs(
        &self,
        services: &[String],
        known: &[Option<String>],
    ) -> Result<Vec<(Option<String>, Option<String>)>, OnlineError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let pipe_for = |pairs: &[(&String, &Option<String>)]| {
            let mut p = redis::pipe();
            for (s, g) in pairs {
                p.cmd("GET").arg(self.keys.current(s));
                p.cmd("HGET").arg(self.keys.generation_meta(s, g.as_deref().unwrap_or("none"))).arg("run_id");
            }
            p
        };
        let pairs: Vec<(&String, &Option<String>)> = services.iter().zip(known).collect();
        let mut flat: Vec<Option<String>> = Vec::with_capacity(2 * services.len());
        if self.cluster {
            // Each service's keys live in its own slot: one pipeline each.
            for pair in &pairs {
                let v: Vec<Option<String>> =
                    pipe_for(std::slice::from_ref(pair)).query_async(&mut *c).await.map_err(|e| self.err(e))?;
                flat.extend(v);
            }
        } else {
            flat = pipe_for(&pairs).query_async(&mut *c).await.map_err(|e| self.err(e))?;
        }
        Ok(flat.chunks(2).zip(known).map(|(v, k)| (v[0].clone(), k.as_ref().and(v[1].clone()))).collect())
    }

    pub async fn generation_meta(
        &self,
        service: &str,
        generation: &str,
    ) -> Result<Option<GenerationMeta>, OnlineError> {
        let mut c = self.conn().await?;
        let key = self.keys.generation_meta(service, generation);
        let m: HashMap<String, String> = c.hgetall(&key).await.map_err(|e| self.err(e))?;
        if m.is_empty() {
            return Ok(None);
        }
        GenerationMeta::from_fields(m).map(Some).map_err(|reason| OnlineError::CorruptMeta { key, reason })
    }

    /// The live generation's metadata, if the service has one. The pointer can
    /// move, and the generation it named be retired, between the two reads:
    /// metadata missing under a pointer means "read the pointer again", not
    /// "nothing is live" (a few times; a pointer without metadata for good is None).
    pub async fn current(&self, service: &str) -> Result<Option<GenerationMeta>, OnlineError> {
        for _ in 0..3 {
            match self.current_generation(service).await? {
                None => return Ok(None),
                Some(g) => {
                    if let Some(m) = self.generation_meta(service, &g).await? {
                        return Ok(Some(m));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every generation of the service that may still hold rows.
    pub async fn generations(&self, service: &str) -> Result<Vec<String>, OnlineError> {
        let mut c = self.conn().await?;
        let mut v: Vec<String> = c.smembers(self.keys.generations(service)).await.map_err(|e| self.err(e))?;
        v.sort_by_key(|g| g.parse::<u64>().unwrap_or(u64::MAX));
        Ok(v)
    }

    /// Services that have anything online, found with SCAN.
    pub async fn services_online(&self) -> Result<Vec<String>, OnlineError> {
        let mut c = self.conn().await?;
        let found: Vec<String> = self.scan_all(&mut c, &self.keys.all_generation_sets()).await?;
        let mut names: Vec<String> =
            found.iter().filter_map(|k| self.keys.service_of_generation_set(k)).map(str::to_string).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Makes `meta.generation` the live one, atomically, if `run_id` still holds
    /// the lease. Returns the generation it replaced.
    ///
    /// With replicas (a Sentinel set, any primary with connected replicas, or
    /// the primaries of a cluster), the flip first waits until every replica
    /// has the generation's rows: a failover right after the flip then cannot
    /// promote a replica whose pointer names rows it never received, or that
    /// lacks its shard's part of them. When they do not confirm in time the
    /// run fails with the pointer untouched.
    pub async fn flip(&self, meta: &GenerationMeta) -> Result<Option<String>, OnlineError> {
        let mut c = self.conn().await?;
        let s = &meta.service;
        let acked = match &mut c.inner {
            crate::pool::Inner::Single(_) => {
                crate::connect::replicas_acknowledge(&mut *c, &self.keys.genseq(s), self.replica_wait).await
            }
            crate::pool::Inner::Cluster(cluster) => {
                let touch = |i| self.keys.replica_touch(i);
                crate::connect::cluster_replicas_acknowledge(cluster, touch, self.replica_wait).await
            }
        };
        let (acked, connected) = acked.map_err(|e| self.err(e))?;
        if acked < connected {
            return Err(OnlineError::unavailable(
                &self.display_url,
                format!(
                    "{acked} of {connected} replicas confirmed generation {} within {:?}; not flipped",
                    meta.generation, self.replica_wait
                ),
            ));
        }
        let mut inv = FLIP.prepare_invoke();
        inv.key(self.keys.lease(s))
            .key(self.keys.current(s))
            .key(self.keys.generation_meta(s, &meta.generation))
            .key(self.keys.generations(s))
            .arg(&meta.run_id)
            .arg(&meta.generation);
        for (k, v) in meta.to_fields() {
            inv.arg(k).arg(v);
        }
        inv.invoke_async(&mut *c).await.map_err(|e| self.lease_or(e, s))
    }

    /// Records an incremental run on the live generation (see `ADVANCE`): its
    /// run id, as-of, source snapshot and time; the watermark moves forward only.
    pub async fn advance(
        &self,
        meta: &GenerationMeta,
        watermark_micros: i64,
        added_rows: u64,
        added_bytes: u64,
    ) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        let s = &meta.service;
        let _: i64 = ADVANCE
            .key(self.keys.lease(s))
            .key(self.keys.generation_meta(s, &meta.generation))
            .arg(&meta.run_id)
            .arg(watermark_micros)
            .arg(added_rows)
            .arg(added_bytes)
            .arg(&meta.materialized_at)
            .arg(&meta.as_of)
            .arg(&meta.source_snapshot)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.lease_or(e, s))?;
        Ok(())
    }
}
