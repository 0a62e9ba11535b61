//! Quack end to end, with a stock client: Python's `duckdb==1.5.5` and the
//! httpfs/quack extension wheels, from the venv `scripts/bootstrap.sh` makes.
//! The client attaches (or calls `quack_query`) with the same JWT as HTTP and
//! must read exactly what `POST /v1/sql` would give it, and nothing else.

use std::time::Duration;

use daeda_gateway::Plane;
use serde_json::{json, Value};

use crate::http::{self, bearer, mint, send};
use crate::support::TestEnv;

/// The client: reads `{uri, token, attach, queries}` on stdin; prints one JSON
/// object per query: `{"rows": [...]}` or `{"error": "..."}` (and
/// `{"attach_error": ...}` when the ATTACH itself is refused).
const CLIENT: &str = r#"
import duckdb, json, os, sys
req = json.load(sys.stdin)
c = duckdb.connect(config={"extension_directory": os.environ["DAEDA_DUCKDB_EXTENSION_DIR"]})
c.execute("SET enable_progress_bar = false")
c.execute("LOAD httpfs; LOAD quack;")
def rows(sql, params=None):
    return [[str(v) if v is not None else None for v in r] for r in c.execute(sql, params).fetchall()]
out = []
if req["attach"]:
    try:
        c.execute("ATTACH '" + req["uri"] + "' AS daeda (TOKEN '" + req["token"] + "')")
    except Exception as e:
        print(json.dumps({"attach_error": str(e)})); sys.exit(0)
for q in req["queries"]:
    try:
        if req["attach"]:
            out.append({"rows": rows(q)})
        else:
            out.append({"rows": rows("SELECT * FROM quack_query(?, ?, token => ?)", [req["uri"], q, req["token"]])})
    except Exception as e:
        out.append({"error": str(e)})
print(json.dumps(out))
"#;

fn python() -> std::path::PathBuf {
    let deps =
        std::env::var("DAEDA_DEPS").unwrap_or_else(|_| format!("{}/.cache/daeda", std::env::var("HOME").unwrap()));
    std::path::Path::new(&deps).join("quack-client-venv/bin/python")
}

/// Runs the stock client; `attach` picks ATTACH (else `quack_query`).
pub(crate) fn client(port: u16, token: &str, attach: bool, queries: &[&str]) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .args(["-c", CLIENT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the Quack client venv (run scripts/bootstrap.sh)");
    let req = json!({"uri": format!("quack:localhost:{port}"), "token": token, "attach": attach, "queries": queries});
    child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Quack {
    gw: http::Running,
    port: u16,
}

async fn start(env: &TestEnv) -> Quack {
    start_with(env, |_| {}).await
}

async fn start_with(env: &TestEnv, tune: impl FnOnce(&mut daeda_gateway::GatewayConfig)) -> Quack {
    let port = free_port();
    let mut cfg = http::config(env);
    tune(&mut cfg);
    cfg.quack_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let gw = http::start_with_sql(env, cfg, true).await;
    wait_serving(port, &mint(&["*"], &[Plane::Sql])).await;
    Quack { gw, port }
}

/// Waits until the Quack worker answers a query.
pub(crate) async fn wait_serving(port: u16, token: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = token.to_string();
        let r = tokio::task::spawn_blocking(move || client(port, &t, false, &["SELECT 1 AS one"])).await.unwrap();
        if r[0]["rows"] == json!([["1"]]) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "Quack did not come up: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(port: u16, token: &str, attach: bool, queries: &[&str]) -> Value {
    let (t, q): (String, Vec<String>) = (token.to_string(), queries.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || client(port, &t, attach, &q.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

/// `POST /v1/sql`'s rows for `sql`, as the client prints them (strings).
async fn http_rows(addr: std::net::SocketAddr, token: &str, sql: &str) -> Option<Vec<Vec<Option<String>>>> {
    let r =
        send(addr, "POST", "/v1/sql", &[("authorization", &bearer(token))], &json!({ "sql": sql }).to_string()).await;
    if r.status != 200 {
        return None;
    }
    let j = r.json();
    let cols = j["columns"].as_object().unwrap();
    let n = j["row_count"].as_u64().unwrap() as usize;
    Some(
        (0..n)
            .map(|i| {
                cols.values()
                    .map(|c| match &c[i] {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        v => Some(v.to_string()),
                    })
                    .collect()
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn quack_clients_read_exactly_what_the_token_grants() {
    let env = TestEnv::new(300);
    let q = start(&env).await;
    let user = mint(&["user_features"], &[Plane::Sql, Plane::Online]);

    // ATTACH: the granted service reads like HTTP; nothing else exists.
    let r = run(
        q.port,
        &user,
        true,
        &[
            "SELECT count(*), count(DISTINCT user_id) FROM daeda.user_features",
            "SELECT user_id, country FROM daeda.user_features ORDER BY user_id, event_ts LIMIT 3",
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'daeda' UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = 'daeda' ORDER BY 1",
            "SELECT count(*) FROM daeda.item_features",
            "SELECT count(*) FROM daeda.pii_features",
            // Writes through the attached catalog.
            "CREATE TABLE daeda.loot AS SELECT 42 AS v",
            "INSERT INTO daeda.user_features SELECT * FROM daeda.user_features",
            "DROP VIEW daeda.user_features",
            "CREATE VIEW daeda.main.mine AS SELECT 1",
            "SELECT count(*) FROM daeda.user_features",
        ],
    )
    .await;
    assert_eq!(r[0]["rows"], json!([["600", "300"]]), "{r}");
    assert_eq!(
        Some(serde_json::from_value(r[1]["rows"].clone()).unwrap()),
        http_rows(q.gw.addr, &user, "SELECT user_id, country FROM user_features ORDER BY user_id, event_ts LIMIT 3")
            .await
    );
    assert!(
        r[3]["error"].as_str().unwrap().contains("does not exist")
            && r[4]["error"].as_str().unwrap().contains("does not exist"),
        "{r}"
    );
    for i in 5..9 {
        assert!(r[i]["error"].is_string(), "a write through ATTACH: {}", r[i]);
    }
    assert_eq!(r[9]["rows"], json!([["600"]]), "{r}");

    // quack_query: the same rows as POST /v1/sql; the catalog a client is
    // shown lists only its grants.
    let same = [
        "SELECT country, count(*) AS n FROM user_features GROUP BY ALL ORDER BY country",
        "SELECT user_id, country FROM user_features WHERE user_id < 4 ORDER BY user_id, event_ts",
    ];
    let r = run(
        q.port,
        &user,
        false,
        &[same[0], same[1], daeda_gateway::sql::quack::RELATIONS_QUERY, daeda_gateway::sql::quack::SCHEMATA_QUERY],
    )
    .await;
    for (i, sql) in same.iter().enumerate() {
        let via_http = http_rows(q.gw.addr, &user, sql).await.unwrap();
        assert_eq!(r[i]["rows"], serde_json::to_value(via_http).unwrap(), "{sql}");
    }
    assert_eq!(r[2]["rows"], json!([["main", "user_features", "view"]]));
    assert_eq!(r[3]["rows"], json!([["views", "main"]]));

    // Refused at connect: no sql plane, expired, wrong signature, garbage.
    let claims = |exp: u64| json!({"sub": "x", "exp": exp, "services": ["*"], "planes": ["online", "sql"]});
    let sign = |c: &Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            c,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (what, token) in [
        ("online plane only", mint(&["*"], &[Plane::Online])),
        ("expired", sign(&claims(now - 3600), http::SECRET)),
        ("wrong signature", sign(&claims(now + 600), "another-secret")),
        ("not a token", "hello-quack".to_string()),
    ] {
        let r = run(q.port, &token, true, &["SELECT 1"]).await;
        assert!(r["attach_error"].is_string(), "{what}: {r}");
        let r = run(q.port, &token, false, &["SELECT 1"]).await;
        assert!(r[0]["error"].is_string(), "{what}: {r}");
    }

    // Refused queries: what the token does not grant, table functions,
    // settings, writes, the callbacks, quack_* functions, positional forms,
    // near-misses of the introspection texts.
    let loot = env.dir.path().join("quack-loot.csv");
    let copy_out = format!("COPY (SELECT 1) TO '{}'", loot.display());
    let hostile = [
        "SELECT count(*) FROM item_features",
        "SELECT * FROM pii_features",
        "FROM main.item_features",
        "FROM main.pii_features",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM duckdb_views()",
        "SELECT * FROM duckdb_tables()",
        "SELECT current_setting('memory_limit')",
        "SELECT catalog_name, schema_name FROM information_schema.schemata",
        "SET GLOBAL quack_authorization_function = 'lower'",
        "SET GLOBAL quack_authentication_function = 'lower'",
        "RESET quack_authorization_function",
        "SET threads = 64",
        "PRAGMA version",
        "CALL quack_serve('quack:localhost:1', token => 'abcd')",
        "SELECT * FROM quack_active_connections()",
        "SELECT * FROM quack_query('quack:localhost:1', 'SELECT 1')",
        "LOAD httpfs",
        "INSTALL spatial",
        "ATTACH ':memory:' AS x",
        copy_out.as_str(),
        "CREATE TABLE loot AS SELECT 1",
        "CREATE MACRO lower(x) AS x",
        "INSERT INTO user_features SELECT * FROM user_features",
        "DROP VIEW user_features",
        "SELECT daeda_quack_authenticate('s', 't', 'u')",
        "SELECT daeda_quack_authorize('s', 'SELECT 1')",
        "SELECT #1, #2 FROM user_features",
        "SELECT 1; SELECT 2",
        "SELECT '\\'' AS x, count(*) AS n FROM item_features --'",
    ];
    let r = run(q.port, &user, false, &hostile).await;
    for (i, sql) in hostile.iter().enumerate() {
        let e = r[i]["error"].as_str().unwrap_or_else(|| panic!("{sql} was not refused: {}", r[i]));
        assert!(!e.contains("item_id") && !e.contains("email"), "{sql}: {e}");
    }
    assert!(r[1]["error"].as_str().unwrap().contains("pii_features"), "the client shows the policy's reason: {}", r[1]);
    assert!(!loot.exists());
    // Nothing changed: the grant still reads the same.
    let r = run(q.port, &user, true, &["SELECT count(*) FROM daeda.user_features"]).await;
    assert_eq!(r[0]["rows"], json!([["600"]]));
    q.gw.stop().await;
}

/// The policy corpus replayed through Quack decides as HTTP does: denied by
/// the policy over HTTP (403) ⇔ refused with the policy's reason over Quack.
#[tokio::test(flavor = "multi_thread")]
async fn the_policy_corpus_decides_the_same_over_quack_and_http() {
    let env = TestEnv::new(50);
    let q = start(&env).await;
    let corpus: Value = serde_json::from_str(include_str!("../../policy/tests/corpus.json")).unwrap();
    let default: Vec<String> = serde_json::from_value(corpus["default_grants"].clone()).unwrap();
    let mut by_grants: std::collections::BTreeMap<Vec<String>, Vec<String>> = Default::default();
    for case in corpus["cases"].as_array().unwrap() {
        let grants =
            case.get("grants").map(|g| serde_json::from_value(g.clone()).unwrap()).unwrap_or_else(|| default.clone());
        by_grants.entry(grants).or_default().push(case["sql"].as_str().unwrap().to_string());
    }
    let mut compared = 0;
    for (grants, cases) in by_grants {
        let token = mint(&grants.iter().map(String::as_str).collect::<Vec<_>>(), &[Plane::Sql]);
        let r = run(q.port, &token, false, &cases.iter().map(String::as_str).collect::<Vec<_>>()).await;
        for (i, sql) in cases.iter().enumerate() {
            let http = send(
                q.gw.addr,
                "POST",
                "/v1/sql",
                &[("authorization", &bearer(&token))],
                &json!({ "sql": sql }).to_string(),
            )
            .await;
            let http_denied = http.status == 403;
            let quack_denied = r[i]["error"]
                .as_str()
                .is_some_and(|e| e.contains("daeda:") || e.contains("reads this query differently"));
            assert_eq!(
                quack_denied,
                http_denied,
                "{sql}: HTTP {} {}; Quack {}",
                http.status,
                String::from_utf8_lossy(&http.body),
                r[i]
            );
            compared += 1;
        }
    }
    assert!(compared > 200);
    // Each quack_query call was a session of its own; the server forgets
    // them as the calls end, and the gateway's sweep follows.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let ready = send(q.gw.addr, "GET", "/readyz", &[], "").await.json();
        if ready["quack"]["sessions"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sessions were never swept: {ready}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    q.gw.stop().await;
}

/// The pid of the Quack worker serving on `port`.
fn quack_pid(port: u16) -> Option<i32> {
    let needle = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
        (cmd.contains("sql-worker") && cmd.contains("--quack") && cmd.contains(&needle)).then_some(pid)
    })
}

/// A Quack worker that dies (as if a client crashed it), or whose query runs
/// past the Quack deadline (DuckDB cannot interrupt one Quack connection, so
/// the worker ends), takes neither the online lookups nor HTTP SQL with it,
/// and is replaced; the token whose query overran cools down.
#[tokio::test(flavor = "multi_thread")]
async fn the_online_plane_outlives_the_quack_worker() {
    let env = TestEnv::new(2000);
    env.materialize(&["--all"]);
    let q = start_with(&env, |cfg| cfg.quack_timeout = Duration::from_millis(1500)).await;
    let token = mint(&["*"], &[Plane::Sql, Plane::Online]);
    let other = http::mint_for("someone-else", &["*"], &[Plane::Sql, Plane::Online]);
    let lookups_ok = |n: usize| {
        let (addr, t) = (q.gw.addr, bearer(&token));
        async move {
            for _ in 0..n {
                let r = send(
                    addr,
                    "POST",
                    "/v1/features/user_features",
                    &[("authorization", &t)],
                    r#"{"entities": {"user_id": [1, 2]}}"#,
                )
                .await;
                assert_eq!(r.status, 200, "a lookup failed while the Quack worker was down or busy");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Past the deadline: the worker ends, lookups go on.
    let pid = quack_pid(q.port).expect("a running Quack worker");
    let slow =
        "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d";
    let port = q.port;
    let t = token.clone();
    let overrun = tokio::task::spawn_blocking(move || client(port, &t, false, &[slow]));
    lookups_ok(40).await;
    let r = overrun.await.unwrap();
    assert!(r[0]["error"].is_string(), "{r}");
    wait_serving(q.port, &other).await;
    assert_ne!(quack_pid(q.port), Some(pid));
    let r = run(q.port, &token, false, &["SELECT 1"]).await;
    assert!(r[0]["error"].as_str().unwrap_or_default().contains("had to be stopped"), "the token cools down: {r}");

    // Killed outright.
    let pid = quack_pid(q.port).expect("a running Quack worker");
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    lookups_ok(20).await;
    assert!(http_rows(q.gw.addr, &other, "SELECT 1 AS one").await.is_some(), "HTTP SQL outlives the Quack worker");
    wait_serving(q.port, &other).await;
    assert_ne!(quack_pid(q.port), Some(pid));
    let ready = send(q.gw.addr, "GET", "/readyz", &[], "").await.json();
    assert_eq!(ready["quack"]["restarts"], 2, "{ready}");
    q.gw.stop().await;
}

/// A token sent at the end of its leeway, whose query then overruns the Quack
/// deadline, expires while the query runs: its subject still cools down (the
/// cooldown once re-verified the token, found it expired, and skipped it, so a
/// client could keep restarting the worker with tokens about to expire).
#[tokio::test(flavor = "multi_thread")]
async fn a_token_expiring_mid_query_still_cools_its_subject_down() {
    let env = TestEnv::new(2000);
    env.materialize(&["--all"]);
    let q = start_with(&env, |cfg| cfg.quack_timeout = Duration::from_millis(12_000)).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Expired 21 s ago: still inside the 30 s leeway for at least 8 s (time
    // enough for a cold Python client to connect on a loaded machine), past it
    // when the 12 s deadline ends the query.
    let claims = json!({"sub": "late", "exp": now - 21, "services": ["*"], "planes": ["sql"]});
    let late = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(http::SECRET.as_bytes()),
    )
    .unwrap();
    let slow =
        "SELECT count(*) FROM user_features a, user_features b, user_features c WHERE a.ctr_7d + b.ctr_7d > c.ctr_7d";
    let r = run(q.port, &late, false, &[slow]).await;
    assert!(r[0]["error"].is_string(), "the query should have ended with its worker: {r}");
    let fresh = http::mint_for("late", &["*"], &[Plane::Sql]);
    let r = send(q.gw.addr, "POST", "/v1/sql", &[("authorization", &bearer(&fresh))], r#"{"sql": "SELECT 1"}"#).await;
    assert_eq!(r.status, 429, "the subject whose query overran cools down: {}", String::from_utf8_lossy(&r.body));
    q.gw.stop().await;
}

/// Opens `n` Quack sessions with `token` over the raw wire (a CONNECT each,
/// never closed; what a client that never DETACHes leaves behind) and
/// returns (admitted, refused, broken): broken counts requests the server did
/// not answer at all.
const FLOOD: &str = r#"
import http.client, json, sys
req = json.load(sys.stdin)
tok = req["token"].encode()
def field(fid, val):
    n, out = len(val), b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | 0x80]) if n else bytes([b])
        if not n: break
    return fid.to_bytes(2, "little") + out + val
body = (b"\x01\x00\x01\x03\x00\x05\xff\xff" + field(1, tok) + field(2, b"v1.5.5") + field(3, b"linux_amd64")
        + b"\x04\x00\x01\x05\x00\x01\xff\xff")
admitted = refused = broken = 0
for _ in range(req["n"]):
    try:
        c = http.client.HTTPConnection("127.0.0.1", req["port"], timeout=30)
        c.request("POST", "/quack", body, {"Content-Type": "application/octet-stream"})
        r = c.getresponse().read()
        if r[:3] == b"\x01\x00\x02":
            admitted += 1
        else:
            refused += 1
    except Exception:
        broken += 1
print(json.dumps([admitted, refused, broken]))
"#;

fn flood(port: u16, token: &str, n: usize) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .args(["-c", FLOOD])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the Quack client venv (run scripts/bootstrap.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!({"port": port, "token": token, "n": n}).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// One token holder opening thousands of Quack sessions (no query, no CPU)
/// once crashed the Quack worker: DuckDB's quack extension fails when its
/// connection table passes ~2048 while the worker's sweep lists it. A
/// subject's sessions past its cap are refused instead, the worker stays up,
/// and another subject still connects and reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_flood_is_refused_and_does_not_crash_the_quack_worker() {
    let env = TestEnv::new(200);
    env.materialize(&["--all"]);
    let q = start(&env).await;
    let pid = quack_pid(q.port).expect("a running Quack worker");
    let flooder = http::mint_for("flooder", &["*"], &[Plane::Sql]);
    let port = q.port;
    let r = tokio::task::spawn_blocking(move || flood(port, &flooder, 2300)).await.unwrap();
    let cap = (daeda_gateway::sql::quack::MAX_SESSIONS_PER_SUB as u64).min(2300);
    assert_eq!(r, json!([cap, 2300 - cap, 0]), "admitted, refused, unanswered");
    // A few sweeps list the server's connections (where it crashed).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(quack_pid(q.port), Some(pid), "the Quack worker was replaced");
    let ready = send(q.gw.addr, "GET", "/readyz", &[], "").await.json();
    assert_eq!(ready["quack"]["restarts"], 0, "{ready}");
    let other = http::mint_for("someone-else", &["*"], &[Plane::Sql]);
    let r = run(q.port, &other, false, &["SELECT count(*) FROM user_features"]).await;
    assert!(r[0]["rows"].is_array(), "{r}");
    q.gw.stop().await;
}

/// A query text longer than the worker-to-gateway link's frame limit
/// (256 MiB) once ended the link and with it the Quack worker, for every
/// client and with no cooldown; it is refused in the worker now, as any text
/// over the policy's limit is, and never crosses the link.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_query_text_is_refused_without_ending_the_quack_worker() {
    use std::io::Write;
    let env = TestEnv::new(50);
    let q = start(&env).await;
    let token = mint(&["*"], &[Plane::Sql]);
    const HUGE: &str = r#"
import duckdb, json, os, sys
req = json.load(sys.stdin)
c = duckdb.connect(config={"extension_directory": os.environ["DAEDA_DUCKDB_EXTENSION_DIR"]})
c.execute("LOAD httpfs; LOAD quack;")
try:
    c.execute("SELECT * FROM quack_query(?, ?, token => ?)", [req["uri"], "SELECT 1 -- " + "x" * (260 << 20), req["token"]]).fetchall()
    print(json.dumps({"rows": True}))
except Exception as e:
    print(json.dumps({"error": str(e)[:500]}))
"#;
    let port = q.port;
    let t = token.clone();
    let r: Value = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(python())
            .args(["-c", HUGE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the Quack client venv");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json!({"uri": format!("quack:localhost:{port}"), "token": t}).to_string().as_bytes())
            .unwrap();
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap()
    })
    .await
    .unwrap();
    assert!(r["error"].as_str().is_some_and(|e| e.contains("daeda:") && e.contains("the limit is")), "{r}");
    let ready = send(q.gw.addr, "GET", "/readyz", &[], "").await.json();
    assert_eq!(ready["quack"]["restarts"], 0, "{ready}");
    q.gw.stop().await;
}
