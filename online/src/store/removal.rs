//! Removing generations and services: SCAN + batched UNLINK, never blocking Redis.

use std::time::Duration;

use super::OnlineStore;
use crate::OnlineError;

impl OnlineStore {
    /// Removes every key of a generation (rows, metadata, registration) without
    /// blocking Redis. Returns the number of row keys removed.
    pub async fn retire(&self, service: &str, generation: &str) -> Result<u64, OnlineError> {
        let mut c = self.conn().await?;
        let mut scan = self.key_scan(&mut c, &self.keys.row_pattern(service, generation), 2000).await?;
        let mut removed = 0u64;
        while let Some(page) = scan.next(self, &mut c).await? {
            if !page.is_empty() {
                let n: u64 = redis::cmd("UNLINK").arg(&page).query_async(&mut *c).await.map_err(|e| self.err(e))?;
                removed += n;
            }
        }
        let _: () = redis::pipe()
            .cmd("UNLINK")
            .arg(self.keys.generation_meta(service, generation))
            .ignore()
            .cmd("SREM")
            .arg(self.keys.generations(service))
            .arg(generation)
            .ignore()
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Removes what is left of a service that left the catalog: every generation,
    /// then its pointer, counter and registration.
    pub async fn drop_service(&self, service: &str) -> Result<u64, OnlineError> {
        let mut removed = 0;
        for g in self.generations(service).await? {
            removed += self.retire(service, &g).await?;
        }
        let mut c = self.conn().await?;
        let _: () = redis::cmd("UNLINK")
            .arg(self.keys.current(service))
            .arg(self.keys.genseq(service))
            .arg(self.keys.generations(service))
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Purges a service while `holder` holds its lease (renewed for
    /// `lease_ttl` after each generation; a lost lease stops the purge with
    /// [`OnlineError::LeaseLost`]): the pointer first, so lookups answer "no
    /// live generation" rather than missing rows, then every registered
    /// generation, then any row key of the service left outside them, then the
    /// registration. The generation counter is kept, so a generation id is
    /// never reused. Never blocks Redis (SCAN + UNLINK). Returns the row keys removed.
    pub async fn purge_service(&self, service: &str, holder: &str, lease_ttl: Duration) -> Result<u64, OnlineError> {
        let mut c = self.conn().await?;
        let _: () =
            redis::cmd("UNLINK").arg(self.keys.current(service)).query_async(&mut *c).await.map_err(|e| self.err(e))?;
        drop(c);
        let mut removed = 0;
        for g in self.generations(service).await? {
            removed += self.retire(service, &g).await?;
            if !self.renew_lease(service, holder, lease_ttl).await? {
                return Err(OnlineError::LeaseLost { service: service.to_string() });
            }
        }
        let mut c = self.conn().await?;
        let mut scan = self.key_scan(&mut c, &self.keys.service_row_pattern(service), 2000).await?;
        while let Some(page) = scan.next(self, &mut c).await? {
            if !page.is_empty() {
                let n: u64 = redis::cmd("UNLINK").arg(&page).query_async(&mut *c).await.map_err(|e| self.err(e))?;
                removed += n;
            }
        }
        let _: () = redis::cmd("UNLINK")
            .arg(self.keys.generations(service))
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed)
    }
}
