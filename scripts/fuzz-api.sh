#!/usr/bin/env bash
# Holds the gateway to its OpenAPI document (gateway/openapi.json) with
# schemathesis: a throwaway Redis, the demo data materialized, `daeda serve`
# with the SQL plane, a token for every service on both planes, then
# `schemathesis run --checks all` against GET /openapi.json. Any 5xx, any
# response the document does not describe, fails the run (exit non-zero).
# schemathesis comes from the venv scripts/bootstrap.sh makes.
# FUZZ_MAX_EXAMPLES (default 30) bounds the examples per operation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
source scripts/lib.sh
cargo build --locked --quiet
daeda() { "$CARGO_TARGET_DIR/debug/daeda" "$@"; }
fail() { echo "fuzz-api: $*" >&2; exit 1; }
st="$DAEDA_DEPS/schemathesis-venv/bin/schemathesis"
[ -x "$st" ] || fail "no schemathesis at $st: run scripts/bootstrap.sh"

use_workdir
start_redis "$work" || fail "no Redis"

export DAEDA_REDIS_URL="redis://127.0.0.1:$redis_port/0" DAEDA_RUN_ROOT="$work/runs" DAEDA_CATALOG="$work/feature_services"
export DAEDA_JWT_SECRET="fuzz-api-secret-$RANDOM$RANDOM"
cp -r feature_services "$work/feature_services"
# demo generate writes the offline outputs where the catalog's sources point.
(cd "$work" && daeda demo generate --out data --users 200 >/dev/null)
(cd "$work" && daeda materialize --online --all >/dev/null)

gw_port=$(free_port)
(cd "$work" && exec "$CARGO_TARGET_DIR/debug/daeda" serve --listen "127.0.0.1:$gw_port") 2>"$work/gateway.log" &
gateway_pid=$!
base="http://127.0.0.1:$gw_port"
wait_gateway "$base" "$gateway_pid" "$work/gateway.log" || fail "no gateway"
token=$(cd "$work" && daeda token mint --sub fuzz --services '*' --planes online,sql)

# Schema-valid requests may still be refused with 400 for what the document
# cannot express per service: join keys and their types depend on
# {service}, and DuckDB rejects most generated SQL. Every other status a
# check expects stays as schemathesis defines it.
cat >"$work/schemathesis.toml" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
TOML

# One worker: with two, Hypothesis's lambda-source parsing (ast.parse from
# several threads) failed once under CPython 3.11 with "AST constructor
# recursion depth mismatch" — a tool error, not a finding.
start=$(date +%s)
status=0
(cd "$work" && "$st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "${FUZZ_MAX_EXAMPLES:-30}" \
  --workers 1 \
  --seed "${FUZZ_SEED:-1414}" \
  --request-timeout 10 \
  --report junit --report-junit-path "$work/junit.xml") || status=$?
echo "fuzz-api: schemathesis finished in $(( $(date +%s) - start )) s with exit $status"
if [ "$status" != 0 ]; then
  echo "fuzz-api: gateway log (last 40 lines):" >&2
  tail -40 "$work/gateway.log" >&2
  fail "the gateway does not hold to gateway/openapi.json (see above)"
fi
