//! `daeda runs list|show|prune`.

use std::process::ExitCode;

use anyhow::Result;
use daeda_metadata_store::MetadataStore;

use crate::config::{Config, Overrides};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The latest record of recent runs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Every record of one run.
    Show {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove the records of runs that started longer ago than --older-than,
    /// keeping each service's latest successful run of each kind.
    Prune {
        /// <int><s|m|h|d|w>, e.g. 90d.
        #[arg(long)]
        older_than: String,
        /// Count what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(o: &Overrides, c: Command) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let mut store = MetadataStore::open(&cfg.run_root)?;
    match c {
        Command::List { limit, json } => {
            let list = store.list(limit)?;
            if json {
                super::print_json(&list)?;
            } else {
                outln!(
                    "{:<48} {:<12} {:<22} {:<11} {:<10} {:>10}  generation",
                    "run id",
                    "kind",
                    "service",
                    "mode",
                    "status",
                    "rows"
                );
                for r in list {
                    outln!(
                        "{:<48} {:<12} {:<22} {:<11} {:<10} {:>10}  {}",
                        r.run_id,
                        r.kind,
                        r.service,
                        r.mode,
                        r.status,
                        r.row_count.map(|n| n.to_string()).unwrap_or_default(),
                        r.generation.unwrap_or_default()
                    );
                }
            }
        }
        Command::Prune { older_than, dry_run } => {
            let age = daeda_catalog::parse_ttl(&older_than).ok_or_else(|| {
                crate::UsageError(format!("--older-than `{older_than}` is not a duration (e.g. 90d)"))
            })?;
            let age = chrono::Duration::from_std(age)
                .map_err(|_| crate::UsageError(format!("--older-than `{older_than}` is too long")))?;
            let cutoff = (chrono::Utc::now() - age).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let (runs, records) = store.prune(&cutoff, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            outln!("{verb} {runs} runs ({records} records) started before {cutoff}");
        }
        Command::Show { run_id, json } => {
            let recs = store.show(&run_id)?;
            if json {
                super::print_json(&recs)?;
            } else {
                for r in recs {
                    outln!("{}", serde_json::to_string_pretty(&r)?);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
