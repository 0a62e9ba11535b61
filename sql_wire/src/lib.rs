//! The frames between the gateway and its SQL worker (`daeda sql-worker`),
//! over one Unix stream. Pure and blocking-free: both sides read and write
//! whole frames and do their own I/O.
//!
//! A frame is `u32` big-endian length, then that many bytes:
//! `u64` request id, `u8` kind, then the kind's body. The gateway sends
//! [`Request`]s; the worker answers each query with exactly one [`Reply`]
//! carrying the same id (a cancel gets no reply of its own).
//!
//! Invariant: a frame is never longer than [`MAX_FRAME`]; a longer length
//! prefix is a broken peer, and the connection is dropped.
//!
//! [`quote`] is the other thing both sides share without DuckDB: SQL quoting.

use serde::{Deserialize, Serialize};

pub mod quack;
pub mod quote;

/// The largest frame either side accepts: a result is capped well below it.
pub const MAX_FRAME: usize = 256 << 20;

/// What the gateway asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Query(Query),
    /// Interrupt the query with this id (its deadline passed on the gateway side).
    Cancel,
}

/// One approved query and what it may touch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The policy's printed text: exactly what runs.
    pub sql: String,
    /// Services the caller may read (lower-case).
    pub grants: Vec<String>,
    /// The relations the policy found in `sql`; DuckDB's parse must find the same.
    pub relations: Vec<String>,
    pub max_rows: usize,
    /// Cap on the result's in-memory size.
    pub max_bytes: usize,
    /// Milliseconds the query may take from when the worker reads it; a query
    /// the worker could not start within this never starts.
    pub timeout_ms: u64,
}

/// The worker's answer to one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The result as one Arrow IPC stream.
    Rows { arrow_ipc: Vec<u8>, truncated: bool },
    /// DuckDB rejected the query (the caller's mistake: 400).
    QueryError(String),
    /// DuckDB's parse of the text disagrees with the policy (403, counted).
    Disagreement(String),
    /// The engine refused to run it: not exactly one SELECT (403).
    Refused(String),
    /// The result is over its byte cap (413-like: 400 with the reason).
    TooLarge(String),
    /// The deadline passed before or while it ran (504).
    Timeout(String),
    /// Something broke inside the worker (500).
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

const QUERY: u8 = 1;
const CANCEL: u8 = 2;
const ROWS: u8 = 10;
const QUERY_ERROR: u8 = 11;
const DISAGREEMENT: u8 = 12;
const REFUSED: u8 = 13;
const TOO_LARGE: u8 = 14;
const TIMEOUT: u8 = 15;
const INTERNAL: u8 = 16;

fn frame(id: u64, kind: u8, body: &[u8]) -> Vec<u8> {
    let len = 9 + body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// The length a 4-byte prefix announces, checked against [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    if len < 9 {
        return Err(WireError::Malformed(format!("a frame of {len} bytes has no header")));
    }
    Ok(len)
}

fn header(payload: &[u8]) -> Result<(u64, u8, &[u8]), WireError> {
    if payload.len() < 9 {
        return Err(WireError::Malformed("short frame".into()));
    }
    let id = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
    Ok((id, payload[8], &payload[9..]))
}

impl Request {
    pub fn encode(&self, id: u64) -> Vec<u8> {
        match self {
            Request::Query(q) => frame(id, QUERY, &serde_json::to_vec(q).expect("a query serializes")),
            Request::Cancel => frame(id, CANCEL, &[]),
        }
    }

    /// Reads a frame's payload (after the length prefix).
    pub fn decode(payload: &[u8]) -> Result<(u64, Request), WireError> {
        let (id, kind, body) = header(payload)?;
        let r = match kind {
            QUERY => Request::Query(serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?),
            CANCEL => Request::Cancel,
            k => return Err(WireError::Malformed(format!("unknown request kind {k}"))),
        };
        Ok((id, r))
    }
}

impl Reply {
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let text = |kind, m: &String| frame(id, kind, m.as_bytes());
        match self {
            Reply::Rows { arrow_ipc, truncated } => {
                let mut body = Vec::with_capacity(1 + arrow_ipc.len());
                body.push(u8::from(*truncated));
                body.extend_from_slice(arrow_ipc);
                frame(id, ROWS, &body)
            }
            Reply::QueryError(m) => text(QUERY_ERROR, m),
            Reply::Disagreement(m) => text(DISAGREEMENT, m),
            Reply::Refused(m) => text(REFUSED, m),
            Reply::TooLarge(m) => text(TOO_LARGE, m),
            Reply::Timeout(m) => text(TIMEOUT, m),
            Reply::Internal(m) => text(INTERNAL, m),
        }
    }

    pub fn decode(payload: &[u8]) -> Result<(u64, Reply), WireError> {
        let (id, kind, body) = header(payload)?;
        let text = || String::from_utf8_lossy(body).into_owned();
        let r = match kind {
            ROWS => {
                let (&flag, ipc) = body.split_first().ok_or_else(|| WireError::Malformed("empty rows frame".into()))?;
                Reply::Rows { arrow_ipc: ipc.to_vec(), truncated: flag != 0 }
            }
            QUERY_ERROR => Reply::QueryError(text()),
            DISAGREEMENT => Reply::Disagreement(text()),
            REFUSED => Reply::Refused(text()),
            TOO_LARGE => Reply::TooLarge(text()),
            TIMEOUT => Reply::Timeout(text()),
            INTERNAL => Reply::Internal(text()),
            k => return Err(WireError::Malformed(format!("unknown reply kind {k}"))),
        };
        Ok((id, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> &[u8] {
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    #[test]
    fn every_message_round_trips() {
        let q = Query {
            sql: "SELECT 1".into(),
            grants: vec!["a".into()],
            relations: vec![],
            max_rows: 10,
            max_bytes: 100,
            timeout_ms: 5,
        };
        for r in [Request::Query(q), Request::Cancel] {
            assert_eq!(Request::decode(payload(&r.encode(7))).unwrap(), (7, r));
        }
        for r in [
            Reply::Rows { arrow_ipc: vec![1, 2, 3], truncated: true },
            Reply::QueryError("q".into()),
            Reply::Disagreement("d".into()),
            Reply::Refused("r".into()),
            Reply::TooLarge("t".into()),
            Reply::Timeout("t".into()),
            Reply::Internal("i".into()),
        ] {
            assert_eq!(Reply::decode(payload(&r.encode(u64::MAX))).unwrap(), (u64::MAX, r));
        }
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
        assert!(frame_len(3u32.to_be_bytes()).is_err());
        assert!(Reply::decode(&[0; 9]).is_err());
        assert!(Request::decode(&[0, 0, 0, 0, 0, 0, 0, 1, 1, b'{']).is_err());
        assert!(Reply::decode(&[0, 0, 0, 0, 0, 0, 0, 1, 10]).is_err());
    }
}
