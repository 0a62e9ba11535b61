#!/usr/bin/env bash
# The Dagster recipe (examples/dagster) as CI runs it: its tests materialize
# the assets in-process with Dagster's own test API (dagster.materialize)
# against the real daeda binary, the example catalog with demo data, and a
# redis-server they start on a free port: every approved service passes, a
# service with skew fails its asset with the report attached, a refused
# materialization fails it too. Dagster comes from the venv scripts/bootstrap.sh
# makes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
cargo build --locked --quiet
fail() { echo "dagster-example: $*" >&2; exit 1; }
py="$DAEDA_DEPS/dagster-venv/bin/python"
[ -x "$py" ] || fail "no Dagster venv at $DAEDA_DEPS/dagster-venv: run scripts/bootstrap.sh"
command -v redis-server >/dev/null || fail "no redis-server: run scripts/bootstrap.sh"

start=$(date +%s)
status=0
(cd examples/dagster && DAEDA_BIN="$CARGO_TARGET_DIR/debug/daeda" "$py" -m unittest -v test_daeda_dagster) || status=$?
echo "dagster-example: finished in $(( $(date +%s) - start )) s with exit $status" >&2
[ "$status" = 0 ] || fail "the Dagster example failed (see above)"
