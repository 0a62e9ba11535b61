//! `daeda skew check`: the CI skew-parity gate.

use std::process::ExitCode;

use anyhow::Result;
use daeda_metadata_store::MetadataStore;
use daeda_skew::{CheckOptions, SkewError};

use crate::config::{Config, Overrides};
use crate::UsageError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Compare a service's online rows with its offline rows; exit 1 on skew.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[arg(long)]
    service: String,
    /// Entities drawn uniformly from the offline side [default: 1000]
    #[arg(long, conflicts_with = "all")]
    sample: Option<usize>,
    /// Every entity, both directions (missing and extra online).
    #[arg(long)]
    all: bool,
    /// Event-time bound [default: the live generation's as-of]
    #[arg(long)]
    as_of: Option<String>,
    /// Absolute-or-relative tolerance for FLOAT and DOUBLE values.
    #[arg(long, default_value_t = 0.0)]
    float_tolerance: f64,
    /// The check fails above this share of bad entities.
    #[arg(long, default_value_t = 0.0)]
    max_mismatch_rate: f64,
    #[arg(long)]
    json: bool,
}

pub fn run(o: &Overrides, c: Command) -> Result<ExitCode> {
    let Command::Check(a) = c;
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let def = super::service(&catalog, &a.service)?;
    if !(a.float_tolerance >= 0.0 && (0.0..=1.0).contains(&a.max_mismatch_rate)) {
        return Err(UsageError("--float-tolerance must be >= 0 and --max-mismatch-rate within 0..1".into()).into());
    }
    let opts = CheckOptions {
        sample: if a.all { None } else { Some(a.sample.unwrap_or(1000)) },
        as_of: a.as_of.as_deref().map(super::materialize::parse_as_of).transpose()?,
        float_tolerance: a.float_tolerance,
        max_mismatch_rate: a.max_mismatch_rate,
    };
    let records = MetadataStore::open(&cfg.run_root)?;
    let store = super::store(&cfg)?;
    let bar = std::sync::Arc::new(crate::progress::Bar::rows(&def.name, a.json));
    let result = super::runtime()?.block_on(daeda_skew::check(&store, def.clone(), &opts, &records, bar.clone()));
    bar.finish();
    let report = result.map_err(|e| match e {
        e @ SkewError::NotAllowed(_) => anyhow::Error::new(UsageError(e.to_string())),
        e => anyhow::Error::new(e),
    })?;
    if a.json {
        super::print_json(&report)?;
    } else {
        outln!(
            "{} generation {} as of {} ({}): {} compared, {} matched, {} mismatched, {} missing online{}, {} stale; mismatch rate {:.6} (max {}) => {}",
            report.service,
            report.generation,
            report.as_of,
            report.mode,
            report.entities_compared,
            report.matched,
            report.mismatched,
            report.missing_online,
            report.extra_online.map(|n| format!(", {n} extra online")).unwrap_or_default(),
            report.stale,
            report.mismatch_rate,
            report.max_mismatch_rate,
            if report.passed { "PASS" } else { "SKEW" }
        );
        for (col, c) in &report.columns {
            outln!("  {col}: {} mismatches", c.mismatches);
            for ex in &c.examples {
                outln!("    entity {}: offline {} online {}", ex.entity, ex.offline, ex.online);
            }
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
