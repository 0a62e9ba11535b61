//! Redis memory figures from `INFO memory`, summed over a cluster's primaries.

use super::OnlineStore;
use crate::OnlineError;

/// Redis memory figures from `INFO memory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryInfo {
    pub used: u64,
    /// 0 means no limit.
    pub maxmemory: u64,
    pub policy: String,
}

impl MemoryInfo {
    /// Adds one node's `INFO memory` reply. The policy kept is the first one
    /// that is not `noeviction`, the one worth a warning; a node without a
    /// limit makes the whole unlimited (see [`OnlineStore::memory`]).
    fn add(&mut self, info: &str, unlimited: &mut bool) {
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim)
        };
        self.used += field("used_memory").and_then(|v| v.parse().ok()).unwrap_or(0);
        let max: u64 = field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0);
        *unlimited |= max == 0;
        self.maxmemory += max;
        let policy = field("maxmemory_policy").unwrap_or("unknown");
        if policy != "noeviction" && self.policy == "noeviction" {
            self.policy = policy.to_string();
        }
    }
}

impl OnlineStore {
    /// Memory figures; on a cluster, summed over the primaries (the policy is
    /// the first one that is not `noeviction`, the one worth a warning).
    pub async fn memory(&self) -> Result<MemoryInfo, OnlineError> {
        let mut c = self.conn().await?;
        let mut total = MemoryInfo { used: 0, maxmemory: 0, policy: "noeviction".into() };
        let mut unlimited = false;
        for node in self.nodes(&mut c).await? {
            let info: String = self.on_node(&mut c, node.as_ref(), redis::cmd("INFO").arg("memory").clone()).await?;
            total.add(&info, &mut unlimited);
        }
        if unlimited {
            total.maxmemory = 0;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryInfo;

    #[test]
    fn figures_are_summed_and_one_unlimited_node_makes_the_whole_unlimited() {
        let mut total = MemoryInfo { used: 0, maxmemory: 0, policy: "noeviction".into() };
        let mut unlimited = false;
        total.add(
            "# Memory\r\nused_memory:100\r\nused_memory_human:100B\r\nmaxmemory:1000\r\nmaxmemory_policy:noeviction\r\n",
            &mut unlimited,
        );
        assert!(!unlimited);
        total.add("used_memory:50\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n", &mut unlimited);
        assert_eq!((total.used, total.maxmemory, total.policy.as_str(), unlimited), (150, 1000, "allkeys-lru", true));
    }
}
