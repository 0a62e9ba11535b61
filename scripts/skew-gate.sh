#!/usr/bin/env bash
# The skew-parity gate, run the way a user's CI would: materialize the example
# services into a throwaway Redis, then `daeda skew check --all` each approved
# one; any mismatch fails the gate (exit 1). A gate that checks nothing fails
# too: if the service list cannot be read or holds no approved service, that is
# an error, not "0 passed, 0 failed".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
cargo build --locked --quiet
daeda() { "$CARGO_TARGET_DIR/debug/daeda" "$@"; }
fail() { echo "skew-gate: $*" >&2; exit 1; }

work="$(mktemp -d)"
redis_pid=""
trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
redis_pid=$!
ready=0
for _ in $(seq 100); do
  # Our server, not another process that took the port first.
  if [ "$(redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$redis_pid" ]; then
    ready=1; break
  fi
  kill -0 "$redis_pid" 2>/dev/null || fail "redis-server exited (port $port taken?)"
  sleep 0.1
done
[ "$ready" = 1 ] || fail "redis-server did not start on port $port"

export DAEDA_REDIS_URL="redis://127.0.0.1:$port/0" DAEDA_RUN_ROOT="$work/runs" DAEDA_CATALOG="$work/feature_services"
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
