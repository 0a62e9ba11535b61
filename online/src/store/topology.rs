//! Commands that must visit every primary of a cluster (SCAN, INFO): which
//! nodes there are, running a command on one, and a SCAN over all of them.

use super::{Connection, OnlineStore};
use crate::OnlineError;

/// A primary of a cluster, for commands that must visit each one.
#[derive(Debug, Clone)]
pub(super) struct Node {
    host: String,
    port: u16,
}

/// A SCAN over every node, page by page: the one loop behind retirement,
/// gc and counting.
pub(super) struct KeyScan {
    /// `[None]` for one server; each primary of a cluster.
    nodes: Vec<Option<Node>>,
    node: usize,
    cursor: u64,
    pattern: String,
    count: usize,
}

impl KeyScan {
    /// The next page of keys (possibly empty), or None when every node is done.
    pub(super) async fn next(
        &mut self,
        store: &OnlineStore,
        c: &mut Connection,
    ) -> Result<Option<Vec<String>>, OnlineError> {
        let Some(node) = self.nodes.get(self.node) else { return Ok(None) };
        let cmd =
            redis::cmd("SCAN").arg(self.cursor).arg("MATCH").arg(&self.pattern).arg("COUNT").arg(self.count).clone();
        let (next, page): (u64, Vec<String>) = store.on_node(c, node.as_ref(), cmd).await?;
        if next == 0 {
            self.node += 1;
        }
        self.cursor = next;
        Ok(Some(page))
    }
}

impl OnlineStore {
    /// The nodes a whole-keyspace command must visit: `[None]` for one server
    /// (the connection itself), every primary of a cluster.
    pub(super) async fn nodes(&self, c: &mut Connection) -> Result<Vec<Option<Node>>, OnlineError> {
        if !self.cluster {
            return Ok(vec![None]);
        }
        let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut **c).await.map_err(|e| self.err(e))?;
        Ok(primaries(&text).into_iter().map(Some).collect())
    }

    /// Runs `cmd` on `node` (or on the connection's server when None).
    pub(super) async fn on_node<T: redis::FromRedisValue>(
        &self,
        c: &mut Connection,
        node: Option<&Node>,
        cmd: redis::Cmd,
    ) -> Result<T, OnlineError> {
        let (Some(node), crate::pool::Inner::Cluster(cluster)) = (node, &mut c.inner) else {
            return cmd.query_async(&mut **c).await.map_err(|e| self.err(e));
        };
        let routing =
            redis::cluster_routing::RoutingInfo::SingleNode(redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                host: node.host.clone(),
                port: node.port,
            });
        let value = cluster.route_command(cmd, routing).await.map_err(|e| self.err(e))?;
        redis::FromRedisValue::from_redis_value(value).map_err(|e| self.err(e.into()))
    }

    /// Starts a SCAN over every node that holds keys (each primary of a cluster).
    pub(super) async fn key_scan(
        &self,
        c: &mut Connection,
        pattern: &str,
        count: usize,
    ) -> Result<KeyScan, OnlineError> {
        Ok(KeyScan { nodes: self.nodes(c).await?, node: 0, cursor: 0, pattern: pattern.to_string(), count })
    }

    /// Every key matching `pattern`, on every node.
    pub(super) async fn scan_all(&self, c: &mut Connection, pattern: &str) -> Result<Vec<String>, OnlineError> {
        let mut scan = self.key_scan(c, pattern, 1000).await?;
        let mut out = Vec::new();
        while let Some(page) = scan.next(self, c).await? {
            out.extend(page);
        }
        Ok(out)
    }
}

/// The primaries that are up, from `CLUSTER NODES` text.
fn primaries(cluster_nodes: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for line in cluster_nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        let hostport = addr.split('@').next().unwrap_or(addr);
        if let Some((host, port)) = hostport.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                nodes.push(Node { host: host.to_string(), port });
            }
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_primaries_that_are_up_are_visited() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected";
        let nodes: Vec<(String, u16)> = super::primaries(text).into_iter().map(|n| (n.host, n.port)).collect();
        assert_eq!(nodes, [("127.0.0.1".to_string(), 7000), ("127.0.0.1".to_string(), 7001)]);
    }
}
