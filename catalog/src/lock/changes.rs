//! Comparing two locks: each structural difference classified (breaking,
//! additive, metadata), and whether the current versions cover them.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::{Lock, LockedColumn, LockedService, Version};

/// What a change does to the readers and writers of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Readers or writers may break: needs a version bump.
    Breaking,
    /// Something new that breaks no one: needs a version bump.
    Additive,
    /// Description, ownership, tags, lineage: needs only a new lock.
    Metadata,
}

impl Class {
    pub fn needs_bump(self) -> bool {
        matches!(self, Class::Breaking | Class::Additive)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Breaking => "breaking",
            Class::Additive => "additive",
            Class::Metadata => "metadata",
        })
    }
}

/// One difference between the locked and the current shape of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub service: String,
    pub class: Class,
    /// A short sentence, e.g. "column `ctr_7d` type DOUBLE -> FLOAT".
    pub change: String,
}

/// The structural difference of two locks (`old` the locked one), services in
/// name order, each service's changes breaking first. Versions are not changes;
/// see [`check`].
pub fn diff(old: &Lock, new: &Lock) -> Vec<Change> {
    let names: BTreeSet<&String> = old.services.keys().chain(new.services.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let mut changes = match (old.services.get(name), new.services.get(name)) {
            (Some(_), None) => vec![(Class::Breaking, "service removed".to_string())],
            (None, Some(_)) => vec![(Class::Additive, "new service".to_string())],
            (Some(a), Some(b)) => diff_service(a, b),
            (None, None) => unreachable!("the name came from one of them"),
        };
        changes.sort_by_key(|c| c.0);
        out.extend(changes.into_iter().map(|(class, change)| Change { service: name.clone(), class, change }));
    }
    out
}

fn diff_service(a: &LockedService, b: &LockedService) -> Vec<(Class, String)> {
    let mut v = Vec::new();
    let opt = |o: &Option<String>| o.as_deref().map_or("none".to_string(), |s| format!("`{s}`"));
    if a.join_keys != b.join_keys {
        v.push((Class::Breaking, format!("join keys [{}] -> [{}]", a.join_keys.join(", "), b.join_keys.join(", "))));
    }
    if a.timestamp != b.timestamp {
        v.push((Class::Breaking, format!("timestamp column `{}` -> `{}`", a.timestamp, b.timestamp)));
    }
    match (a.serving.allowed, b.serving.allowed) {
        (true, false) => v.push((Class::Breaking, "serving allowed -> not allowed".into())),
        (false, true) => v.push((Class::Additive, "serving not allowed -> allowed".into())),
        _ => {}
    }
    if a.serving.ttl_seconds != b.serving.ttl_seconds {
        let ttl = |t: Option<u64>| t.map_or("none".to_string(), |s| format!("{s}s"));
        v.push((Class::Additive, format!("ttl {} -> {}", ttl(a.serving.ttl_seconds), ttl(b.serving.ttl_seconds))));
    }
    if a.source.kind != b.source.kind {
        // The served shape is the same, but its values now come from elsewhere.
        v.push((Class::Additive, format!("source kind {} -> {}", a.source.kind, b.source.kind)));
    }

    // Columns: a removed and an added column of the same shape are a rename.
    let removed: Vec<&LockedColumn> = a.columns.iter().filter(|c| b.column(&c.name).is_none()).collect();
    let added: Vec<&LockedColumn> = b.columns.iter().filter(|c| a.column(&c.name).is_none()).collect();
    let same_shape = |x: &LockedColumn, y: &LockedColumn| x.ty == y.ty && x.nullable == y.nullable;
    let mut renamed_to: BTreeSet<&str> = BTreeSet::new();
    for r in &removed {
        let candidates: Vec<&&LockedColumn> = added.iter().filter(|n| same_shape(r, n)).collect();
        let claimed_by_others =
            removed.iter().filter(|o| o.name != r.name && candidates.iter().any(|n| same_shape(o, n))).count();
        match candidates.as_slice() {
            [n] if claimed_by_others == 0 => {
                renamed_to.insert(&n.name);
                v.push((Class::Breaking, format!("column `{}` renamed to `{}`", r.name, n.name)));
            }
            _ => v.push((Class::Breaking, format!("column `{}` removed", r.name))),
        }
    }
    for n in added.iter().filter(|n| !renamed_to.contains(n.name.as_str())) {
        if n.nullable {
            v.push((Class::Additive, format!("new nullable column `{}` {}", n.name, n.ty)));
        } else {
            v.push((Class::Breaking, format!("new column `{}` {} is not nullable", n.name, n.ty)));
        }
    }
    for old in &a.columns {
        let Some(new) = b.column(&old.name) else { continue };
        if old.ty != new.ty {
            v.push((Class::Breaking, format!("column `{}` type {} -> {}", old.name, old.ty, new.ty)));
        }
        match (old.nullable, new.nullable) {
            (true, false) => v.push((Class::Breaking, format!("column `{}` nullable -> not nullable", old.name))),
            // Readers may now see NULL where there was none: a bump tells them.
            (false, true) => v.push((Class::Additive, format!("column `{}` not nullable -> nullable", old.name))),
            _ => {}
        }
        if old.lineage != new.lineage {
            v.push((
                Class::Metadata,
                format!("column `{}` ref {} -> {}", old.name, opt(&old.lineage), opt(&new.lineage)),
            ));
        }
    }

    if a.owner != b.owner {
        v.push((Class::Metadata, format!("owner {} -> {}", opt(&a.owner), opt(&b.owner))));
    }
    if a.tags != b.tags {
        v.push((Class::Metadata, format!("tags [{}] -> [{}]", a.tags.join(", "), b.tags.join(", "))));
    }
    if a.description != b.description {
        v.push((Class::Metadata, "description changed".into()));
    }
    v
}

/// Something `daeda registry check` (or `lock`) must refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub service: String,
    pub message: String,
}

/// The result of checking current definitions against a lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Every structural and metadata difference.
    pub changes: Vec<Change>,
    /// Services whose version differs from the locked one: (service, locked, current).
    pub version_changes: Vec<(String, String, String)>,
    /// Version rules broken: a change needing a bump without one, a version going
    /// down. These stop `daeda registry lock` too.
    pub violations: Vec<Violation>,
}

impl CheckReport {
    /// True when the definitions are exactly what the lock says.
    pub fn matches(&self) -> bool {
        self.changes.is_empty() && self.version_changes.is_empty()
    }
}

/// Checks `current` against `locked`: every change, and the version rules.
/// `today` (`YYYY-MM-DD`) only shapes the suggested version.
pub fn check(locked: &Lock, current: &Lock, today: &str) -> CheckReport {
    let changes = diff(locked, current);
    let mut version_changes = Vec::new();
    let mut violations = Vec::new();
    for (name, cur) in &current.services {
        let Some(old) = locked.services.get(name) else { continue };
        let (Some(old_v), Some(new_v)) = (Version::parse(&old.version), Version::parse(&cur.version)) else { continue };
        if old.version != cur.version {
            version_changes.push((name.clone(), old.version.clone(), cur.version.clone()));
        }
        let needing: Vec<&Change> = changes.iter().filter(|c| &c.service == name && c.class.needs_bump()).collect();
        match new_v.cmp(&old_v) {
            Ordering::Less => violations.push(Violation {
                service: name.clone(),
                message: format!(
                    "version {} is lower than the locked {}; versions only go up",
                    cur.version, old.version
                ),
            }),
            Ordering::Equal if !needing.is_empty() => {
                let worst = needing.iter().map(|c| c.class).min().expect("not empty");
                violations.push(Violation {
                    service: name.clone(),
                    message: format!(
                        "{worst} change{} ({}) without a version bump: needs a version above {} (e.g. {})",
                        if needing.len() > 1 { "s" } else { "" },
                        needing.iter().map(|c| c.change.as_str()).collect::<Vec<_>>().join("; "),
                        old.version,
                        old_v.next_after(today)
                    ),
                });
            }
            _ => {}
        }
    }
    CheckReport { changes, version_changes, violations }
}
