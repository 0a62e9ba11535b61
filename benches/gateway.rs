//! End-to-end load benchmark of the gateway (not a timed test):
//! `cargo bench --bench gateway`.
//!
//! On the 1M-entity data set of the materialization benchmark (BENCH_USERS), a
//! `daeda serve` process answers POST /v1/features/user_features with random
//! entity ids, at batch sizes 1 and 100 and concurrency 1 and 8, each worker on
//! its own keep-alive connection. In the same run the same client measures the
//! raw Redis round trip for the same keys (GET for 1, MGET for 100), so the
//! ratios gateway / Redis are what to read; absolute times drift on shared
//! machines. It also compares JSON and Arrow responses for a batch of 100, and
//! times a small approved query on the SQL plane.
//!
//! The hot-entity cache: a second `daeda serve` with `cache_max_bytes` = 64 MiB
//! on the same Redis and data answers batch-1 lookups of Zipf(1.1)-distributed
//! ids (ranking traffic: a few entities take most lookups), against raw GET of
//! the same distribution and the uncached gateway. `BENCH_ONLY=zipf` runs
//! only these scenarios.
#![allow(clippy::unwrap_used)] // test and bench code: a panic is the failure report

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastrand::Rng;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[path = "support/chart.rs"]
mod chart;

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

fn daeda(dir: &Path, redis_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_daeda"));
    c.env("DAEDA_REDIS_URL", redis_url)
        .env("DAEDA_CATALOG", dir.join("feature_services"))
        .env("DAEDA_RUN_ROOT", dir.join("runs"))
        .env("DAEDA_JWT_SECRET", SECRET)
        .env("DAEDA_MAX_BATCH", "1000")
        .stdin(Stdio::null());
    c
}

#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    errors: u64,
    bytes: u64,
    wall: Duration,
}

impl Run {
    fn merge(runs: Vec<Run>, wall: Duration) -> Run {
        let mut out = Run { wall, ..Default::default() };
        for r in runs {
            out.latencies.extend(r.latencies);
            out.errors += r.errors;
            out.bytes += r.bytes;
        }
        out.latencies.sort();
        out
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1e6
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// One keep-alive connection POSTing `next_body(rng)` to `path` until `until`.
async fn http_worker(
    addr: SocketAddr,
    token: Arc<String>,
    path: &'static str,
    accept: Option<&'static str>,
    seed: u64,
    until: Instant,
    mut next_body: impl FnMut(&mut Rng) -> String,
) -> Run {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut rng = Rng::with_seed(seed);
    let mut run = Run::default();
    let auth = format!("Bearer {token}");
    while Instant::now() < until {
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "localhost")
            .header("authorization", &auth)
            .header("content-type", "application/json");
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let req = req.body(Full::new(Bytes::from(next_body(&mut rng)))).unwrap();
        let t = Instant::now();
        match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status() == 200;
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                run.latencies.push(t.elapsed());
                run.bytes += body.len() as u64;
                if !ok {
                    run.errors += 1;
                }
            }
            Err(_) => run.errors += 1,
        }
    }
    run
}

/// Lookups of `batch` random entities, as JSON or Arrow.
async fn gateway_worker(
    addr: SocketAddr,
    token: Arc<String>,
    batch: usize,
    users: u64,
    seed: u64,
    until: Instant,
    arrow: bool,
) -> Run {
    let accept = arrow.then_some("application/vnd.apache.arrow.stream");
    http_worker(addr, token, "/v1/features/user_features", accept, seed, until, |rng| {
        let ids: Vec<String> = (0..batch).map(|_| rng.u64(..users).to_string()).collect();
        format!(r#"{{"entities": {{"user_id": [{}]}}, "include_stale": true}}"#, ids.join(","))
    })
    .await
}

/// Small approved SQL queries (one entity's full history) against the SQL plane.
async fn sql_worker(addr: SocketAddr, token: Arc<String>, users: u64, seed: u64, until: Instant) -> Run {
    http_worker(addr, token, "/v1/sql", None, seed, until, |rng| {
        format!(
            r#"{{"sql": "SELECT user_id, event_ts, ctr_7d, country FROM user_features WHERE user_id = {}"}}"#,
            rng.u64(..users)
        )
    })
    .await
}

/// Ranks 1..=n drawn with probability proportional to 1/rank^s, mapped to
/// entity ids by a fixed permutation (so the hot ids are spread over the key space).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for k in 1..=n {
            total += (k as f64).powf(-s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    fn id(&self, rng: &mut Rng) -> u64 {
        let u = rng.f64();
        let rank = self.cdf.partition_point(|c| *c < u) as u64;
        let n = self.cdf.len() as u64;
        // 999_983 is prime: a permutation of 0..n unless n is a multiple of it.
        (rank * 999_983) % n
    }
}

/// Batch-1 lookups of Zipf-distributed ids.
async fn zipf_gateway_worker(addr: SocketAddr, token: Arc<String>, zipf: Arc<Zipf>, seed: u64, until: Instant) -> Run {
    http_worker(addr, token, "/v1/features/user_features", None, seed, until, move |rng| {
        format!(r#"{{"entities": {{"user_id": [{}]}}, "include_stale": true}}"#, zipf.id(rng))
    })
    .await
}

/// Raw GET of Zipf-distributed ids' rows.
async fn zipf_redis_worker(url: String, zipf: Arc<Zipf>, seed: u64, until: Instant) -> Run {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut rng = Rng::with_seed(seed);
    let mut run = Run::default();
    while Instant::now() < until {
        let key = format!("daeda:row:user_features:1:{}", zipf.id(&mut rng));
        let t = Instant::now();
        let r = redis::cmd("GET").arg(&key).query_async::<Option<Vec<u8>>>(&mut conn).await;
        run.latencies.push(t.elapsed());
        if r.is_err() {
            run.errors += 1;
        }
    }
    run
}

/// A counter of the gateway's `/metrics`.
async fn scrape(addr: SocketAddr, series: &str) -> f64 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let body = sender.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn start_gateway(dir: &Path, redis_url: &str, cache_bytes: usize) -> (Proc, SocketAddr) {
    let port = free_port();
    let gw = Proc(
        daeda(dir, redis_url)
            .env("DAEDA_CACHE_MAX_BYTES", cache_bytes.to_string())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (gw, addr)
}

async fn redis_worker(url: String, batch: usize, users: u64, seed: u64, until: Instant) -> Run {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut rng = Rng::with_seed(seed);
    let mut run = Run::default();
    while Instant::now() < until {
        let keys: Vec<String> = (0..batch).map(|_| format!("daeda:row:user_features:1:{}", rng.u64(..users))).collect();
        let t = Instant::now();
        let r: redis::RedisResult<()> = if batch == 1 {
            redis::cmd("GET").arg(&keys[0]).query_async::<Option<Vec<u8>>>(&mut conn).await.map(|_| ())
        } else {
            redis::cmd("MGET").arg(&keys).query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await.map(|_| ())
        };
        run.latencies.push(t.elapsed());
        if r.is_err() {
            run.errors += 1;
        }
    }
    run
}

async fn measure<F, Fut>(concurrency: usize, secs: f64, f: F) -> Run
where
    F: Fn(u64, Instant) -> Fut,
    Fut: std::future::Future<Output = Run> + Send + 'static,
{
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> =
        (0..concurrency).map(|i| tokio::spawn(f(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1), until))).collect();
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.unwrap());
    }
    Run::merge(runs, start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let users: u64 = std::env::var("BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let secs: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4.0);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let redis_port = free_port();
    let _redis = Proc(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    std::thread::sleep(Duration::from_millis(300));

    let catalog = dir.join("feature_services");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services/user_features.yaml"),
        catalog.join("user_features.yaml"),
    )
    .unwrap();
    let ok = |c: &mut Command| assert!(c.stdout(Stdio::null()).status().unwrap().success());
    ok(daeda(dir, &redis_url).args(["demo", "generate", "--out"]).arg(dir.join("data")).args([
        "--users",
        &users.to_string(),
        "--items",
        "10",
    ]));
    ok(daeda(dir, &redis_url).args(["materialize", "--online", "--service", "user_features"]));

    let (_gw, addr) = start_gateway(dir, &redis_url, 0);
    let (_cached, cached_addr) = start_gateway(dir, &redis_url, 64 << 20);
    let only_zipf = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "zipf");
    let token = Arc::new(
        daeda_gateway::auth::mint(daeda_gateway::auth::MintRequest {
            secret: SECRET,
            sub: "bench",
            services: vec!["user_features".into()],
            planes: vec![daeda_gateway::Plane::Online, daeda_gateway::Plane::Sql],
            ttl_secs: 3600,
            issuer: None,
            audience: None,
        })
        .unwrap(),
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut rows = Vec::new();
    let mut scenarios = Vec::new();
    rt.block_on(async {
        let mut mget_100 = None;
        // Figures the issue-10 targets are judged on, filled in as they are measured.
        let mut fig = std::collections::BTreeMap::<&str, f64>::new();
        // Warm up connections, caches and the page cache.
        measure(2, 1.0, |seed, until| gateway_worker(addr, token.clone(), 10, users, seed, until, false)).await;
        let zipf = Arc::new(Zipf::new(users, 1.1));
        // The cache fills from the same distribution first (its steady state).
        let z = zipf.clone();
        measure(2, 2.0, |seed, until| zipf_gateway_worker(cached_addr, token.clone(), z.clone(), seed ^ 7, until)).await;
        let (hits0, misses0) =
            (scrape(cached_addr, "daeda_cache_hits_total").await, scrape(cached_addr, "daeda_cache_misses_total").await);
        for conc in [1, 8] {
            let z = zipf.clone();
            let c = measure(conc, secs, |seed, until| zipf_gateway_worker(cached_addr, token.clone(), z.clone(), seed, until)).await;
            let z = zipf.clone();
            let g = measure(conc, secs, |seed, until| zipf_gateway_worker(addr, token.clone(), z.clone(), seed, until)).await;
            let (url, z) = (redis_url.clone(), zipf.clone());
            let r = measure(conc, secs, move |seed, until| zipf_redis_worker(url.clone(), z.clone(), seed, until)).await;
            if conc == 1 {
                fig.insert("zipf_cached_p50_vs_get", c.pct(0.5) / r.pct(0.5));
                scenarios.push(chart::Scenario {
                    label: "Zipf batch 1, cached, 1 conn".into(),
                    daeda: (c.pct(0.5), c.pct(0.99)),
                    redis: Some((r.pct(0.5), r.pct(0.99))),
                });
            }
            let stat = |x: &Run| serde_json::json!({"rps": x.rps(), "p50_us": x.pct(0.5), "p99_us": x.pct(0.99), "errors": x.errors});
            rows.push(serde_json::json!({
                "zipf_1_1_batch_1": {
                    "concurrency": conc,
                    "cached_gateway": stat(&c), "gateway": stat(&g), "redis_get": stat(&r),
                    "cached_p50_vs_get": c.pct(0.5) / r.pct(0.5), "cached_p99_vs_get": c.pct(0.99) / r.pct(0.99),
                    "uncached_p50_vs_get": g.pct(0.5) / r.pct(0.5),
                }
            }));
        }
        let (hits, misses) = (
            scrape(cached_addr, "daeda_cache_hits_total").await - hits0,
            scrape(cached_addr, "daeda_cache_misses_total").await - misses0,
        );
        rows.push(serde_json::json!({
            "zipf_cache": {
                "hit_ratio": hits / (hits + misses),
                "entries": scrape(cached_addr, "daeda_cache_entries").await,
                "bytes": scrape(cached_addr, "daeda_cache_bytes").await,
            }
        }));
        if only_zipf {
            return;
        }
        for (batch, conc) in [(1, 1), (1, 8), (100, 1), (100, 8)] {
            let g = measure(conc, secs, |seed, until| gateway_worker(addr, token.clone(), batch, users, seed, until, false)).await;
            let url = redis_url.clone();
            let r = measure(conc, secs, move |seed, until| redis_worker(url.clone(), batch, users, seed, until)).await;
            scenarios.push(chart::Scenario {
                label: format!("JSON batch {batch}, {conc} conn"),
                daeda: (g.pct(0.5), g.pct(0.99)),
                redis: Some((r.pct(0.5), r.pct(0.99))),
            });
            match (batch, conc) {
                (1, 1) => {
                    fig.insert("b1_c1_p50_vs_get", g.pct(0.5) / r.pct(0.5));
                }
                (1, 8) => {
                    fig.insert("b1_c8_rps", g.rps());
                    fig.insert("b1_c8_p99_us", g.pct(0.99));
                }
                (100, 1) => {
                    mget_100 = Some((r.pct(0.5), r.pct(0.99)));
                    fig.insert("mget100_c1_p50_us", r.pct(0.5));
                }
                _ => {
                    fig.insert("b100_c8_json_p99_us", g.pct(0.99));
                }
            }
            rows.push(serde_json::json!({
                "batch": batch, "concurrency": conc,
                "gateway": {"rps": g.rps(), "p50_us": g.pct(0.5), "p99_us": g.pct(0.99), "errors": g.errors, "requests": g.latencies.len()},
                "redis": {"rps": r.rps(), "p50_us": r.pct(0.5), "p99_us": r.pct(0.99), "errors": r.errors},
                "p50_ratio": g.pct(0.5) / r.pct(0.5), "p99_ratio": g.pct(0.99) / r.pct(0.99),
            }));
        }
        let json = measure(1, secs, |seed, until| gateway_worker(addr, token.clone(), 100, users, seed, until, false)).await;
        let arrow = measure(1, secs, |seed, until| gateway_worker(addr, token.clone(), 100, users, seed, until, true)).await;
        let arrow8 = measure(8, secs, |seed, until| gateway_worker(addr, token.clone(), 100, users, seed, until, true)).await;
        let sql = measure(1, secs, |seed, until| sql_worker(addr, token.clone(), users, seed, until)).await;
        let mget = fig["mget100_c1_p50_us"];
        fig.insert("b100_c1_json_p50_vs_mget", json.pct(0.5) / mget);
        fig.insert("b100_c1_arrow_p50_vs_mget", arrow.pct(0.5) / mget);
        fig.insert("b100_c8_arrow_p99_us", arrow8.pct(0.99));
        rows.push(serde_json::json!({
            "arrow_batch_100_concurrency_8": {"rps": arrow8.rps(), "p50_us": arrow8.pct(0.5), "p99_us": arrow8.pct(0.99), "errors": arrow8.errors}
        }));
        // Issue 10's lookup targets, each against its threshold, from this run.
        let target = |name: &str, value: f64, limit: f64, at_most: bool| {
            serde_json::json!({"target": name, "measured": value, "limit": limit,
                "met": if at_most { value <= limit } else { value >= limit }})
        };
        rows.push(serde_json::json!({ "targets": [
            target("batch 1, 1 conn: p50 / GET p50", fig["b1_c1_p50_vs_get"], 1.5, true),
            target("batch 1, 8 conns: req/s", fig["b1_c8_rps"], 40_000.0, false),
            target("batch 1, 8 conns: p99 µs", fig["b1_c8_p99_us"], 1_000.0, true),
            target("batch 100, 1 conn: Arrow p50 / MGET p50", fig["b100_c1_arrow_p50_vs_mget"], 3.0, true),
            target("batch 100, 1 conn: JSON p50 / MGET p50", fig["b100_c1_json_p50_vs_mget"], 4.0, true),
            target("batch 100, 8 conns: Arrow p99 µs", fig["b100_c8_arrow_p99_us"], 3_000.0, true),
            target("batch 100, 8 conns: JSON p99 µs", fig["b100_c8_json_p99_us"], 3_000.0, true),
            target("Zipf(1.1) batch 1, cached: p50 / GET p50 (must be < 1)", fig["zipf_cached_p50_vs_get"], 1.0, true),
        ]}));
        scenarios.push(chart::Scenario {
            label: "Arrow batch 100, 1 conn".into(),
            daeda: (arrow.pct(0.5), arrow.pct(0.99)),
            redis: mget_100,
        });
        scenarios.push(chart::Scenario {
            label: "SQL point query".into(),
            daeda: (sql.pct(0.5), sql.pct(0.99)),
            redis: None,
        });
        rows.push(serde_json::json!({
            "sql_point_query": {"p50_us": sql.pct(0.5), "p99_us": sql.pct(0.99), "rps": sql.rps(), "errors": sql.errors}
        }));
        rows.push(serde_json::json!({
            "json_vs_arrow_batch_100": {
                "json": {"p50_us": json.pct(0.5), "p99_us": json.pct(0.99), "bytes_per_response": json.bytes / json.latencies.len() as u64},
                "arrow": {"p50_us": arrow.pct(0.5), "p99_us": arrow.pct(0.99), "bytes_per_response": arrow.bytes / arrow.latencies.len() as u64},
            }
        }));
    });
    let report = serde_json::json!({"entities": users, "seconds_per_scenario": secs, "results": rows});
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-bench-results");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("gateway.json"), serde_json::to_string_pretty(&report).unwrap());
    let title = format!("Lookup latency, {users} entities: daeda gateway vs raw Redis (one run)");
    let _ = std::fs::write(out.join("gateway.svg"), chart::svg(&title, &scenarios));
    eprintln!("wrote {}", out.join("gateway.svg").display());
}
