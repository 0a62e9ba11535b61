//! `daeda online get` and `daeda online gc`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use daeda_online::lookup::{self, LookupRequest};
use daeda_online::{OnlineError, OnlineStore};

use crate::config::{Config, Overrides};
use crate::UsageError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read entities from Redis; prints the body POST /v1/features/{service} answers.
    Get {
        #[arg(long)]
        service: String,
        /// Columnar join-key values, e.g. '{"user_id": [1, 2]}'.
        #[arg(long)]
        entities: String,
        /// Feature subset (comma-separated); all features when absent.
        #[arg(long)]
        features: Option<String>,
        /// Return the values of stale rows instead of NULLs.
        #[arg(long)]
        include_stale: bool,
    },
    /// Remove what services no longer in the catalog, and runs that died, left in Redis.
    Gc {
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove this service (not in the catalog) while it still has a
        /// live generation, which gc otherwise refuses. Repeatable.
        #[arg(long, value_name = "NAME")]
        force: Vec<String>,
    },
    /// Remove everything a service holds in Redis (rows, generations, its
    /// pointer) under its lease; its lookups answer 404 until it is materialized again.
    Purge {
        #[arg(long)]
        service: String,
    },
}

pub fn run(o: &Overrides, c: Command) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let store = super::store(&cfg)?;
    let rt = super::runtime()?;
    match c {
        Command::Get { service, entities, features, include_stale } => {
            let def = super::service(&catalog, &service)?;
            if !def.serving.allowed {
                return Err(daeda_materializer::MaterializeError::NotAllowed(service).into());
            }
            let entities: serde_json::Value =
                serde_json::from_str(&entities).map_err(|e| UsageError(format!("--entities is not JSON: {e}")))?;
            let serde_json::Value::Object(entities) = entities else {
                return Err(UsageError("--entities must be a JSON object of arrays".into()).into());
            };
            let req = LookupRequest { entities, features: features.map(|f| super::split_list(&[f])), include_stale };
            let body = rt.block_on(async {
                // A malformed request is refused before Redis is asked anything.
                lookup::entity_keys(&def, &req.entities, cfg.max_batch)?;
                let meta = store
                    .current(&def.name)
                    .await?
                    .ok_or_else(|| lookup::LookupError::NoLiveGeneration(def.name.clone()))?;
                lookup::lookup(&store, &def, &meta, &req, cfg.max_batch).await
            });
            let body = body.map_err(|e| match e {
                lookup::LookupError::BadRequest(_)
                | lookup::LookupError::TooMany { .. }
                | lookup::LookupError::UnknownFeature { .. } => anyhow::Error::new(UsageError(e.to_string())),
                e => anyhow::Error::new(e),
            })?;
            outln!("{}", pretty(&body));
        }
        Command::Purge { service } => {
            let holder = format!("purge-{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), std::process::id());
            let n = rt.block_on(async {
                store.acquire_lease(&service, &holder, GC_LEASE).await?;
                let removed = store.purge_service(&service, &holder, GC_LEASE).await;
                if let Err(e) = store.release_lease(&service, &holder).await {
                    tracing::warn!(service, error = %e, "could not release purge's lease; it expires on its own");
                }
                removed
            });
            let n = n.with_context(|| format!("online purge of `{service}`"))?;
            outln!("purged {service} (namespace {}): {n} rows", store.keys().namespace());
        }
        Command::Gc { dry_run, force } => {
            let report = rt.block_on(gc(&store, &catalog, dry_run, &force)).context("online gc")?;
            for line in &report.removed {
                outln!("{}{line}", if dry_run { "would remove " } else { "removed " });
            }
            for line in &report.skipped {
                outln!("skipped {line}");
            }
            if report.removed.is_empty() && report.skipped.is_empty() {
                outln!("nothing to remove");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Indents a JSON text the way `serde_json::to_string_pretty` does, copying
/// every token as written. Parsing the body again would round numbers:
/// serde_json (without `float_roundtrip`) reads `1.1500000000000001` as 1.15,
/// and `online get` must print exactly the values the gateway answers.
fn pretty(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// What gc removed (or would), and the services it left alone.
struct GcReport {
    removed: Vec<String>,
    skipped: Vec<String>,
}

/// How long gc's lease on a service lasts without renewal; it is renewed after
/// each generation it removes, and expires on its own if gc dies.
const GC_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Services that left the catalog lose everything (but one that still has a
/// live generation only when named in `force`: another catalog may serve it);
/// catalog services lose generations that are not live. Only the store's
/// namespace is visited. gc works on a service only while holding its
/// lease, as a run does, so a run cannot start between gc deciding what is
/// garbage and removing it (a starting run's new generation is not yet live
/// and would look like garbage). A service whose lease a run holds is skipped.
async fn gc(
    store: &OnlineStore,
    catalog: &daeda_catalog::Catalog,
    dry_run: bool,
    force: &[String],
) -> Result<GcReport> {
    let holder = format!("gc-{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), std::process::id());
    let mut report = GcReport { removed: Vec::new(), skipped: Vec::new() };
    for service in store.services_online().await? {
        if !catalog.contains(&service) && !force.contains(&service) {
            if let Some(live) = store.current_generation(&service).await? {
                report.skipped.push(format!(
                    "{service}: not in the catalog but generation {live} is live; pass --force {service} to remove it"
                ));
                continue;
            }
        }
        let taken = if dry_run {
            // Removes nothing, so it takes nothing; it reports what a real gc would skip.
            match store.lease_holder(&service).await? {
                Some(run) => Err(OnlineError::LeaseHeld { service: service.clone(), holder: run }),
                None => Ok(()),
            }
        } else {
            store.acquire_lease(&service, &holder, GC_LEASE).await
        };
        match taken {
            Ok(()) => {}
            Err(OnlineError::LeaseHeld { holder: run, .. }) => {
                report.skipped.push(format!("{service}: run {run} holds its lease"));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let result = gc_service(store, catalog, &service, &holder, dry_run, &mut report.removed).await;
        if !dry_run {
            if let Err(e) = store.release_lease(&service, &holder).await {
                tracing::warn!(service, error = %e, "could not release gc's lease; it expires on its own");
            }
        }
        result?;
    }
    Ok(report)
}

/// One service, under its lease (unless `dry_run`).
async fn gc_service(
    store: &OnlineStore,
    catalog: &daeda_catalog::Catalog,
    service: &str,
    holder: &str,
    dry_run: bool,
    out: &mut Vec<String>,
) -> Result<()> {
    let gens = store.generations(service).await?;
    if !catalog.contains(service) {
        if dry_run {
            out.push(format!("service {service} (not in the catalog): generations {gens:?}"));
        } else {
            let n = store.drop_service(service).await?;
            out.push(format!("service {service} (not in the catalog): generations {gens:?}, {n} rows"));
        }
        return Ok(());
    }
    let live = store.current_generation(service).await?;
    for g in gens {
        if Some(&g) == live.as_ref() {
            continue;
        }
        if dry_run {
            out.push(format!("{service} generation {g} (not live)"));
            continue;
        }
        let n = store.retire(service, &g).await?;
        out.push(format!("{service} generation {g} (not live), {n} rows"));
        if !store.renew_lease(service, holder, GC_LEASE).await? {
            anyhow::bail!(
                "gc lost its lease on `{service}` while removing generation {g}; stopped before removing more"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pretty_prints_like_serde_json_and_keeps_every_digit() {
        let body =
            r#"{"a":[1.1500000000000001,null,-2e-7],"b":{},"c":[],"d":"x, {\\\"y\\\": [z]}","e":{"f":[[1],[]]}}"#;
        let ours = super::pretty(body.as_bytes());
        assert!(ours.contains("1.1500000000000001"), "{ours}");
        // Same layout as serde_json's pretty printer (on a value it reads back exactly).
        let exact = body.replace("1.1500000000000001", "1.5");
        let v: serde_json::Value = serde_json::from_str(&exact).unwrap();
        assert_eq!(super::pretty(exact.as_bytes()), serde_json::to_string_pretty(&v).unwrap());
    }
}
