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
    let deps = std::env::var("DAEDA_DEPS").unwrap_or_else(|_| format!("{}/.cache/daeda", std::env::var("HOME").unwrap()));
    std::path::Path::new(&deps).join("quack-client-venv/bin/python")
}

/// Runs the stock client; `attach` picks ATTACH (else `quack_query`).
fn client(port: u16, token: &str, attach: bool, queries: &[&str]) -> Value {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Quack {
    gw: http::Running,
    port: u16,
}

async fn start(env: &TestEnv) -> Quack {
    let port = free_port();
    let mut cfg = http::config(env);
    cfg.quack_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let gw = http::start_with_sql(env, cfg, true).await;
    wait_serving(port, &bearer_less(&mint(&["*"], &[Plane::Sql]))).await;
    Quack { gw, port }
}

fn bearer_less(t: &str) -> String {
    t.to_string()
}

/// Waits until the Quack worker answers a query.
async fn wait_serving(port: u16, token: &str) {
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
    tokio::task::spawn_blocking(move || client(port, &t, attach, &q.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

/// `POST /v1/sql`'s rows for `sql`, as the client prints them (strings).
async fn http_rows(addr: std::net::SocketAddr, token: &str, sql: &str) -> Option<Vec<Vec<Option<String>>>> {
    let r = send(addr, "POST", "/v1/sql", &[("authorization", &bearer(token))], &json!({ "sql": sql }).to_string()).await;
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
        ],
    )
    .await;
    println!("{r:#}");
    assert_eq!(r[0]["rows"], json!([["600", "300"]]), "{r}");
    assert_eq!(r[2]["rows"], json!([["user_features"]]), "introspection lists only the grant: {r}");
    assert!(r[3]["error"].is_string() && r[4]["error"].is_string(), "{r}");
    q.gw.stop().await;
}
