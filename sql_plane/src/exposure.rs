//! What each approved service's view reads, and exactly what the locked
//! session may open for it.
//!
//! Local sources are confined by folder (`allowed_directories`): DuckDB
//! canonicalises a local path (`..` resolved) before it compares prefixes.
//! It does not canonicalise a remote URL, so a prefix confines nothing there
//! (`s3://b/svc/../other/x` starts with `s3://b/svc/` and S3 reads
//! `other/x`). Sources on S3 are therefore confined by exact URL:
//!
//! - a Parquet glob is expanded once, when the session is built, and the
//!   view reads that explicit list of objects;
//! - a DuckLake whose data is on S3 is pinned to the snapshot current when
//!   the session is built, and its data and delete files at that snapshot
//!   are listed;
//! - those URLs, and nothing else remote, go to `allowed_paths`, which DuckDB
//!   matches as whole strings: any other spelling of a URL (`..`, `./`,
//!   `%2e%2e`, `//`, `s3a://`, `http://`, a glob, a query string) is refused
//!   before a request is made;
//! - the S3 secret is scoped to the services' own prefixes ([`s3_scope`]).
//!
//! So objects or snapshots that land after the session was built are not
//! visible until the worker is rebuilt.

use std::path::{Path, PathBuf};

use daeda_catalog::{ServiceDef, Source};
use daeda_offline::s3::{is_remote, read_error, source_is_remote};
use daeda_offline::sql::{attach_duckdb, attach_ducklake, ident, literal, qualified};
use daeda_offline::OfflineError;
use duckdb::Connection;

use crate::session::SessionError;

/// What a service's view needs attached, and what its files are.
pub(crate) struct Exposure {
    /// `ATTACH` statements to run again in the locked instance (already run
    /// in the build instance).
    pub attach: Vec<String>,
    /// Local folders the session may read (`allowed_directories`).
    pub dirs: Vec<String>,
    /// Exact remote URLs the session may read (`allowed_paths`).
    pub paths: Vec<String>,
}

/// The folder a path or glob lives in (the part before the first wildcard).
fn folder_of(path: &str) -> PathBuf {
    let cut = path.find(['*', '?', '[', '{']).map_or(path, |i| &path[..i]);
    let p = Path::new(cut);
    if cut.ends_with('/') {
        p.to_path_buf()
    } else {
        p.parent().unwrap_or(Path::new("/")).to_path_buf()
    }
}

/// The S3 prefix a remote source lives under, ending in `/`: the part of a
/// glob before its first wildcard, cut after the last `/`; a DuckLake's data
/// path. `None` for a local source.
pub(crate) fn s3_scope(source: &Source) -> Option<String> {
    if !source_is_remote(source) {
        return None;
    }
    match source {
        Source::Parquet { path } => {
            let cut = path.find(['*', '?', '[', '{']).map_or(path.as_str(), |i| &path[..i]);
            cut.rfind('/').map(|i| cut[..=i].to_string())
        }
        Source::DuckLake { data_path, .. } => Some(format!("{}/", data_path.to_string_lossy().trim_end_matches('/'))),
        Source::DuckDb { .. } => None,
    }
}

fn service_err(def: &ServiceDef) -> impl Fn(duckdb::Error) -> SessionError + '_ {
    move |source| SessionError::Service { service: def.name.clone(), source }
}

fn remote_err<'a>(def: &'a ServiceDef, url: &'a str) -> impl Fn(duckdb::Error) -> SessionError + 'a {
    move |e| SessionError::Remote { service: def.name.clone(), source: read_error(url, &e) }
}

/// Attaches `def`'s source in `build` (which has httpfs and the secret when
/// the source is remote), lists its objects when remote, and creates its view
/// as `main.<name>`. Returns what the locked instance must attach and allow.
pub(crate) fn expose(build: &Connection, def: &ServiceDef, i: usize) -> Result<Exposure, SessionError> {
    let columns = def.columns.iter().map(|c| ident(&c.name)).collect::<Vec<_>>().join(", ");
    let mut exp = Exposure { attach: vec![], dirs: vec![], paths: vec![] };
    let relation = match &def.source {
        Source::Parquet { path } if is_remote(path) => {
            let files = list_glob(build, path).map_err(remote_err(def, path))?;
            if files.is_empty() {
                return Err(SessionError::Remote {
                    service: def.name.clone(),
                    source: OfflineError::NoFiles(path.clone()),
                });
            }
            let list = files.iter().map(|f| literal(f)).collect::<Vec<_>>().join(", ");
            exp.paths = files;
            format!("read_parquet([{list}], hive_partitioning = true, union_by_name = true)")
        }
        Source::Parquet { path } => {
            exp.dirs.push(folder_of(path).display().to_string());
            format!("read_parquet({}, hive_partitioning = true, union_by_name = true)", literal(path))
        }
        Source::DuckDb { database, table } => {
            let alias = format!("src_{i}");
            exp.attach.push(attach_duckdb(database, &alias));
            build.execute_batch(&exp.attach[0]).map_err(service_err(def))?;
            exp.dirs.push(folder_of(&database.display().to_string()).display().to_string());
            qualified(&alias, table)
        }
        Source::DuckLake { catalog, data_path, table, snapshot } => {
            let alias = format!("lake_{i}");
            exp.dirs.push(folder_of(&catalog.display().to_string()).display().to_string());
            let url = data_path.to_string_lossy().into_owned();
            if is_remote(&url) {
                let pin = match snapshot {
                    Some(v) => *v,
                    None => current_snapshot(build, catalog, data_path, &alias).map_err(remote_err(def, &url))?,
                };
                exp.attach.push(attach_ducklake(catalog, data_path, &alias, Some(pin)));
                build.execute_batch(&exp.attach[0]).map_err(remote_err(def, &url))?;
                exp.paths = lake_files(build, &alias, table).map_err(service_err(def))?;
            } else {
                exp.attach.push(attach_ducklake(catalog, data_path, &alias, *snapshot));
                build.execute_batch(&exp.attach[0]).map_err(service_err(def))?;
                exp.dirs.push(data_path.display().to_string());
            }
            qualified(&alias, table)
        }
    };
    let view = format!("CREATE VIEW main.{} AS SELECT {columns} FROM {relation}", ident(&def.name));
    build.execute_batch(&view).map_err(service_err(def))?;
    Ok(exp)
}

/// Every object `glob` matches now, sorted.
fn list_glob(conn: &Connection, glob: &str) -> Result<Vec<String>, duckdb::Error> {
    let mut stmt = conn.prepare(&format!("SELECT file FROM glob({}) ORDER BY file", literal(glob)))?;
    let files = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>();
    files
}

/// The lake's current snapshot id, read through a temporary attachment.
fn current_snapshot(conn: &Connection, catalog: &Path, data_path: &Path, alias: &str) -> Result<u64, duckdb::Error> {
    let probe = format!("{alias}_probe");
    conn.execute_batch(&attach_ducklake(catalog, data_path, &probe, None))?;
    let id: i64 = conn.query_row(&format!("SELECT id FROM {probe}.current_snapshot()"), [], |r| r.get(0))?;
    conn.execute_batch(&format!("DETACH {probe}"))?;
    u64::try_from(id).map_err(|_| duckdb::Error::IntegralValueOutOfRange(0, i128::from(id)))
}

/// The data and delete files of `table` at the attachment's (pinned) snapshot.
fn lake_files(conn: &Connection, alias: &str, table: &str) -> Result<Vec<String>, duckdb::Error> {
    let (schema, name) = table.rsplit_once('.').unwrap_or(("main", table));
    let mut stmt =
        conn.prepare("SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?) ORDER BY data_file")?;
    let rows = stmt
        .query_map([alias, name, schema], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.into_iter().flat_map(|(d, del)| std::iter::once(d).chain(del)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_scope_is_the_prefix_before_any_wildcard() {
        let pq = |p: &str| Source::Parquet { path: p.into() };
        assert_eq!(s3_scope(&pq("s3://b/features/u/*/*.parquet")).as_deref(), Some("s3://b/features/u/"));
        assert_eq!(s3_scope(&pq("s3://b/features/u/x.parquet")).as_deref(), Some("s3://b/features/u/"));
        assert_eq!(s3_scope(&pq("s3://b/features/u_*.parquet")).as_deref(), Some("s3://b/features/"));
        assert_eq!(s3_scope(&pq("/data/u/*.parquet")), None);
        let lake = Source::DuckLake {
            catalog: "/l/m.ducklake".into(),
            data_path: "s3://b/lake/items".into(),
            table: "items".into(),
            snapshot: None,
        };
        assert_eq!(s3_scope(&lake).as_deref(), Some("s3://b/lake/items/"));
    }
}
