//! Where the online store lives, read from its URL: one server, a Redis
//! Cluster, or a primary found through Redis Sentinel.
//!
//! - `redis://h:6379/0` (or `rediss://` for TLS): one server;
//! - `redis://h1:7000,redis://h2:7001` or `redis+cluster://h:7000`
//!   (`rediss+cluster://`): a cluster from its seed nodes;
//! - `redis+sentinel://[user:password@]s1:26379[,s2:26379...]/service[/db]`
//!   (`rediss+sentinel://` for TLS to the sentinels and the data nodes): the
//!   primary the sentinels name for `service`. The credentials are the data
//!   nodes'; sentinels that require their own take `?sentinel_password=...`
//!   (and `sentinel_username=`).
//!
//! With Sentinel, every new connection asks the sentinels for the primary and
//! checks with `ROLE` that it is one, so after a failover the pool's
//! replacements for the connections that failed reach the promoted replica.

pub use redis::sentinel::SentinelServerType;
use redis::sentinel::{SentinelClient, SentinelClientBuilder};
use redis::{ConnectionAddr, TlsMode};

/// The deployment a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server's URL.
    Single(String),
    /// Seed nodes' URLs (`redis://` or `rediss://`).
    Cluster(Vec<String>),
    Sentinel(SentinelSpec),
}

/// A primary behind Redis Sentinel.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    /// `(host, port)` of each sentinel, asked in this order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub service: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub tls: bool,
}

impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSpec")
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// Reads a URL (see the module doc). A comma-separated list or a
    /// `+cluster` scheme is a cluster; a `+sentinel` scheme is Sentinel.
    pub fn parse(url: &str) -> Result<Topology, String> {
        let url = url.trim();
        for (scheme, tls) in [("redis+sentinel://", false), ("rediss+sentinel://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return sentinel(rest, tls).map(Topology::Sentinel);
            }
        }
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.replacen("redis+cluster://", "redis://", 1).replacen("rediss+cluster://", "rediss://", 1))
            .collect();
        match urls.as_slice() {
            [] => Err("no URL given".into()),
            [one] if !url.contains("+cluster://") => Ok(Topology::Single(one.clone())),
            _ => Ok(Topology::Cluster(urls)),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|e| e.to_string())
}

/// `[user:password@]h:p[,h:p...]/service[/db][?sentinel_password=..&sentinel_username=..]`
fn sentinel(rest: &str, tls: bool) -> Result<SentinelSpec, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) =
        rest.split_once('/').ok_or("a Sentinel URL names the service: redis+sentinel://host:port/service")?;
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, authority),
    };
    let (mut username, mut password) = (None, None);
    if let Some(a) = auth {
        let (u, p) = a.split_once(':').unwrap_or((a, ""));
        username = Some(decode(u)?).filter(|u| !u.is_empty());
        password = Some(decode(p)?).filter(|p| !p.is_empty());
    }
    let mut sentinels = Vec::new();
    for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("bad sentinel port in `{h}`"))?),
            None => (h, 26379),
        };
        sentinels.push((host.trim_start_matches('[').trim_end_matches(']').to_string(), port));
    }
    if sentinels.is_empty() {
        return Err("no sentinel address".into());
    }
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let service = decode(parts.next().ok_or("a Sentinel URL names the service: redis+sentinel://host:port/service")?)?;
    let db = match parts.next() {
        Some(d) => d.parse().map_err(|_| format!("bad database number `{d}`"))?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err("a Sentinel URL's path is /service or /service/db".into());
    }
    let (mut sentinel_username, mut sentinel_password) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sentinel_password" => sentinel_password = Some(decode(v)?),
            "sentinel_username" => sentinel_username = Some(decode(v)?),
            other => return Err(format!("unknown Sentinel URL parameter `{other}`")),
        }
    }
    Ok(SentinelSpec { sentinels, service, db, username, password, sentinel_username, sentinel_password, tls })
}

impl SentinelSpec {
    /// A client that resolves the primary (or a replica) on each
    /// `async_get_client`, asking the sentinels in order from the `first`th.
    pub fn client(&self, server: SentinelServerType, first: usize) -> redis::RedisResult<SentinelClient> {
        let n = self.sentinels.len();
        let addrs = (0..n).map(|i| &self.sentinels[(first + i) % n]).map(|(host, port)| {
            if self.tls {
                ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        });
        let mut b = SentinelClientBuilder::new(addrs, &self.service, server)?.set_client_to_redis_db(self.db);
        if self.tls {
            b = b.set_client_to_redis_tls_mode(TlsMode::Secure).set_client_to_sentinel_tls_mode(TlsMode::Secure);
        }
        if let Some(u) = &self.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.password {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(u) = &self.sentinel_username {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &self.sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        b.build()
    }
}

/// Waits until every online replica of the server behind `c` has received
/// everything written to it so far, or `wait` has passed. Returns
/// `(acknowledged, online)`; `(0, 0)` without replicas. A replica still in
/// its initial sync is not counted: it has no dataset to promote yet.
///
/// `WAIT` covers the writes *this connection* made, and the replication
/// stream is ordered; a no-op write (`INCRBY key 0`, which Redis propagates)
/// on `c` first makes it cover every earlier write of every connection.
pub async fn replicas_acknowledge<C: redis::aio::ConnectionLike + Send>(
    c: &mut C,
    touch: &str,
    wait: std::time::Duration,
) -> redis::RedisResult<(u64, u64)> {
    let info: String = redis::cmd("INFO").arg("replication").query_async(c).await?;
    let connected = online_replicas(&info);
    if connected == 0 {
        return Ok((0, 0));
    }
    let _: i64 = redis::cmd("INCRBY").arg(touch).arg(0).query_async(c).await?;
    let acked: u64 = redis::cmd("WAIT").arg(connected).arg(wait.as_millis().max(1) as u64).query_async(c).await?;
    Ok((acked, connected))
}

/// [`replicas_acknowledge`] for every primary of a Redis Cluster, one after
/// another: rows are spread over every shard, so a flip is only safe once each
/// shard's replicas hold its part. Returns `(acknowledged, online)` summed
/// over the primaries.
///
/// `WAIT` must follow a write on the same node connection: the no-op write is
/// `SET touch 1 PX 10000` on a key the primary owns (found from `CLUSTER
/// SLOTS` and the key's slot), so nothing is left behind. `touch(i)` names
/// the i-th candidate key. A slot that moves between `CLUSTER SLOTS` and the
/// `SET` (resharding during the flip) sends the write elsewhere and weakens
/// that primary's wait.
pub async fn cluster_replicas_acknowledge(
    c: &mut redis::cluster_async::ClusterConnection,
    touch: impl Fn(u32) -> String,
    wait: std::time::Duration,
) -> redis::RedisResult<(u64, u64)> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let slots = c
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await?;
    let (mut acked_all, mut online_all) = (0, 0);
    for (host, port, ranges) in primaries(slots)? {
        let at = || RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port });
        let info = c.route_command(redis::cmd("INFO").arg("replication").clone(), at()).await?;
        let online = online_replicas(&redis::from_redis_value::<String>(info)?);
        if online == 0 {
            continue;
        }
        online_all += online;
        // Fails closed: a primary no candidate lands on counts as unconfirmed.
        let Some(key) = (0..1_000_000).map(&touch).find(|k| ranges.iter().any(|r| r.contains(&key_slot(k)))) else {
            continue;
        };
        let _: () = redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(10_000).query_async(c).await?;
        let acked =
            c.route_command(redis::cmd("WAIT").arg(online).arg(wait.as_millis().max(1) as u64).clone(), at()).await?;
        acked_all += redis::from_redis_value::<u64>(acked)?;
    }
    Ok((acked_all, online_all))
}

/// A cluster primary: host, port, and the slot ranges it serves.
type Primary = (String, u16, Vec<std::ops::RangeInclusive<u16>>);

/// The primaries of a `CLUSTER SLOTS` reply.
fn primaries(reply: redis::Value) -> redis::RedisResult<Vec<Primary>> {
    let mut out: Vec<Primary> = Vec::new();
    for entry in redis::from_redis_value::<Vec<Vec<redis::Value>>>(reply)? {
        let [start, end, primary, ..] = entry.as_slice() else { continue };
        let (start, end): (u16, u16) = (redis::from_redis_value_ref(start)?, redis::from_redis_value_ref(end)?);
        let node: Vec<redis::Value> = redis::from_redis_value_ref(primary)?;
        let [host, port, ..] = node.as_slice() else { continue };
        let (host, port): (String, u16) = (redis::from_redis_value_ref(host)?, redis::from_redis_value_ref(port)?);
        match out.iter_mut().find(|(h, p, _)| *h == host && *p == port) {
            Some((_, _, ranges)) => ranges.push(start..=end),
            None => out.push((host, port, vec![start..=end])),
        }
    }
    Ok(out)
}

/// A key's Redis Cluster slot: CRC16 (XMODEM) of the key, or of its hash tag
/// (the first `{…}` with something inside), modulo 16384.
fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16384
}

/// Replicas in state `online` in an `INFO replication` text
/// (`slave0:ip=…,port=…,state=online,offset=…,lag=0`).
fn online_replicas(info: &str) -> u64 {
    info.lines()
        .filter(|l| {
            l.split_once(':').is_some_and(|(k, _)| {
                k.len() > 5 && k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit())
            })
        })
        .filter(|l| l.split(',').any(|f| f == "state=online"))
        .count() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_slots_are_the_ones_redis_computes() {
        // Values from `CLUSTER KEYSLOT` (and the cluster spec's examples).
        assert_eq!(super::key_slot("foo"), 12182);
        assert_eq!(super::key_slot("123456789"), 12739);
        assert_eq!(super::key_slot("{user1000}.following"), super::key_slot("user1000"));
        assert_ne!(super::key_slot("foo{}{bar}"), super::key_slot("bar"));
    }

    #[test]
    fn only_online_replicas_count() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n\
                    slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\nmaster_failover_state:no-failover\r\n";
        assert_eq!(super::online_replicas(info), 1);
        assert_eq!(super::online_replicas("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"), 0);
    }

    use super::*;

    #[test]
    fn a_seed_list_or_a_cluster_scheme_means_a_cluster() {
        assert_eq!(Topology::parse("redis://h:1/0"), Ok(Topology::Single("redis://h:1/0".to_string())));
        assert_eq!(
            Topology::parse("redis://a:7000, redis://b:7001"),
            Ok(Topology::Cluster(vec!["redis://a:7000".to_string(), "redis://b:7001".to_string()]))
        );
        assert_eq!(
            Topology::parse("redis+cluster://a:7000"),
            Ok(Topology::Cluster(vec!["redis://a:7000".to_string()]))
        );
        assert_eq!(
            Topology::parse("rediss+cluster://a:7000"),
            Ok(Topology::Cluster(vec!["rediss://a:7000".to_string()]))
        );
    }

    #[test]
    fn a_sentinel_url_names_sentinels_service_db_and_credentials() {
        let Ok(Topology::Sentinel(s)) =
            Topology::parse("redis+sentinel://app:p%40ss@s1:26379,s2:26380/feat/3?sentinel_password=x")
        else {
            panic!()
        };
        assert_eq!(s.sentinels, vec![("s1".to_string(), 26379), ("s2".to_string(), 26380)]);
        assert_eq!((s.service.as_str(), s.db, s.tls), ("feat", 3, false));
        assert_eq!((s.username.as_deref(), s.password.as_deref()), (Some("app"), Some("p@ss")));
        assert_eq!(s.sentinel_password.as_deref(), Some("x"));
        let Ok(Topology::Sentinel(s)) = Topology::parse("rediss+sentinel://:pw@s1/mymaster") else { panic!() };
        assert_eq!(
            (s.sentinels[0].1, s.db, s.tls, s.username.as_deref(), s.password.as_deref()),
            (26379, 0, true, None, Some("pw"))
        );
        assert!(!format!("{s:?}").contains("pw"), "no secret in Debug");
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:x/m",
            "redis+sentinel://s1/m/x",
        ] {
            assert!(Topology::parse(bad).is_err(), "{bad}");
        }
        assert!(Topology::parse("redis+sentinel://s1/m?bogus=1").is_err());
    }
}
