#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests
# need (scripts/bootstrap.sh), checks formatting and clippy, then `cargo test`
# over the workspace. Tests start
# their own redis-server on free ports; nothing else needs to be running.
# Then the Version Protocol gate (`daeda registry check`) and the skew-parity
# gate (scripts/skew-gate.sh) run on the example services, and schemathesis
# fuzzes the gateway against its OpenAPI document (scripts/fuzz-api.sh), and
# the release tarball runs the demo's steps unpacked elsewhere (scripts/package-test.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
# Tidy first: formatting and clippy (the workspace lints in Cargo.toml, with
# clippy.toml) fail the run before any test does.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@" -- --skip soak_
# Soaks measure latency under load: alone, so other tests do not skew them.
cargo test --locked --test it "$@" -- soak_ --test-threads=1
# The example catalog matches its registry.lock.json, as a user's CI checks it.
cargo build --locked --quiet
"$CARGO_TARGET_DIR/debug/daeda" --catalog feature_services registry check
# The skew-parity gate on the example services, as a user's CI runs it.
bash scripts/skew-gate.sh
bash scripts/dagster-example.sh  # the Dagster recipe (examples/dagster), its assets materialized in-process
# The gateway against its OpenAPI document, fuzzed (schemathesis, all checks).
bash scripts/fuzz-api.sh
# The release tarball, unpacked elsewhere, runs the demo's steps with a clean
# environment. Last: it relinks target/debug/daeda with the package's rpath.
bash scripts/package-test.sh
