//! The Version Protocol: `registry.lock.json` at the catalog root holds every
//! service's canonical logical shape, and a structural change to a definition
//! must come with a version bump.
//!
//! Invariants:
//! - the lock is a pure function of the definitions: no timestamps, no hashes,
//!   no paths; services and columns sorted by name, tags sorted, object keys in
//!   a fixed (alphabetical) order, so the same catalog always writes the same bytes
//!   and equivalent spellings (`FLOAT[1152]`, `FLOAT[]` + `dimension: 1152`,
//!   `7d`/`168h`) lock identically;
//! - column order is not part of the logical shape (responses are keyed by
//!   name; the row encoding's order is the fingerprint's business);
//! - every difference between two locks is one [`Change`] with one [`Class`];
//!   breaking and additive changes need a version strictly greater than the
//!   locked one ([`Version`]), metadata changes need only a new lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Catalog, ServiceDef};

mod changes;
pub use changes::{check, diff, Change, CheckReport, Class, Violation};

/// File name of the lock, directly in the catalog folder.
pub const LOCK_FILE: &str = "registry.lock.json";

/// The format of the lock file this code writes and reads.
pub const LOCK_FORMAT: u32 = 1;

/// Why a lock could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The lock is not the JSON this version writes.
    #[error("{origin} is not a valid registry lock: {message} (regenerate it with `daeda registry lock`)")]
    Malformed { origin: String, message: String },
}

/// `registry.lock.json`: every service of the catalog, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub lock_format: u32,
    pub services: BTreeMap<String, LockedService>,
}

/// One service's canonical logical shape. Keys are in alphabetical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedService {
    /// Sorted by name.
    pub columns: Vec<LockedColumn>,
    pub description: Option<String>,
    /// In key order (the order is part of the entity key).
    pub join_keys: Vec<String>,
    pub name: String,
    pub owner: Option<String>,
    pub serving: LockedServing,
    pub source: LockedSource,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    pub timestamp: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedColumn {
    pub name: String,
    pub nullable: bool,
    /// Lineage `view:column`, when declared.
    #[serde(rename = "ref")]
    pub lineage: Option<String>,
    /// The canonical spelling ([`crate::ColumnType`]'s `Display`).
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedServing {
    pub allowed: bool,
    /// The ttl in seconds, so `7d` and `168h` lock alike; null = never stale.
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSource {
    /// `parquet`, `duckdb` or `ducklake`; where the files are is deployment, not shape.
    pub kind: String,
}

impl LockedService {
    /// The canonical form of a definition.
    pub fn of(def: &ServiceDef) -> LockedService {
        let mut columns: Vec<LockedColumn> = def
            .columns
            .iter()
            .map(|c| LockedColumn {
                name: c.name.clone(),
                nullable: c.nullable,
                lineage: c.lineage.clone(),
                ty: c.ty.to_string(),
            })
            .collect();
        columns.sort_by(|a, b| a.name.cmp(&b.name));
        let tags: BTreeSet<String> = def.tags.iter().cloned().collect();
        LockedService {
            columns,
            description: def.description.clone(),
            join_keys: def.join_keys.clone(),
            name: def.name.clone(),
            owner: def.owner.clone(),
            serving: LockedServing { allowed: def.serving.allowed, ttl_seconds: def.serving.ttl.map(|t| t.as_secs()) },
            source: LockedSource { kind: def.source.kind().to_string() },
            tags: tags.into_iter().collect(),
            timestamp: def.timestamp.clone(),
            version: def.version.clone(),
        }
    }

    fn column(&self, name: &str) -> Option<&LockedColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

impl Lock {
    /// The lock of every service of `catalog`.
    pub fn of(catalog: &Catalog) -> Lock {
        Lock {
            lock_format: LOCK_FORMAT,
            services: catalog.services().map(|s| (s.name.clone(), LockedService::of(s))).collect(),
        }
    }

    /// Parses lock text; `origin` names where it came from in errors (a path,
    /// or `REF:registry.lock.json`).
    pub fn parse(text: &str, origin: &str) -> Result<Lock, LockError> {
        let malformed = |message: String| LockError::Malformed { origin: origin.to_string(), message };
        let lock: Lock = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if lock.lock_format != LOCK_FORMAT {
            return Err(malformed(format!("lock_format {} (this daeda reads {LOCK_FORMAT})", lock.lock_format)));
        }
        for (name, s) in &lock.services {
            if &s.name != name {
                return Err(malformed(format!("services.{name} has name `{}`", s.name)));
            }
            if Version::parse(&s.version).is_none() {
                return Err(malformed(format!("services.{name}.version `{}` is not YYYY-MM-DD[.N]", s.version)));
            }
        }
        Ok(lock)
    }

    /// Reads `<dir>/registry.lock.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Lock>, LockError> {
        let path = dir.join(LOCK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Lock::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    /// Stable pretty JSON with a final newline: the file's bytes.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a lock serializes");
        s.push('\n');
        s
    }

    pub fn locked_version(&self, service: &str) -> Option<&str> {
        self.services.get(service).map(|s| s.version.as_str())
    }

    /// How `def` differs from its locked shape, as one sentence; None when it
    /// matches exactly (version included).
    pub fn drift(&self, def: &ServiceDef) -> Option<String> {
        let current = LockedService::of(def);
        let Some(locked) = self.services.get(&def.name) else {
            return Some(format!("`{}` is not in {LOCK_FILE}", def.name));
        };
        if *locked == current {
            return None;
        }
        let one = |s: &LockedService| Lock { lock_format: LOCK_FORMAT, services: [(s.name.clone(), s.clone())].into() };
        let mut parts: Vec<String> =
            diff(&one(locked), &one(&current)).into_iter().map(|c| format!("{}: {}", c.class, c.change)).collect();
        if locked.version != current.version {
            parts.push(format!("version {} is locked as {}", current.version, locked.version));
        }
        Some(parts.join("; "))
    }
}

/// A service version, `YYYY-MM-DD` or `YYYY-MM-DD.N`, ordered by date, then N
/// (a missing N is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    year: u16,
    month: u8,
    day: u8,
    n: u64,
}

impl Version {
    /// Parses the syntax definitions are validated with.
    pub fn parse(s: &str) -> Option<Version> {
        if !crate::validate::is_version(s) {
            return None;
        }
        let (date, n) = s.split_once('.').map_or((s, None), |(d, n)| (d, Some(n)));
        Some(Version {
            year: date[0..4].parse().ok()?,
            month: date[5..7].parse().ok()?,
            day: date[8..10].parse().ok()?,
            n: n.map_or(Some(0), |n| n.parse().ok())?,
        })
    }

    /// The smallest sensible version strictly greater than `self`: `today` when
    /// that date is later, else `self`'s date with the next `.N`.
    pub fn next_after(self, today: &str) -> String {
        match Version::parse(today) {
            Some(t) if t.n == 0 && t > self && (t.year, t.month, t.day) != (self.year, self.month, self.day) => {
                today.to_string()
            }
            _ => format!("{:04}-{:02}-{:02}.{}", self.year, self.month, self.day, self.n + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_date_then_n() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("2026-06-27.1") > v("2026-06-27"));
        assert!(v("2026-06-27.10") > v("2026-06-27.9"));
        assert!(v("2026-06-28") > v("2026-06-27.99"));
        assert!(v("2027-01-01") > v("2026-12-31.3"));
        assert_eq!(v("2026-06-27.0"), v("2026-06-27"));
        assert!(Version::parse("2026-06-27.x").is_none());
        assert!(Version::parse("2026-02-30").is_none());
    }

    #[test]
    fn the_suggested_version_is_today_or_the_next_n() {
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(v("2026-06-27").next_after("2026-11-26"), "2026-11-26");
        assert_eq!(v("2026-06-27").next_after("2026-06-27"), "2026-06-27.1");
        assert_eq!(v("2026-06-27.4").next_after("2026-06-27"), "2026-06-27.5");
        // A version dated in the future: the next N, never an older date.
        assert_eq!(v("2027-01-01").next_after("2026-11-26"), "2027-01-01.1");
        for (old, today) in [("2026-06-27", "2026-11-26"), ("2026-06-27.4", "2026-06-27"), ("2027-01-01", "2026-01-01")]
        {
            assert!(Version::parse(&v(old).next_after(today)).unwrap() > v(old));
        }
    }
}
