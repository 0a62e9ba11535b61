//! `daeda registry lock|check|diff`: the Version Protocol over
//! `registry.lock.json` (the logic is `daeda_catalog::lock`'s; this reads files
//! and git, prints and picks the exit code).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use daeda_catalog::lock::{check, CheckReport};
use daeda_catalog::{Catalog, Lock, LockError, LOCK_FILE};
use serde_json::json;

use crate::config::{Config, Overrides};
use crate::UsageError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write registry.lock.json from the definitions (refused when a breaking or
    /// additive change lacks a version bump).
    Lock,
    /// Exit 0 when every definition matches registry.lock.json, 1 otherwise,
    /// listing each change; with --against, also apply the version rules
    /// against that git ref's lock (the CI gate).
    Check {
        /// A git ref whose registry.lock.json the version rules apply against.
        #[arg(long)]
        against: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The changes of the definitions against registry.lock.json, or against
    /// the lock at a git ref.
    Diff {
        #[arg(long)]
        against: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(o: &Overrides, c: Command) -> Result<ExitCode> {
    let cfg = Config::load(o)?;
    match c {
        Command::Lock => lock(&cfg.catalog),
        Command::Check { against, json } => check_cmd(&cfg.catalog, against.as_deref(), json),
        Command::Diff { against, json } => diff_cmd(&cfg.catalog, against.as_deref(), json),
    }
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

fn lock(dir: &Path) -> Result<ExitCode> {
    let catalog = Catalog::load_definitions(dir)?;
    let current = Lock::of(&catalog);
    let path = catalog.dir().join(LOCK_FILE);
    let previous = match Lock::read(catalog.dir()) {
        Ok(p) => p,
        Err(e @ LockError::Malformed { .. }) => {
            eprintln!("warning: replacing it: {e}");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(prev) = &previous {
        let report = check(prev, &current, &today());
        if !report.violations.is_empty() {
            for v in &report.violations {
                eprintln!("error: {}: {}", v.service, v.message);
            }
            eprintln!(
                "error: {} not written: bump the versions above, then run `daeda registry lock` again",
                path.display()
            );
            return Ok(ExitCode::from(1));
        }
        if report.matches() && std::fs::read_to_string(&path).ok().as_deref() == Some(current.to_json().as_str()) {
            outln!("{} is up to date ({} services)", path.display(), current.services.len());
            return Ok(ExitCode::SUCCESS);
        }
        for c in &report.changes {
            outln!("{}: {}: {}", c.service, c.class, c.change);
        }
        for (s, old, new) in &report.version_changes {
            outln!("{s}: version {old} -> {new}");
        }
    }
    // Write beside, then rename: a reader never sees half a lock.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, current.to_json()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    outln!("wrote {} ({} services)", path.display(), current.services.len());
    Ok(ExitCode::SUCCESS)
}

/// The lock to compare against: the working one, or the one at `git_ref`.
fn base_lock(catalog: &Catalog, git_ref: Option<&str>) -> Result<(Lock, String)> {
    match git_ref {
        None => match catalog.lock() {
            Some(l) => Ok((l.clone(), LOCK_FILE.to_string())),
            None => Err(UsageError(format!(
                "no {LOCK_FILE} in {}: run `daeda registry lock` to create it",
                catalog.dir().display()
            ))
            .into()),
        },
        Some(r) => Ok((lock_at_ref(catalog.dir(), r)?, format!("{r}:{LOCK_FILE}"))),
    }
}

/// `git show REF:./registry.lock.json` from the catalog folder. A ref without a
/// lock (before the Version Protocol was adopted) is an empty lock.
fn lock_at_ref(dir: &Path, git_ref: &str) -> Result<Lock> {
    let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output();
    let verify =
        git(&["rev-parse", "--verify", "--quiet", &format!("{git_ref}^{{commit}}")]).context("cannot run git")?;
    if !verify.status.success() {
        return Err(
            UsageError(format!("`{git_ref}` is not a commit of the git repository holding {}", dir.display())).into()
        );
    }
    let out = git(&["show", &format!("{git_ref}:./{LOCK_FILE}")]).context("cannot run git")?;
    let origin = format!("{git_ref}:{LOCK_FILE}");
    if !out.status.success() {
        eprintln!("note: {git_ref} has no {LOCK_FILE}; every service counts as new");
        return Ok(Lock { lock_format: daeda_catalog::lock::LOCK_FORMAT, ..Default::default() });
    }
    Ok(Lock::parse(&String::from_utf8_lossy(&out.stdout), &origin)?)
}

fn report_json(report: &CheckReport, against: &str) -> serde_json::Value {
    json!({
        "against": against,
        "changes": report.changes,
        "version_changes": report.version_changes.iter().map(|(s, old, new)| json!({"service": s, "locked": old, "current": new})).collect::<Vec<_>>(),
        "violations": report.violations,
    })
}

fn print_changes(report: &CheckReport) {
    for c in &report.changes {
        outln!("{}: {}: {}", c.service, c.class, c.change);
    }
    for (s, old, new) in &report.version_changes {
        outln!("{s}: version {old} -> {new}");
    }
}

fn check_cmd(dir: &Path, against: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(dir)?;
    let current = Lock::of(&catalog);
    // The working lock must always match the definitions.
    let (working, _) = base_lock(&catalog, None)?;
    let local = check(&working, &current, &today());
    let vs_ref = match against {
        Some(r) => Some(check(&base_lock(&catalog, Some(r))?.0, &current, &today())),
        None => None,
    };
    let mut errors: Vec<String> = Vec::new();
    for v in local.violations.iter().chain(vs_ref.iter().flat_map(|r| &r.violations)) {
        let line = format!("{}: {}", v.service, v.message);
        if !errors.contains(&line) {
            errors.push(line);
        }
    }
    if !local.matches() {
        let stale: Vec<String> =
            local.version_changes.iter().map(|(s, old, new)| format!("{s} ({old} -> {new})")).collect();
        errors.push(if local.violations.is_empty() && local.changes.is_empty() {
            format!("versions bumped without a lock update: {}: run `daeda registry lock`", stale.join(", "))
        } else if local.violations.is_empty() {
            format!("{LOCK_FILE} does not match the definitions: run `daeda registry lock`")
        } else {
            format!(
                "{LOCK_FILE} does not match the definitions: bump the versions above, then run `daeda registry lock`"
            )
        });
    }
    let ok = errors.is_empty();
    if as_json {
        super::print_json(&json!({
            "ok": ok,
            "lock": report_json(&local, LOCK_FILE),
            "against": vs_ref.as_ref().map(|r| report_json(r, &format!("{}:{LOCK_FILE}", against.unwrap_or_default()))),
            "errors": errors,
        }))?;
    } else {
        print_changes(&local);
        if let (Some(r), Some(name)) = (&vs_ref, against) {
            if !r.matches() {
                outln!("against {name}:");
                for c in &r.changes {
                    outln!("  {}: {}: {}", c.service, c.class, c.change);
                }
                for (s, old, new) in &r.version_changes {
                    outln!("  {s}: version {old} -> {new}");
                }
            }
        }
        for e in &errors {
            eprintln!("error: {e}");
        }
        if ok {
            outln!(
                "{} services match {LOCK_FILE}{}",
                current.services.len(),
                against.map(|r| format!("; version rules hold against {r}")).unwrap_or_default()
            );
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn diff_cmd(dir: &Path, against: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(dir)?;
    let current = Lock::of(&catalog);
    let (base, origin) = base_lock(&catalog, against)?;
    let report = check(&base, &current, &today());
    if as_json {
        super::print_json(&report_json(&report, &origin))?;
    } else if report.matches() {
        outln!("no changes against {origin}");
    } else {
        print_changes(&report);
        for v in &report.violations {
            outln!("{}: {}", v.service, v.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}
