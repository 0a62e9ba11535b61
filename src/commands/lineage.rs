//! `daeda lineage [SERVICE] [--json|--dot]`.

use std::process::ExitCode;

use anyhow::Result;
use daeda_catalog::lineage::lineage;

use crate::config::{Config, Overrides};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One service (its columns, and who else reads its upstream views).
    service: Option<String>,
    #[arg(long, conflicts_with = "dot")]
    json: bool,
    /// Graphviz DOT (`| dot -Tsvg > lineage.svg`).
    #[arg(long)]
    dot: bool,
}

pub fn run(o: &Overrides, a: &Args) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    if let Some(name) = &a.service {
        catalog.get(name)?;
    }
    let l = lineage(catalog.services().map(|s| s.as_ref()), a.service.as_deref(), catalog.dir());
    if a.json {
        super::print_json(&l)?;
    } else if a.dot {
        out!("{}", l.to_dot());
    } else {
        out!("{}", l.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
