use redis::RedisError;

/// Failures of the online store.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The Redis URL cannot be used.
    #[error("invalid Redis URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Redis cannot answer now: refused, timed out, connection lost, or a
    /// transient server state (loading its dataset, cluster down or resharding,
    /// a replica whose primary is down). Retrying later may succeed.
    #[error("Redis at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    /// Redis answered with an error.
    #[error("Redis at {url} failed: {reason}")]
    Command { url: String, reason: String },
    /// Another run holds the service's lease.
    #[error("another run ({holder}) is materializing `{service}`; wait for it to finish (its lease expires on its own if it died)")]
    LeaseHeld { service: String, holder: String },
    /// The lease expired or was taken while this run was writing.
    #[error(
        "this run lost its lease on `{service}` (it expired, or another run took the service over); it stopped \
         writing and neither flipped nor advanced a generation"
    )]
    LeaseLost { service: String },
    /// The configured namespace cannot be part of a key.
    #[error("{0}")]
    BadNamespace(String),
    /// A generation's metadata hash is unreadable.
    #[error("generation metadata {key} is corrupt: {reason}")]
    CorruptMeta { key: String, reason: String },
}

impl OnlineError {
    pub(crate) fn unavailable(url: &str, e: impl std::fmt::Display) -> OnlineError {
        OnlineError::Unavailable { url: url.to_string(), reason: e.to_string() }
    }

    pub(crate) fn from_redis(url: &str, e: RedisError) -> OnlineError {
        if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() || transient(&e)
        {
            Self::unavailable(url, e)
        } else {
            OnlineError::Command { url: url.to_string(), reason: e.to_string() }
        }
    }

    /// True when Redis could not be reached or cannot answer yet, as opposed to refusing a command.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, OnlineError::Unavailable { .. })
    }
}

/// Server states that pass by themselves: `LOADING` after a restart with a
/// dataset, `CLUSTERDOWN`, `TRYAGAIN` during resharding, `MASTERDOWN`; and a
/// cluster client's view of the slots going stale mid-command (see
/// [`stale_slots`]).
pub(crate) fn transient(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    stale_slots(e)
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
            )
        )
}

/// redis-rs (1.8) splits a multi-slot MGET by node and merges the replies;
/// while a cluster fails over, the merge can find fewer or more replies than
/// it routed and fails with this client error (the failover test met it).
/// It is the topology moving, not a bad command: retryable, and the
/// connection is replaced so its next command starts from fresh slots.
pub(crate) fn stale_slots(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Client && e.to_string().contains("multi-slot results")
}
