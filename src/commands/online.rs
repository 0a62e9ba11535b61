//! `daeda online get` and `daeda online gc`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use daeda_online::lookup::{self, LookupRequest};

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
            let entities: serde_json::Value = serde_json::from_str(&entities)
                .map_err(|e| UsageError(format!("--entities is not JSON: {e}")))?;
            let serde_json::Value::Object(entities) = entities else {
                return Err(UsageError("--entities must be a JSON object of arrays".into()).into());
            };
            let req = LookupRequest {
                entities,
                features: features.map(|f| super::split_list(&[f])),
                include_stale,
            };
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
                lookup::LookupError::BadRequest(_) | lookup::LookupError::TooMany { .. } | lookup::LookupError::UnknownFeature { .. } => {
                    anyhow::Error::new(UsageError(e.to_string()))
                }
                e => anyhow::Error::new(e),
            })?;
            let body: serde_json::Value = serde_json::from_slice(&body)?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        Command::Gc { dry_run } => {
            let removed = rt.block_on(gc(&store, &catalog, dry_run)).context("online gc")?;
            for line in &removed {
                println!("{}{line}", if dry_run { "would remove " } else { "removed " });
            }
            if removed.is_empty() {
                println!("nothing to remove");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Services that left the catalog lose everything; catalog services lose
/// generations that are not live and not being written (no lease held).
async fn gc(store: &daeda_online::OnlineStore, catalog: &daeda_catalog::Catalog, dry_run: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for service in store.services_online().await? {
        if !catalog.contains(&service) {
            let gens = store.generations(&service).await?;
            if !dry_run {
                let n = store.drop_service(&service).await?;
                out.push(format!("service {service} (not in the catalog): generations {gens:?}, {n} rows"));
            } else {
                out.push(format!("service {service} (not in the catalog): generations {gens:?}"));
            }
            continue;
        }
        if store.lease_holder(&service).await?.is_some() {
            continue; // a run is writing; its generation is not garbage
        }
        let live = store.current_generation(&service).await?;
        for g in store.generations(&service).await? {
            if Some(&g) != live.as_ref() {
                let n = if dry_run { 0 } else { store.retire(&service, &g).await? };
                out.push(format!("{service} generation {g} (not live){}", if dry_run { String::new() } else { format!(", {n} rows") }));
            }
        }
    }
    Ok(out)
}
