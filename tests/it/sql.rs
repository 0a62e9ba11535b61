//! `POST /v1/sql` end to end: allowed and denied queries per token scope, JSON
//! and Arrow results, DuckDB's own errors, limits, and the DuckDB session's
//! defence in depth when the policy is bypassed.

use std::time::Duration;

use daeda_gateway::Plane;
use serde_json::json;

use crate::http::{self, bearer, mint, send, wait_metric};
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
    let r = send(
        gw.addr,
        "POST",
        "/v1/sql",
        &[("authorization", &all)],
        &sql_body("SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM user_features"),
    )
    .await;
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
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("user_item_reranker is not an approved service granted"));
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
        assert!(
            r.json()["error"]["message"].as_str().unwrap().contains(reason),
            "{sql}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    // Passed the policy, refused by DuckDB: 400 with DuckDB's message.
    let r = send(
        gw.addr,
        "POST",
        "/v1/sql",
        &[("authorization", &all)],
        &sql_body("SELECT no_such_column FROM user_features"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("no_such_column"));
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], "{\"query\": \"SELECT 1\"}").await;
    assert_eq!(r.status, 400, "unknown body field");

    // Arrow.
    let r = send(
        gw.addr,
        "POST",
        "/v1/sql",
        &[("authorization", &all), ("accept", "application/vnd.apache.arrow.stream")],
        &sql_body("SELECT user_id, embedding FROM user_features ORDER BY user_id LIMIT 4"),
    )
    .await;
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
    let r =
        send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT user_id FROM user_features"))
            .await;
    assert_eq!(r.json()["row_count"], 50);
    assert_eq!(r.json()["truncated"], true);
    let t = std::time::Instant::now();
    let slow =
        "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d";
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body(slow)).await;
    assert_eq!((r.status.as_u16(), r.code()), (504, "timeout".into()), "{}", String::from_utf8_lossy(&r.body));
    // Uninterrupted, the triple self-join would run for many minutes.
    assert!(t.elapsed() < Duration::from_secs(60), "the timeout took {:?}", t.elapsed());
    // A result under the byte cap in Arrow can be several times larger as
    // JSON; the cap holds for JSON too (counted while rendering, off the
    // async threads).
    gw.stop().await;
    let mut cfg = http::config(&env);
    cfg.sql_max_bytes = 200_000;
    let gw = http::start_with_sql(&env, cfg, true).await;
    let big = "SELECT user_id, embedding FROM user_features LIMIT 500";
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body(big)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "result_too_large".into()), "{}", String::from_utf8_lossy(&r.body));
    let r = send(
        gw.addr,
        "POST",
        "/v1/sql",
        &[("authorization", &all), ("accept", "application/vnd.apache.arrow.stream")],
        &sql_body(big),
    )
    .await;
    assert_eq!(r.status, 200, "the same rows fit as Arrow");
    assert!(r.body.len() <= 200_000);
    // The interrupted query freed the session: the next one runs.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &all)], &sql_body("SELECT 1 AS one")).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

/// The session as the worker builds it, confined as the worker confines
/// itself, on a thread of its own (Landlock binds the thread that asks and
/// the threads it starts later, DuckDB's included).
fn with_confined_session<T: Send + 'static>(
    env: &TestEnv,
    f: impl FnOnce(&daeda_sql_plane::Session) -> T + Send + 'static,
) -> T {
    let catalog = daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let private = env.dir.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::thread::spawn(move || {
        let confined = daeda_sql_plane::worker::confine(&private).unwrap();
        assert_eq!(confined, daeda_sql_plane::worker::Confinement::Enforced, "this machine's kernel has Landlock");
        let limits = daeda_sql_plane::SessionLimits { memory_limit: "512MB".into(), threads: 2 };
        let session = daeda_sql_plane::Session::open(&catalog, &private, &limits).unwrap();
        f(&session)
    })
    .join()
    .unwrap()
}

fn query(sql: &str, timeout_ms: u64) -> daeda_sql_wire::Query {
    daeda_sql_wire::Query {
        sql: sql.into(),
        grants: vec!["user_features".into(), "item_features".into(), "user_item_reranker".into()],
        relations: vec![],
        max_rows: 100,
        max_bytes: 1 << 20,
        timeout_ms,
    }
}

/// Wall 4 with walls 1-3 switched off: every statement kind that writes or
/// configures is sent straight to a query connection.
#[test]
fn the_session_refuses_writes_and_settings_with_every_other_wall_off() {
    let env = TestEnv::new(100);
    let data = env.data();
    std::fs::write(env.dir.path().join("secret.csv"), "a,b\n1,2\n").unwrap();
    let secret = env.dir.path().join("secret.csv");
    let files_before = walk(&data);
    let sources = data.clone();
    let outcomes = with_confined_session(&env, move |session| {
        let conn = session.query_connection().unwrap();
        let p = |x: &std::path::Path| x.display().to_string();
        let hostile = [
            "CREATE TABLE main.loot AS SELECT 42 AS v".to_string(),
            "DROP VIEW main.item_features".to_string(),
            "ALTER VIEW main.user_features RENAME TO x".to_string(),
            "CREATE MACRO main.lower(x) AS 'pwned'".to_string(),
            "CREATE OR REPLACE VIEW main.user_features AS SELECT 1".to_string(),
            format!("ATTACH '{}' AS x", p(&data.join("new.duckdb"))),
            "ATTACH ':memory:' AS m".to_string(),
            format!("COPY (SELECT 1 AS user_id) TO '{}' (FORMAT parquet)", p(&data.join("user_features/evil.parquet"))),
            format!("EXPORT DATABASE '{}'", p(&data.join("user_features/export"))),
            "SET enable_external_access = true".to_string(),
            "SET lock_configuration = false".to_string(),
            "RESET lock_configuration".to_string(),
            "SET memory_limit = '100GB'".to_string(),
            "SET threads = 64".to_string(),
            "PRAGMA memory_limit = '100GB'".to_string(),
            "PRAGMA threads = 64".to_string(),
            "INSTALL httpfs".to_string(),
            "LOAD httpfs".to_string(),
            "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')".to_string(),
            format!("SELECT * FROM read_csv('{}')", p(&secret)),
            format!("SELECT * FROM read_parquet('{}')", p(&data.join("pii_features/*.parquet"))),
            "SELECT * FROM pii_features".to_string(),
        ];
        let refused: Vec<(String, bool)> =
            hostile.iter().map(|h| (h.clone(), conn.execute_batch(h).is_err())).collect();
        // Per-connection state dies with the connection.
        conn.execute_batch(
            "CREATE TEMP MACRO lower(x) AS 'pwned'; CREATE TEMP VIEW user_features AS SELECT 1 AS user_id",
        )
        .unwrap();
        drop(conn);
        let fresh = session.query_connection().unwrap();
        let lower: String = fresh.query_row("SELECT lower('A')", [], |r| r.get(0)).unwrap();
        let n: i64 = fresh.query_row("SELECT count(*) FROM user_features", [], |r| r.get(0)).unwrap();
        let items: i64 = fresh.query_row("SELECT count(*) FROM item_features", [], |r| r.get(0)).unwrap();
        // DETACH is instance-wide and DuckDB allows it even read-only: the
        // session notices, and the worker replaces itself.
        assert!(session.verify_intact());
        let attached: String = fresh
            .query_row(
                "SELECT database_name FROM duckdb_databases() WHERE database_name LIKE 'src_%' OR database_name LIKE 'lake_%' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        fresh.execute_batch(&format!("DETACH {attached}")).unwrap();
        (refused, lower, n, items, session.verify_intact(), session.damaged())
    });
    let (refused, lower, n, items, intact_after_detach, damaged) = outcomes;
    let accepted: Vec<&String> = refused.iter().filter(|(_, r)| !r).map(|(h, _)| h).collect();
    assert!(accepted.is_empty(), "the session accepted: {accepted:#?}");
    assert_eq!((lower.as_str(), n), ("a", 200), "a temporary macro or view outlived its connection");
    assert!(items > 0, "item_features still reads");
    assert!(!intact_after_detach && damaged, "a DETACH must mark the session damaged");
    assert_eq!(walk(&sources), files_before, "no file may appear or change under the sources");
}

fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path(), e.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

/// Wall 3 alone: a batch never reaches `prepare` (which would run its
/// earlier statements), and only a SELECT runs at all.
#[test]
fn exactly_one_select_runs_and_deadlines_hold_with_the_policy_off() {
    let env = TestEnv::new(2000);
    let results = with_confined_session(&env, |session| {
        let cancel = daeda_sql_plane::session::CancelSlot::default();
        let run = |sql: &str, ms: u64| session.execute(&query(sql, ms), &cancel, std::time::Instant::now());
        let batch = run("SELECT 1; DROP VIEW main.item_features; SELECT 2", 2000);
        let selects = run("SELECT 1; SELECT 2", 2000);
        let temp = run("SELECT 1; CREATE TEMP TABLE t AS SELECT 1", 2000);
        let ddl = run("CREATE TEMP TABLE t AS SELECT 1", 2000);
        let items = run("SELECT count(*) AS n FROM item_features", 2000);
        let started = std::time::Instant::now();
        let slow = run("SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d", 300);
        let slow_took = started.elapsed();
        let never = run("SELECT 1", 0);
        let big = session.execute(
            &daeda_sql_wire::Query {
                max_bytes: 10_000,
                max_rows: 1_000_000,
                ..query("SELECT * FROM user_features", 2000)
            },
            &cancel,
            std::time::Instant::now(),
        );
        let after = run("SELECT 1 AS one", 2000);
        (batch, selects, temp, ddl, items, slow, slow_took, never, big, after)
    });
    let (batch, selects, temp, ddl, items, slow, slow_took, never, big, after) = results;
    use daeda_sql_wire::Reply;
    assert!(matches!(batch, Reply::Refused(_)), "{batch:?}");
    assert!(matches!(&selects, Reply::Refused(m) if m.contains("DuckDB reads 2")), "{selects:?}");
    assert!(matches!(temp, Reply::Refused(_)), "{temp:?}");
    assert!(matches!(ddl, Reply::Refused(_)), "{ddl:?}");
    assert!(matches!(items, Reply::Rows { .. }), "the refused batch dropped nothing: {items:?}");
    assert!(matches!(slow, Reply::Timeout(_)), "{slow:?}");
    assert!(slow_took < Duration::from_secs(3), "the deadline stopped the query: {slow_took:?}");
    assert!(matches!(&never, Reply::Timeout(m) if m.contains("not run")), "{never:?}");
    assert!(matches!(big, Reply::TooLarge(_)), "{big:?}");
    assert!(matches!(after, Reply::Rows { .. }), "{after:?}");
}

/// The pid of the `daeda sql-worker` serving the catalog `catalog`.
fn worker_pid(catalog: &std::path::Path) -> Option<i32> {
    let needle = catalog.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("sql-worker") && cmd.contains(&needle)).then_some(pid)
    })
}

/// A reload (SIGHUP) that changes which services are approved rebuilds the
/// SQL worker: a service turned on becomes queryable (its view did not exist
/// in the old worker), and one turned off leaves the worker's views and
/// allowed folders too (walls 3 and 4), not only the policy's grants.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_rebuilds_the_sql_workers_views() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let (mut child, addr) = crate::support::serve(&env, &[], std::process::Stdio::null());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while send(addr, "GET", "/readyz", &[], "").await.json()["sql"]["worker"] != "up" {
        assert!(std::time::Instant::now() < deadline, "the SQL worker did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = bearer(&mint(&["*"], &[Plane::Sql]));
    let (headers, body) = ([("authorization", token.as_str())], sql_body("SELECT count(*) AS n FROM pii_features"));
    let query = || send(addr, "POST", "/v1/sql", &headers, &body);
    assert_eq!(query().await.status, 403);
    let first = worker_pid(&env.catalog()).expect("the SQL worker runs");
    // Turned on: answered once the new worker is up (403 before the reload
    // lands, 503 while the worker is replaced; anything else fails).
    env.edit("pii_features", "allowed: false", "allowed: true");
    crate::support::signal(&child, "-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let r = query().await;
        if r.status == 200 {
            break r;
        }
        assert!([403, 503].contains(&r.status.as_u16()), "{} {}", r.status, String::from_utf8_lossy(&r.body));
        assert!(
            std::time::Instant::now() < deadline,
            "pii_features not queryable 30 s after SIGHUP: {}",
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answered.json()["columns"]["n"][0], 10, "{}", answered.json());
    let second = worker_pid(&env.catalog()).expect("a SQL worker runs");
    assert_ne!(first, second, "the worker was rebuilt");
    // Turned off again: refused at once, and the worker holding its view goes.
    env.edit("pii_features", "allowed: true", "allowed: false");
    crate::support::signal(&child, "-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while worker_pid(&env.catalog()).is_none_or(|p| p == second) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker with pii_features' view still runs 30 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(query().await.status, 403);
    crate::support::signal(&child, "-TERM");
    assert_eq!(crate::support::wait_timeout(&mut child, Duration::from_secs(30), "daeda serve").code(), Some(0));
}

fn signal(pid: i32, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

async fn lookup_ok(addr: std::net::SocketAddr, token: &str) -> bool {
    let r = send(
        addr,
        "POST",
        "/v1/features/user_features",
        &[("authorization", token)],
        r#"{"entities": {"user_id": [1, 2]}}"#,
    )
    .await;
    r.status == 200
}

/// Every class of attack seen from outside, through HTTP, with a token
/// granted `user_features` only: each answers 4xx with nothing foreign in
/// the body, the session is unchanged afterwards, and lookups never fail.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_sql_from_outside_is_refused_and_harms_nothing() {
    let env = TestEnv::new(300);
    env.materialize(&["--all"]);
    let mut cfg = http::config(&env);
    cfg.max_body_bytes = 1 << 20;
    let gw = http::start_with_sql(&env, cfg, true).await;
    let user = bearer(&mint(&["user_features"], &[Plane::Sql, Plane::Online]));
    let all = bearer(&mint(&["*"], &[Plane::Sql]));
    let count = |who: String, table: &'static str| async move {
        let r = send(
            gw.addr,
            "POST",
            "/v1/sql",
            &[("authorization", &who)],
            &sql_body(&format!("SELECT count(*) AS n FROM {table}")),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["columns"]["n"][0].as_i64().unwrap()
    };
    let items_before = count(all.clone(), "item_features").await;
    let deep = |n: usize| -> Vec<String> {
        vec![
            format!("SELECT 1{} FROM user_features", "+1".repeat(n)),
            format!("SELECT 1{} FROM user_features", "::INT".repeat(n)),
            format!("SELECT 1 FROM user_features{}", " UNION SELECT 1".repeat(n)),
            format!("SELECT {}1{} FROM user_features", "(".repeat(n), ")".repeat(n)),
            format!("SELECT CAST(NULL AS INT{}) FROM user_features", "[]".repeat(n)),
            format!("SELECT 1 FROM user_features WHERE true{}", " AND true".repeat(n)),
        ]
    };
    let mut hostile: Vec<String> = [
        r"SELECT '\'' AS x, count(*) AS n FROM item_features --'",
        r"SELECT '\'' AS x, (SELECT count(*) FROM duckdb_settings()) --'",
        "SELECT \"user_id\\\" FROM item_features --\" FROM user_features",
        "SELECT E'\\'' AS x, count(*) FROM item_features --'",
        "SELECT $$ $$, count(*) FROM item_features",
        "SELECT U&'\\0027' AS x, count(*) FROM item_features",
        "SELECT 1; CREATE TABLE main.loot AS SELECT 42 AS v",
        "SELECT 1; DROP VIEW main.item_features",
        "SELECT 1; CREATE MACRO main.lower(x) AS 'pwned'",
        "SELECT current_catalog, current_schema, current_user FROM user_features",
        "SELECT alias.current_user FROM user_features",
        "SELECT length(repeat('a', 100000000)) FROM user_features LIMIT 1",
        "SELECT repeat([true], 10000) AS b FROM user_features",
        "SELECT sum(length(repeat(repeat(country, 10000), 10000))) AS x FROM user_features",
        "SELECT len(list_transform(repeat([1], 10000), x -> repeat([1], 10000))) AS x",
        "SELECT lpad('a', 2000000000, 'b') FROM user_features",
        "SELECT format('{:>1000000000}', 1)",
        "SELECT levenshtein(repeat('a', 10000), repeat('b', 10000))",
        "COPY (SELECT * FROM user_features) TO 'data/user_features/evil.parquet'",
        "EXPORT DATABASE 'data/user_features/x'",
        "WITH user_features AS (SELECT * FROM item_features) SELECT * FROM user_features",
        "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) AS t, x",
        "SELECT * FROM main.main.item_features",
        "SELECT * FROM memory.main.item_features",
        "SELECT * FROM pii_features",
        "FROM item_features",
        "SELECT * FROM user_features POSITIONAL JOIN item_features",
        "SELECT getvariable('x'), current_setting('threads')",
        "SELECT * FROM duckdb_databases()",
        "SUMMARIZE item_features",
        "DESCRIBE item_features",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    hostile.push(format!("SELECT 1{} FROM user_features", "+1".repeat(300_000))); // the 600 KB abort
    hostile.extend(deep(100_000));
    // Deep but within the limits: answered (run, or refused by either
    // parser), and nothing falls over.
    for sql in deep(4_000) {
        let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &user)], &sql_body(&sql)).await;
        assert!(
            matches!(r.status.as_u16(), 200 | 400 | 403 | 504),
            "{}: {} {}",
            &sql[..60],
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(lookup_ok(gw.addr, &user).await);
    }
    // Read differently by the two parsers, but what runs is the printed text,
    // which holds no comment: only the granted service is read.
    let r = send(
        gw.addr,
        "POST",
        "/v1/sql",
        &[("authorization", &user)],
        &sql_body("SELECT count(*) AS n FROM user_features --\r, item_features"),
    )
    .await;
    assert_eq!(r.json()["columns"]["n"], json!([600]), "{}", String::from_utf8_lossy(&r.body));
    for sql in &hostile {
        let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &user)], &sql_body(sql)).await;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let short: String = sql.chars().take(80).collect();
        assert!(matches!(r.status.as_u16(), 400 | 403 | 413), "{short}: {} {body}", r.status);
        assert!(!body.contains(&items_before.to_string()) || items_before < 10, "{short}: foreign data in {body}");
        assert!(lookup_ok(gw.addr, &user).await, "{short}: a lookup failed after it");
    }
    assert_eq!(count(all.clone(), "item_features").await, items_before, "the session changed");
    assert_eq!(count(user.clone(), "user_features").await, 600);
    let metrics = send(gw.addr, "GET", "/metrics", &[], "").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(metrics.contains("daeda_sql_worker_restarts_total 0"), "no attack killed the worker:\n{metrics}");
    assert!(!walk(&env.data()).iter().any(|(p, _)| p.to_string_lossy().contains("evil")));
    gw.stop().await;
}

/// Wall 6: the worker dies under a query (SIGKILL, as an OOM kill would), or
/// stops answering (SIGSTOP). The query gets a 503 or a 504 with a clear
/// message, lookups keep answering, a fresh worker takes over, and
/// `/metrics` counts the restarts.
#[tokio::test(flavor = "multi_thread")]
async fn the_online_plane_outlives_the_sql_worker() {
    let env = TestEnv::new(2000);
    env.materialize(&["--all"]);
    let mut cfg = http::config(&env);
    cfg.sql_timeout = Duration::from_millis(1500);
    let gw = http::start_with_sql(&env, cfg, true).await;
    let token = bearer(&mint(&["*"], &[Plane::Sql, Plane::Online]));
    let other = bearer(&http::mint_for("someone-else", &["*"], &[Plane::Sql]));
    let slow =
        "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d";
    for (sig, status, code) in [("-KILL", 503, "sql_unavailable"), ("-STOP", 504, "timeout")] {
        let pid = worker_pid(&env.catalog()).expect("a running sql-worker");
        let addr = gw.addr;
        let t = token.clone();
        let query =
            tokio::spawn(async move { send(addr, "POST", "/v1/sql", &[("authorization", &t)], &sql_body(slow)).await });
        wait_metric(gw.addr, "daeda_sql_queries_running", 1.0).await;
        signal(pid, sig);
        for _ in 0..20 {
            assert!(lookup_ok(gw.addr, &token).await, "a lookup failed while the worker was {sig}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = query.await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.to_string()),
            "{sig}: {}",
            String::from_utf8_lossy(&r.body)
        );
        // A fresh worker takes over (for another client: a token whose query
        // had to be killed with its worker cools down first).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &other)], &sql_body("SELECT 1 AS one")).await;
            if r.status == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "SQL did not recover after {sig}: {}",
                String::from_utf8_lossy(&r.body)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_ne!(worker_pid(&env.catalog()), Some(pid));
    }
    let metrics = send(gw.addr, "GET", "/metrics", &[], "").await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("daeda_sql_worker_restarts_total 2"));
    // The SIGSTOP'd query had to be killed with its worker: its token's SQL
    // is refused for a while, with Retry-After; its lookups are not.
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body("SELECT 1 AS one")).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "sql_cooldown".into()), "{}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.get("retry-after").is_some());
    assert!(lookup_ok(gw.addr, &token).await);
    gw.stop().await;
}

/// The property behind wall 2: whatever the policy approves, DuckDB's own
/// parse of the text that runs reads only granted relations and calls only
/// allowlisted functions. Checked on the corpus and on ~20k mutations of it
/// spliced with the fragments attackers use.
#[test]
fn approved_means_duckdb_reads_only_what_was_granted() {
    #[derive(serde::Deserialize)]
    struct Corpus {
        cases: Vec<Case>,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        sql: String,
    }
    let corpus: Corpus = serde_json::from_str(include_str!("../../policy/tests/corpus.json")).unwrap();
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let grants = daeda_policy::Grants::new(["user_features", "user_item_reranker"]);
    let fragments = [
        r"'\''",
        "'",
        "\"",
        "--",
        "\r",
        "\n",
        "/*",
        "*/",
        ";",
        "E",
        "$$",
        "U&",
        "item_features",
        "main.",
        "pii_features",
        "current_user",
        "alias.",
        "(",
        ")",
        "WITH item_features AS (SELECT 1) ",
        ", item_features",
        " UNION SELECT * FROM item_features",
        "read_csv('x')",
        "::INT",
        "[1]",
        "{'a': 1}",
        "x -> x",
        "COLUMNS(*)",
        " AS ",
        "user",
    ];
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let mut next = move |n: usize| rng.usize(..n);
    let (mut approved, mut checked) = (0usize, 0usize);
    let corpus_len = corpus.cases.len();
    let stack = daeda_policy::Limits::default().stack_bytes();
    let mut inputs: Vec<String> = corpus.cases.iter().map(|c| c.sql.clone()).collect();
    for _ in 0..20_000 {
        let base = &corpus.cases[next(corpus.cases.len())].sql;
        let mut s = base.clone();
        for _ in 0..1 + next(3) {
            let at = next(s.len() + 1);
            let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
            s.insert_str(at, fragments[next(fragments.len())]);
        }
        inputs.push(s);
    }
    let failures = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let mut failures = Vec::new();
            for (i, sql) in inputs.into_iter().enumerate() {
                checked += 1;
                let Ok(a) = daeda_policy::check(&sql, &grants) else { continue };
                approved += usize::from(i >= corpus_len);
                let json: String =
                    conn.query_row("SELECT json_serialize_sql(?::VARCHAR)", [&a.sql], |r| r.get(0)).unwrap();
                let parse: serde_json::Value = serde_json::from_str(&json).unwrap();
                // DuckDB failing to parse what sqlparser accepted is a
                // disagreement that wall 2 denies; nothing runs. A leak would
                // be DuckDB parsing it into something the policy did not see.
                if parse["error"] == serde_json::json!(true) {
                    continue;
                }
                if let Err(d) = daeda_policy::duckdb::agree(&parse, &grants, &a) {
                    failures.push(format!("{sql:?} -> {:?}: {d}", a.sql));
                }
            }
            (failures, approved, checked)
        })
        .unwrap()
        .join()
        .unwrap();
    let (failures, approved, checked) = failures;
    assert!(approved >= 300, "only {approved} of {checked} mutations approved: the property would be vacuous");
    assert!(
        failures.is_empty(),
        "{} approved queries DuckDB reads differently:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Soak: hostile SQL (denied, timing out, killing its worker) and online
/// lookups at the same time. Zero failed lookups, and no lookup stalled: p99
/// under 25 ms and none over 1 s. These are walls, not a benchmark: a policy
/// check or a render run on the async runtime (a 4k-term expression costs tens
/// of ms in a debug build) or a dying gateway breaks them, while scheduler
/// noise on a 2-core machine does not (a 2× idle-ratio bound failed CI once at
/// 3.9×; the ratio is printed here and measured in `benches/`). The worker's
/// restarts are counted. `DAEDA_SOAK_SECS` lengthens it (default 20 s;
/// the issue's 60 s run: `DAEDA_SOAK_SECS=60`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_hostile_sql_beside_online_lookups() {
    let secs: u64 = std::env::var("DAEDA_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let env = TestEnv::new(2000);
    env.materialize(&["--all"]);
    let mut cfg = http::config(&env);
    cfg.sql_timeout = Duration::from_millis(800);
    let gw = http::start_with_sql(&env, cfg, true).await;
    let token = bearer(&mint(&["user_features"], &[Plane::Sql, Plane::Online]));
    let addr = gw.addr;
    async fn lookups(addr: std::net::SocketAddr, token: &str, for_: Duration) -> (Vec<Duration>, Vec<String>) {
        let (mut took, mut failed) = (Vec::new(), Vec::new());
        let end = std::time::Instant::now() + for_;
        let mut i = 0u64;
        while std::time::Instant::now() < end {
            let body = format!(r#"{{"entities": {{"user_id": [{}, {}]}}}}"#, i % 2000, (i * 7) % 2000);
            let t = std::time::Instant::now();
            let r = send(addr, "POST", "/v1/features/user_features", &[("authorization", token)], &body).await;
            took.push(t.elapsed());
            if r.status != 200 {
                failed.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
            }
            i += 1;
        }
        took.sort();
        (took, failed)
    }
    let p99 = |v: &[Duration]| v[(v.len() * 99 / 100).min(v.len() - 1)];
    // Warm up, then measure idle.
    let _ = lookups(addr, &token, Duration::from_millis(500)).await;
    let (idle, failed) = lookups(addr, &token, Duration::from_secs(3)).await;
    assert!(failed.is_empty(), "{failed:?}");
    let hostile = [
        "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d"
            .to_string(),
        "SELECT list_sort(list(a.ctr_7d)) AS x FROM user_features a, user_features b".to_string(),
        r"SELECT '\'' AS x, count(*) AS n FROM item_features --'".to_string(),
        "SELECT 1; DROP VIEW main.item_features".to_string(),
        format!("SELECT 1{} FROM user_features", "+1".repeat(4_000)),
        format!("SELECT {}1{} FROM user_features", "(".repeat(60), ")".repeat(60)),
        "SELECT string_agg(a.country, ',') FROM user_features a, user_features b".to_string(),
        "SELECT user_id, embedding FROM user_features".to_string(),
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    // The attackers run on a runtime of their own, at a low priority: on a
    // real deployment they are other machines, not this one's two cores.
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| rustix::process::setpriority_process(None, 19).unwrap())
        .enable_all()
        .build()
        .unwrap();
    for a in 0..2 {
        let (stop, token, hostile) = (stop.clone(), token.clone(), hostile.clone());
        attackers.push(attack_rt.spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let (mut i, mut identity) = (a, 0);
            let mut token = token;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r =
                    send(addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body(&hostile[i % hostile.len()]))
                        .await;
                *statuses.entry(r.status.as_u16()).or_default() += 1;
                if r.status == 429 {
                    // Cooled down: a many-user attack goes on under another name.
                    identity += 1;
                    token =
                        bearer(&http::mint_for(&format!("attacker-{a}-{identity}"), &["user_features"], &[Plane::Sql]));
                }
                i += 1;
            }
            statuses
        }));
    }
    let (loaded, failed) = lookups(addr, &token, Duration::from_secs(secs)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for a in attackers {
        for (k, v) in a.await.unwrap() {
            *statuses.entry(k).or_default() += v;
        }
    }
    let metrics = String::from_utf8_lossy(&send(addr, "GET", "/metrics", &[], "").await.body).into_owned();
    let restarts = metrics.lines().find(|l| l.starts_with("daeda_sql_worker_restarts_total")).unwrap().to_string();
    println!(
        "soak {secs}s: {} lookups, p99 idle {:?} loaded {:?} ({:.1}×), slowest {:?}; SQL statuses {statuses:?}; {restarts}",
        loaded.len(),
        p99(&idle),
        p99(&loaded),
        p99(&loaded).as_secs_f64() / p99(&idle).as_secs_f64(),
        loaded.last().unwrap()
    );
    assert!(failed.is_empty(), "{} lookups failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(statuses.keys().all(|s| [200, 400, 403, 429, 503, 504].contains(s)), "{statuses:?}");
    assert!(p99(&loaded) <= Duration::from_millis(25), "p99 idle {:?}, loaded {:?}", p99(&idle), p99(&loaded));
    let slowest = *loaded.last().unwrap();
    assert!(slowest <= Duration::from_secs(1), "a lookup stalled for {slowest:?}");
    attack_rt.shutdown_background();
    gw.stop().await;
}

/// A client that hangs up does not free its query's slot: the query runs on
/// in the worker until its deadline, so it still counts against
/// `sql_concurrency` (a second reviewer's finding: hung-up queries piled up
/// to 96 threads with a limit of 4).
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_up_query_keeps_its_slot_until_it_ends() {
    let env = TestEnv::new(2000);
    let mut cfg = http::config(&env);
    cfg.sql_concurrency = 1;
    cfg.sql_timeout = Duration::from_millis(1500);
    let gw = http::start_with_sql(&env, cfg, true).await;
    let token = bearer(&mint(&["*"], &[Plane::Sql]));
    let slow =
        "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d";
    let (addr, t) = (gw.addr, token.clone());
    let hung_up =
        tokio::spawn(async move { send(addr, "POST", "/v1/sql", &[("authorization", &t)], &sql_body(slow)).await });
    wait_metric(gw.addr, "daeda_sql_queries_running", 1.0).await;
    hung_up.abort(); // the client goes away mid-query
    let running = http::metric(&http::metrics(gw.addr).await, "daeda_sql_queries_running");
    assert_eq!(running, 1.0, "the hung-up query gave up its slot");
    let started = std::time::Instant::now();
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &token)], &sql_body("SELECT 1 AS one")).await;
    assert!(
        r.status != 200 || started.elapsed() >= Duration::from_millis(900),
        "the next query ran at once ({:?}, {}): the hung-up query's slot was freed while it still ran",
        started.elapsed(),
        r.status
    );
    gw.stop().await;
}

/// A catalog whose served services are all Parquet (nothing attached, no S3)
/// used to kill every SQL worker at start: its first look at the secrets, after
/// external access was off, went to `~/.duckdb/stored_secrets`. The worker
/// now never reads persistent secrets, so an operator's own keys stored there
/// stay out of the SQL plane too.
#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_only_catalog_is_served_over_sql_with_the_operators_secrets_left_out() {
    let env = TestEnv::new(10);
    env.edit("item_features", "allowed: true", "allowed: false");
    env.edit("user_item_reranker", "allowed: true", "allowed: false");
    env.materialize(&["--service", "user_features"]);
    // An operator's home with a persistent DuckDB secret in it.
    let home = env.dir.path().join("home");
    let stored = home.join(".duckdb/stored_secrets");
    std::fs::create_dir_all(&stored).unwrap();
    let conn = daeda_offline::session().unwrap();
    let dir = daeda_sql_wire::quote::literal(&stored.display().to_string());
    conn.execute_batch(&format!("SET secret_directory = {dir}")).unwrap();
    daeda_offline::s3::prepare(&conn).unwrap();
    conn.execute_batch("CREATE PERSISTENT SECRET operator (TYPE s3, KEY_ID 'operator-key', SECRET 'operator-secret')")
        .unwrap();
    assert!(std::fs::read_dir(&stored).unwrap().count() > 0, "the persistent secret was written");

    let home = home.display().to_string();
    let (mut child, addr) = crate::support::serve(&env, &[("HOME", home.as_str())], std::process::Stdio::null());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while send(addr, "GET", "/readyz", &[], "").await.json()["sql"]["worker"] != "up" {
        assert!(std::time::Instant::now() < deadline, "the SQL worker did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = bearer(&mint(&["user_features"], &[Plane::Sql]));
    let r = send(
        addr,
        "POST",
        "/v1/sql",
        &[("authorization", token.as_str())],
        &sql_body("SELECT count(DISTINCT user_id) AS n FROM user_features"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["columns"]["n"][0], 10);
    crate::support::signal(&child, "-TERM");
    assert_eq!(crate::support::wait_timeout(&mut child, Duration::from_secs(30), "daeda serve").code(), Some(0));
}
