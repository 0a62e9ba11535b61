#!/usr/bin/env bash
# The skew-parity gate, run the way a user's CI would: materialize the example
# services into a throwaway Redis, then `daeda skew check --all` each approved
# one; any mismatch fails the gate (exit 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
cargo build --locked --quiet
daeda() { "$CARGO_TARGET_DIR/debug/daeda" "$@"; }

work="$(mktemp -d)"
redis_pid=""
trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

export DAEDA_REDIS_URL="redis://127.0.0.1:$port/0" DAEDA_RUN_ROOT="$work/runs" DAEDA_CATALOG="$work/feature_services"
cp -r feature_services "$work/feature_services"
daeda demo generate --out "$work/data" --users 5000 >/dev/null
daeda materialize --online --all >/dev/null
passed=0
for service in $(daeda services --json | python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin) if s["serving"]["allowed"]))'); do
  daeda skew check --service "$service" --all  # exits 1 on skew, which fails the gate
  passed=$((passed + 1))
done
echo "skew-gate: $passed passed, 0 failed"
