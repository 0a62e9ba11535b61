#!/usr/bin/env bash
# The main job end to end on an embedded default: example data for the Parquet,
# DuckDB and DuckLake services, materialized into Redis, read back directly and
# through the gateway (lookups and SQL), then the skew check.
# Uses $DAEDA_REDIS_URL when set; otherwise starts a local redis-server for the
# demo (on a free port, stopped at the end).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
source scripts/lib.sh
cargo build --locked --quiet
daeda() { "$CARGO_TARGET_DIR/debug/daeda" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

workdir="$(mktemp -d)"
redis_pid=""
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

if [ -z "${DAEDA_REDIS_URL:-}" ]; then
  start_redis "$workdir" --maxmemory-policy noeviction || exit 1
  export DAEDA_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  echo "demo: started redis-server on port $redis_port"
fi
export DAEDA_CATALOG=feature_services DAEDA_RUN_ROOT="${DAEDA_RUN_ROOT:-.daeda}"

step "generate example offline data (Parquet, DuckDB, DuckLake) into data/"
daeda demo generate --out data --users "${DEMO_USERS:-20000}"

step "validate and list the catalog"
daeda validate
daeda services

step "materialize every approved service into Redis"
daeda materialize --online --all

step "materialize again: a new generation flips in, the old one is retired"
daeda materialize --online --service user_features

step "read features back from Redis"
daeda online get --service user_features --entities '{"user_id": [1, 2, 999999999]}' --features ctr_7d,country,ltv
daeda online get --service user_item_reranker --entities '{"user_id": [0], "item_id": [0]}'

step "serve: the gateway on loopback, a token, lookups and a SQL query over HTTP"
gw_port=$(free_port)
export DAEDA_JWT_SECRET="${DAEDA_JWT_SECRET:-demo-secret-change-me}"
# The binary itself, not the shell function, so that $! is the server's pid.
"$CARGO_TARGET_DIR/debug/daeda" serve --listen "127.0.0.1:$gw_port" 2>"$workdir/gateway.log" &
gateway_pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$gw_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(daeda token mint --sub demo --services user_features,item_features,user_item_reranker --planes online,sql)
curl -s "127.0.0.1:$gw_port/v1/features/user_features" -H "Authorization: Bearer $token" \
  -d '{"entities": {"user_id": [1, 2, 999999999]}, "features": ["ctr_7d", "country", "ltv"]}'
echo
curl -s "127.0.0.1:$gw_port/v1/sql" -H "Authorization: Bearer $token" \
  -d '{"sql": "SELECT country, count(*) AS users, round(avg(ctr_7d), 4) AS ctr FROM user_features GROUP BY ALL ORDER BY users DESC LIMIT 3"}'
echo
echo "pii_features (serving not allowed):"
curl -s "127.0.0.1:$gw_port/v1/features/pii_features" -H "Authorization: Bearer $token" -d '{"entities": {"user_id": [1]}}'
echo
kill "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true; gateway_pid=""

step "skew check: online rows == offline rows"
for service in user_features item_features user_item_reranker; do
  daeda skew check --service "$service" --all
done

step "the MetadataStore's record of the runs"
daeda runs list --limit 8
