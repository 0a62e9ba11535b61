//! The Feature Protocol: feature service definitions (`feature_services/*.yaml`)
//! loaded into typed, validated [`ServiceDef`]s.
//!
//! Invariants every other crate relies on:
//! - a loaded definition is complete and consistent: join keys and the timestamp
//!   are declared columns with key-able types, names are unique, types are known;
//! - a wrong definition never loads: [`Catalog::load`] reports every problem,
//!   each naming the file, the field and what was expected (unknown keys too);
//! - [`ServiceDef::fingerprint`] is a pure function of what decides the online
//!   row encoding, so equal fingerprints mean readers and writers agree;
//! - the Version Protocol ([`lock`]) is pure: a [`Lock`] is computed from the
//!   definitions alone, and comparing two locks needs no I/O.

mod error;
pub mod lineage;
mod listing;
pub mod lock;
mod raw;
mod service;
mod types;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{CatalogError, DefinitionError};
pub use listing::Listing;
pub use lock::{Lock, LockError, LOCK_FILE};
pub use service::{Column, Definition, ServiceDef, Serving, Source};
pub use types::{ColumnType, ElemType, ScalarType};
pub use validate::{is_service_name, parse_ttl};

/// All feature services of one catalog folder, by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    services: BTreeMap<String, Arc<ServiceDef>>,
    /// `registry.lock.json`, when the folder has one.
    lock: Option<Lock>,
}

impl Catalog {
    /// Loads and validates every `*.yaml` / `*.yml` file directly in `dir`, and
    /// its `registry.lock.json` when there is one (a malformed lock is an error).
    pub fn load(dir: impl AsRef<Path>) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::load_definitions(dir)?;
        catalog.lock = Lock::read(&catalog.dir)?;
        Ok(catalog)
    }

    /// As [`Catalog::load`] without reading the lock: for writing a new one
    /// over a malformed one.
    pub fn load_definitions(dir: impl AsRef<Path>) -> Result<Catalog, CatalogError> {
        let io = |e| CatalogError::Io { path: dir.as_ref().to_path_buf(), source: e };
        // Absolute, so source paths and snapshots name real locations.
        let dir = &std::fs::canonicalize(dir.as_ref()).map_err(io)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CatalogError::Empty(dir.to_path_buf()));
        }
        let mut services: BTreeMap<String, Arc<ServiceDef>> = BTreeMap::new();
        let mut problems = Vec::new();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| CatalogError::Io { path: file.clone(), source: e })?;
            match parse_definition(&text, &file) {
                Ok(def) => {
                    if let Some(other) = services.get(&def.name) {
                        problems.push(DefinitionError {
                            file: file.clone(),
                            field: "name".into(),
                            message: format!("service `{}` is already defined in {}", def.name, other.file.display()),
                        });
                    } else {
                        services.insert(def.name.clone(), Arc::new(def));
                    }
                }
                Err(mut errs) => problems.append(&mut errs),
            }
        }
        if !problems.is_empty() {
            return Err(CatalogError::Definitions(problems));
        }
        Ok(Catalog { dir: dir.to_path_buf(), services, lock: None })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Result<&Arc<ServiceDef>, CatalogError> {
        self.services.get(name).ok_or_else(|| CatalogError::UnknownService(name.to_string()))
    }

    /// Services in name order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceDef>> {
        self.services.values()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.services.contains_key(name)
    }

    /// The catalog's `registry.lock.json`, if it has one.
    pub fn lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// The version `registry.lock.json` holds for `service` (None without a lock
    /// or when the service is not locked).
    pub fn locked_version(&self, service: &str) -> Option<&str> {
        self.lock.as_ref()?.locked_version(service)
    }
}

/// Parses one definition; `file` is used for error messages and to resolve
/// relative source paths.
pub fn parse_definition(text: &str, file: &Path) -> Result<ServiceDef, Vec<DefinitionError>> {
    let raw: raw::RawService = serde_yaml::from_str(text).map_err(|e| vec![yaml_error(e, file)])?;
    validate::build(raw, file)
}

/// serde_yaml says e.g. "columns[1]: unknown field `nulable`, expected one of ...
/// at line 14 column 5"; split off the path so the error names the field.
fn yaml_error(e: serde_yaml::Error, file: &Path) -> DefinitionError {
    let text = e.to_string();
    let (field, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => ("(file)".to_string(), text),
    };
    DefinitionError { file: file.to_path_buf(), field, message }
}
