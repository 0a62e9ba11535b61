//! `daeda`: the command line over the catalog, materializer, online store and
//! MetadataStore libraries. It parses flags, calls the libraries and reports;
//! [`exit_code`] is the one place that turns errors into exit codes.

// First: its `out!` and `outln!` macros serve the modules below.
#[macro_use]
mod output;
mod commands;
mod config;
mod demo_data;
mod progress;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a batch-100 lookup makes about a
/// thousand small allocations (decoded rows, the request's entity list, the
/// response), and callgrind put glibc's malloc, free and realloc at 43% of its
/// instructions. DuckDB's own C++ allocations are not affected.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use crate::config::Overrides;

/// A usage mistake the user can fix by changing the command (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Debug, Parser)]
#[command(
    name = "daeda",
    version,
    about = "Online feature serving from offline outputs: catalog, materializer, gateway, skew checker"
)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and check every feature service definition.
    Validate,
    /// List the feature services of the catalog.
    Services(commands::services::Args),
    /// Materialize services' latest rows into Redis.
    Materialize(commands::materialize::Args),
    /// Look at and maintain the online store directly.
    #[command(subcommand)]
    Online(commands::online::Command),
    /// Serve online lookups over HTTP.
    Serve(commands::serve::ServeArgs),
    /// Issue bearer tokens for development and tests.
    #[command(subcommand)]
    Token(commands::serve::TokenCommand),
    /// Check that online rows equal offline rows.
    #[command(subcommand)]
    Skew(commands::skew::Command),
    /// The Version Protocol: registry.lock.json.
    #[command(subcommand)]
    Registry(commands::registry::Command),
    /// Column-level lineage from each column's `ref` and the service's source.
    Lineage(commands::lineage::Args),
    /// Show MetadataStore records of runs.
    #[command(subcommand)]
    Runs(commands::runs::Command),
    /// Generate the example services' offline data (Parquet, DuckDB, DuckLake).
    #[command(subcommand)]
    Demo(demo_data::Command),
    /// The SQL plane's worker process; `daeda serve` starts it.
    #[command(hide = true)]
    SqlWorker(commands::serve::WorkerArgs),
}

fn main() -> ExitCode {
    // Before anything can start a thread: it may set an environment variable.
    packaged_extension_dir();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DAEDA_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a log file, journald
        // or a collector reading a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = run(cli);
    let write_failure = output::finish();
    match (result, write_failure) {
        (Ok(code), None) => code,
        (Ok(_), Some(e)) => {
            eprintln!("error: writing the output: {e}");
            ExitCode::from(1)
        }
        (Err(e), _) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let o = &cli.overrides;
    match cli.command {
        Command::Validate => commands::services::validate(o),
        Command::Services(a) => commands::services::list(o, &a),
        Command::Materialize(a) => commands::materialize::run(o, &a),
        Command::Online(c) => commands::online::run(o, c),
        Command::Runs(c) => commands::runs::run(o, c),
        Command::Registry(c) => commands::registry::run(o, c),
        Command::Lineage(a) => commands::lineage::run(o, &a),
        Command::Skew(c) => commands::skew::run(o, c),
        Command::Serve(a) => commands::serve::serve(o, &a),
        Command::Token(c) => commands::serve::token(o, c),
        Command::SqlWorker(a) => commands::serve::sql_worker(o, &a),
        Command::Demo(c) => demo_data::run(c),
    }
}

/// Where a packaged daeda (`scripts/package.sh`) keeps its DuckDB extensions,
/// relative to the folder holding the binary: `<prefix>/bin/daeda` beside
/// `<prefix>/lib/duckdb-extensions`, as `lib/libduckdb.so` is found by the
/// binary's `$ORIGIN/../lib` rpath.
const PACKAGED_EXTENSION_DIR: &str = "../lib/duckdb-extensions";

/// Points `DAEDA_DUCKDB_EXTENSION_DIR` at the packaged extension folder when
/// it is unset and that folder exists beside this binary, so an unpacked
/// tarball reads DuckLake wherever it lies; a configured value always wins.
/// The variable (not a flag) because every DuckDB session, including the SQL
/// worker this process starts, reads it. Called first in `main`, while the
/// process has one thread (setting the environment later would race readers).
fn packaged_extension_dir() {
    if std::env::var_os(daeda_offline::EXTENSION_DIR_ENV).is_some() {
        return;
    }
    let Some(bin) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(std::path::Path::to_path_buf)) else {
        return;
    };
    let dir = bin.join(PACKAGED_EXTENSION_DIR);
    if dir.is_dir() {
        // The canonical form: DuckDB gets no `..` to resolve.
        std::env::set_var(daeda_offline::EXTENSION_DIR_ENV, dir.canonicalize().unwrap_or(dir));
    }
}

/// 2 for what the user must fix in the command or the definitions; 1 for a job
/// that failed.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<UsageError>() || cause.is::<daeda_catalog::CatalogError>() {
            return 2;
        }
        if let Some(daeda_materializer::MaterializeError::NotAllowed(_)) = cause.downcast_ref() {
            return 2;
        }
    }
    1
}
