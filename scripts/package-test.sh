#!/usr/bin/env bash
# Tests scripts/package.sh as a user meets the tarball: package the dev build
# (--profile debug: CI pays no release build), unpack it into a fresh folder
# whose path has a space, and run the demo's steps from there with a clean
# environment (env -i: PATH and HOME only; no LD_LIBRARY_PATH, no DAEDA_*
# pointing at ~/.cache/daeda): registry check, materialize into a throwaway
# Redis, serve, one lookup and one SQL query over HTTP. The gateway must have
# mapped the package's own lib/libduckdb.so, and no DuckDB extension may have
# been fetched into HOME (DuckLake comes from the package). ~20 s.
# PACKAGE_PROFILE=release tests the release tarball instead (a release build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
source scripts/lib.sh
fail() { echo "package-test: $*" >&2; exit 1; }

use_workdir

tarball="$(bash scripts/package.sh --profile "${PACKAGE_PROFILE:-debug}" --out "$work/dist" | tail -1)"
[ -f "$tarball" ] || fail "scripts/package.sh made no tarball"
mkdir -p "$work/unpacked here" "$work/home" "$work/redis"
tar -xzf "$tarball" -C "$work/unpacked here"
rm -rf "$work/dist"
pkg="$(echo "$work/unpacked here"/daeda-*)"
[ -x "$pkg/bin/daeda" ] || fail "no bin/daeda in the tarball"

start_redis "$work/redis" || fail "no Redis"
secret="package-test-$RANDOM$RANDOM"
# The example config, as the package's README says: copy, set redis_url and a secret.
sed -e "s|^redis_url = .*|redis_url = \"redis://127.0.0.1:$redis_port/0\"|" \
    -e "s|^# secret = .*|secret = \"$secret\"|" "$pkg/daeda.toml.example" >"$pkg/daeda.toml"
grep -q "^secret = \"$secret\"" "$pkg/daeda.toml" || fail "could not set jwt.secret in daeda.toml"

# The packaged binary, from the package folder, with nothing of this machine's build.
clean() { (cd "$pkg" && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work/home" "$@"); }
clean bin/daeda --version
clean bin/daeda demo generate --out data --users 200 >/dev/null
clean bin/daeda registry check
clean bin/daeda materialize --online --all >/dev/null

gw_port=$(free_port)
(cd "$pkg" && exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work/home" bin/daeda serve --listen "127.0.0.1:$gw_port") 2>"$work/gateway.log" &
gateway_pid=$!
base="http://127.0.0.1:$gw_port"
wait_gateway "$base" "$gateway_pid" "$work/gateway.log" || fail "no gateway"
grep -qF "$pkg/lib/libduckdb.so" "/proc/$gateway_pid/maps" || fail "the gateway did not load the package's lib/libduckdb.so"

token="$(clean bin/daeda token mint --sub package-test --services '*' --planes online,sql)"
lookup="$(curl -sS -w '\n%{http_code}' "$base/v1/features/user_features" -H "Authorization: Bearer $token" \
  -d '{"entities": {"user_id": [1, 2]}, "features": ["country"]}')"
[ "$(tail -1 <<<"$lookup")" = 200 ] || fail "lookup: $lookup"
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert len(r["columns"]["country"]) == 2 and r["generation"], r' "$(head -n -1 <<<"$lookup")" \
  || fail "lookup answered without two countries: $lookup"
# item_features is the DuckLake service: the worker reads it with the packaged extension.
sql="$(curl -sS -w '\n%{http_code}' "$base/v1/sql" -H "Authorization: Bearer $token" \
  -d '{"sql": "SELECT count(*) AS n FROM item_features"}')"
[ "$(tail -1 <<<"$sql")" = 200 ] || fail "SQL: $sql"
head -n -1 <<<"$sql" | grep -q '"n"' || fail "SQL answered without the column n: $sql"
[ ! -e "$work/home/.duckdb" ] || fail "DuckDB fetched extensions into HOME instead of using the package's: $(find "$work/home/.duckdb")"

kill "$gateway_pid"
wait "$gateway_pid" || fail "daeda serve did not stop cleanly on SIGTERM"
gateway_pid=""
echo "package-test: the unpacked tarball ran the demo's steps with a clean environment"
