//! The Lua scripts daeda runs in Redis, one file each under `lua/` with its
//! contract (KEYS, ARGV, return value, errors) at the top. A script that finds
//! the lease gone answers with an error reply whose code is [`LEASE_LOST`].

use std::sync::LazyLock;

use redis::Script;

/// The error code of a script's reply when the run no longer holds the lease.
pub(super) const LEASE_LOST: &str = "DAEDA_LEASE_LOST";

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(super) static $name: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!(concat!("lua/", $file))));
    };
}

script!(FLIP, "flip.lua");
script!(RENEW_LEASE, "renew_lease.lua");
script!(RELEASE_LEASE, "release_lease.lua");
script!(NEXT_GENERATION, "next_generation.lua");
script!(ADVANCE, "advance.lua");
script!(PUT_IF_NEWER, "put_if_newer.lua");
