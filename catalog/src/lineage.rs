//! Column-level lineage: each served column comes from the same-named column
//! of its service's source, and, when it declares `ref: view:column`, from
//! that column of an upstream view. Services whose columns name the same view
//! share it.
//!
//! Pure: built from loaded definitions, rendered as text, JSON or Graphviz DOT
//! without touching the files the sources name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::{ServiceDef, Source};

/// The lineage of some services, and the upstream views they read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lineage {
    pub services: Vec<ServiceLineage>,
    /// Every view named by a `ref` of a listed service, with every service
    /// (listed or not) that reads it, in name order.
    pub views: Vec<ViewLineage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceLineage {
    pub service: String,
    pub version: String,
    pub source: SourceRef,
    pub columns: Vec<ColumnLineage>,
}

/// Where a service's rows are read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRef {
    pub kind: String,
    /// Path (relative to the catalog folder when the source is on disk) and,
    /// for tables, `#table`.
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnLineage {
    /// The served feature (and the source column it is read from).
    pub column: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// `join_key`, `timestamp` or `feature`.
    pub role: &'static str,
    /// The `ref` it derives from, when declared.
    pub upstream: Option<Upstream>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub view: String,
    pub column: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewLineage {
    pub view: String,
    /// Each feature derived from the view: `service.column <- view:column`.
    pub feeds: Vec<Feed>,
    /// Services reading the view; more than one means they share it.
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feed {
    pub view_column: String,
    pub service: String,
    pub column: String,
}

/// Lineage of `all` (every service of a catalog), restricted to `only` when given;
/// `base` is the catalog folder, which source locations are shown relative to.
pub fn lineage<'a>(all: impl IntoIterator<Item = &'a ServiceDef>, only: Option<&str>, base: &Path) -> Lineage {
    let all: Vec<&ServiceDef> = all.into_iter().collect();
    let mut views: BTreeMap<String, ViewLineage> = BTreeMap::new();
    for s in &all {
        for c in &s.columns {
            if let Some(up) = c.lineage.as_deref().and_then(split_ref) {
                let v = views.entry(up.view.clone()).or_insert_with(|| ViewLineage {
                    view: up.view.clone(),
                    feeds: vec![],
                    services: vec![],
                });
                v.feeds.push(Feed { view_column: up.column.clone(), service: s.name.clone(), column: c.name.clone() });
                if !v.services.contains(&s.name) {
                    v.services.push(s.name.clone());
                }
            }
        }
    }
    let services: Vec<ServiceLineage> =
        all.iter().filter(|s| only.is_none_or(|o| o == s.name)).map(|s| service_lineage(s, base)).collect();
    let views = views
        .into_values()
        .filter(|v| only.is_none_or(|o| v.services.iter().any(|s| s == o)))
        .map(|mut v| {
            v.services.sort();
            v
        })
        .collect();
    Lineage { services, views }
}

fn split_ref(r: &str) -> Option<Upstream> {
    let (view, column) = r.split_once(':')?;
    Some(Upstream { view: view.trim().to_string(), column: column.trim().to_string() })
}

fn service_lineage(s: &ServiceDef, base: &Path) -> ServiceLineage {
    let location = match &s.source {
        Source::Parquet { path } if path.contains("://") => path.clone(),
        Source::Parquet { path } => relative(Path::new(path), base).display().to_string(),
        Source::DuckDb { database, table } => format!("{}#{table}", relative(database, base).display()),
        Source::DuckLake { catalog, table, snapshot, .. } => {
            format!(
                "{}#{table}{}",
                relative(catalog, base).display(),
                snapshot.map(|n| format!("@{n}")).unwrap_or_default()
            )
        }
    };
    ServiceLineage {
        service: s.name.clone(),
        version: s.version.clone(),
        source: SourceRef { kind: s.source.kind().to_string(), location },
        columns: s
            .columns
            .iter()
            .map(|c| ColumnLineage {
                column: c.name.clone(),
                ty: c.ty.to_string(),
                role: if s.is_join_key(&c.name) {
                    "join_key"
                } else if c.name == s.timestamp {
                    "timestamp"
                } else {
                    "feature"
                },
                upstream: c.lineage.as_deref().and_then(split_ref),
            })
            .collect(),
    }
}

/// `path` relative to `base` when both are absolute (`../data/x` style), else as is.
fn relative(path: &Path, base: &Path) -> PathBuf {
    if !path.is_absolute() || !base.is_absolute() {
        return path.to_path_buf();
    }
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common <= 1 {
        return path.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c.as_os_str());
    }
    out
}

impl Lineage {
    /// Lines for a terminal: each service with its columns' origins, then the views.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let _ = writeln!(out, "{} {} <- {} {}", s.service, s.version, s.source.kind, s.source.location);
            let width = s.columns.iter().map(|c| c.column.len()).max().unwrap_or(0);
            for c in &s.columns {
                let up = c.upstream.as_ref().map(|u| format!(" <- {}:{}", u.view, u.column)).unwrap_or_default();
                let role = if c.role == "feature" { String::new() } else { format!(" ({})", c.role.replace('_', " ")) };
                let _ = writeln!(out, "  {:<width$} <- source.{}{up}{role}", c.column, c.column);
            }
        }
        if !self.views.is_empty() {
            let _ = writeln!(out, "upstream views:");
            for v in &self.views {
                let shared = if v.services.len() > 1 { " (shared)" } else { "" };
                let _ = writeln!(out, "  {} -> {}{shared}", v.view, v.services.join(", "));
                for f in &v.feeds {
                    let _ = writeln!(out, "    {}:{} -> {}.{}", v.view, f.view_column, f.service, f.column);
                }
            }
        }
        out
    }

    /// Graphviz: a cluster per service (its source and columns), a node per view
    /// column, an edge per derivation.
    pub fn to_dot(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for v in &self.views {
            let _ = writeln!(
                out,
                "  subgraph {} {{\n    label={};\n    style=dashed;",
                q(&format!("cluster_view_{}", v.view)),
                q(&format!("view {}", v.view))
            );
            let mut cols: Vec<&str> = v.feeds.iter().map(|f| f.view_column.as_str()).collect();
            cols.sort();
            cols.dedup();
            for c in cols {
                let _ = writeln!(out, "    {} [label={}, shape=ellipse];", q(&format!("view:{}:{c}", v.view)), q(c));
            }
            out.push_str("  }\n");
        }
        for s in &self.services {
            let src = format!("source:{}", s.service);
            let _ = writeln!(
                out,
                "  subgraph {} {{\n    label={};",
                q(&format!("cluster_{}", s.service)),
                q(&format!("{} {}", s.service, s.version))
            );
            let _ = writeln!(
                out,
                "    {} [label={}, shape=cylinder];",
                q(&src),
                q(&format!("{} {}", s.source.kind, s.source.location))
            );
            for c in &s.columns {
                let _ = writeln!(
                    out,
                    "    {} [label={}];",
                    q(&format!("{}.{}", s.service, c.column)),
                    q(&format!("{} {}", c.column, c.ty))
                );
            }
            out.push_str("  }\n");
            for c in &s.columns {
                let col = q(&format!("{}.{}", s.service, c.column));
                let _ = writeln!(out, "  {} -> {col};", q(&src));
                if let Some(u) = &c.upstream {
                    let _ = writeln!(out, "  {} -> {col};", q(&format!("view:{}:{}", u.view, u.column)));
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_from_the_catalog() {
        let base = Path::new("/repo/feature_services");
        assert_eq!(relative(Path::new("/repo/data/u/*.parquet"), base), PathBuf::from("../data/u/*.parquet"));
        assert_eq!(relative(Path::new("/repo/feature_services/x.duckdb"), base), PathBuf::from("x.duckdb"));
        assert_eq!(relative(Path::new("/elsewhere/x.duckdb"), base), PathBuf::from("/elsewhere/x.duckdb"));
    }
}
