//! `daeda materialize --online`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use chrono::{DateTime, NaiveDate, Utc};
use daeda_materializer::{Materializer, Mode, RunRequest, Settings};
use daeda_metadata_store::MetadataStore;

use crate::config::{Config, Overrides};
use crate::progress::Bar;
use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Materialize into the online store (Redis); the only target today.
    #[arg(long)]
    online: bool,
    /// Services to run (repeat or comma-separate).
    #[arg(long = "service", short = 's')]
    services: Vec<String>,
    /// Every service whose serving is allowed.
    #[arg(long, conflicts_with = "services")]
    all: bool,
    /// Event-time bound, RFC 3339 or YYYY-MM-DD (midnight UTC) [default: now]
    #[arg(long)]
    as_of: Option<String>,
    #[arg(long, value_enum, default_value = "full")]
    mode: ModeArg,
    /// Read, check and encode; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary instead of lines.
    #[arg(long)]
    json: bool,
    /// Run services whose definition does not match registry.lock.json
    /// (recorded with the run as a note).
    #[arg(long)]
    allow_unlocked: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Full,
    Incremental,
}

/// RFC 3339, or a date meaning midnight UTC.
pub fn parse_as_of(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(UsageError(format!("--as-of `{s}` is not RFC 3339 (2026-06-30T00:00:00Z) or a date (2026-06-30)")).into())
}

fn git_sha(dir: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(o: &Overrides, a: &Args) -> Result<ExitCode> {
    if !a.online {
        return Err(UsageError("say where to materialize: --online (Redis) is the supported target".into()).into());
    }
    let cfg = Config::load(o)?;
    let catalog = super::catalog(&cfg)?;
    let as_of = a.as_of.as_deref().map(parse_as_of).transpose()?.unwrap_or_else(Utc::now);
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    // With a lock, a definition that does not match it is refused: what runs
    // is what was reviewed. Named services stop the command (exit 2); `--all`
    // reports them as failed and runs the rest.
    let drift = |def: &daeda_catalog::ServiceDef| catalog.lock().and_then(|l| l.drift(def));
    let refusal = |name: &str, why: &str| {
        format!(
            "{name}: definition does not match {}: {why}; run `daeda registry check`, or pass --allow-unlocked",
            daeda_catalog::LOCK_FILE
        )
    };
    let services = if a.all {
        catalog
            .services()
            .filter(|s| {
                if !s.serving.allowed {
                    skipped.push(s.name.clone());
                }
                s.serving.allowed
            })
            .filter(|s| match drift(s) {
                Some(why) if !a.allow_unlocked => {
                    let msg = refusal(&s.name, &why);
                    if !a.json {
                        eprintln!("error: {msg}");
                    }
                    failures.push(serde_json::json!({"service": s.name, "error": format!("not started: {msg}")}));
                    false
                }
                _ => true,
            })
            .cloned()
            .collect::<Vec<_>>()
    } else {
        let names = super::split_list(&a.services);
        if names.is_empty() {
            bail!(UsageError("name services with --service NAME (repeatable, or a,b) or use --all".into()));
        }
        let mut v = Vec::new();
        for n in names {
            let def = super::service(&catalog, &n)?;
            if !def.serving.allowed {
                return Err(daeda_materializer::MaterializeError::NotAllowed(n).into());
            }
            if let (Some(why), false) = (drift(&def), a.allow_unlocked) {
                return Err(UsageError(refusal(&n, &why)).into());
            }
            v.push(def);
        }
        v
    };

    let records = MetadataStore::open(&cfg.run_root)?;
    let materializer = Materializer::new(super::store(&cfg)?, Settings::default());
    let req = RunRequest {
        mode: match a.mode {
            ModeArg::Full => Mode::Full,
            ModeArg::Incremental => Mode::Incremental,
        },
        as_of,
        dry_run: a.dry_run,
        git_sha: git_sha(&cfg.catalog),
        notes: Vec::new(),
    };
    let rt = super::runtime()?;
    let stop = materializer.stop_handle();
    stop_on_signal(&rt, stop.clone())?;
    let mut summaries = Vec::new();
    for def in services {
        if stop.load(Ordering::Relaxed) {
            if !a.json {
                eprintln!("error: {}: not started: interrupted", def.name);
            }
            failures.push(serde_json::json!({"service": def.name, "error": "not started: interrupted"}));
            continue;
        }
        let mut req = req.clone();
        if let Some(why) = drift(&def) {
            let note =
                format!("run with --allow-unlocked: definition does not match {}: {why}", daeda_catalog::LOCK_FILE);
            if !a.json {
                eprintln!("warning: {}: {note}", def.name);
            }
            req.notes.push(note);
        }
        let bar = Arc::new(Bar::rows(&def.name, a.json));
        let result = rt.block_on(materializer.run(def.clone(), &req, &records, bar.clone()));
        bar.finish();
        match result {
            Ok(s) => {
                if !a.json {
                    for w in &s.warnings {
                        eprintln!("warning: {}: {w}", s.service);
                    }
                    outln!("{}", line(&s));
                }
                summaries.push(s);
            }
            Err(e) => {
                if !a.json {
                    eprintln!("error: {}: {e}", def.name);
                }
                failures.push(serde_json::json!({"service": def.name, "error": e.to_string()}));
            }
        }
    }
    for s in &skipped {
        if !a.json {
            eprintln!("skipped: {s}: serving.allowed is false");
        }
    }
    if a.json {
        super::print_json(&serde_json::json!({
            "as_of": as_of.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "runs": summaries,
            "failed": failures,
            "skipped_not_allowed": skipped,
        }))?;
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// SIGTERM (cron, Dagster, systemd stopping the job) or SIGINT (Ctrl-C) stops
/// the runs cleanly: the current one removes its unfinished generation,
/// releases its lease and is recorded as failed; later ones do not start. A
/// second signal exits at once (the lease then expires on its own).
fn stop_on_signal(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _guard = rt.enter();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    rt.spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n > 0 {
                eprintln!("daeda: stopped at once");
                #[allow(clippy::exit)] // a second signal means now: the lease expires on its own
                std::process::exit(1);
            }
            eprintln!("daeda: stopping: the current run cleans up and fails (signal again to exit at once)");
            stop.store(true, Ordering::Relaxed);
        }
    });
    Ok(())
}

fn line(s: &daeda_materializer::RunSummary) -> String {
    let what = match (s.dry_run, s.mode) {
        (true, _) => "dry run, nothing written".to_string(),
        (false, Mode::Full) => format!(
            "generation {} is live{}",
            s.generation.as_deref().unwrap_or("?"),
            s.previous_generation.as_deref().map(|p| format!(" (replaced {p})")).unwrap_or_default()
        ),
        (false, Mode::Incremental) => {
            format!(
                "generation {} updated ({} kept as newer online)",
                s.generation.as_deref().unwrap_or("?"),
                s.rows_kept
            )
        }
    };
    format!(
        "{}: {} entities from {} source rows ({} skipped for NULL keys), {} rows / {} bytes written in {:.2}s ({:.0} rows/s); {what}; run {}",
        s.service, s.entities, s.rows_read, s.skipped_null_keys, s.rows_written, s.bytes_written, s.seconds, s.rows_per_sec, s.run_id
    )
}
