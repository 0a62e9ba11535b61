//! The scheduling recipes (examples/cron, examples/systemd) run as written, and
//! the claim they rest on: overlapping `daeda materialize --online` runs need no
//! `flock`, because the materializer's lease in Redis lets one run write a
//! service and refuses the other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{output, output_timeout, signal, Killed, TestEnv, DAEDA_LIMIT};

const LEASE: &str = "daeda:{svc:user_features}:lease";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A run frozen with SIGSTOP; killed when dropped (SIGKILL ends a stopped
/// process too), so a failed assertion never leaves a stopped process behind.
struct Frozen(Killed);

impl Frozen {
    fn thaw(self) -> Child {
        signal(&self.0, "-CONT");
        self.0.into_inner()
    }
}

/// Starts a full run of user_features and freezes it while it holds the lease
/// (mid-run: reading or writing). A run that finished before it could be
/// caught is waited for and the next one tried.
fn run_frozen_holding_the_lease(env: &TestEnv) -> (Frozen, String) {
    for _ in 0..5 {
        let mut child = env
            .command(&["materialize", "--online", "--service", "user_features", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let holder = loop {
            let held: Option<String> = env.redis.read(redis::cmd("GET").arg(LEASE));
            if let Some(h) = held {
                break Some(h);
            }
            if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(120) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if let Some(holder) = holder {
            signal(&child, "-STOP");
            let still: Option<String> = env.redis.read(redis::cmd("GET").arg(LEASE));
            if still.as_deref() == Some(holder.as_str()) {
                return (Frozen(Killed::new(child)), holder);
            }
            signal(&child, "-CONT");
        }
        let out = output_timeout(child, DAEDA_LIMIT, "a run that finished before it was caught");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    panic!("five runs in a row finished before their lease could be seen");
}

#[test]
fn two_concurrent_runs_of_a_service_one_writes_it_and_the_other_exits_1_without_touching_it() {
    let env = TestEnv::new(100_000);
    // Run A holds the lease, frozen mid-run (as a slow run would be), so the
    // overlap is certain rather than a race the test may lose.
    let (a, holder) = run_frozen_holding_the_lease(&env);

    // Run B, the same command as A (a timer firing again, a manual run).
    let out = env.daeda(&["materialize", "--online", "--service", "user_features", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["runs"], serde_json::json!([]), "{b}");
    let error = b["failed"][0]["error"].as_str().unwrap();
    assert!(error.contains(&format!("another run ({holder}) is materializing `user_features`")), "{b}");
    // `--all` while A runs: the other services are refreshed, user_features is refused.
    let out = env.daeda(&["materialize", "--online", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let done: Vec<&str> = all["runs"].as_array().unwrap().iter().map(|r| r["service"].as_str().unwrap()).collect();
    assert_eq!(done, ["item_features", "user_item_reranker"], "{all}");
    assert_eq!(all["failed"][0]["service"], "user_features", "{all}");
    // The refused runs left A's lease alone and wrote nothing of user_features.
    let lease: Option<String> = env.redis.read(redis::cmd("GET").arg(LEASE));
    assert_eq!(lease.as_deref(), Some(holder.as_str()));
    assert_eq!(env.redis.current("user_features"), None);

    // A goes on and finishes as if alone.
    let out = output_timeout(a.thaw(), DAEDA_LIMIT, "the run holding the lease");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &a["runs"][0];
    assert_eq!(run["run_id"], holder.as_str(), "{a}");
    let generation = run["generation"].as_str().unwrap();
    assert_eq!(env.redis.current("user_features").as_deref(), Some(generation));
    let entities = run["entities"].as_u64().unwrap();
    assert_eq!(env.redis.count(&format!("daeda:row:user_features:{generation}:*")) as u64, entities);
    assert_eq!(env.redis.count("daeda:row:user_features:*") as u64, entities, "no rows outside the live generation");
    let gens: Vec<String> = env.redis.read(redis::cmd("SMEMBERS").arg("daeda:{svc:user_features}:gens"));
    assert_eq!(gens, [generation]);
    let pttl: i64 = env.redis.read(redis::cmd("PTTL").arg(LEASE));
    assert_eq!(pttl, -2, "the lease is released");
    let check = env.json(&["skew", "check", "--service", "user_features", "--all", "--json"]);
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(check["entities_compared"].as_u64(), Some(entities));

    // The MetadataStore has both: A succeeded, B skipped with the reason (and
    // no attempt added: the lease working is not the service failing).
    let runs = env.json(&["runs", "list", "--json"]);
    let record = |id: &str| runs.as_array().unwrap().iter().find(|r| r["run_id"] == id).cloned();
    assert_eq!(record(&holder).unwrap()["status"], "succeeded");
    let refused: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "user_features" && r["status"] == "skipped")
        .collect();
    assert_eq!(refused.len(), 2, "{runs}");
    assert!(runs.as_array().unwrap().iter().all(|r| r["status"] != "failed"), "{runs}");
    for r in refused {
        assert!(r["error"].as_str().unwrap().contains("is materializing `user_features`"), "{r}");
        assert_eq!(r["generation"], Value::Null, "{r}");
    }
}

/// Replaces the recipes' example paths with this test's, and checks none is left.
fn localize(text: &str, env: &TestEnv, bin_dir: &Path) -> String {
    let ext = std::env::var("DAEDA_DUCKDB_EXTENSION_DIR").expect("DAEDA_DUCKDB_EXTENSION_DIR (source scripts/env.sh)");
    let out = text
        .replace("/usr/local/bin/daeda", &bin_dir.join("daeda").display().to_string())
        .replace("/usr/local/bin", &bin_dir.display().to_string())
        .replace("/var/lib/daeda/duckdb-extensions", &ext)
        .replace("/srv/daeda", &env.dir.path().display().to_string());
    for line in out.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(!line.contains("/srv/") && !line.contains("/var/lib/daeda"), "a path the test does not map: {line}");
    }
    out
}

/// A deployment folder as the recipes assume: daeda.toml, the catalog and the
/// run root in one directory, and `daeda` in a bin directory.
fn deployment(env: &TestEnv) -> PathBuf {
    std::fs::write(
        env.dir.path().join("daeda.toml"),
        format!("redis_url = \"{}\"\ncatalog = \"feature_services\"\nrun_root = \".daeda\"\n", env.redis.url()),
    )
    .unwrap();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_daeda"), bin.join("daeda")).unwrap();
    bin
}

fn run_shell(env: &TestEnv, vars: &[(String, String)], cwd: &Path, line: &str) -> std::process::Output {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(line).current_dir(cwd).env_clear().env("HOME", env.dir.path()).stdin(Stdio::null());
    for (k, v) in vars {
        c.env(k, v);
    }
    output(&mut c)
}

#[test]
fn the_cron_line_runs_as_cron_runs_it_silent_on_success_and_mailing_the_summary_on_failure() {
    let env = TestEnv::new(500);
    let bin = deployment(&env);
    let crontab = localize(&std::fs::read_to_string(repo().join("examples/cron/daeda.crontab")).unwrap(), &env, &bin);
    let mut vars = Vec::new();
    let mut jobs = Vec::new();
    for line in crontab.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let first = line.split_whitespace().next().unwrap();
        match first.split_once('=') {
            Some((k, v)) if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                vars.push((k.to_string(), v.to_string()))
            }
            _ => jobs.push(line.to_string()),
        }
    }
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let fields: Vec<&str> = jobs[0].splitn(6, char::is_whitespace).collect();
    for f in &fields[..5] {
        assert!(!f.is_empty() && f.chars().all(|c| c.is_ascii_digit() || "*,-/".contains(c)), "time field {f:?}");
    }
    let command = fields[5].trim();
    // cron turns an unescaped % into a newline.
    assert!(!command.contains('%'), "{command}");
    // A stalled run must not hold the schedule forever.
    assert!(command.contains("timeout -k 60 2h daeda materialize"), "{command}");
    assert!(
        vars.iter().any(|(k, _)| k == "SHELL")
            && vars.iter().any(|(k, v)| k == "PATH" && v.contains(bin.to_str().unwrap()))
    );

    let out = run_shell(&env, &vars, Path::new("/"), command);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "a run that succeeds mails nothing: {out:?}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(env.dir.path().join("materialize.json")).unwrap()).unwrap();
    assert_eq!(summary["runs"].as_array().unwrap().len(), 3, "{summary}");
    assert_eq!(summary["skipped_not_allowed"], serde_json::json!(["pii_features"]));
    assert!(env.dir.path().join(".daeda/metadata.sqlite").is_file(), "the run root is the deployment's");

    // Overlapping a run that holds user_features: exit 1, and cron mails the summary.
    let _: () =
        redis::cmd("SET").arg(LEASE).arg("other-run").arg("PX").arg(60_000).query(&mut env.redis.conn()).unwrap();
    let out = run_shell(&env, &vars, Path::new("/"), command);
    assert_eq!(out.status.code(), Some(0), "`|| cat` succeeds: cron mails on output, not on status");
    let mailed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        mailed["failed"][0]["error"].as_str().unwrap().contains("another run (other-run) is materializing"),
        "{mailed}"
    );
    assert_eq!(mailed["runs"].as_array().unwrap().len(), 2, "{mailed}");
}

/// `KEY=value` settings of a unit's section, in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

#[test]
fn the_systemd_units_verify_and_the_service_runs_its_exec_start_as_systemd_would() {
    let env = TestEnv::new(500);
    let bin = deployment(&env);
    let units = env.dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let mut service = String::new();
    for name in ["daeda-materialize.service", "daeda-materialize.timer"] {
        let text = localize(&std::fs::read_to_string(repo().join("examples/systemd").join(name)).unwrap(), &env, &bin);
        std::fs::write(units.join(name), &text).unwrap();
        if name.ends_with(".service") {
            service = text;
        }
    }

    // systemd's own checker, where the machine has it (it needs no running
    // systemd): unknown keys, bad values, an ExecStart that is not executable.
    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = output(
            Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(units.join("daeda-materialize.service"))
                .arg(units.join("daeda-materialize.timer")),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
        let out = output(Command::new("systemd-analyze").args(["calendar", "*-*-* *:17:00"]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("systemd-analyze is not installed: the units' syntax is not verified, their ExecStart is");
    }

    // ExecStart, with the unit's WorkingDirectory and Environment, and nothing
    // else of this test's environment.
    let settings = unit_settings(&service);
    let get = |k: &str| settings.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("Type").as_deref(), Some("oneshot"));
    let cwd = PathBuf::from(get("WorkingDirectory").unwrap());
    let exec = get("ExecStart").unwrap();
    assert!(
        !exec.contains(['"', '\'', '$', '%', '\\']),
        "plain words only, so splitting on spaces is systemd's splitting: {exec}"
    );
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).current_dir(&cwd).env_clear().env("HOME", env.dir.path()).stdin(Stdio::null());
    for (_, v) in settings.iter().filter(|(k, _)| k == "Environment") {
        let (name, value) = v.split_once('=').unwrap();
        cmd.env(name, value);
    }
    let out = output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["runs"].as_array().unwrap().len(), 3, "{summary}");
    assert!(
        summary["runs"].as_array().unwrap().iter().any(|r| r["source_snapshot"]["kind"] == "ducklake"),
        "the DuckLake source read"
    );
    assert!(cwd.join(".daeda/metadata.sqlite").is_file());
}
