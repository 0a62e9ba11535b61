//! The process's open-file limit, checked when the gateway binds: every
//! connection is a file descriptor, and running out of them fails `accept`
//! (and Redis connects) for everyone, not just the client past the limit.

/// Descriptors the gateway needs beside its client connections: the Redis
/// pool, the listener, DuckDB's files, logs.
const HEADROOM: u64 = 256;

/// Raises the soft limit toward the hard one, far enough for
/// `max_connections`; warns when the limit stays below that. Returns the
/// soft limit in force (None where there is no such limit).
pub fn ensure_open_files(max_connections: usize) -> Option<u64> {
    let wanted = max_connections as u64 + HEADROOM;
    let now = match rlimit::increase_nofile_limit(wanted) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            return None;
        }
    };
    if now < wanted {
        tracing::warn!(
            limit = now,
            max_connections,
            "the open-file limit ({now}) is below max_connections + {HEADROOM}; connections will fail before \
             max_connections is reached: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower max_connections"
        );
    } else {
        tracing::debug!(limit = now, "open-file limit");
    }
    Some(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_as_far_as_the_hard_one_allows() {
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        let got = super::ensure_open_files(100).unwrap();
        assert!(got >= soft.min(100 + super::HEADROOM), "{got} < {soft}");
        let want = (soft + 1000).min(hard);
        let got = super::ensure_open_files((want - super::HEADROOM) as usize).unwrap();
        assert!(got >= want && got <= hard, "{got} not in [{want}, {hard}]");
        assert_eq!(rlimit::Resource::NOFILE.get().unwrap().0, got);
    }
}
