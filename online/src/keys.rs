//! The Redis key layout. Written for Redis Cluster as much as for one server:
//!
//! ```text
//! daeda:{svc:NAME}:current        STRING  the live generation id (the pointer readers follow)
//! daeda:{svc:NAME}:lease          STRING  run id of the run holding the lease, with a PX expiry
//! daeda:{svc:NAME}:genseq         STRING  counter that numbers generations
//! daeda:{svc:NAME}:gens           SET     generation ids that may still hold rows
//! daeda:{svc:NAME}:gen:GEN        HASH    generation metadata (see GenerationMeta)
//! daeda:row:NAME:GEN:ENTITY       STRING  one encoded row (see codec)
//! ```
//!
//! The per-service keys share the hash tag `{svc:NAME}`, so they live in one slot
//! and the flip (check the lease, write the metadata, move the pointer) is one
//! atomic script even on a cluster. Row keys carry no hash tag so one service's
//! rows spread over every slot.

use std::fmt::Write;

pub fn current(service: &str) -> String {
    format!("daeda:{{svc:{service}}}:current")
}

pub fn lease(service: &str) -> String {
    format!("daeda:{{svc:{service}}}:lease")
}

pub fn genseq(service: &str) -> String {
    format!("daeda:{{svc:{service}}}:genseq")
}

pub fn generations(service: &str) -> String {
    format!("daeda:{{svc:{service}}}:gens")
}

pub fn generation_meta(service: &str, generation: &str) -> String {
    format!("daeda:{{svc:{service}}}:gen:{generation}")
}

/// SCAN pattern matching every service's generation set.
pub const ALL_GENERATION_SETS: &str = "daeda:{svc:*}:gens";

/// The service name in a key built by [`generations`].
pub fn service_of_generation_set(key: &str) -> Option<&str> {
    key.strip_prefix("daeda:{svc:")?.strip_suffix("}:gens")
}

/// The common prefix of every row key of one generation.
pub fn row_prefix(service: &str, generation: &str) -> String {
    format!("daeda:row:{service}:{generation}:")
}

/// SCAN pattern for every row of one generation. Service names and generation
/// ids hold no glob characters, so nothing needs escaping.
pub fn row_pattern(service: &str, generation: &str) -> String {
    format!("{}*", row_prefix(service, generation))
}

/// One join-key value of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart<'a> {
    Int(i64),
    Str(&'a str),
}

/// Appends the entity part of a row key: the join-key values in key order,
/// separated by `:`; integers in decimal, strings with `%`, `:` and `{` percent-escaped
/// so that different tuples never collide. The materializer (from Arrow) and
/// the gateway (from JSON) both build keys with this one function.
pub fn push_entity(key: &mut String, parts: &[KeyPart<'_>]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(':');
        }
        match part {
            KeyPart::Int(v) => write!(key, "{v}").expect("writing to a String"),
            KeyPart::Str(s) => {
                for c in s.chars() {
                    match c {
                        '%' => key.push_str("%25"),
                        ':' => key.push_str("%3A"),
                        // A brace would make a Redis Cluster hash tag of the entity.
                        '{' => key.push_str("%7B"),
                        c => key.push(c),
                    }
                }
            }
        }
    }
}

/// The full row key of an entity.
pub fn row(service: &str, generation: &str, parts: &[KeyPart<'_>]) -> String {
    let mut key = row_prefix(service, generation);
    push_entity(&mut key, parts);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_never_collide() {
        let a = row("s", "1", &[KeyPart::Str("a:b"), KeyPart::Str("c")]);
        let b = row("s", "1", &[KeyPart::Str("a"), KeyPart::Str("b:c")]);
        assert_ne!(a, b);
        assert_eq!(a, "daeda:row:s:1:a%3Ab:c");
        assert_eq!(row("s", "1", &[KeyPart::Str("50%")]), "daeda:row:s:1:50%25");
        assert_eq!(row("s", "1", &[KeyPart::Str("{x}")]), "daeda:row:s:1:%7Bx}");
        assert_eq!(row("s", "7", &[KeyPart::Int(-3), KeyPart::Int(9)]), "daeda:row:s:7:-3:9");
    }

    #[test]
    fn service_keys_share_one_hash_tag_and_rows_have_none() {
        for k in [current("u"), lease("u"), genseq("u"), generations("u"), generation_meta("u", "3")] {
            assert!(k.contains("{svc:u}"), "{k}");
        }
        assert!(!row("u", "3", &[KeyPart::Int(1)]).contains('{'));
        assert_eq!(service_of_generation_set(&generations("user_features")), Some("user_features"));
    }
}
