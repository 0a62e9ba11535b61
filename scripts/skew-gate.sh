#!/usr/bin/env bash
# The skew-parity gate, run the way a user's CI would: materialize the example
# services into a throwaway Redis, then `daeda skew check --all` each approved
# one; any mismatch fails the gate (exit 1). A gate that checks nothing fails
# too: if the service list cannot be read or holds no approved service, that is
# an error, not "0 passed, 0 failed".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
source scripts/lib.sh
cargo build --locked --quiet
daeda() { "$CARGO_TARGET_DIR/debug/daeda" "$@"; }
fail() { echo "skew-gate: $*" >&2; exit 1; }

use_workdir
start_redis "$work" || fail "no Redis"

export DAEDA_REDIS_URL="redis://127.0.0.1:$redis_port/0" DAEDA_RUN_ROOT="$work/runs" DAEDA_CATALOG="$work/feature_services"
cp -r feature_services "$work/feature_services"
daeda demo generate --out "$work/data" --users 5000 >/dev/null
daeda materialize --online --all >/dev/null

# A separate assignment, so that a failing `daeda services` or parser stops the
# gate (a command substitution inside `for ... in` would not).
services_json="$(daeda services --json)" || fail "daeda services --json failed"
services="$(python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin) if s["serving"]["allowed"]))' <<<"$services_json")" \
  || fail "cannot read the service list"
[ -n "$services" ] || fail "no approved service to check: the gate would check nothing"

passed=0
failed=0
for service in $services; do
  if daeda skew check --service "$service" --all; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "skew-gate: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
