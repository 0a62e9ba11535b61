//! The service's lease: one run (or gc/purge) writes a service at a time. It
//! is a key holding the holder's run id with a time to live; renewing and
//! releasing check the holder in the same script, so a run never extends or
//! removes another run's lease.

use std::time::Duration;

use redis::AsyncCommands;

use super::scripts::{RELEASE_LEASE, RENEW_LEASE};
use super::OnlineStore;
use crate::OnlineError;

impl OnlineStore {
    /// Takes the service's lease for `ttl`, or fails with the holder's run id.
    pub async fn acquire_lease(&self, service: &str, run_id: &str, ttl: Duration) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        let key = self.keys.lease(service);
        let ok: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(run_id)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        if ok.is_some() {
            return Ok(());
        }
        let holder: Option<String> = c.get(&key).await.map_err(|e| self.err(e))?;
        Err(OnlineError::LeaseHeld { service: service.to_string(), holder: holder.unwrap_or_else(|| "?".into()) })
    }

    /// Extends the lease; false when this run no longer holds it.
    pub async fn renew_lease(&self, service: &str, run_id: &str, ttl: Duration) -> Result<bool, OnlineError> {
        let mut c = self.conn().await?;
        let n: i64 = RENEW_LEASE
            .key(self.keys.lease(service))
            .arg(run_id)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Removes the lease if `run_id` holds it.
    pub async fn release_lease(&self, service: &str, run_id: &str) -> Result<(), OnlineError> {
        let mut c = self.conn().await?;
        let _: i64 = RELEASE_LEASE
            .key(self.keys.lease(service))
            .arg(run_id)
            .invoke_async(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn lease_holder(&self, service: &str) -> Result<Option<String>, OnlineError> {
        let mut c = self.conn().await?;
        c.get(self.keys.lease(service)).await.map_err(|e| self.err(e))
    }

    /// Fails with [`OnlineError::LeaseLost`] unless `run_id` holds the lease:
    /// the check before a batch on a cluster, where a row's script cannot
    /// read the lease (another slot).
    pub(super) async fn check_lease(
        &self,
        c: &mut super::Connection,
        service: &str,
        run_id: &str,
    ) -> Result<(), OnlineError> {
        let holder: Option<String> = c.get(self.keys.lease(service)).await.map_err(|e| self.err(e))?;
        if holder.as_deref() != Some(run_id) {
            return Err(OnlineError::LeaseLost { service: service.to_string() });
        }
        Ok(())
    }
}
