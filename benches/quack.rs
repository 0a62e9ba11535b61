//! Quack against `POST /v1/sql` against a local DuckDB (not a timed test):
//! `cargo bench --bench quack` (needs the bootstrap's Quack client venv).
//!
//! `daeda serve` with Quack on (BENCH_USERS users, two rows each: 10,000
//! rows by default); one stock Python client (`duckdb==1.5.5`) times, for
//! each path, a point query (one user) and an aggregate over every row
//! (GROUP BY country), sequentially: latency p50/p99 and rows scanned per
//! second. Paths: `quack_query` (one Quack connection per call, as the
//! extension does), a table scan through `ATTACH` (the client aggregates
//! locally), `POST /v1/sql` on a keep-alive connection (JSON), and DuckDB
//! in the same process reading the same Parquet files.
#![allow(clippy::unwrap_used)] // test and bench code: a panic is the failure report

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "bench-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DRIVER: &str = r#"
import duckdb, http.client, json, os, random, sys, time
a = json.load(sys.stdin)
ext = os.environ["DAEDA_DUCKDB_EXTENSION_DIR"]
n, rows_total, users = a["iterations"], a["rows"], a["users"]
uri, tok = "quack:localhost:%d" % a["quack_port"], a["token"]
point = "SELECT * FROM user_features WHERE user_id = %d"
agg = "SELECT country, count(*) AS n, avg(ctr_7d) AS ctr FROM user_features GROUP BY ALL"
c = duckdb.connect(config={"extension_directory": ext})
c.execute("SET enable_progress_bar = false")
c.execute("LOAD httpfs; LOAD quack")
c.execute("ATTACH '%s' AS daeda (TOKEN '%s')" % (uri, tok))
h = http.client.HTTPConnection("127.0.0.1", a["http_port"])
def http_sql(q):
    h.request("POST", "/v1/sql", json.dumps({"sql": q}), {"authorization": "Bearer " + tok, "content-type": "application/json"})
    r = h.getresponse(); body = r.read()
    assert r.status == 200, body
    return json.loads(body)
local = duckdb.connect()
local.execute("SET enable_progress_bar = false")
local.execute("CREATE VIEW user_features AS SELECT * FROM read_parquet('%s', hive_partitioning = true)" % a["parquet"])
paths = {
    "quack_query": lambda q: c.execute("SELECT * FROM quack_query(?, ?, token => ?)", [uri, q, tok]).fetchall(),
    "attach": lambda q: c.execute(q.replace("FROM user_features", "FROM daeda.user_features")).fetchall(),
    "http_sql": http_sql,
    "local_duckdb": lambda q: local.execute(q).fetchall(),
}
out = {}
for name, run in paths.items():
    for kind, make, scanned in [("point", lambda: point % random.randrange(users), 2), ("aggregate", lambda: agg, rows_total)]:
        for _ in range(3):
            run(make())
        lat = []
        for _ in range(n):
            q = make(); t = time.perf_counter(); run(q); lat.append(time.perf_counter() - t)
        lat.sort()
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        out["%s/%s" % (name, kind)] = {"p50_ms": round(p50 * 1e3, 2), "p99_ms": round(p99 * 1e3, 2), "rows_scanned_per_s": round(scanned / p50)}
print(json.dumps(out, indent=1))
"#;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let users: u64 = std::env::var("BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let iterations: u64 = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let catalog = dir.join("feature_services");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services/user_features.yaml"),
        catalog.join("user_features.yaml"),
    )
    .unwrap();
    let daeda = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_daeda"));
        // No Redis: the SQL plane does not need one (lookups would answer 503).
        c.env("DAEDA_REDIS_URL", format!("redis://127.0.0.1:{}/0", free_port()))
            .env("DAEDA_CATALOG", &catalog)
            .env("DAEDA_RUN_ROOT", dir.join("runs"))
            .env("DAEDA_JWT_SECRET", SECRET)
            .stdin(Stdio::null());
        c
    };
    assert!(daeda()
        .args(["demo", "generate", "--out"])
        .arg(dir.join("data"))
        .args(["--users", &users.to_string(), "--items", "10"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let (http_port, quack_port) = (free_port(), free_port());
    let _gw = Proc(
        daeda()
            .env("DAEDA_QUACK_LISTEN", format!("127.0.0.1:{quack_port}"))
            .args(["serve", "--listen", &format!("127.0.0.1:{http_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let token = daeda_gateway::auth::mint(daeda_gateway::auth::MintRequest {
        secret: SECRET,
        sub: "bench",
        services: vec!["user_features".into()],
        planes: vec![daeda_gateway::Plane::Sql],
        ttl_secs: 3600,
        issuer: None,
        audience: None,
    })
    .unwrap();
    let deps =
        std::env::var("DAEDA_DEPS").unwrap_or_else(|_| format!("{}/.cache/daeda", std::env::var("HOME").unwrap()));
    let python = Path::new(&deps).join("quack-client-venv/bin/python");
    let args = serde_json::json!({
        "iterations": iterations, "rows": users * 2, "users": users, "quack_port": quack_port, "http_port": http_port,
        "token": token, "parquet": dir.join("data/user_features/*/*.parquet"),
    });
    // The workers build their sessions in the background: retry until Quack answers.
    for attempt in 0.. {
        let mut child =
            Command::new(&python).args(["-c", DRIVER]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(args.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            println!("{text}");
            let dest = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-bench-results");
            let _ = std::fs::create_dir_all(&dest);
            let _ = std::fs::write(dest.join("quack.json"), text.as_bytes());
            return;
        }
        assert!(attempt < 60, "the Quack bench client kept failing");
        std::thread::sleep(Duration::from_millis(500));
    }
}
