//! Gives every binary of this package (daeda, its tests and benches) an rpath to
//! the prebuilt libduckdb.so, so they run without LD_LIBRARY_PATH.
//!
//! `DAEDA_RPATH` replaces that absolute rpath: `scripts/package.sh` sets it to
//! `$ORIGIN/../lib`, so a packaged binary finds the `lib/libduckdb.so` shipped
//! beside it wherever the tarball is unpacked, and never the builder's copy.
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=DAEDA_RPATH");
    let rpath =
        std::env::var("DAEDA_RPATH").ok().filter(|r| !r.is_empty()).or_else(|| std::env::var("DUCKDB_LIB_DIR").ok());
    if let Some(dir) = rpath {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
