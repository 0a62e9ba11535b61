pub mod lineage;
pub mod materialize;
pub mod online;
pub mod registry;
pub mod runs;
pub mod serve;
pub mod services;
pub mod skew;

use std::sync::Arc;

use anyhow::Result;
use daeda_catalog::{Catalog, ServiceDef};
use daeda_online::{OnlineStore, StoreSettings};

use crate::config::Config;

pub fn catalog(cfg: &Config) -> Result<Catalog> {
    Ok(Catalog::load(&cfg.catalog)?)
}

pub fn store(cfg: &Config) -> Result<OnlineStore> {
    Ok(OnlineStore::connect(&cfg.redis_url, &StoreSettings::default())?.in_namespace(&cfg.namespace)?)
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn service(catalog: &Catalog, name: &str) -> Result<Arc<ServiceDef>> {
    Ok(catalog.get(name)?.clone())
}

/// Splits repeated and comma-separated values: `-s a,b -s c` -> a, b, c.
pub fn split_list(values: &[String]) -> Vec<String> {
    values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
