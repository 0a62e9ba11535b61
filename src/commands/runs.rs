//! `daeda runs list|show`.

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
}

pub fn run(o: &Overrides, c: Command) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let store = MetadataStore::open(&cfg.run_root)?;
    match c {
        Command::List { limit, json } => {
            let list = store.list(limit)?;
            if json {
                super::print_json(&list)?;
            } else {
                println!("{:<48} {:<12} {:<22} {:<11} {:<10} {:>10}  generation", "run id", "kind", "service", "mode", "status", "rows");
                for r in list {
                    println!(
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
        Command::Show { run_id, json } => {
            let recs = store.show(&run_id)?;
            if json {
                super::print_json(&recs)?;
            } else {
                for r in recs {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
