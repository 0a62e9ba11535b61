# Sourced by the other scripts (and by you, before plain `cargo` commands):
# points the build at the prebuilt DuckDB 1.5.5 and the DuckLake extension that
# `scripts/bootstrap.sh` fetched, and keeps the build cache outside the clone.
DAEDA_DEPS="${DAEDA_DEPS:-$HOME/.cache/daeda}"
export DAEDA_DEPS
export DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-$DAEDA_DEPS/duckdb-1.5.5/lib}"
export DAEDA_DUCKDB_EXTENSION_DIR="${DAEDA_DUCKDB_EXTENSION_DIR:-$DAEDA_DEPS/duckdb-extensions}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DAEDA_DEPS/target}"
# The daeda binary carries an rpath to DUCKDB_LIB_DIR (see build.rs); this also
# covers tools that load the library some other way.
export LD_LIBRARY_PATH="$DUCKDB_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
