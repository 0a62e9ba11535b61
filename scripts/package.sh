#!/usr/bin/env bash
# Builds a relocatable release tarball of daeda for Linux x86-64:
#
#   daeda-<version>-linux-x86_64/
#     bin/daeda                       rpath $ORIGIN/../lib (nothing absolute)
#     lib/libduckdb.so                DuckDB 1.5.5, as built against
#     lib/duckdb-extensions/v1.5.5/linux_amd64/ducklake.duckdb_extension
#     daeda.toml.example  feature_services/  README.md  LICENSE
#
# Unpacked anywhere on a machine of the same kind (glibc, libstdc++), bin/daeda
# finds lib/libduckdb.so by its rpath and the extensions by its own location
# (src/main.rs, unless DAEDA_DUCKDB_EXTENSION_DIR says otherwise), without
# LD_LIBRARY_PATH or anything under the builder's ~/.cache/daeda.
#
# Usage: scripts/package.sh [--profile release|debug] [--out DIR]
#   --profile release (default) builds with `cargo build --release`;
#   --profile debug packages the dev build instead (CI: no release build to
#   pay for), with its debug info stripped (~350 MB -> tens of MB).
#   --out DIR (default $CARGO_TARGET_DIR/package) receives the folder and the
#   .tar.gz; the tarball's path is the last line printed.
# The build links bin/daeda with DAEDA_RPATH='$ORIGIN/../lib' (see build.rs);
# the next plain `cargo build` relinks it with the absolute rpath (seconds).
# DAEDA_PACKAGE_EXTENSIONS (default: ducklake) names the extensions to ship.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
fail() { echo "package: $*" >&2; exit 1; }

profile=release
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:-}"; shift 2 ;;
    --out) out="${2:-}"; shift 2 ;;
    *) fail "unknown argument $1 (usage: scripts/package.sh [--profile release|debug] [--out DIR])" ;;
  esac
done
case "$profile" in
  release) cargo_profile=release; built="$CARGO_TARGET_DIR/release/daeda" ;;
  debug) cargo_profile=dev; built="$CARGO_TARGET_DIR/debug/daeda" ;;
  *) fail "--profile is release or debug, not '$profile'" ;;
esac
[ "$(uname -m)" = x86_64 ] || fail "the prebuilt DuckDB and its extensions are linux_amd64; this is $(uname -m)"
out="${out:-$CARGO_TARGET_DIR/package}"

# The rpath is set at link time (no patchelf needed): single quotes keep
# $ORIGIN for the dynamic loader, which expands it to bin/.
DAEDA_RPATH='$ORIGIN/../lib' cargo build --locked --quiet --profile "$cargo_profile" --bin daeda
runpath="$(readelf -d "$built" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p; s/.*(RPATH).*\[\(.*\)\]/\1/p')"
[ "$runpath" = '$ORIGIN/../lib' ] || fail "$built has rpath '$runpath', not \$ORIGIN/../lib"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
name="daeda-$version-linux-x86_64"
stage="$out/$name"
rm -rf "$stage" "$out/$name.tar.gz"
mkdir -p "$stage/bin" "$stage/lib"

if [ "$profile" = debug ]; then
  objcopy --strip-debug "$built" "$stage/bin/daeda"
else
  cp "$built" "$stage/bin/daeda"
fi
cp "$DUCKDB_LIB_DIR/libduckdb.so" "$stage/lib/libduckdb.so"
platform="v1.5.5/linux_amd64"
mkdir -p "$stage/lib/duckdb-extensions/$platform"
for ext in ${DAEDA_PACKAGE_EXTENSIONS:-ducklake}; do
  file="$DAEDA_DUCKDB_EXTENSION_DIR/$platform/$ext.duckdb_extension"
  [ -f "$file" ] || fail "no $file: run scripts/bootstrap.sh"
  cp "$file" "$stage/lib/duckdb-extensions/$platform/"
done

# The example catalog (definitions and their registry.lock.json) and config.
mkdir -p "$stage/feature_services"
cp feature_services/*.yaml feature_services/registry.lock.json "$stage/feature_services/"
cp daeda.toml.example "$stage/"

# README: how to run from the unpacked folder, then the project README's
# sections from "Terms" to the end.
{
  cat <<MD
# daeda $version (linux x86-64)

Unpack anywhere and run \`bin/daeda\`: it finds \`lib/libduckdb.so\` by its
\`\$ORIGIN/../lib\` rpath and the DuckDB extensions in \`lib/duckdb-extensions\`
(unless \`DAEDA_DUCKDB_EXTENSION_DIR\` is set). Needs glibc and libstdc++ (any
current Debian or Ubuntu) and a reachable Redis. No Rust, no LD_LIBRARY_PATH.

\`\`\`sh
tar -xzf $name.tar.gz -C /opt && ln -s /opt/$name/bin/daeda /usr/local/bin/daeda
cd /opt/$name
cp daeda.toml.example daeda.toml        # set redis_url, and DAEDA_JWT_SECRET in the environment
daeda demo generate --out data          # example offline data for feature_services/
daeda registry check && daeda materialize --online --all
daeda serve                             # 127.0.0.1:7070
\`\`\`

The project's README, from "Terms" on (the parts about building from source
do not apply to this folder):

MD
  sed -n '/^## Terms$/,$p' README.md
} >"$stage/README.md"

# daeda's licence (Apache-2.0, Cargo.toml) and the bundled DuckDB's (MIT).
{
  echo "daeda is licensed under the Apache License, Version 2.0 (text below)."
  echo "lib/libduckdb.so and lib/duckdb-extensions are DuckDB 1.5.5 and its extensions,"
  echo "by the DuckDB Foundation, under the MIT License: https://github.com/duckdb/duckdb/blob/main/LICENSE"
  echo
  cat /usr/share/common-licenses/Apache-2.0 2>/dev/null || echo "Apache-2.0: https://www.apache.org/licenses/LICENSE-2.0.txt"
} >"$stage/LICENSE"

tar -C "$out" -czf "$out/$name.tar.gz" "$name"
echo "package: $(du -h "$out/$name.tar.gz" | cut -f1) ($profile build)"
echo "$out/$name.tar.gz"
