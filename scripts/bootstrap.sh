#!/usr/bin/env bash
# Installs what building and testing daeda needs on a fresh Debian machine, once:
#   - redis-server and redis-cli (Debian packages) when missing, and curl;
#   - libduckdb.so for DuckDB 1.5.5 (from the npm package that ships it prebuilt),
#     so no build has to compile DuckDB's ~1,800 C++ files;
#   - the DuckLake extension for DuckDB 1.5.5 (from its PyPI wheel), laid out as a
#     DuckDB extension directory;
#   - the httpfs and quack extensions for DuckDB 1.5.5 (PyPI wheels, same layout):
#     the Quack endpoint's worker loads both;
#   - schemathesis (PyPI, pinned) in a venv, for scripts/fuzz-api.sh;
#   - moto (PyPI, pinned) in a venv: the local S3 server of tests/it/s3.rs;
#   - a stock DuckDB client (Python `duckdb`, pinned, with the two extension
#     wheels) in a venv, for the Quack tests.
# Everything lands under $DAEDA_DEPS (default ~/.cache/daeda); reruns are no-ops.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

DUCKDB_NPM="@duckdb/node-bindings-linux-x64@1.5.5-r.5"
DUCKLAKE_WHEEL="duckdb-extension-ducklake==1.5.5"
# Quack is beta in DuckDB 1.5: client, server and extensions move together.
QUACK_WHEELS=("duckdb-extension-httpfs==1.5.5" "duckdb-extension-quack==1.5.5")
QUACK_CLIENT="duckdb==1.5.5"
# scripts/fuzz-api.sh holds the gateway to its OpenAPI document with it.
SCHEMATHESIS="schemathesis==4.32.5"

log() { echo "bootstrap: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
# redis-cli creates the test cluster; the demo talks to the gateway with curl.
command -v redis-cli >/dev/null || { log "installing redis-tools"; apt_install redis-tools; }
command -v curl >/dev/null || { log "installing curl"; apt_install curl; }
command -v npm >/dev/null || { log "installing npm"; apt_install npm; }
command -v python3 >/dev/null || { log "installing python3"; apt_install python3 python3-pip; }
command -v unzip >/dev/null || python3 -c 'import zipfile' || apt_install unzip

mkdir -p "$DAEDA_DEPS"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$DUCKDB_LIB_DIR/libduckdb.so" ]; then
  log "fetching libduckdb.so ($DUCKDB_NPM)"
  (cd "$tmp" && npm pack --silent "$DUCKDB_NPM" >/dev/null && tar xzf ./*.tgz package/libduckdb.so)
  mkdir -p "$DUCKDB_LIB_DIR"
  mv "$tmp/package/libduckdb.so" "$DUCKDB_LIB_DIR/libduckdb.so"
fi

# Lays the extension `name` out under the extension directory from its PyPI wheel.
fetch_extension() {
  local name="$1" wheel="$2"
  local ext="$DAEDA_DUCKDB_EXTENSION_DIR/v1.5.5/linux_amd64/$name.duckdb_extension"
  [ -f "$ext" ] && return 0
  log "fetching the $name extension ($wheel)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$wheel"
  mkdir -p "$(dirname "$ext")"
  python3 - "$tmp" "$ext" "$name" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/duckdb_extension_" + sys.argv[3] + "-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(sys.argv[3] + ".duckdb_extension"))
    with open(sys.argv[2] + ".part", "wb") as out:
        out.write(z.read(name))
PY
  mv "$ext.part" "$ext"
}
fetch_extension ducklake "$DUCKLAKE_WHEEL"
for w in "${QUACK_WHEELS[@]}"; do fetch_extension "$(echo "${w%%==*}" | sed 's/^duckdb-extension-//')" "$w"; done
venv="$DAEDA_DEPS/schemathesis-venv"
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version ${SCHEMATHESIS#*==}" ]; then
  log "installing $SCHEMATHESIS into $venv"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$SCHEMATHESIS"
fi
qvenv="$DAEDA_DEPS/quack-client-venv"
if [ "$("$qvenv/bin/python" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null)" != "${QUACK_CLIENT#*==}" ]; then
  log "installing $QUACK_CLIENT and the Quack extension wheels into $qvenv"
  rm -rf "$qvenv"
  python3 -m venv "$qvenv" 2>/dev/null || { apt_install python3-venv; rm -rf "$qvenv"; python3 -m venv "$qvenv"; }
  "$qvenv/bin/pip" install --quiet --disable-pip-version-check "$QUACK_CLIENT" "${QUACK_WHEELS[@]}"
fi

# ---- The Dagster example (scripts/dagster-example.sh, examples/dagster) -----
# Dagster from PyPI, pinned, in its own venv: about 50 packages, 160 MB, a
# minute to install on a cold cache; a no-op once the pinned version is there.
DAGSTER="dagster==1.13.29"
dagster_venv="$DAEDA_DEPS/dagster-venv"
if [ "$("$dagster_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("dagster"))' 2>/dev/null)" != "${DAGSTER#*==}" ]; then
  log "installing $DAGSTER into $dagster_venv"
  rm -rf "$dagster_venv"
  python3 -m venv "$dagster_venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$dagster_venv"; python3 -m venv "$dagster_venv"; }
  "$dagster_venv/bin/pip" install --quiet --disable-pip-version-check "$DAGSTER"
fi
# ---- end of the Dagster example -----------------------------------------------

# ---- Offline data on S3 (tests/it/s3.rs) --------------------------------------
# A local S3 API for the tests: moto in server mode, pinned, in its own venv
# (boto3 comes with it, for tests/s3/s3ctl.py). About 40 s to install on a cold
# cache; a no-op once the pinned version is there.
MOTO="moto[server]==5.1.18"
moto_venv="$DAEDA_DEPS/moto-venv"
if [ "$("$moto_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" != "${MOTO#*==}" ] \
  || ! "$moto_venv/bin/python" -c 'import flask, boto3' 2>/dev/null; then
  log "installing $MOTO into $moto_venv"
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$moto_venv"; python3 -m venv "$moto_venv"; }
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check "$MOTO"
fi
# ---- end of offline data on S3 --------------------------------------------------

log "ready: DuckDB in $DUCKDB_LIB_DIR, extensions in $DAEDA_DUCKDB_EXTENSION_DIR"
