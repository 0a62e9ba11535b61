//! The Redis key layout. Written for Redis Cluster as much as for one server:
//!
//! ```text
//! P{svc:NAME}:current        STRING  the live generation id (the pointer readers follow)
//! P{svc:NAME}:lease          STRING  run id of the run holding the lease, with a PX expiry
//! P{svc:NAME}:genseq         STRING  counter that numbers generations
//! P{svc:NAME}:gens           SET     generation ids that may still hold rows
//! P{svc:NAME}:gen:GEN        HASH    generation metadata (see GenerationMeta)
//! Prow:NAME:GEN:ENTITY       STRING  one encoded row (see codec)
//! ```
//!
//! `P` is the namespace's prefix ([`Keys`]): `daeda:` for the namespace
//! `default` (the layout from before namespaces, so existing data stays
//! served), `daeda@NS:` for any other. No prefix is a prefix of another's keys
//! or SCAN patterns, so catalogs with different namespaces share one Redis
//! without seeing each other's keys.
//!
//! The per-service keys share the hash tag `{svc:NAME}` (the namespace holds no
//! brace, so it stays the key's first), so they live in one slot and the flip
//! (check the lease, write the metadata, move the pointer) is one atomic script
//! even on a cluster. Row keys carry no hash tag so one service's rows spread
//! over every slot.

/// The namespace every key is written in unless configured (`namespace`,
/// `DAEDA_NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The key layout of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_NAMESPACE).expect("the default namespace is valid")
    }
}

impl Keys {
    /// A namespace is 1 to 64 of `a-z`, `0-9`, `_`, `-`, starting with a letter
    /// or digit: nothing that is a glob, a hash tag or a key separator.
    pub fn new(namespace: &str) -> Result<Keys, String> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 64
            && namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && !namespace.starts_with(['_', '-']);
        if !ok {
            return Err(format!(
                "namespace `{namespace}` is not 1 to 64 characters of a-z, 0-9, `_` and `-` starting with a letter or digit"
            ));
        }
        let prefix = if namespace == DEFAULT_NAMESPACE { "daeda:".to_string() } else { format!("daeda@{namespace}:") };
        Ok(Keys { namespace: namespace.to_string(), prefix })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn current(&self, service: &str) -> String {
        format!("{}{{svc:{service}}}:current", self.prefix)
    }

    pub fn lease(&self, service: &str) -> String {
        format!("{}{{svc:{service}}}:lease", self.prefix)
    }

    pub fn genseq(&self, service: &str) -> String {
        format!("{}{{svc:{service}}}:genseq", self.prefix)
    }

    pub fn generations(&self, service: &str) -> String {
        format!("{}{{svc:{service}}}:gens", self.prefix)
    }

    pub fn generation_meta(&self, service: &str, generation: &str) -> String {
        format!("{}{{svc:{service}}}:gen:{generation}", self.prefix)
    }

    /// The i-th candidate for the short-lived key a cluster flip writes on a
    /// primary before `WAIT` (see `connect::cluster_replicas_acknowledge`).
    pub fn replica_touch(&self, i: u32) -> String {
        format!("{}{{touch:{i}}}:replicas", self.prefix)
    }

    /// SCAN pattern matching every service's generation set in this namespace.
    pub fn all_generation_sets(&self) -> String {
        format!("{}{{svc:*}}:gens", self.prefix)
    }

    /// The service name in a key built by [`Keys::generations`].
    pub fn service_of_generation_set<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix("{svc:")?.strip_suffix("}:gens")
    }

    /// The common prefix of every row key of the namespace (what the row cache tracks).
    pub fn all_rows_prefix(&self) -> String {
        format!("{}row:", self.prefix)
    }

    /// The common prefix of every per-service key of the namespace (pointers among them).
    pub fn all_service_keys_prefix(&self) -> String {
        format!("{}{{svc:", self.prefix)
    }

    /// The service name in a key built by [`Keys::current`].
    pub fn service_of_current<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix("{svc:")?.strip_suffix("}:current")
    }

    /// The common prefix of every row key of one generation.
    pub fn row_prefix(&self, service: &str, generation: &str) -> String {
        format!("{}row:{service}:{generation}:", self.prefix)
    }

    /// SCAN pattern for every row of one generation. Service names and generation
    /// ids hold no glob characters, so nothing needs escaping.
    pub fn row_pattern(&self, service: &str, generation: &str) -> String {
        format!("{}*", self.row_prefix(service, generation))
    }

    /// SCAN pattern for every row of every generation of a service, registered
    /// or not (the `:` after the name keeps `user` from matching `user_x`).
    pub fn service_row_pattern(&self, service: &str) -> String {
        format!("{}row:{service}:*", self.prefix)
    }

    /// The full row key of an entity.
    pub fn row(&self, service: &str, generation: &str, parts: &[KeyPart<'_>]) -> String {
        let mut key = self.row_prefix(service, generation);
        push_entity(&mut key, parts);
        key
    }
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
            KeyPart::Int(v) => key.push_str(itoa::Buffer::new().format(*v)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, generation: &str, parts: &[KeyPart<'_>]) -> String {
        Keys::default().row(service, generation, parts)
    }

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
        for keys in [Keys::default(), Keys::new("team-a").unwrap()] {
            for k in [
                keys.current("u"),
                keys.lease("u"),
                keys.genseq("u"),
                keys.generations("u"),
                keys.generation_meta("u", "3"),
            ] {
                assert!(k.contains("{svc:u}"), "{k}");
                assert_eq!(k.find('{'), k.find("{svc:u}"), "the hash tag is the first brace: {k}");
            }
            assert!(!keys.row("u", "3", &[KeyPart::Int(1)]).contains('{'));
            assert_eq!(keys.service_of_generation_set(&keys.generations("user_features")), Some("user_features"));
            assert_eq!(keys.service_of_current(&keys.current("user_features")), Some("user_features"));
            assert_eq!(keys.service_of_current(&keys.lease("user_features")), None);
            assert!(keys.row("u", "3", &[KeyPart::Int(1)]).starts_with(&keys.all_rows_prefix()));
            assert!(keys.current("u").starts_with(&keys.all_service_keys_prefix()));
            // Redis refuses BCAST prefixes where one is a prefix of the other.
            assert!(!keys.all_rows_prefix().starts_with(&keys.all_service_keys_prefix()));
            assert!(!keys.all_service_keys_prefix().starts_with(&keys.all_rows_prefix()));
        }
    }

    #[test]
    fn the_default_namespace_keeps_the_old_layout_and_namespaces_never_overlap() {
        let d = Keys::default();
        assert_eq!(d.current("u"), "daeda:{svc:u}:current");
        assert_eq!(d.row_prefix("u", "1"), "daeda:row:u:1:");
        let a = Keys::new("a").unwrap();
        let ab = Keys::new("ab").unwrap();
        assert_eq!(a.current("u"), "daeda@a:{svc:u}:current");
        assert_eq!(a.row_prefix("u", "1"), "daeda@a:row:u:1:");
        for (x, y) in [(&d, &a), (&a, &d), (&a, &ab), (&ab, &a)] {
            assert_eq!(x.service_of_generation_set(&y.generations("u")), None);
            assert!(!y.row_prefix("u", "1").starts_with(&x.row_prefix("u", "1")));
            assert!(
                !y.generations("u").starts_with(x.all_generation_sets().trim_end_matches("{svc:*}:gens")) || x == y
            );
        }
        for bad in ["", "A", "a:b", "a{b", "a*", "_a", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad}");
        }
    }
}
