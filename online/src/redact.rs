//! Passwords out of Redis URLs, for messages and logs.

/// `redis://user:secret@host/0` -> `redis://user:***@host/0`, for each URL of
/// a seed list, and a Sentinel URL's `sentinel_password=`.
pub fn redact(url: &str) -> String {
    let url = match url.split_once("sentinel_password=") {
        Some((head, tail)) => {
            let rest = tail.find('&').map(|i| &tail[i..]).unwrap_or("");
            format!("{head}sentinel_password=***{rest}")
        }
        None => url.to_string(),
    };
    url.split(',').map(|u| redact_one(u.trim())).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    let user = auth.split_once(':').map(|(u, _)| u).unwrap_or("");
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(super::redact("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(super::redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(super::redact("redis://:a@h1:1,redis://:b@h2:2"), "redis://:***@h1:1,redis://:***@h2:2");
        assert_eq!(
            super::redact("redis+sentinel://u:p@s1:1,s2:2/m?sentinel_password=q&sentinel_username=v"),
            "redis+sentinel://u:***@s1:1,s2:2/m?sentinel_password=***&sentinel_username=v"
        );
    }
}
