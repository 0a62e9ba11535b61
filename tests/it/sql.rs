//! `POST /v1/sql` end to end: allowed and denied queries per token scope, JSON
//! and Arrow results, DuckDB's own errors, limits, and the DuckDB session's
//! defence in depth when the policy is bypassed.

use std::time::Duration;

use daeda_gateway::sql::{Interrupt, SqlEngine};
use daeda_gateway::Plane;
use serde_json::json;

use crate::http::{self, bearer, mint, send};
use crate::support::TestEnv;

fn sql_body(sql: &str) -> String {
    json!({ "sql": sql }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn approved_queries_run_and_denied_ones_say_why() {
    let env = TestEnv::new(300);
    let gw = http::start_with_sql(&env, http::config(&env), true).await;
    let all = bearer(&mint(&["*"], &[Plane::Sql]));
    let users_only = bearer(&mint(&["user_features"], &[Plane::Sql]));
    let online_only = bearer(&mint(&["*"], &[Plane::Online]));

    // The whole offline output (full history, both rows per user), not only the latest.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM user_features")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["columns"]["n"], json!([600]));
    assert_eq!(r.json()["columns"]["users"], json!([300]));
    assert_eq!(r.json()["row_count"], 1);

    // Joins across services of all three source kinds; exact types in JSON.
    let q = "SELECT u.user_id, u.ltv, r.item_id, i.price, u.event_ts FROM user_features u \
             JOIN user_item_reranker r USING (user_id) JOIN item_features i ON i.item_id = r.item_id \
             ORDER BY u.user_id, r.item_id, i.event_ts LIMIT 3";
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body(q)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert!(j["columns"]["ltv"][0].is_string(), "decimals are exact strings: {j}");
    assert!(j["columns"]["event_ts"][0].as_str().unwrap().ends_with('Z'));

    // Scope: the same join with a token for user_features only.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &users_only)], &sql_body(q)).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "policy_denied".into()));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("user_item_reranker is not an approved service granted"));
    // serving_allowed: never readable, not even with "*".
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT * FROM pii_features")).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "policy_denied".into()));
    // Plane.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &online_only)], &sql_body("SELECT 1")).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "forbidden".into()));
    // No token.
    assert_eq!(send(gw.addr, "POST", "/v1/sql", &[], &sql_body("SELECT 1")).await.status, 401);

    for (sql, reason) in [
        ("SELECT * FROM read_csv('/etc/passwd')", "table function"),
        ("SELECT getenv('HOME')", "function getenv is not allowed"),
        ("SELECT * FROM user_features; DROP TABLE user_features", "only one statement"),
        ("ATTACH '/tmp/evil.duckdb'", "ATTACH"),
        ("SELECT * FROM 'data/user_features/x.parquet'", "reading files"),
        ("PIVOT user_features ON country USING count(*)", "could not be parsed"),
    ] {
        let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body(sql)).await;
        assert_eq!(r.status, 403, "{sql}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(reason), "{sql}: {}", String::from_utf8_lossy(&r.body));
    }

    // Passed the policy, refused by DuckDB: 400 with DuckDB's message.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT no_such_column FROM user_features")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("no_such_column"));
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], "{\"query\": \"SELECT 1\"}").await;
    assert_eq!(r.status, 400, "unknown body field");

    // Arrow.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all), ("accept", "application/vnd.apache.arrow.stream")], &sql_body("SELECT user_id, embedding FROM user_features ORDER BY user_id LIMIT 4")).await;
    assert_eq!(r.status, 200);
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body.to_vec()), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row_limits_and_timeouts_hold() {
    let env = TestEnv::new(2000);
    let mut cfg = http::config(&env);
    cfg.sql_max_rows = 50;
    cfg.sql_timeout = Duration::from_millis(300);
    let gw = http::start_with_sql(&env, cfg, true).await;
    let all = bearer(&mint(&["*"], &[Plane::Sql]));
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT user_id FROM user_features")).await;
    assert_eq!(r.json()["row_count"], 50);
    assert_eq!(r.json()["truncated"], true);
    let t = std::time::Instant::now();
    let slow = "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d";
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body(slow)).await;
    assert_eq!((r.status.as_u16(), r.code()), (504, "timeout".into()), "{}", String::from_utf8_lossy(&r.body));
    // Uninterrupted, the triple self-join would run for many minutes.
    assert!(t.elapsed() < Duration::from_secs(60), "the timeout took {:?}", t.elapsed());
    // The interrupted query freed the session: the next one runs.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT 1 AS one")).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[test]
fn the_duckdb_session_itself_refuses_files_settings_and_unapproved_services() {
    // Straight to the engine, as if the policy had a hole.
    let env = TestEnv::new(100);
    let catalog = daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let engine = daeda_sql_plane::DuckDbEngine::new(&catalog).unwrap();
    let run = |sql: &str| engine.run(sql, 10, &Interrupt::default()).map(|o| o.batches.iter().map(|b| b.num_rows()).sum::<usize>());
    assert_eq!(run("SELECT * FROM user_features").unwrap(), 10);
    std::fs::write(env.dir.path().join("secret.csv"), "a,b\n1,2\n").unwrap();
    let copied = env.dir.path().join("should-not-exist.csv");
    for hostile in [
        "SELECT * FROM pii_features".to_string(),
        format!("SELECT * FROM read_csv('{}')", env.dir.path().join("secret.csv").display()),
        format!("SELECT * FROM read_parquet('{}')", env.data().join("pii_features/*.parquet").display()),
        "SET enable_external_access = true".to_string(),
        "SET lock_configuration = false".to_string(),
        format!("ATTACH '{}' AS x", env.dir.path().join("new.duckdb").display()),
        "INSTALL httpfs".to_string(),
        "SELECT getenv('HOME')".to_string(),
        format!("COPY (SELECT 1) TO '{}'", copied.display()),
    ] {
        assert!(run(&hostile).is_err(), "the session accepted {hostile}");
    }
    assert!(!copied.exists());
}
