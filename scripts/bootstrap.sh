#!/usr/bin/env bash
# Installs what building and testing daeda needs on a fresh Debian machine, once:
#   - redis-server and redis-cli (Debian packages) when missing, and curl;
#   - libduckdb.so for DuckDB 1.5.5 (from the npm package that ships it prebuilt),
#     so no build has to compile DuckDB's ~1,800 C++ files;
#   - the DuckLake extension for DuckDB 1.5.5 (from its PyPI wheel), laid out as a
#     DuckDB extension directory;
#   - schemathesis (PyPI, pinned) in a venv, for scripts/fuzz-api.sh.
# Everything lands under $DAEDA_DEPS (default ~/.cache/daeda); reruns are no-ops.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

DUCKDB_NPM="@duckdb/node-bindings-linux-x64@1.5.5-r.5"
DUCKLAKE_WHEEL="duckdb-extension-ducklake==1.5.5"
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

ext="$DAEDA_DUCKDB_EXTENSION_DIR/v1.5.5/linux_amd64/ducklake.duckdb_extension"
if [ ! -f "$ext" ]; then
  log "fetching the DuckLake extension ($DUCKLAKE_WHEEL)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$DUCKLAKE_WHEEL"
  mkdir -p "$(dirname "$ext")"
  python3 - "$tmp" "$ext" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/duckdb_extension_ducklake-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("ducklake.duckdb_extension"))
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(name))
PY
fi
venv="$DAEDA_DEPS/schemathesis-venv"
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version ${SCHEMATHESIS#*==}" ]; then
  log "installing $SCHEMATHESIS into $venv"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$SCHEMATHESIS"
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

log "ready: DuckDB in $DUCKDB_LIB_DIR, extensions in $DAEDA_DUCKDB_EXTENSION_DIR"
