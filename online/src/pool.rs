//! The connection pool: deadpool's managed pool over redis multiplexed
//! connections, to one Redis, a Redis Cluster, or the primary Sentinel names
//! (resolved again for every new connection, so replacements after a failover
//! reach the promoted replica).
//!
//! deadpool-redis's manager PINGs every connection on every checkout; on the
//! gateway's hot path that is a second round trip per lookup. This manager
//! recycles without I/O instead, and retires a connection as soon as a command
//! on it fails with an I/O error, a timeout or a dropped connection, so a Redis
//! restart costs the requests in flight and nothing after. A `READONLY` reply
//! also retires it: the server it reaches was demoted to a replica.

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::connect::{SentinelServerType, Topology};

/// One server, or a cluster (which routes each command by its keys' slots).
#[derive(Clone)]
pub enum Inner {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A pooled connection that remembers whether it failed.
pub struct Conn {
    pub(crate) inner: Inner,
    broken: bool,
}

impl Conn {
    fn note(&mut self, e: &RedisError) {
        let demoted = matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
            || crate::error::stale_slots(e);
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() || demoted {
            self.broken = true;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = match &mut self.inner {
                Inner::Single(c) => c.req_packed_command(cmd).await,
                Inner::Cluster(c) => c.req_packed_command(cmd).await,
            };
            if let Err(e) = &r {
                self.note(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = match &mut self.inner {
                Inner::Single(c) => c.req_packed_commands(cmd, offset, count).await,
                Inner::Cluster(c) => c.req_packed_commands(cmd, offset, count).await,
            };
            if let Err(e) = &r {
                self.note(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

pub enum Target {
    Single(Box<Client>),
    Cluster(Box<ClusterClient>),
    /// With `replica`, connections go to a replica when one is up.
    Sentinel {
        primary: Sentinels,
        replica: Option<Sentinels>,
    },
}

/// One Sentinel client per rotation of the sentinel list, taken in turn by
/// successive connections: a client asks its sentinels in order, so with a
/// single order one hung sentinel (its replies time out) would stall every new
/// connection while it is first. Each is locked because it caches its
/// connections to the sentinels.
pub struct Sentinels {
    clients: Vec<tokio::sync::Mutex<SentinelClient>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Sentinels {
    fn new(spec: &crate::connect::SentinelSpec, server: SentinelServerType) -> Result<Sentinels, RedisError> {
        let clients = (0..spec.sentinels.len())
            .map(|first| spec.client(server.clone(), first).map(tokio::sync::Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Sentinels { clients, next: std::sync::atomic::AtomicUsize::new(0) })
    }

    /// A client for the server the sentinels name (a primary is checked with `ROLE`).
    async fn resolve(&self) -> Result<Client, RedisError> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.clients.len();
        self.clients[i].lock().await.async_get_client().await
    }
}

pub struct RedisManager {
    target: Target,
    config: AsyncConnectionConfig,
}

impl RedisManager {
    /// With `replicas`, reads go to replicas where the topology has them
    /// (a single server has none).
    pub fn new(
        topology: &Topology,
        timeout: std::time::Duration,
        replicas: bool,
        config: AsyncConnectionConfig,
    ) -> Result<RedisManager, RedisError> {
        let target = match topology {
            Topology::Single(url) => Target::Single(Box::new(Client::open(url.as_str())?)),
            Topology::Cluster(urls) => {
                let mut b = ClusterClientBuilder::new(urls.iter().map(String::as_str).collect::<Vec<_>>())
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                if replicas {
                    b = b.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
                }
                Target::Cluster(Box::new(b.build()?))
            }
            Topology::Sentinel(spec) => Target::Sentinel {
                primary: Sentinels::new(spec, SentinelServerType::Master)?,
                replica: if replicas { Some(Sentinels::new(spec, SentinelServerType::Replica)?) } else { None },
            },
        };
        Ok(RedisManager { target, config })
    }
}

impl managed::Manager for RedisManager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let inner = match &self.target {
            Target::Single(c) => Inner::Single(c.get_multiplexed_async_connection_with_config(&self.config).await?),
            Target::Cluster(c) => Inner::Cluster(c.get_async_connection().await?),
            Target::Sentinel { primary, replica } => {
                let mut conn = None;
                if let Some(replica) = replica {
                    // A replica the sentinels consider up; none (or none
                    // reachable): the primary serves the reads.
                    let client = replica.resolve().await;
                    match client {
                        Ok(c) => match c.get_multiplexed_async_connection_with_config(&self.config).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => tracing::debug!(error = %e, "no replica connection; reading from the primary"),
                        },
                        Err(e) => {
                            tracing::debug!(error = %e, "no replica named by the sentinels; reading from the primary")
                        }
                    }
                }
                match conn {
                    Some(c) => Inner::Single(c),
                    None => {
                        // Asks the sentinels, then checks the named primary's ROLE.
                        let primary = primary.resolve().await?;
                        Inner::Single(primary.get_multiplexed_async_connection_with_config(&self.config).await?)
                    }
                }
            }
        };
        Ok(Conn { inner, broken: false })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        if conn.broken {
            return Err(RecycleError::message("the connection failed"));
        }
        Ok(())
    }
}

impl RedisManager {
    /// A RESP3 connection to the primary (one server, or the one the
    /// sentinels name now) whose push messages go to `push`: the row cache's
    /// invalidation channel. None on a cluster, whose keys live on many primaries.
    pub(crate) async fn push_connection(
        &self,
        push: impl redis::aio::AsyncPushSender,
    ) -> Result<Option<MultiplexedConnection>, RedisError> {
        let client = match &self.target {
            Target::Single(c) => (**c).clone(),
            Target::Sentinel { primary, .. } => primary.resolve().await?,
            Target::Cluster(_) => return Ok(None),
        };
        let info = client.get_connection_info().clone();
        let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(resp3))?;
        let config = self.config.clone().set_push_sender(push);
        client.get_multiplexed_async_connection_with_config(&config).await.map(Some)
    }
}

pub type Pool = managed::Pool<RedisManager>;
pub type Connection = managed::Object<RedisManager>;
