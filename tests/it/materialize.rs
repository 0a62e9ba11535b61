//! `daeda materialize --online` end to end: every source kind, the generation
//! flip, and every way a run can fail without losing the live generation.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{output, output_timeout, poll, signal, TestEnv, DAEDA_LIMIT, FIXED_AS_OF};

fn get(env: &TestEnv, service: &str, entities: &str) -> Value {
    env.json(&["online", "get", "--service", service, "--entities", entities, "--include-stale"])
}

fn rows(env: &TestEnv, service: &str, generation: &str) -> usize {
    env.redis.count(&format!("daeda:row:{service}:{generation}:*"))
}

#[test]
fn all_three_source_kinds_serve_the_latest_row_per_entity() {
    let env = TestEnv::new(2000);
    let out = env.materialize(&["--all"]);
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{out}");
    assert_eq!(out["skipped_not_allowed"], serde_json::json!(["pii_features"]));

    // Parquet (hive partitions, FLOAT[] list read as FLOAT[64]).
    let db = env.duckdb();
    let glob = env.data().join("user_features/*/*.parquet");
    let (ctr, country, ltv, emb): (f64, Option<String>, String, String) = db
        .query_row(
            &format!(
                "SELECT ctr_7d, country, ltv::VARCHAR, embedding::VARCHAR FROM read_parquet('{}') \
                 WHERE user_id = 7 ORDER BY event_ts DESC LIMIT 1",
                glob.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let body = get(&env, "user_features", r#"{"user_id": [7, 123456789]}"#);
    let cols = &body["columns"];
    assert_eq!(body["status"], serde_json::json!(["stale", "missing"]), "ttl 7d, data from June");
    assert_eq!(cols["ctr_7d"][0].as_f64().unwrap(), ctr);
    assert_eq!(cols["country"][0].as_str().map(String::from), country);
    assert_eq!(cols["ltv"][0].as_str().unwrap(), ltv, "decimals are exact strings");
    let online_emb: Vec<f32> =
        cols["embedding"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let offline_emb: Vec<f32> = emb.trim_matches(['[', ']']).split(", ").map(|v| v.parse().unwrap()).collect();
    assert_eq!(online_emb, offline_emb);
    assert_eq!(cols["embedding"][1], Value::Null);
    let keys: Vec<&str> = cols.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys[..3], ["user_id", "ctr_7d", "ctr_30d"], "declared order");

    // DuckDB file, composite key.
    let (u, i, score, last_view): (i64, i64, f64, String) = db
        .query_row(
            &format!(
                "ATTACH '{}' AS rr (READ_ONLY); SELECT user_id, item_id, prev_score, last_view_date::VARCHAR \
                 FROM rr.reranker_features ORDER BY user_id, item_id LIMIT 1",
                env.data().join("user_item_reranker/reranker.duckdb").display()
            )
            .split_once("; ")
            .map(|(attach, q)| {
                db.execute_batch(attach).unwrap();
                q.to_string()
            })
            .unwrap(),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let body = get(&env, "user_item_reranker", &format!(r#"{{"user_id": [{u}], "item_id": [{i}]}}"#));
    assert_eq!(body["columns"]["prev_score"][0].as_f64().unwrap(), score);
    assert_eq!(body["columns"]["last_view_date"][0], Value::from(last_view));

    // DuckLake: even items were rewritten in the second snapshot, so theirs is newer.
    let body = get(&env, "item_features", r#"{"item_id": [2, 3]}"#);
    let ts = body["event_ts"].as_array().unwrap();
    assert_eq!(ts[0], "2026-06-27T00:00:00.000000Z");
    assert_eq!(ts[1], "2026-06-25T00:00:00.000000Z");
    assert_eq!(body["columns"]["tower"][0].as_array().unwrap().len(), 32);
    let lake = runs.iter().find(|r| r["service"] == "item_features").unwrap();
    assert_eq!(lake["source_snapshot"]["snapshot_id"], 2);
}

#[test]
fn fresh_rows_are_served_ok_with_values_and_the_ttl_boundary_is_the_ttl() {
    // Data dated by the real clock: yesterday's rows are within the 7-day ttl.
    // Two more users sit on either side of the boundary, half an hour in.
    let env = TestEnv::fresh(300);
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let (inside, outside) = (
        at(now - chrono::Duration::days(7) + chrono::Duration::minutes(30)),
        at(now - chrono::Duration::days(7) - chrono::Duration::minutes(30)),
    );
    let edge = env.data().join("user_features/ds=edge/edge.parquet");
    std::fs::create_dir_all(edge.parent().unwrap()).unwrap();
    env.duckdb()
        .execute_batch(&format!(
            "COPY (SELECT * EXCLUDE (ds) REPLACE (u AS user_id, t::TIMESTAMP AS event_ts)
                   FROM read_parquet('{}', hive_partitioning = true),
                        (VALUES (1000001, '{inside}'), (1000002, '{outside}')) v(u, t)
                   WHERE user_id = 1 QUALIFY row_number() OVER (PARTITION BY u ORDER BY event_ts DESC) = 1)
             TO '{}' (FORMAT parquet)",
            env.data().join("user_features/*/*.parquet").display(),
            edge.display()
        ))
        .unwrap();
    env.materialize(&["--service", "user_features"]);

    let ctr: f64 = env
        .duckdb()
        .query_row(
            &format!(
                "SELECT ctr_7d FROM read_parquet('{}') WHERE user_id = 1 ORDER BY event_ts DESC LIMIT 1",
                env.data().join("user_features/ds=2*/*.parquet").display()
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let body = env.json(&[
        "online",
        "get",
        "--service",
        "user_features",
        "--entities",
        r#"{"user_id": [1, 1000001, 1000002, 999999999]}"#,
    ]);
    assert_eq!(body["status"], serde_json::json!(["ok", "ok", "stale", "missing"]), "{body}");
    let cols = &body["columns"];
    assert_eq!(cols["ctr_7d"][0].as_f64(), Some(ctr), "an ok row carries its values: {body}");
    assert_eq!(cols["ctr_7d"][1].as_f64(), Some(ctr), "just inside the ttl: {body}");
    assert_eq!(cols["embedding"][1].as_array().map(Vec::len), Some(64));
    assert_eq!(cols["ctr_7d"][2], Value::Null, "just outside the ttl, values are withheld: {body}");
    assert_eq!(cols["embedding"][2], Value::Null);
    assert!(body["event_ts"][2].as_str().unwrap().starts_with(&outside[..10]), "{body}");
    let body = env.json(&[
        "online",
        "get",
        "--service",
        "user_features",
        "--entities",
        r#"{"user_id": [1000002]}"#,
        "--include-stale",
    ]);
    assert_eq!(body["columns"]["ctr_7d"][0].as_f64(), Some(ctr), "asked for, a stale row's values are returned");

    // The skew check counts the one stale row without calling it skew.
    let report = env.json(&["skew", "check", "--service", "user_features", "--all", "--json"]);
    assert_eq!((report["stale"].as_u64(), report["passed"].as_bool()), (Some(1), Some(true)), "{report}");
}

#[test]
fn null_join_keys_are_skipped_and_counted_never_written() {
    let env = TestEnv::new(2000);
    let out = env.materialize(&["--service", "user_features"]);
    let run = &out["runs"][0];
    // Users 996 and 1993 have a NULL user_id in their older row.
    assert_eq!(run["skipped_null_keys"], 2);
    assert_eq!(run["rows_read"], 4000);
    assert_eq!(run["entities"], 2000);
    assert_eq!(run["join_key_null_rates"]["user_id"], 0.0005);
    assert_eq!(rows(&env, "user_features", "1"), 2000);
    assert_eq!(env.redis.count("daeda:row:user_features:1:null*"), 0);
    assert_eq!(env.redis.count("daeda:row:user_features:1:"), 0);
}

#[test]
fn a_full_run_flips_to_a_new_generation_and_retires_the_old_one() {
    let env = TestEnv::new(1000);
    env.materialize(&["--service", "user_features"]);
    let before = env.redis.dbsize();
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "2");
    assert_eq!(out["runs"][0]["previous_generation"], "1");
    assert_eq!(env.redis.current("user_features").as_deref(), Some("2"));
    assert_eq!(rows(&env, "user_features", "1"), 0, "old rows are unlinked");
    assert_eq!(env.redis.meta("user_features", "1", "row_count"), None);
    assert_eq!(env.redis.dbsize(), before);
    // Generation metadata is readable from Redis.
    assert_eq!(env.redis.meta("user_features", "2", "row_count").as_deref(), Some("1000"));
    assert_eq!(env.redis.meta("user_features", "2", "version").as_deref(), Some("2026-06-27"));
    assert_eq!(env.redis.meta("user_features", "2", "as_of").as_deref(), Some("2026-06-28T12:00:00.000000Z"));
    assert!(env.redis.meta("user_features", "2", "source_snapshot").unwrap().contains("ds=2026-06-27"));
}

/// Redis lost its data (and the generation counter with it): the next run
/// numbers its generation above the highest its run history recorded, so no
/// generation id is ever issued twice by one materializer (a gateway that
/// cached generation 2 can never mistake a new generation 2 for it).
#[test]
fn generation_ids_are_not_issued_again_after_redis_lost_its_data() {
    let env = TestEnv::new(100);
    env.materialize(&["--service", "user_features"]);
    env.materialize(&["--service", "user_features"]);
    assert_eq!(env.redis.current("user_features").as_deref(), Some("2"));
    let _: () = redis::cmd("FLUSHALL").query(&mut env.redis.conn()).unwrap();
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "3", "{out}");
    assert_eq!(env.redis.meta("user_features", "3", "row_count").as_deref(), Some("100"));
    // The counter moved past the floor: the run after counts on from there.
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "4", "{out}");
}

#[test]
fn as_of_bounds_event_time() {
    let env = TestEnv::new(500);
    // Only the older row (day -2, 2026-06-26 + jitter < 1h) is visible.
    env.materialize(&["--service", "user_features", "--as-of", "2026-06-26T23:00:00Z"]);
    let body = get(&env, "user_features", r#"{"user_id": [1]}"#);
    assert!(body["event_ts"][0].as_str().unwrap().starts_with("2026-06-26T00:"), "{body}");
    let out = env.json(&["materialize", "--online", "--json", "--service", "user_features", "--as-of", "2026-06-20"]);
    assert_eq!(out["runs"][0]["entities"], 0);
}

#[test]
fn dry_run_reads_everything_and_writes_nothing() {
    let env = TestEnv::new(500);
    let out = env.materialize(&["--all", "--dry-run"]);
    assert_eq!(out["runs"][0]["dry_run"], true);
    assert!(out["runs"].as_array().unwrap().iter().all(|r| r["entities"].as_u64().unwrap() > 0));
    assert_eq!(env.redis.dbsize(), 0);
}

#[test]
fn schema_drift_stops_the_run_with_a_column_by_column_diff() {
    let env = TestEnv::new(500);
    env.materialize(&["--service", "user_features"]);
    env.edit("user_features", "{name: ctr_30d,        type: DOUBLE}", "{name: ctr_30d, type: FLOAT}");
    env.edit(
        "user_features",
        "{name: age_bucket,     type: INTEGER}",
        "{name: age_bucket, type: INTEGER}\n  - {name: gone, type: DOUBLE}",
    );
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("schema drift in `user_features`: 2 declared column(s)"), "{stderr}");
    assert!(stderr.contains("! ctr_30d: declared FLOAT, source has DOUBLE"), "{stderr}");
    assert!(stderr.contains("- gone: declared DOUBLE, missing from the source"), "{stderr}");
    assert!(stderr.contains("= ctr_7d: DOUBLE"), "{stderr}");
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(rows(&env, "user_features", "1"), 500);
    assert_eq!(env.redis.count("daeda:row:user_features:2:*"), 0, "nothing written for the failed run");
}

#[test]
fn an_array_of_the_wrong_length_fails_before_the_flip() {
    let env = TestEnv::new(500);
    env.materialize(&["--service", "user_features"]);
    env.edit("user_features", r#"type: "FLOAT[64]""#, r#"type: "FLOAT[63]""#);
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("user_features") && stderr.to_lowercase().contains("length"), "{stderr}");
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(rows(&env, "user_features", "1"), 500);
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["status"], "failed");
}

#[test]
fn a_null_in_a_non_nullable_column_fails_the_run() {
    let env = TestEnv::new(300);
    env.edit(
        "user_features",
        "{name: country,        type: VARCHAR}",
        "{name: country, type: VARCHAR, nullable: false}",
    );
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("column `country` is declared nullable: false but is NULL for entity"), "{stderr}");
    assert_eq!(env.redis.current("user_features"), None);
}

#[test]
fn a_source_path_that_matches_no_file_is_a_clear_error() {
    let env = TestEnv::new(100);
    env.edit("user_features", "../data/user_features/*/*.parquet", "../data/nowhere/*.parquet");
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("the source path matches no file:") && stderr.contains("nowhere"), "{stderr}");
}

#[test]
fn redis_unreachable_at_start_is_one_sentence_and_exit_1() {
    let mut env = TestEnv::new(100);
    env.redis.kill();
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("is unavailable"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_second_run_of_the_same_service_is_refused_while_the_lease_is_held() {
    let env = TestEnv::new(100);
    let mut c = env.redis.conn();
    let _: () = redis::cmd("SET")
        .arg("daeda:{svc:user_features}:lease")
        .arg("other-run")
        .arg("PX")
        .arg(60_000)
        .query(&mut c)
        .unwrap();
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("another run (other-run) is materializing `user_features`"), "{stderr}");
    assert_eq!(env.redis.current("user_features"), None);
    // Other services are not affected.
    env.materialize(&["--service", "user_item_reranker"]);
}

#[test]
fn serving_not_allowed_is_never_materialized() {
    let env = TestEnv::new(100);
    let (_, stderr) = env.expect(2, &["materialize", "--online", "--service", "pii_features"]);
    assert!(stderr.contains("not approved for serving"), "{stderr}");
    let (_, stderr) =
        env.expect(2, &["online", "get", "--service", "pii_features", "--entities", r#"{"user_id":[1]}"#]);
    assert!(stderr.contains("not approved for serving"), "{stderr}");
    env.materialize(&["--all"]);
    assert_eq!(env.redis.count("daeda:*pii_features*"), 0);
}

#[test]
fn usage_and_definition_errors_exit_2() {
    // Each with the message that names the mistake: exit 2 alone is also what
    // any mistyped flag gets from the argument parser.
    let env = TestEnv::new(100);
    for (args, message) in [
        (&["materialize", "--online"][..], "name services with --service NAME"),
        (&["materialize", "--service", "user_features"], "say where to materialize: --online"),
        (&["materialize", "--online", "--service", "nope"], "unknown feature service `nope`"),
        (&["materialize", "--online", "--all", "--as-of", "yesterday"], "--as-of `yesterday` is not RFC 3339"),
        (&["materialize", "--online", "--all", "--mode", "sideways"], "invalid value 'sideways' for '--mode"),
        (
            &["online", "get", "--service", "user_features", "--entities", r#"{"user_id":["x"]}"#],
            r#"entities.user_id[0] is "x", expected an integer"#,
        ),
        (
            &["online", "get", "--service", "user_features", "--entities", "[1]"],
            "--entities must be a JSON object of arrays",
        ),
    ] {
        let (_, stderr) = env.expect(2, args);
        assert!(stderr.contains(message), "daeda {args:?}: want {message:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    env.edit("item_features", "kind: ducklake", "kind: ducklak");
    let (_, stderr) = env.expect(2, &["validate"]);
    assert!(stderr.contains("item_features.yaml: source.kind: unknown source kind `ducklak`"), "{stderr}");
}

#[test]
fn a_pinned_ducklake_snapshot_is_what_gets_served() {
    let env = TestEnv::new(100);
    env.edit("item_features", "  table: item_features", "  table: item_features\n  snapshot: 1");
    let out = env.materialize(&["--service", "item_features"]);
    assert_eq!(out["runs"][0]["source_snapshot"]["snapshot_id"], 1);
    assert_eq!(out["runs"][0]["source_snapshot"]["pinned"], true);
    let body = get(&env, "item_features", r#"{"item_id": [2]}"#);
    assert_eq!(body["event_ts"][0], "2026-06-25T00:00:00.000000Z", "the second snapshot is not visible");
}

#[test]
fn runs_are_recorded_in_the_metadata_store() {
    let env = TestEnv::new(200);
    let out = env.materialize(&["--service", "user_features"]);
    let run_id = out["runs"][0]["run_id"].as_str().unwrap();
    let records = env.json(&["runs", "show", run_id, "--json"]);
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "a running record, then the final one");
    assert_eq!(records[0]["status"], "running");
    let last = &records[1];
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["row_count"], 200);
    assert_eq!(last["generation"], "1");
    assert_eq!(last["attempt"], 1);
    assert_eq!(last["mode"], "full");
    assert_eq!(last["version"], "2026-06-27");
    assert_eq!(last["as_of"], "2026-06-28T12:00:00.000000Z");
    assert!(last["event_ts_min"].as_str().unwrap().starts_with("2026-06-26"));
    assert!(last["event_ts_max"].as_str().unwrap().starts_with("2026-06-27"));
    assert_eq!(last["source_snapshot"]["files"].as_array().unwrap().len(), 2);
    assert!(last["source_snapshot"]["files"][0]["size"].as_u64().unwrap() > 0);
    assert!(last["join_key_null_rates"]["user_id"].is_number());
    env.expect(1, &["runs", "show", "no-such-run"]);
}

#[test]
fn redis_killed_mid_run_keeps_the_previous_generation_whole() {
    const USERS: usize = 200_000;
    let mut env = TestEnv::with_redis(USERS as u64, true);
    env.materialize(&["--service", "user_features"]);
    assert_eq!(rows(&env, "user_features", "1"), USERS);

    let before = env.redis.dbsize();
    let mut child =
        env.command(&["materialize", "--online", "--service", "user_features"]).stderr(Stdio::null()).spawn().unwrap();
    let mut c = env.redis.conn();
    // DBSIZE is O(1): poll it, not a SCAN, so the pause lands early in the run.
    poll(Duration::from_secs(120), "the second run never started writing", || {
        (env.redis.dbsize() >= before + 1000).then_some(())
    });
    // Freeze writes where they are (mid-run: rows of generation 2 exist, its
    // metadata does not), then kill Redis under the writer.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(10_000).arg("WRITE").query(&mut c).unwrap();
    assert!(rows(&env, "user_features", "2") < USERS, "the run finished before it could be interrupted");
    env.redis.kill();
    let status =
        crate::support::wait_timeout(&mut child, Duration::from_secs(120), "the materializer after Redis died");
    assert_eq!(status.code(), Some(1));

    env.redis.restart();
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"), "the pointer never moved");
    assert_eq!(rows(&env, "user_features", "1"), USERS, "the live generation is whole");
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["status"], "failed");
    assert!(runs[0]["error"].as_str().unwrap().contains("Redis"), "{}", runs[0]);

    // The live generation's values are readable, directly and through the gateway.
    let offline: (f64, String) = env
        .duckdb()
        .query_row(
            &format!(
                "SELECT ctr_7d, ltv::VARCHAR FROM read_parquet('{}') WHERE user_id = 4242 ORDER BY event_ts DESC LIMIT 1",
                env.data().join("user_features/*/*.parquet").display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let body = get(&env, "user_features", r#"{"user_id": [4242]}"#);
    assert_eq!(
        (body["columns"]["ctr_7d"][0].as_f64(), body["columns"]["ltv"][0].as_str()),
        (Some(offline.0), Some(offline.1.as_str())),
        "{body}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let gw = crate::http::start(&env, crate::http::config(&env)).await;
        let auth = crate::http::bearer(&crate::http::mint(&["user_features"], &[daeda_gateway::Plane::Online]));
        let r = crate::http::send(
            gw.addr,
            "POST",
            "/v1/features/user_features",
            &[("authorization", &auth)],
            r#"{"entities": {"user_id": [4242]}, "include_stale": true}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["generation"], "1");
        assert_eq!(r.json()["columns"]["ctr_7d"][0].as_f64(), Some(offline.0));
        gw.stop().await;
    });

    // The failed run could not clean up (Redis was gone): its lease came back
    // with the AOF and expires on its own; skip the wait.
    let ttl: i64 = redis::cmd("PTTL").arg("daeda:{svc:user_features}:lease").query(&mut env.redis.conn()).unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "PTTL {ttl}");
    let _: () = redis::cmd("DEL").arg("daeda:{svc:user_features}:lease").query(&mut env.redis.conn()).unwrap();
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "3");
    assert_eq!(rows(&env, "user_features", "2"), 0, "the dead run's rows are removed");
    assert_eq!(rows(&env, "user_features", "1"), 0);
    assert_eq!(rows(&env, "user_features", "3"), USERS);
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["attempt"], 2, "the rerun after a failure is attempt 2");
}

#[test]
fn room_is_checked_before_writing_and_eviction_is_warned_about() {
    let env = TestEnv::new(3000);
    env.materialize(&["--service", "user_features"]);
    let mut c = env.redis.conn();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + 100_000).query(&mut c).unwrap();
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features"]);
    assert!(stderr.contains("Redis has no room for a new generation of `user_features`"), "{stderr}");
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(env.redis.count("daeda:row:user_features:2:*"), 0);

    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru").query(&mut c).unwrap();
    let out = env.materialize(&["--service", "user_features"]);
    let warnings = out["runs"][0]["warnings"].to_string();
    assert!(warnings.contains("maxmemory-policy is allkeys-lru"), "{warnings}");
}

#[test]
fn online_gc_removes_services_that_left_the_catalog() {
    let env = TestEnv::new(300);
    env.materialize(&["--all"]);
    std::fs::remove_file(env.yaml("user_item_reranker")).unwrap();
    // Its generation is still live (another catalog may serve it): only by name.
    let (stdout, _) = env.expect(0, &["online", "gc"]);
    assert!(
        stdout.contains(
            "skipped user_item_reranker: not in the catalog but generation 1 is live; pass --force user_item_reranker"
        ),
        "{stdout}"
    );
    assert!(env.redis.count("daeda:row:user_item_reranker:*") > 0);
    let (stdout, _) = env.expect(0, &["online", "gc", "--dry-run", "--force", "user_item_reranker"]);
    assert!(stdout.contains("would remove service user_item_reranker"), "{stdout}");
    assert!(env.redis.count("daeda:row:user_item_reranker:*") > 0);
    let (stdout, _) = env.expect(0, &["online", "gc", "--force", "user_item_reranker"]);
    assert!(stdout.contains("removed service user_item_reranker"), "{stdout}");
    assert_eq!(env.redis.count("daeda:*user_item_reranker*"), 0);
    assert_eq!(rows(&env, "user_features", "1"), 300, "catalog services are untouched");
}

#[test]
fn incremental_runs_write_only_newer_entities_and_never_go_back_in_time() {
    let env = TestEnv::new(1000);
    env.materialize(&["--service", "user_features", "--as-of", "2026-06-27T00:30:00Z"]);
    let wm = env.redis.meta("user_features", "1", "watermark_micros").unwrap();

    // Late, out-of-order data lands in a new file: user 1 gets a newer row, user
    // 2 a row older than the one online, user 5000 is new.
    let db = env.duckdb();
    let src = env.data().join("user_features/*/*.parquet");
    let late = env.data().join("user_features/ds=2026-06-28/late.parquet");
    std::fs::create_dir_all(late.parent().unwrap()).unwrap();
    db.execute_batch(&format!(
        "COPY (
           SELECT * REPLACE (
             CASE user_id WHEN 1 THEN TIMESTAMP '2026-06-28 06:00:00'
                          WHEN 2 THEN TIMESTAMP '2026-06-20 00:00:00'
                          ELSE TIMESTAMP '2026-06-28 07:00:00' END AS event_ts,
             CASE user_id WHEN 5 THEN 5000 ELSE user_id END AS user_id,
             0.999 AS ctr_7d)
           FROM read_parquet('{}') WHERE user_id IN (1, 2, 5) AND ds = '2026-06-27'
         ) TO '{}' (FORMAT parquet)",
        src.display(),
        late.display()
    ))
    .unwrap();

    let out = env.materialize(&["--service", "user_features", "--mode", "incremental"]);
    let run = &out["runs"][0];
    assert_eq!(run["generation"], "1", "incremental runs update the live generation");
    // Entities newer than the watermark: everyone whose day -1 row was past 00:30, plus 1 and 5000.
    let body = get(&env, "user_features", r#"{"user_id": [1, 2, 5000]}"#);
    assert_eq!(body["columns"]["ctr_7d"][0], 0.999);
    assert_eq!(body["event_ts"][0], "2026-06-28T06:00:00.000000Z");
    assert_ne!(body["columns"]["ctr_7d"][1], 0.999, "an older row never replaces a newer one");
    assert_eq!(body["status"][2], "stale", "a new entity is inserted");
    assert_eq!(env.redis.meta("user_features", "1", "row_count").as_deref(), Some("1001"));
    let new_wm = env.redis.meta("user_features", "1", "watermark_micros").unwrap();
    assert!(new_wm.parse::<i64>().unwrap() > wm.parse::<i64>().unwrap());

    // Running it again finds nothing newer.
    let out = env.materialize(&["--service", "user_features", "--mode", "incremental"]);
    assert_eq!(out["runs"][0]["entities"], 0);
}

/// Runs `f` on two threads at once, each with its own runtime and connection
/// pool, as two writer processes would; returns both results.
fn race<T: Send>(url: &str, f: impl Fn(usize, daeda_online::OnlineStore) -> T + Sync) -> [T; 2] {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let run = |who: usize| {
            let (barrier, f) = (&barrier, &f);
            s.spawn(move || {
                let store = daeda_online::OnlineStore::connect(url, &Default::default()).unwrap();
                barrier.wait();
                f(who, store)
            })
        };
        let (a, b) = (run(0), run(1));
        [a.join().unwrap(), b.join().unwrap()]
    })
}

#[test]
fn conditional_writes_racing_from_two_writers_keep_the_newer_row_and_never_replace_an_equal_one() {
    use daeda_online::codec::{self, RowSchema, RowWriter};
    use daeda_online::ConditionalWrites;
    const N: i64 = 3000;
    let env = TestEnv::new(10);
    let schema =
        RowSchema { names: vec!["x".into()], types: vec![daeda_catalog::ColumnType::parse("BIGINT", None).unwrap()] };
    let key = |k: i64| format!("daeda:row:t:1:{k}");
    let _: () = redis::cmd("SET").arg("daeda:{svc:t}:lease").arg("race").query(&mut env.redis.conn()).unwrap();
    // Writer `who` writes every key, in opposite orders, in batches of 100;
    // `ts(who, k)` is its row's event time, its value is `who`.
    let write = |ts: &(dyn Fn(usize, i64) -> i64 + Sync)| {
        race(&env.redis.url(), |who, store| {
            let keys: Vec<i64> = if who == 0 { (0..N).collect() } else { (0..N).rev().collect() };
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut c = store.conn().await.unwrap();
                let mut total = ConditionalWrites::default();
                for chunk in keys.chunks(100) {
                    let mut batch = daeda_online::RowBatch::default();
                    for &k in chunk {
                        let mut w = RowWriter::begin(batch.start(key(k).as_bytes()), &schema, ts(who, k));
                        w.i64(who as i64);
                        w.finish();
                        batch.seal();
                    }
                    let w = store.put_rows_if_newer(&mut c, &batch, "t", "race").await.unwrap();
                    total.inserted += w.inserted;
                    total.replaced += w.replaced;
                    total.kept += w.kept;
                }
                total
            })
        })
    };
    let stored = |k: i64| {
        let row = codec::decode(&env.redis.get(&key(k)).unwrap(), &schema).unwrap();
        (row.event_ts_micros, row.values[0].clone())
    };

    // Different event times: whatever the interleaving, the newer row wins.
    // Writer 0 is newer on even keys, writer 1 on odd ones.
    let [a, b] = write(&|who, k| 1_000 + i64::from((k % 2 == 0) == (who == 0)));
    assert_eq!(a.inserted + b.inserted, N as u64, "{a:?} {b:?}");
    assert_eq!(a.inserted + a.replaced + a.kept + b.inserted + b.replaced + b.kept, 2 * N as u64);
    for k in 0..N {
        let winner = codec::Value::BigInt(if k % 2 == 0 { 0 } else { 1 });
        assert_eq!(stored(k), (1_001, winner), "key {k}");
    }

    // Equal event times (newer than all of the above): on each key the first
    // writer replaces the old row, the second is kept out; an equal row never
    // replaces another.
    let [a, b] = write(&|_, _| 5_000);
    assert_eq!((a.inserted, b.inserted), (0, 0));
    assert_eq!((a.replaced + b.replaced, a.kept + b.kept), (N as u64, N as u64), "{a:?} {b:?}");
    let holds = |who: i64| (0..N).filter(|&k| stored(k) == (5_000, codec::Value::BigInt(who))).count() as u64;
    assert_eq!((holds(0), holds(1)), (a.replaced, b.replaced), "a row was overwritten by an equal one");
    assert!(a.replaced > 0 && b.replaced > 0, "the writers did not interleave: {a:?} {b:?}");
}

#[test]
fn two_incremental_processes_started_together_one_runs_and_one_is_refused() {
    let env = TestEnv::new(50_000);
    env.materialize(&["--service", "user_features", "--as-of", "2026-06-26T23:00:00Z"]);
    let args = [
        "materialize",
        "--online",
        "--service",
        "user_features",
        "--mode",
        "incremental",
        "--json",
        "--as-of",
        FIXED_AS_OF,
    ];
    let spawn = || env.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let outs =
        [output_timeout(a, DAEDA_LIMIT, "incremental run a"), output_timeout(b, DAEDA_LIMIT, "incremental run b")];
    let ok: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let refused: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
    let show = || {
        outs.iter()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert_eq!((ok.len(), refused.len()), (1, 1), "{}", show());
    assert_eq!(refused[0].status.code(), Some(1));
    let refusal: Value = serde_json::from_slice(&refused[0].stdout).unwrap();
    assert!(refusal["failed"][0]["error"].as_str().unwrap().contains("is materializing `user_features`"), "{}", show());
    let summary: Value = serde_json::from_slice(&ok[0].stdout).unwrap();
    assert_eq!(summary["runs"][0]["rows_written"], 50_000, "{summary}");
    // What is online is what the offline data says.
    let report = env.json(&["skew", "check", "--service", "user_features", "--all", "--json"]);
    assert_eq!(report["passed"], true, "{report}");
}

/// A second row for users 3 and 4 at their latest event time, other values
/// differing: two entities whose latest row is a tie.
fn tie_users_3_and_4(env: &TestEnv) {
    let src = env.data().join("user_features/*/*.parquet");
    let dup = env.data().join("user_features/ds=2026-06-27/tie.parquet");
    env.duckdb()
        .execute_batch(&format!(
            "COPY (SELECT * REPLACE (ctr_7d + 1 AS ctr_7d) FROM read_parquet('{}') WHERE user_id IN (3, 4) AND ds = '2026-06-27')
             TO '{}' (FORMAT parquet)",
            src.display(),
            dup.display()
        ))
        .unwrap();
}

/// Materializes 300 users (two tied on their latest event time, so the
/// tie-break path runs), then again with `var=value` set, whose run must log
/// `marker`: that run writes exactly the rows the plain run wrote, and the
/// skew check under the same setting passes. Returns the second run's report.
fn same_rows_with(var: &str, value: &str, marker: &str) -> (serde_json::Value, usize) {
    let env = TestEnv::new(300);
    tie_users_3_and_4(&env);
    env.materialize(&["--service", "user_features"]);
    let plain = env.generation_rows("user_features", &env.redis.current("user_features").unwrap());
    let with = |args: &[&str]| {
        let out = output(env.command(args).env(var, value).env("DAEDA_LOG", "info"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains(marker), "{args:?} with {var}={value} did not log {marker:?}: {stderr}");
        out
    };
    let out = with(&["materialize", "--online", "--json", "--service", "user_features", "--as-of", FIXED_AS_OF]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = env.generation_rows("user_features", &env.redis.current("user_features").unwrap());
    assert!(plain.len() >= 300, "{}", plain.len());
    assert_eq!(rows, plain);
    let check = with(&["skew", "check", "--service", "user_features", "--all", "--json"]);
    let skew: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(skew["passed"], true, "{skew}");
    assert_eq!(skew["entities_compared"], plain.len(), "{skew}");
    (report, plain.len())
}

/// Sources over `DAEDA_STAGE_ABOVE_ROWS` rows are staged in a temporary table
/// before they stream (DuckDB 1.5.5 stalls streaming the latest-rows query on
/// large inputs). Forced here at 0: a staged run writes exactly the rows a
/// streamed one wrote, and the skew check passes on the staged path too.
#[test]
fn a_staged_run_writes_exactly_the_rows_a_streamed_run_writes() {
    same_rows_with("DAEDA_STAGE_ABOVE_ROWS", "0", "staging the latest rows");
}

/// Large sources are read in passes over slices of the key space
/// (`DAEDA_ENTITIES_PER_PASS`). Forced here to about fifty entities a pass: the passes
/// together write exactly the rows one pass wrote, ties included, and the
/// skew check over passes passes.
#[test]
fn a_run_in_passes_writes_exactly_the_rows_a_single_pass_writes() {
    let (report, entities) = same_rows_with("DAEDA_ENTITIES_PER_PASS", "50", "in passes over slices of the key space");
    assert_eq!(report["runs"][0]["entities"], entities, "{report}");
}

#[test]
fn rows_tied_on_the_latest_event_time_resolve_the_same_way_every_run() {
    let env = TestEnv::new(300);
    tie_users_3_and_4(&env);
    let first = env.materialize(&["--service", "user_features"]);
    assert_eq!(first["runs"][0]["entities"], 300, "one row per entity, ties included");
    let a = get(&env, "user_features", r#"{"user_id": [3, 4]}"#)["columns"]["ctr_7d"].clone();
    for _ in 0..2 {
        env.materialize(&["--service", "user_features"]);
        assert_eq!(get(&env, "user_features", r#"{"user_id": [3, 4]}"#)["columns"]["ctr_7d"], a);
    }
}

/// A run's own lease renewal (PEXPIRE) touches the lease key, which aborts a
/// batch's WATCH/MULTI/EXEC in flight. Found at 10M entities: every run writing
/// for longer than a third of the lease's ttl failed as "lost its lease". Such
/// a batch is retried while the lease is still the run's; a lease really
/// taken still stops the writes, with nothing of the batch written.
#[tokio::test(flavor = "multi_thread")]
async fn full_writes_outlast_the_runs_own_lease_renewals() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let env = TestEnv::new(1);
    let store = daeda_online::OnlineStore::connect(&env.redis.url(), &Default::default()).unwrap();
    let ttl = Duration::from_secs(30);
    store.acquire_lease("t", "run", ttl).await.unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let renewer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut renewals = 0u64;
            while !stop.load(Relaxed) {
                assert!(store.renew_lease("t", "run", ttl).await.unwrap());
                renewals += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            renewals
        })
    };
    let mut conn = store.conn().await.unwrap();
    let batch = |b: usize| {
        let mut batch = daeda_online::RowBatch::default();
        for i in 0..200 {
            batch.push(format!("daeda:row:t:1:{}", b * 200 + i).as_bytes(), &[7u8; 300]);
        }
        batch
    };
    for b in 0..100 {
        store.put_rows(&mut conn, &batch(b), "t", "run").await.unwrap();
    }
    stop.store(true, Relaxed);
    let renewals = renewer.await.unwrap();
    assert!(renewals > 20, "only {renewals} renewals ran beside the writes");
    assert_eq!(env.redis.count("daeda:row:t:1:*"), 20_000);

    let _: () = redis::cmd("SET").arg("daeda:{svc:t}:lease").arg("another-run").query(&mut env.redis.conn()).unwrap();
    let err = store.put_rows(&mut conn, &batch(100), "t", "run").await.unwrap_err();
    assert!(matches!(err, daeda_online::OnlineError::LeaseLost { .. }), "{err}");
    assert_eq!(env.redis.count("daeda:row:t:1:*"), 20_000);
}

#[test]
fn a_run_that_loses_its_lease_never_flips() {
    let env = TestEnv::new(200_000);
    env.materialize(&["--service", "user_features"]);
    let before = env.redis.dbsize();
    let child = env
        .command(&["materialize", "--online", "--service", "user_features"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll(Duration::from_secs(120), "the second run never started writing", || {
        (env.redis.dbsize() > before + 1).then_some(())
    });
    // Another run takes the service over (as if this one had stalled past its lease).
    let _: () =
        redis::cmd("SET").arg("daeda:{svc:user_features}:lease").arg("intruder").query(&mut env.redis.conn()).unwrap();
    let out = output_timeout(child, DAEDA_LIMIT, "the run that lost its lease");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost its lease"), "{stderr}");
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(rows(&env, "user_features", "1"), 200_000);
}

/// `calls` of a command in `INFO commandstats` (0 before its first call).
fn calls(env: &TestEnv, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut env.redis.conn()).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn an_incremental_run_that_loses_its_lease_stops_writing_and_leaves_nothing_in_a_retired_generation() {
    const USERS: u64 = 200_000;
    let env = TestEnv::new(USERS);
    // Generation 1 holds the older row of every user; the incremental run
    // then has a newer row for all of them to write, one compare each.
    env.materialize(&["--service", "user_features", "--as-of", "2026-06-26T23:00:00Z"]);
    // Count only this run's compares.
    let base = calls(&env, "evalsha");
    let child = env
        .command(&[
            "materialize",
            "--online",
            "--service",
            "user_features",
            "--mode",
            "incremental",
            "--as-of",
            FIXED_AS_OF,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll(Duration::from_secs(120), "the incremental run never started writing", || {
        (calls(&env, "evalsha") > base + 100).then_some(())
    });

    // Another run takes the service over, as a full run does once this run's
    // lease has expired: it flips to its own generation and retires
    // generation 1. Atomically, so no write of the incremental run lands in
    // between.
    let takeover = r"
        redis.call('SET', KEYS[1], 'intruder')
        redis.call('SET', KEYS[2], '2')
        redis.call('SADD', KEYS[3], '2')
        local rows = redis.call('KEYS', ARGV[1])
        for i = 1, #rows, 1000 do redis.call('UNLINK', unpack(rows, i, math.min(i + 999, #rows))) end
        redis.call('UNLINK', KEYS[4])
        redis.call('SREM', KEYS[3], '1')
        return #rows";
    let removed: u64 = redis::cmd("EVAL")
        .arg(takeover)
        .arg(4)
        .arg("daeda:{svc:user_features}:lease")
        .arg("daeda:{svc:user_features}:current")
        .arg("daeda:{svc:user_features}:gens")
        .arg("daeda:{svc:user_features}:gen:1")
        .arg("daeda:row:user_features:1:*")
        .query(&mut env.redis.conn())
        .unwrap();
    assert!(removed > 0);
    let done = calls(&env, "evalsha") - base;
    assert!(done + 10_000 < USERS, "the run had (almost) finished writing before the takeover ({done} compares)");

    let out = output_timeout(child, DAEDA_LIMIT, "the incremental run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost its lease"), "{stderr}");
    assert_eq!(
        rows(&env, "user_features", "1"),
        0,
        "rows written into the retired generation after the takeover remain"
    );
    assert_eq!(env.redis.meta("user_features", "1", "row_count"), None);
    let lease: Option<String> =
        redis::cmd("GET").arg("daeda:{svc:user_features}:lease").query(&mut env.redis.conn()).unwrap();
    assert_eq!(lease.as_deref(), Some("intruder"), "the losing run never releases another run's lease");
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(
        (runs[0]["mode"].as_str(), runs[0]["status"].as_str()),
        (Some("incremental"), Some("failed")),
        "{}",
        runs[0]
    );
}

/// A full run frozen (SIGSTOP) past its lease while writing: meanwhile the
/// next run took the lease and retired the frozen run's generation as a
/// leftover (registered, never live). Resumed, the run must not write one more
/// row there: such rows belong to no registered generation, and nothing would
/// ever remove them but the run's own best-effort clean-up. Every batch is
/// fenced by the lease in Redis, so not one batch runs after the takeover, the
/// run fails with "lost its lease" and the live generation stays whole.
#[test]
fn a_full_run_that_loses_its_lease_while_frozen_leaves_no_orphan_rows() {
    const USERS: u64 = 200_000;
    let env = TestEnv::new(USERS);
    env.materialize(&["--service", "user_features"]);
    let before = env.redis.dbsize();
    let child = env
        .command(&["materialize", "--online", "--service", "user_features"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll(Duration::from_secs(120), "the second run never started writing", || {
        (env.redis.dbsize() > before + 1000).then_some(())
    });
    signal(&child, "-STOP");
    // What the next run does once the frozen run's lease expired: it takes the
    // lease and retires generation 2 (registered, not live) before writing its
    // own. Atomically, so no write of the frozen run can land in between.
    let takeover = r"
        redis.call('SET', KEYS[1], 'intruder')
        local rows = redis.call('KEYS', ARGV[1])
        for i = 1, #rows, 1000 do redis.call('UNLINK', unpack(rows, i, math.min(i + 999, #rows))) end
        redis.call('UNLINK', KEYS[3])
        redis.call('SREM', KEYS[2], '2')
        return #rows";
    let removed: u64 = redis::cmd("EVAL")
        .arg(takeover)
        .arg(3)
        .arg("daeda:{svc:user_features}:lease")
        .arg("daeda:{svc:user_features}:gens")
        .arg("daeda:{svc:user_features}:gen:2")
        .arg("daeda:row:user_features:2:*")
        .query(&mut env.redis.conn())
        .unwrap();
    // Batches (MSET, also inside a script) Redis ran so far: none may follow.
    let batches = calls(&env, "mset");
    signal(&child, "-CONT");
    assert!(
        removed > 0 && removed + 10_000 < USERS,
        "the frozen run had written {removed} of {USERS} rows: not mid-run"
    );

    let out = output_timeout(child, DAEDA_LIMIT, "the run that lost its lease");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost its lease"), "{stderr}");
    // Its clean-up removes what it wrote, but a run killed before that (or
    // whose clean-up fails) would leave it: no batch may land at all.
    assert_eq!(calls(&env, "mset"), batches, "the run wrote batches after it lost its lease");
    assert_eq!(
        rows(&env, "user_features", "2"),
        0,
        "rows written into the retired generation after the takeover remain"
    );
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(rows(&env, "user_features", "1") as u64, USERS, "the live generation is whole");
    let lease: Option<String> =
        redis::cmd("GET").arg("daeda:{svc:user_features}:lease").query(&mut env.redis.conn()).unwrap();
    assert_eq!(lease.as_deref(), Some("intruder"), "the losing run never releases another run's lease");
}

#[test]
fn all_with_one_failing_service_runs_the_others_and_exits_1() {
    let env = TestEnv::new(200);
    // item_features comes first in the catalog: the failure must not stop the rest.
    std::fs::remove_file(env.data().join("item_features/metadata.ducklake")).unwrap();
    let out = env.daeda(&["materialize", "--online", "--all", "--json", "--as-of", FIXED_AS_OF]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let ran: Vec<&str> = json["runs"].as_array().unwrap().iter().map(|r| r["service"].as_str().unwrap()).collect();
    assert_eq!(ran, ["user_features", "user_item_reranker"], "{json}");
    assert_eq!(json["failed"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["failed"][0]["service"], "item_features");
    assert!(json["failed"][0]["error"].as_str().unwrap().contains("metadata.ducklake does not exist"), "{json}");
    assert_eq!(json["skipped_not_allowed"], serde_json::json!(["pii_features"]));
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(env.redis.current("user_item_reranker").as_deref(), Some("1"));
    assert_eq!(env.redis.current("item_features"), None);
    // The failed run leaves no rows, no generation and no lease behind (only
    // the counter that numbers generations).
    let keys: Vec<String> = redis::cmd("KEYS").arg("daeda:*item_features*").query(&mut env.redis.conn()).unwrap();
    assert_eq!(keys, ["daeda:{svc:item_features}:genseq"]);

    // Without --json: the failure on stderr, the successes on stdout, still exit 1.
    let out = env.daeda(&["materialize", "--online", "--all", "--as-of", FIXED_AS_OF]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("error: item_features: the DuckLake catalog"), "{stderr}");
    assert!(stdout.contains("user_features: 200 entities") && stdout.contains("user_item_reranker:"), "{stdout}");
    let runs = env.json(&["runs", "list", "--json"]);
    let statuses: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|r| (r["service"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert!(statuses.contains(&("item_features", "failed")), "{statuses:?}");
}

#[test]
fn null_timestamps_are_skipped_and_counted_never_written() {
    let env = TestEnv::new(300);
    // User 5's newer row and both rows of user 6 lose their timestamp.
    let db = env.duckdb();
    let glob = env.data().join("user_features/*/*.parquet");
    for ds in ["2026-06-26", "2026-06-27"] {
        let file = env.data().join(format!("user_features/ds={ds}/nulls.parquet"));
        let dir = env.data().join(format!("user_features/ds={ds}"));
        db.execute_batch(&format!(
            "CREATE OR REPLACE TABLE t AS SELECT * EXCLUDE (ds) REPLACE (
                 CASE WHEN user_id = 6 OR (user_id = 5 AND ds = '2026-06-27') THEN NULL ELSE event_ts END AS event_ts)
               FROM read_parquet('{}', hive_partitioning = true) WHERE ds = '{ds}';
             COPY t TO '{}' (FORMAT parquet);",
            glob.display(),
            file.display()
        ))
        .unwrap();
        // Replace the partition's files by the rewritten one.
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p != file {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    let out = env.materialize(&["--service", "user_features"]);
    let run = &out["runs"][0];
    assert_eq!(run["rows_read"], 600, "{run}");
    // The three NULL timestamps (with 300 users the demo has no NULL user_id:
    // those start at user 996).
    assert_eq!(run["skipped_null_keys"], 3, "{run}");
    assert_eq!(run["entities"], 299, "user 6 has no servable row: {run}");
    assert_eq!(env.redis.count("daeda:row:user_features:1:*"), 299);
    let body = get(&env, "user_features", r#"{"user_id": [5, 6, 7]}"#);
    assert_eq!(body["status"][1], "missing", "{body}");
    assert!(body["event_ts"][0].as_str().unwrap().starts_with("2026-06-26"), "user 5 is served its older row: {body}");
    assert!(body["event_ts"][2].as_str().unwrap().starts_with("2026-06-27"), "{body}");
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["details"]["skipped_null_keys"], 3, "{}", runs[0]);
    // The skew check recomputes the same rows.
    let report = env.json(&["skew", "check", "--service", "user_features", "--all", "--json"]);
    assert_eq!(report["passed"], true, "{report}");
}

#[test]
fn an_incremental_run_is_refused_when_the_definition_changed_since_the_live_generation() {
    let env = TestEnv::new(300);
    env.materialize(&["--service", "user_features", "--as-of", "2026-06-26T23:00:00Z"]);
    let before = env.redis.meta("user_features", "1", "watermark_micros");
    let row = env.redis.get("daeda:row:user_features:1:7");
    // The source still has the column; the definition no longer declares it.
    env.edit("user_features", "  - {name: age_bucket,     type: INTEGER}\n", "");
    let out = env.daeda(&[
        "materialize",
        "--online",
        "--service",
        "user_features",
        "--mode",
        "incremental",
        "--as-of",
        FIXED_AS_OF,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("an incremental run cannot mix them, run a full materialization (--mode full)"),
        "{stderr}"
    );
    assert_eq!(env.redis.get("daeda:row:user_features:1:7"), row, "nothing was written");
    assert_eq!(env.redis.meta("user_features", "1", "watermark_micros"), before);
    // A full run serves the new shape.
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "2");
    let body = get(&env, "user_features", r#"{"user_id": [7]}"#);
    assert!(body["columns"].get("age_bucket").is_none(), "{body}");
}

/// Starts a full run of user_features and returns it once it has written
/// `min_rows` rows of its new generation (DBSIZE above `before`).
fn full_run_writing(env: &TestEnv, before: u64, min_rows: u64) -> std::process::Child {
    let child = env
        .command(&["materialize", "--online", "--service", "user_features", "--as-of", FIXED_AS_OF])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll(Duration::from_secs(120), "the run never started writing", || {
        (env.redis.dbsize() > before + min_rows).then_some(())
    });
    child
}

fn lease_pttl(env: &TestEnv) -> i64 {
    redis::cmd("PTTL").arg("daeda:{svc:user_features}:lease").query(&mut env.redis.conn()).unwrap()
}

#[test]
fn a_materializer_stopped_by_sigterm_or_killed_leaves_the_live_generation_and_the_next_run_cleans_up() {
    const USERS: u64 = 200_000;
    let env = TestEnv::new(USERS);
    env.materialize(&["--service", "user_features"]);
    let before = env.redis.dbsize();

    // SIGTERM mid-run: the run stops writing, removes its unfinished
    // generation, releases its lease and records the failure, then exits 1.
    let child = full_run_writing(&env, before, 1000);
    signal(&child, "-TERM");
    let out = output_timeout(child, Duration::from_secs(120), "the materializer after SIGTERM");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(lease_pttl(&env), -2, "the lease is released");
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"));
    assert_eq!(rows(&env, "user_features", "2"), 0, "the unfinished generation is removed");
    assert_eq!(rows(&env, "user_features", "1"), USERS as usize);
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["status"], "failed", "{}", runs[0]);
    assert!(runs[0]["error"].as_str().unwrap().contains("interrupted"), "{}", runs[0]);

    // SIGKILL mid-run: nothing can clean up. The lease stays with the dead run
    // but expires (no one renews it), and a run before that is refused.
    let mut child = full_run_writing(&env, before, 1000);
    signal(&child, "-KILL");
    crate::support::wait_timeout(&mut child, Duration::from_secs(30), "the killed materializer");
    let ttl = lease_pttl(&env);
    assert!(ttl > 0 && ttl <= 30_000, "the dead run's lease must expire on its own: PTTL {ttl}");
    let partial = rows(&env, "user_features", "3");
    assert!(partial > 0 && partial < USERS as usize, "{partial}");
    let (_, stderr) = env.expect(1, &["materialize", "--online", "--service", "user_features", "--as-of", FIXED_AS_OF]);
    assert!(stderr.contains("is materializing `user_features`"), "{stderr}");
    poll(Duration::from_secs(45), "the dead run's lease never expired", || (lease_pttl(&env) == -2).then_some(()));

    // The next run removes the dead run's rows and serves a whole generation.
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "4", "{out}");
    assert_eq!(rows(&env, "user_features", "3"), 0, "the killed run's rows are removed");
    assert_eq!(rows(&env, "user_features", "1"), 0);
    assert_eq!(rows(&env, "user_features", "4"), USERS as usize);
    assert_eq!(env.redis.dbsize(), before, "nothing else is left behind");
}
