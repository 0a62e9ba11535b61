//! `daeda validate`, `daeda services` and `daeda services show NAME`.

use std::process::ExitCode;

use anyhow::Result;
use daeda_catalog::Listing;
use daeda_metadata_store::{MetadataStore, RunKind, RunRecord};
use serde_json::json;

use crate::config::{Config, Overrides};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// One service: its definition, lock status, live generation in Redis, and
    /// its last runs and skew checks from the MetadataStore.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
        /// Runs (and skew checks) to show.
        #[arg(long, default_value_t = 5)]
        last: usize,
    },
}

pub fn validate(o: &Overrides) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let n = catalog.services().count();
    outln!("{n} feature service definition(s) in {} are valid", cfg.catalog.display());
    Ok(ExitCode::SUCCESS)
}

pub fn list(o: &Overrides, a: &Args) -> Result<ExitCode> {
    if let Some(Sub::Show { name, json, last }) = &a.command {
        return show(o, name, *json || a.json, *last);
    }
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    if a.json {
        let list: Vec<_> = catalog.services().map(|s| s.listing_json(Listing::Owner)).collect();
        super::print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24} {:<13} {:<9} {:<8} {:<24} {:>7}  fingerprint",
        "service",
        "version",
        "source",
        "serving",
        "join keys",
        "columns"
    );
    for s in catalog.services() {
        outln!(
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

/// `daeda services show NAME`. Redis and the MetadataStore are read best
/// effort: when one is unavailable its part says why and the rest is shown.
fn show(o: &Overrides, name: &str, as_json: bool, last: usize) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let def = super::service(&catalog, name)?;
    let lock = match catalog.lock() {
        None => json!({"locked_version": null, "status": "no_lock", "drift": null}),
        Some(l) => match (l.locked_version(name), l.drift(&def)) {
            (None, _) => json!({"locked_version": null, "status": "not_locked", "drift": null}),
            (Some(v), None) => json!({"locked_version": v, "status": "matches", "drift": null}),
            (Some(v), Some(d)) => json!({"locked_version": v, "status": "drift", "drift": d}),
        },
    };
    let live = super::store(&cfg).and_then(|store| {
        let rt = super::runtime()?;
        Ok(rt.block_on(store.current(name))?)
    });
    let live = match live {
        Ok(Some(m)) => json!({
            "generation": m.generation, "version": m.version, "row_count": m.row_count, "as_of": m.as_of,
            "materialized_at": m.materialized_at, "run_id": m.run_id, "fingerprint": m.fingerprint,
            "fingerprint_matches": m.fingerprint == def.fingerprint(),
        }),
        Ok(None) => json!(null),
        Err(e) => json!({"error": format!("{e:#}")}),
    };
    let records = MetadataStore::open(&cfg.run_root).map_err(anyhow::Error::from).and_then(|m| {
        Ok((m.latest_of(name, RunKind::Materialize, last)?, m.latest_of(name, RunKind::SkewCheck, last)?))
    });
    let (runs, skews) = match &records {
        Ok((r, s)) => {
            (json!(r.iter().map(run_json).collect::<Vec<_>>()), json!(s.iter().map(skew_json).collect::<Vec<_>>()))
        }
        Err(e) => (json!({"error": format!("{e:#}")}), json!({"error": format!("{e:#}")})),
    };
    if as_json {
        super::print_json(
            &json!({"definition": def.listing_json(Listing::Owner), "lock": lock, "live": live, "runs": runs, "skew_checks": skews}),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = &def;
    outln!("{} {}  ({})", s.name, s.version, s.file.display());
    outln!("  owner: {}  tags: {}", s.owner.as_deref().unwrap_or("-"), s.tags.join(", "));
    if let Some(d) = &s.description {
        outln!("  {d}");
    }
    outln!(
        "  join keys: {}  timestamp: {}  source: {}  serving: {}{}  fingerprint: {}",
        s.join_keys.join(", "),
        s.timestamp,
        s.source.kind(),
        if s.serving.allowed { "allowed" } else { "not allowed" },
        s.serving.ttl.map(|t| format!(", ttl {}s", t.as_secs())).unwrap_or_default(),
        s.fingerprint()
    );
    for c in &s.columns {
        let nn = if c.nullable { "" } else { " not null" };
        let r = c.lineage.as_deref().map(|r| format!(" <- {r}")).unwrap_or_default();
        outln!("    {:<20} {}{nn}{r}", c.name, c.ty);
    }
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    match text(&lock, "status").as_str() {
        "no_lock" => outln!("lock: no {} in the catalog", daeda_catalog::LOCK_FILE),
        "not_locked" => outln!("lock: not in {} (run `daeda registry lock`)", daeda_catalog::LOCK_FILE),
        "matches" => outln!("lock: {} (matches)", text(&lock, "locked_version")),
        _ => outln!("lock: {} (drift: {})", text(&lock, "locked_version"), text(&lock, "drift")),
    }
    match &live {
        serde_json::Value::Null => outln!("live: no generation in Redis"),
        v if v.get("error").is_some() => outln!("live: unavailable: {}", text(v, "error")),
        v => outln!(
            "live: generation {} (version {}), {} rows, as of {}, materialized at {}{}",
            text(v, "generation"),
            text(v, "version"),
            v["row_count"],
            text(v, "as_of"),
            text(v, "materialized_at"),
            if v["fingerprint_matches"] == json!(true) {
                ""
            } else {
                "; its schema fingerprint differs from the definition's"
            }
        ),
    }
    match &records {
        Err(e) => outln!("runs: unavailable: {e:#}"),
        Ok((runs, skews)) => {
            outln!("last runs:{}", if runs.is_empty() { " none" } else { "" });
            for r in runs {
                outln!(
                    "  {:<44} {:<10} {:<11} {:>9} rows  {}  {}",
                    r.run_id,
                    r.status,
                    r.mode,
                    r.row_count.map(|n| n.to_string()).unwrap_or_default(),
                    r.started_at,
                    r.generation.as_deref().or(r.error.as_deref()).unwrap_or("")
                );
            }
            outln!("last skew checks:{}", if skews.is_empty() { " none" } else { "" });
            for r in skews {
                let rate = r
                    .details
                    .as_ref()
                    .and_then(|d| d.get("mismatch_rate"))
                    .map(|x| format!("mismatch rate {x}"))
                    .unwrap_or_default();
                outln!(
                    "  {:<44} {:<10} {:>9} compared  {}  {rate}",
                    r.run_id,
                    r.status,
                    r.row_count.map(|n| n.to_string()).unwrap_or_default(),
                    r.started_at
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_json(r: &RunRecord) -> serde_json::Value {
    json!({
        "run_id": r.run_id, "status": r.status, "mode": r.mode, "version": r.version, "attempt": r.attempt,
        "started_at": r.started_at, "ended_at": r.ended_at, "as_of": r.as_of, "row_count": r.row_count,
        "generation": r.generation, "error": r.error,
        "notes": r.details.as_ref().and_then(|d| d.get("notes")).cloned(),
    })
}

fn skew_json(r: &RunRecord) -> serde_json::Value {
    let d = |k: &str| r.details.as_ref().and_then(|d| d.get(k)).cloned();
    json!({
        "run_id": r.run_id, "status": r.status, "started_at": r.started_at, "generation": r.generation,
        "entities_compared": r.row_count, "mismatch_rate": d("mismatch_rate"), "passed": d("passed"), "error": r.error,
    })
}
