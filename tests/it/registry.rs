//! The Version Protocol end to end with the real binary: `registry lock`,
//! `check` and `diff` (against the working lock and against git refs in a
//! throwaway repository), materialize refusing a definition that drifted from
//! the lock, `lineage`, `services show` after real runs, and the gateway's
//! `locked_version`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::http::{self, bearer, mint, send};
use crate::support::{output, TestEnv};

/// A copy of the example definitions (no data, no Redis): enough for the
/// registry commands, which never read the sources.
struct Cat {
    dir: tempfile::TempDir,
}

impl Cat {
    fn new() -> Cat {
        let dir = tempfile::tempdir().unwrap();
        let cat = Cat { dir };
        std::fs::create_dir_all(cat.catalog()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services");
        for e in std::fs::read_dir(repo).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&p, cat.catalog().join(p.file_name().unwrap())).unwrap();
            }
        }
        cat
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("feature_services")
    }

    fn lock_path(&self) -> PathBuf {
        self.catalog().join("registry.lock.json")
    }

    fn edit(&self, service: &str, from: &str, to: &str) {
        let p = self.catalog().join(format!("{service}.yaml"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", p.display());
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_daeda"));
        c.args(args)
            .env("DAEDA_CATALOG", self.catalog())
            .env("DAEDA_RUN_ROOT", self.dir.path().join("runs"))
            .env("DAEDA_REDIS_URL", "redis://127.0.0.1:1/0")
            .env_remove("DAEDA_CONFIG")
            .current_dir(self.dir.path());
        output(&mut c)
    }

    /// Runs daeda expecting `code`; returns stdout and stderr.
    fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (o, e) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(out.status.code(), Some(code), "daeda {args:?}\nstdout: {o}\nstderr: {e}");
        (o, e)
    }

    fn git(&self, args: &[&str]) {
        let out = output(
            Command::new("git")
                .arg("-C")
                .arg(self.dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
                .args(args),
        );
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_shipped_example_catalog_matches_its_lock() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services");
    let cat = Cat::new();
    let (out, _) = cat.expect(0, &["--catalog", repo.to_str().unwrap(), "registry", "check"]);
    assert!(out.contains("4 services match registry.lock.json"), "{out}");
}

#[test]
fn check_without_a_lock_is_a_usage_error_and_lock_writes_stable_bytes() {
    let cat = Cat::new();
    let (_, err) = cat.expect(2, &["registry", "check"]);
    assert!(err.contains("no registry.lock.json") && err.contains("daeda registry lock"), "{err}");
    cat.expect(0, &["registry", "lock"]);
    let first = std::fs::read(cat.lock_path()).unwrap();
    let (out, _) = cat.expect(0, &["registry", "lock"]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(std::fs::read(cat.lock_path()).unwrap(), first, "the same catalog locks to the same bytes");
    // The lock is the shipped one: same definitions, same file.
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services/registry.lock.json")).unwrap();
    assert_eq!(first, shipped);
    cat.expect(0, &["registry", "check"]);
}

/// lock -> change -> check fails -> (bump) -> lock -> check passes, for each class.
#[test]
fn every_change_class_goes_through_lock_change_check_lock() {
    let cat = Cat::new();
    cat.expect(0, &["registry", "lock"]);

    // Breaking without a bump: check names service, change and the version needed; lock refuses.
    cat.edit("user_features", "  - {name: age_bucket,     type: INTEGER}\n", "");
    let (out, err) = cat.expect(1, &["registry", "check"]);
    assert!(out.contains("user_features: breaking: column `age_bucket` removed"), "{out}");
    assert!(
        err.contains(
            "user_features: breaking change (column `age_bucket` removed) without a version bump: needs a version above 2026-06-27"
        ),
        "{err}"
    );
    let (_, err) = cat.expect(1, &["registry", "lock"]);
    assert!(err.contains("needs a version above 2026-06-27") && err.contains("not written"), "{err}");
    let (json, _) = cat.expect(1, &["registry", "check", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["lock"]["changes"][0],
        serde_json::json!({"service": "user_features", "class": "breaking", "change": "column `age_bucket` removed"})
    );
    // Bumped but not locked: still failing, and says to lock.
    cat.edit("user_features", "version: 2026-06-27", "version: 2026-06-27.1");
    let (_, err) = cat.expect(1, &["registry", "check"]);
    assert!(err.contains("does not match the definitions: run `daeda registry lock`"), "{err}");
    cat.expect(0, &["registry", "lock"]);
    cat.expect(0, &["registry", "check"]);

    // Breaking: array length and nullable -> not nullable.
    cat.edit("user_features", r#"type: "FLOAT[64]""#, r#"type: "FLOAT[128]""#);
    cat.edit(
        "user_features",
        "{name: country,        type: VARCHAR}",
        "{name: country, type: VARCHAR, nullable: false}",
    );
    let (out, _) = cat.expect(1, &["registry", "check"]);
    assert!(out.contains("breaking: column `embedding` type FLOAT[64] -> FLOAT[128]"), "{out}");
    assert!(out.contains("breaking: column `country` nullable -> not nullable"), "{out}");
    cat.edit("user_features", "version: 2026-06-27.1", "version: 2026-07-02");
    cat.expect(0, &["registry", "lock"]);
    cat.expect(0, &["registry", "check"]);

    // Additive: a new nullable column, ttl, serving not allowed -> allowed.
    cat.edit(
        "pii_features",
        "  - {name: email,    type: VARCHAR}\n",
        "  - {name: email,    type: VARCHAR}\n  - {name: phone, type: VARCHAR}\n",
    );
    cat.edit("pii_features", "serving:\n  allowed: false", "serving:\n  allowed: true\n  ttl: 1d");
    let (out, err) = cat.expect(1, &["registry", "check"]);
    assert!(out.contains("pii_features: additive: new nullable column `phone` VARCHAR"), "{out}");
    assert!(out.contains("pii_features: additive: serving not allowed -> allowed"), "{out}");
    assert!(out.contains("pii_features: additive: ttl none -> 86400s"), "{out}");
    assert!(
        err.contains("pii_features: additive changes (") && err.contains("needs a version above 2026-05-02"),
        "{err}"
    );
    cat.edit("pii_features", "version: 2026-05-02", "version: 2026-05-02.1");
    cat.expect(0, &["registry", "lock"]);
    cat.expect(0, &["registry", "check"]);
    // ... and back: removing the column and denying serving are breaking.
    cat.edit("pii_features", "  - {name: phone, type: VARCHAR}\n", "");
    cat.edit("pii_features", "allowed: true", "allowed: false");
    let (out, _) = cat.expect(1, &["registry", "check"]);
    assert!(out.contains("pii_features: breaking: column `phone` removed"), "{out}");
    assert!(out.contains("pii_features: breaking: serving allowed -> not allowed"), "{out}");
    cat.expect(1, &["registry", "lock"]);
    cat.edit("pii_features", "version: 2026-05-02.1", "version: 2026-05-02.2");
    cat.expect(0, &["registry", "lock"]);

    // Metadata: no bump needed, only a new lock.
    cat.edit("item_features", "owner: catalog-team", "owner: merch-team");
    cat.edit("item_features", r#"ref: "item_prices:price""#, r#"ref: "item_prices_v2:price""#);
    let (out, err) = cat.expect(1, &["registry", "check"]);
    assert!(out.contains("item_features: metadata: owner `catalog-team` -> `merch-team`"), "{out}");
    assert!(
        out.contains("item_features: metadata: column `price` ref `item_prices:price` -> `item_prices_v2:price`"),
        "{out}"
    );
    assert!(err.contains("run `daeda registry lock`") && !err.contains("needs a version"), "{err}");
    cat.expect(0, &["registry", "lock"]);
    cat.expect(0, &["registry", "check"]);

    // A bump alone, and a service removed.
    cat.edit("item_features", "version: 2026-06-20.2", "version: 2026-06-21");
    let (_, err) = cat.expect(1, &["registry", "check"]);
    assert!(err.contains("versions bumped without a lock update: item_features (2026-06-20.2 -> 2026-06-21)"), "{err}");
    cat.expect(0, &["registry", "lock"]);
    std::fs::remove_file(cat.catalog().join("pii_features.yaml")).unwrap();
    let (out, _) = cat.expect(1, &["registry", "check"]);
    assert!(out.contains("pii_features: breaking: service removed"), "{out}");
    // A version going down is refused.
    cat.expect(0, &["registry", "lock"]);
    cat.edit("item_features", "version: 2026-06-21", "version: 2026-06-01");
    let (_, err) = cat.expect(1, &["registry", "lock"]);
    assert!(err.contains("lower than the locked 2026-06-21"), "{err}");
}

#[test]
fn equivalent_spellings_give_no_diff() {
    let cat = Cat::new();
    cat.expect(0, &["registry", "lock"]);
    cat.edit("item_features", r#"type: "FLOAT[]", shape: {dimension: 32}"#, r#"type: "float[32]""#);
    cat.edit("item_features", "ttl: 30d", "ttl: 720h");
    cat.edit("item_features", "tags: [retrieval, items]", "tags: [items, retrieval]");
    cat.edit("user_features", "{name: ctr_30d,        type: DOUBLE}", "{name: ctr_30d, type: float8}");
    let (out, _) = cat.expect(0, &["registry", "diff"]);
    assert_eq!(out.trim(), "no changes against registry.lock.json");
    cat.expect(0, &["registry", "check"]);
    let (out, _) = cat.expect(0, &["registry", "lock"]);
    assert!(out.contains("up to date"), "{out}");
}

#[test]
fn diff_and_check_against_a_git_ref() {
    let cat = Cat::new();
    cat.git(&["init", "-q"]);
    // Before the Version Protocol: a ref without a lock counts every service as new.
    cat.git(&["add", "."]);
    cat.git(&["commit", "-qm", "definitions"]);
    cat.expect(0, &["registry", "lock"]);
    let (json, err) = cat.expect(0, &["registry", "diff", "--against", "HEAD", "--json"]);
    assert!(err.contains("HEAD has no registry.lock.json"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["changes"].as_array().unwrap().len(), 4);
    assert!(v["changes"].as_array().unwrap().iter().all(|c| c["class"] == "additive" && c["change"] == "new service"));
    cat.git(&["add", "."]);
    cat.git(&["commit", "-qm", "lock"]);

    // A reviewed change: type changed, bumped, locked.
    cat.edit("user_item_reranker", "{name: price_ratio,     type: FLOAT,", "{name: price_ratio, type: DOUBLE,");
    cat.edit("user_item_reranker", "version: 2026-07-01", "version: 2026-07-02");
    cat.expect(0, &["registry", "lock"]);
    let (json, _) = cat.expect(0, &["registry", "diff", "--against", "HEAD", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["against"], "HEAD:registry.lock.json");
    assert_eq!(
        v["changes"],
        serde_json::json!([{"service": "user_item_reranker", "class": "breaking", "change": "column `price_ratio` type FLOAT -> DOUBLE"}])
    );
    assert_eq!(
        v["version_changes"],
        serde_json::json!([{"service": "user_item_reranker", "locked": "2026-07-01", "current": "2026-07-02"}])
    );
    // Against the working lock there is nothing left to say.
    let (out, _) = cat.expect(0, &["registry", "diff"]);
    assert_eq!(out.trim(), "no changes against registry.lock.json");
    let (out, _) = cat.expect(0, &["registry", "check", "--against", "HEAD"]);
    assert!(out.contains("version rules hold against HEAD"), "{out}");
    cat.git(&["commit", "-qam", "reranker price_ratio is DOUBLE"]);

    // The hole --against closes: a lock regenerated from scratch hides a change
    // without a bump from the working check, not from the base branch's lock.
    cat.edit("user_item_reranker", "  - {name: user_item_ctr,   type: DOUBLE}\n", "");
    std::fs::remove_file(cat.lock_path()).unwrap();
    cat.expect(0, &["registry", "lock"]);
    cat.expect(0, &["registry", "check"]);
    let (out, err) = cat.expect(1, &["registry", "check", "--against", "HEAD"]);
    assert!(out.contains("against HEAD:"), "{out}");
    assert!(
        err.contains(
            "user_item_reranker: breaking change (column `user_item_ctr` removed) without a version bump: needs a version above 2026-07-02"
        ),
        "{err}"
    );
    // Against the commit before the reviewed bump, that bump covers the removal too.
    cat.expect(0, &["registry", "check", "--against", "HEAD~1"]);
    let (out, _) = cat.expect(0, &["registry", "diff", "--against", "HEAD"]);
    assert!(out.contains("user_item_reranker: breaking: column `user_item_ctr` removed"), "{out}");
    assert!(out.contains("without a version bump: needs a version above 2026-07-02"), "{out}");

    // A ref that does not exist is a usage error.
    let (_, err) = cat.expect(2, &["registry", "diff", "--against", "no-such-branch"]);
    assert!(err.contains("`no-such-branch` is not a commit"), "{err}");
}

#[test]
fn lineage_as_text_json_and_dot() {
    let cat = Cat::new();
    let (text, _) = cat.expect(0, &["lineage"]);
    assert!(text.contains("user_features 2026-06-27 <- parquet ../data/user_features/*/*.parquet"), "{text}");
    assert!(text.contains("ctr_7d         <- source.ctr_7d <- user_engagement_daily:ctr"), "{text}");
    assert!(text.contains("item_prices -> item_features, user_item_reranker (shared)"), "{text}");
    assert!(
        text.contains(
            "user_item_reranker 2026-07-01 <- duckdb ../data/user_item_reranker/reranker.duckdb#reranker_features"
        ),
        "{text}"
    );

    let (json, _) = cat.expect(0, &["lineage", "user_item_reranker", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
    let cols = v["services"][0]["columns"].as_array().unwrap();
    let price = cols.iter().find(|c| c["column"] == "price_ratio").unwrap();
    assert_eq!(price["upstream"], serde_json::json!({"view": "item_prices", "column": "ratio_to_median"}));
    assert_eq!(cols.iter().find(|c| c["column"] == "item_id").unwrap()["role"], "join_key");
    // Its view, and every service that shares it.
    assert_eq!(
        v["views"],
        serde_json::json!([{"view": "item_prices", "feeds": [
        {"view_column": "price", "service": "item_features", "column": "price"},
        {"view_column": "ratio_to_median", "service": "user_item_reranker", "column": "price_ratio"}],
        "services": ["item_features", "user_item_reranker"]}])
    );

    let (dot, _) = cat.expect(0, &["lineage", "--dot"]);
    assert!(dot.starts_with("digraph lineage {") && dot.trim_end().ends_with('}'), "{dot}");
    assert!(dot.contains(r#""view:item_prices:ratio_to_median" -> "user_item_reranker.price_ratio";"#), "{dot}");
    assert!(dot.contains(r#""source:user_features" -> "user_features.embedding";"#), "{dot}");
    // Graphviz accepts it, when installed.
    if let Ok(mut child) =
        Command::new("dot").arg("-Tsvg").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn()
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }

    let (_, err) = cat.expect(2, &["lineage", "nope"]);
    assert!(err.contains("unknown feature service `nope`"), "{err}");
}

/// Materialize refuses a drifted definition (named: exit 2; --all: that one
/// fails, the rest run), the override runs it and notes it in the run record,
/// `services show` reports all of it from Redis and the MetadataStore, and
/// the gateway lists the locked versions.
#[tokio::test(flavor = "multi_thread")]
async fn materialize_refuses_a_drifted_service_and_show_reports_it() {
    let env = TestEnv::new(300);
    // No lock: nothing to refuse, and the gateway lists null.
    let gw = http::start(&env, http::config(&env)).await;
    let star = bearer(&mint(&["*"], &[daeda_gateway::Plane::Online]));
    let r = send(gw.addr, "GET", "/v1/services", &[("authorization", &star)], "").await;
    assert!(r.json()["services"].as_array().unwrap().iter().all(|s| s["locked_version"].is_null()), "{}", r.json());
    gw.stop().await;

    env.expect(0, &["registry", "lock"]);
    env.materialize(&["--service", "user_features"]);
    env.expect(0, &["skew", "check", "--service", "user_features", "--all", "--json"]);

    // Drift: the owner changed and the lock was not rewritten.
    env.edit("user_features", "owner: ranking-team", "owner: growth-team");
    let (_, err) =
        env.expect(2, &["materialize", "--online", "--service", "user_features", "--as-of", "2026-06-28T12:00:00Z"]);
    assert!(
        err.contains("user_features: definition does not match registry.lock.json: metadata: owner `ranking-team` -> `growth-team`"),
        "{err}"
    );
    assert!(err.contains("--allow-unlocked"), "{err}");

    let (out, _) = env.expect(1, &["materialize", "--online", "--all", "--json", "--as-of", "2026-06-28T12:00:00Z"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["failed"][0]["service"], "user_features");
    assert!(v["failed"][0]["error"]
        .as_str()
        .unwrap()
        .starts_with("not started: user_features: definition does not match"));
    let ran: Vec<&str> = v["runs"].as_array().unwrap().iter().map(|r| r["service"].as_str().unwrap()).collect();
    assert_eq!(ran, ["item_features", "user_item_reranker"]);

    let summary = env.materialize(&["--service", "user_features", "--allow-unlocked"]);
    let run_id = summary["runs"][0]["run_id"].as_str().unwrap().to_string();
    let records = env.json(&["runs", "show", &run_id, "--json"]);
    let last = records.as_array().unwrap().last().unwrap();
    assert_eq!(last["status"], "succeeded");
    let note = last["details"]["notes"][0].as_str().unwrap();
    assert!(
        note.starts_with("run with --allow-unlocked: definition does not match registry.lock.json: metadata: owner"),
        "{note}"
    );
    assert_eq!(
        last["details"]["entities"], summary["runs"][0]["entities"],
        "the run's own details are kept beside the note"
    );

    // services show: definition, drift, live generation, runs and skew checks.
    let show = env.json(&["services", "show", "user_features", "--json"]);
    assert_eq!(show["definition"]["owner"], "growth-team");
    assert_eq!(show["lock"]["locked_version"], "2026-06-27");
    assert_eq!(show["lock"]["status"], "drift");
    let generation = env.redis.current("user_features").unwrap();
    assert_eq!(show["live"]["generation"], generation.as_str());
    assert_eq!(show["live"]["row_count"], summary["runs"][0]["entities"]);
    assert_eq!(show["live"]["as_of"], env.redis.meta("user_features", &generation, "as_of").unwrap().as_str());
    assert_eq!(show["live"]["fingerprint_matches"], true);
    assert!(show["live"]["materialized_at"].as_str().unwrap().starts_with("20"));
    let runs = show["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{show}");
    assert_eq!(runs[0]["run_id"], run_id.as_str(), "newest first");
    assert!(runs[0]["notes"][0].as_str().unwrap().contains("--allow-unlocked"));
    assert_eq!(runs[1]["notes"], serde_json::Value::Null);
    let skews = show["skew_checks"].as_array().unwrap();
    assert_eq!(skews.len(), 1);
    assert_eq!((skews[0]["status"].as_str(), skews[0]["passed"].as_bool()), (Some("passed"), Some(true)));
    let (text, _) = env.expect(0, &["services", "show", "user_features"]);
    assert!(text.contains("lock: 2026-06-27 (drift: metadata: owner `ranking-team` -> `growth-team`)"), "{text}");
    assert!(text.contains(&format!("live: generation {generation} (version 2026-06-27)")), "{text}");
    assert!(text.contains(&run_id), "{text}");

    // Locked again: it matches, and the gateway reports each locked version.
    env.expect(0, &["registry", "lock"]);
    let show = env.json(&["services", "show", "user_features", "--json"]);
    assert_eq!(show["lock"]["status"], "matches");
    let gw = http::start(&env, http::config(&env)).await;
    let r = send(gw.addr, "GET", "/v1/services", &[("authorization", &star)], "").await;
    let locked: Vec<(String, String)> = r.json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["locked_version"].as_str().unwrap_or("null").to_string()))
        .collect();
    assert_eq!(
        locked,
        [
            ("item_features".into(), "2026-06-20.2".into()),
            ("user_features".into(), "2026-06-27".into()),
            ("user_item_reranker".into(), "2026-07-01".into())
        ]
    );
    gw.stop().await;
}

#[test]
fn a_malformed_lock_stops_loading_the_catalog_and_registry_lock_replaces_it() {
    let cat = Cat::new();
    std::fs::write(cat.lock_path(), "{\"lock_format\": 1, \"services\": {}, \"hash\": \"x\"}").unwrap();
    let (_, err) = cat.expect(2, &["validate"]);
    assert!(err.contains("registry.lock.json is not a valid registry lock") && err.contains("hash"), "{err}");
    let (_, err) = cat.expect(0, &["registry", "lock"]);
    assert!(err.contains("warning: replacing it"), "{err}");
    cat.expect(0, &["validate"]);
    cat.expect(0, &["registry", "check"]);
}
