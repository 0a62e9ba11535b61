//! The connection pool: deadpool's managed pool over redis multiplexed
//! connections.
//!
//! deadpool-redis's manager PINGs every connection on every checkout; on the
//! gateway's hot path that is a second round trip per lookup. This manager
//! recycles without I/O instead, and retires a connection as soon as a command
//! on it fails with an I/O error, a timeout or a dropped connection, so a Redis
//! restart costs the requests in flight and nothing after.

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// A pooled connection that remembers whether it failed.
pub struct Conn {
    inner: MultiplexedConnection,
    broken: bool,
}

impl Conn {
    fn note(&mut self, e: &RedisError) {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.broken = true;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.inner.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.note(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.inner.req_packed_commands(cmd, offset, count).await;
            if let Err(e) = &r {
                self.note(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

pub struct RedisManager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl RedisManager {
    pub fn new(client: Client, config: AsyncConnectionConfig) -> RedisManager {
        RedisManager { client, config }
    }
}

impl managed::Manager for RedisManager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let inner = self.client.get_multiplexed_async_connection_with_config(&self.config).await?;
        Ok(Conn { inner, broken: false })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        if conn.broken {
            return Err(RecycleError::message("the connection failed"));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<RedisManager>;
pub type Connection = managed::Object<RedisManager>;
