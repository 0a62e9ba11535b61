//! `daeda validate` and `daeda services`.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::config::{Config, Overrides};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn validate(o: &Overrides) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let n = catalog.services().count();
    println!("{n} feature service definition(s) in {} are valid", cfg.catalog.display());
    Ok(ExitCode::SUCCESS)
}

pub fn list(o: &Overrides, a: &Args) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    if a.json {
        let list: Vec<_> = catalog
            .services()
            .map(|s| {
                json!({
                    "name": s.name,
                    "version": s.version,
                    "owner": s.owner,
                    "tags": s.tags,
                    "description": s.description,
                    "join_keys": s.join_keys,
                    "timestamp": s.timestamp,
                    "source": {"kind": s.source.kind()},
                    "columns": s.columns.iter().map(|c| json!({
                        "name": c.name, "type": c.ty.to_string(), "nullable": c.nullable,
                        "ref": c.lineage, "description": c.description,
                    })).collect::<Vec<_>>(),
                    "serving": {"allowed": s.serving.allowed, "ttl_seconds": s.serving.ttl.map(|t| t.as_secs())},
                    "fingerprint": s.fingerprint(),
                    "file": s.file.display().to_string(),
                })
            })
            .collect();
        super::print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<13} {:<9} {:<8} {:<24} {:>7}  fingerprint", "service", "version", "source", "serving", "join keys", "columns");
    for s in catalog.services() {
        println!(
            "{:<24} {:<13} {:<9} {:<8} {:<24} {:>7}  {}",
            s.name,
            s.version,
            s.source.kind(),
            if s.serving.allowed { "allowed" } else { "denied" },
            s.join_keys.join(","),
            s.columns.len(),
            s.fingerprint()
        );
    }
    Ok(ExitCode::SUCCESS)
}
