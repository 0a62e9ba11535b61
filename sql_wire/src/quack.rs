//! The frames between a Quack worker (`daeda sql-worker --quack ADDR`) and
//! the gateway. The direction is the reverse of the SQL worker's: DuckDB's
//! Quack server calls the worker's authentication and authorization
//! callbacks, and each callback asks the gateway — the one place where tokens
//! are verified, grants computed and the policy runs — and waits for its
//! [`Answer`]. Same framing as the crate root (length, id, kind, body).

use serde::{Deserialize, Serialize};

use crate::{frame, header, Query, WireError};

const ASK: u8 = 20;
const ANSWER: u8 = 21;

/// What a Quack worker asks on behalf of a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ask {
    /// A client opened session `session` with `token` (its JWT).
    Authenticate { session: String, token: String },
    /// Session `session` wants to run `query` (the text as the client sent it).
    Authorize { session: String, query: String },
    /// Session `session` ran a query past the Quack deadline; the worker is
    /// about to exit (DuckDB gives it no way to stop that one query).
    Overran { session: String },
    /// The sessions the Quack server still holds (`quack_active_connections()`);
    /// the gateway forgets the others (there is no disconnect callback).
    Alive { sessions: Vec<String> },
}

/// The gateway's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The token is valid and grants the sql plane: the session may ask.
    Admitted,
    /// Run exactly `sql` (the policy's fixed point), once DuckDB's parse agrees.
    Approved(Query),
    /// Refused, with the reason the client is shown.
    Refused(String),
}

impl Ask {
    pub fn encode(&self, id: u64) -> Vec<u8> {
        frame(id, ASK, &serde_json::to_vec(self).expect("an ask serializes"))
    }

    pub fn decode(payload: &[u8]) -> Result<(u64, Ask), WireError> {
        let (id, kind, body) = header(payload)?;
        if kind != ASK {
            return Err(WireError::Malformed(format!("unknown ask kind {kind}")));
        }
        Ok((id, serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?))
    }
}

impl Answer {
    pub fn encode(&self, id: u64) -> Vec<u8> {
        frame(id, ANSWER, &serde_json::to_vec(self).expect("an answer serializes"))
    }

    pub fn decode(payload: &[u8]) -> Result<(u64, Answer), WireError> {
        let (id, kind, body) = header(payload)?;
        if kind != ANSWER {
            return Err(WireError::Malformed(format!("unknown answer kind {kind}")));
        }
        Ok((id, serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_and_answers_round_trip() {
        for a in [
            Ask::Authenticate { session: "s".into(), token: "t".into() },
            Ask::Authorize { session: "s".into(), query: "q".into() },
            Ask::Overran { session: "s".into() },
            Ask::Alive { sessions: vec!["a".into(), "b".into()] },
        ] {
            assert_eq!(Ask::decode(&a.encode(3)[4..]).unwrap(), (3, a));
        }
        let q = Query {
            sql: "SELECT 1".into(),
            grants: vec![],
            relations: vec![],
            max_rows: 1,
            max_bytes: 1,
            timeout_ms: 1,
        };
        for a in [Answer::Admitted, Answer::Approved(q), Answer::Refused("no".into())] {
            assert_eq!(Answer::decode(&a.encode(4)[4..]).unwrap(), (4, a));
        }
        assert!(Answer::decode(&Ask::Authenticate { session: "s".into(), token: "t".into() }.encode(1)[4..]).is_err());
    }
}
