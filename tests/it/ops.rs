//! Operations: what issue 14 found from outside (exact values from `online get`,
//! Redis loading, log floods, gc against runs, connection limits, settings) and
//! the operator metrics. Each test is named after the defect it pins.

use std::time::{Duration, Instant};

use daeda_gateway::Plane;

use crate::http::{self, bearer, metric, mint, send};
use crate::support::TestEnv;

const USERS: &str = "/v1/features/user_features";

/// A DOUBLE column whose values need all 17 significant digits.
fn add_doubles_service(env: &TestEnv) {
    let file = env.data().join("doubles.parquet");
    env.duckdb()
        .execute_batch(&format!(
            "COPY (SELECT * FROM (VALUES
                (1::BIGINT, TIMESTAMP '2026-06-28 00:00:00', '1.1500000000000001'::DOUBLE),
                (2, TIMESTAMP '2026-06-28 00:00:00', '0.30000000000000004'::DOUBLE),
                (3, TIMESTAMP '2026-06-28 00:00:00', '1e-7'::DOUBLE)) t(id, ts, x))
             TO '{}' (FORMAT parquet)",
            file.display()
        ))
        .unwrap();
    std::fs::write(
        env.yaml("doubles"),
        "name: doubles\nversion: 2026-06-28\nentity:\n  join_keys: [id]\ntimestamp: ts\n\
         source:\n  kind: parquet\n  path: ../data/doubles.parquet\n\
         columns:\n  - {name: id, type: BIGINT}\n  - {name: ts, type: TIMESTAMP}\n  - {name: x, type: DOUBLE}\n\
         serving:\n  allowed: true\n",
    )
    .unwrap();
}

/// The JSON text without the whitespace between tokens.
fn minified(text: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// Regression (issue 14): `online get` re-parsed the body and printed
/// 1.1500000000000001 as 1.15. It must print the gateway's tokens, digit for digit.
#[tokio::test(flavor = "multi_thread")]
async fn online_get_prints_every_digit_the_gateway_answers() {
    let env = TestEnv::new(10);
    add_doubles_service(&env);
    env.materialize(&["--service", "doubles"]);
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["doubles"], &[Plane::Online]));
    let r = send(
        gw.addr,
        "POST",
        "/v1/features/doubles",
        &[("authorization", &auth)],
        r#"{"entities": {"id": [1, 2, 3, 4]}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let gateway = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(gateway.contains("[1.1500000000000001,0.30000000000000004,1e-7,null]"), "{gateway}");
    let (cli, _) = env.expect(0, &["online", "get", "--service", "doubles", "--entities", r#"{"id": [1, 2, 3, 4]}"#]);
    assert!(cli.contains("1.1500000000000001"), "{cli}");
    assert_eq!(minified(&cli), gateway);
    gw.stop().await;
}

/// A leftover generation of `service` (registered, not live) with `rows` row keys.
fn leftover_generation(env: &TestEnv, service: &str, generation: &str, rows: usize) {
    let mut c = env.redis.conn();
    let _: () = redis::cmd("SADD").arg(format!("daeda:{{svc:{service}}}:gens")).arg(generation).query(&mut c).unwrap();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(10_000) {
        let mut mset = redis::cmd("MSET");
        for i in chunk {
            mset.arg(format!("daeda:row:{service}:{generation}:{i}")).arg("x");
        }
        let _: () = mset.query(&mut c).unwrap();
    }
}

/// Regression (issue 14): gc checked the lease holder, then retired every
/// generation that was not live without holding the lease, so a run starting in
/// between lost its new generation. gc now holds the service's lease while it
/// works: a run's lease request fails until gc is done.
#[test]
fn online_gc_holds_the_lease_so_a_starting_run_cannot_race_it() {
    let env = TestEnv::new(50);
    env.materialize(&["--service", "user_features"]);
    leftover_generation(&env, "user_features", "99", 200_000);
    let lease = "daeda:{svc:user_features}:lease";
    let mut c = env.redis.conn();

    let mut child = env.command(&["online", "gc"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let holder: Option<String> = redis::cmd("GET").arg(lease).query(&mut c).unwrap();
        if let Some(h) = holder {
            break h;
        }
        assert!(child.try_wait().unwrap().is_none(), "gc finished without ever holding the lease");
        assert!(Instant::now() < deadline, "gc never took the lease");
    };
    assert!(holder.starts_with("gc-"), "{holder}");
    // What a starting run does (SET NX): refused while gc works.
    let taken: Option<String> =
        redis::cmd("SET").arg(lease).arg("a-run").arg("NX").arg("PX").arg(30_000).query(&mut c).unwrap();
    assert_eq!(taken, None, "a run got the lease while gc held it");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("removed user_features generation 99 (not live), 200000 rows"), "{stdout}");
    let after: Option<String> = redis::cmd("GET").arg(lease).query(&mut c).unwrap();
    assert_eq!(after, None, "gc releases the lease");
    assert_eq!(env.redis.count("daeda:row:user_features:1:*"), 50, "the live generation is untouched");

    // A run holding the lease: gc leaves the service alone and says so.
    leftover_generation(&env, "user_features", "98", 10);
    let _: () = redis::cmd("SET").arg(lease).arg("20260101T000000Z-user_features-beef").query(&mut c).unwrap();
    let (stdout, _) = env.expect(0, &["online", "gc"]);
    assert!(
        stdout.contains("skipped user_features: run 20260101T000000Z-user_features-beef holds its lease"),
        "{stdout}"
    );
    assert_eq!(env.redis.count("daeda:row:user_features:98:*"), 10);
    let (stdout, _) = env.expect(0, &["online", "gc", "--dry-run"]);
    assert!(stdout.contains("skipped user_features"), "{stdout}");
}

/// One HTTP/1.1 request on a fresh connection, read to its end: the head
/// (status line and headers, lower-cased) and the body.
async fn raw(addr: std::net::SocketAddr, method: &str, path: &str, auth: &str, body: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

fn loading(c: &mut redis::Connection) -> Result<bool, redis::RedisError> {
    match redis::cmd("GET").arg("x").query::<Option<String>>(c) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Regression (issue 14): while Redis loads its dataset after a restart it
/// answers `LOADING`, and lookups got 500. Like a refused connection, that is
/// 503 with Retry-After, and service resumes by itself once loading is done.
/// Deterministic: Redis is restarted with a per-key load delay
/// (`key-load-delay`), and the test first sees it answer LOADING itself.
#[tokio::test(flavor = "multi_thread")]
async fn redis_loading_its_dataset_is_503_with_retry_after() {
    let mut env = TestEnv::new(50);
    env.materialize(&["--service", "user_features"]);
    leftover_generation(&env, "filler", "1", 20_000);
    let _: () = redis::cmd("SAVE").query(&mut env.redis.conn()).unwrap();
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let body = r#"{"entities": {"user_id": [1]}}"#;
    assert_eq!(raw(gw.addr, "POST", USERS, &auth, body).await.0.lines().next(), Some("http/1.1 200 ok"));

    env.redis.kill();
    let port = env.redis.port.to_string();
    let _redis = crate::support::Killed::new(
        std::process::Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(env.dir.path().join("redis"))
            .args(["--key-load-delay", "300", "--loading-process-events-interval-bytes", "1024"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Ok(mut c) = env.redis.client().get_connection() {
            match loading(&mut c) {
                Ok(true) => break c,
                Ok(false) => panic!("Redis finished loading before the test saw it loading"),
                Err(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "Redis did not come back");
        std::thread::sleep(Duration::from_millis(5));
    };
    for i in 0..5 {
        let (head, body) = raw(gw.addr, "POST", USERS, &auth, body).await;
        assert!(head.starts_with("http/1.1 503"), "request {i}: {head}\n{body}");
        assert!(head.contains("\r\nretry-after: 1"), "request {i}: {head}");
        assert!(body.contains(r#""code":"redis_unavailable""#), "request {i}: {body}");
    }
    assert!(loading(&mut c).unwrap(), "the 503s must have been answered while Redis was loading");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (head, body) = raw(gw.addr, "POST", USERS, &auth, body).await;
        if head.starts_with("http/1.1 200") {
            break;
        }
        assert!(head.starts_with("http/1.1 503"), "{head}\n{body}");
        assert!(Instant::now() < deadline, "no recovery after loading");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

/// Strips ANSI colour codes from a log line.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `daeda serve` (SQL plane on) with its stderr piped, for [`stop`].
fn serve(env: &TestEnv, extra_env: &[(&str, &str)]) -> (crate::support::Killed, std::net::SocketAddr) {
    crate::support::serve(env, extra_env, std::process::Stdio::piped())
}

/// SIGTERM, then everything it wrote to stderr.
fn stop(child: crate::support::Killed) -> String {
    crate::support::signal(&child, "-TERM");
    let out = child.into_inner().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).lines().map(plain).collect::<Vec<_>>().join("\n");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    stderr
}

/// Regression (issue 14): during an outage every failed request logged a
/// warning. Now the first failure of each 10 s interval is logged in full and
/// the rest are summed up in one line; every failure is still counted in /metrics.
#[test]
fn an_outage_logs_one_line_per_interval_not_one_per_request() {
    let mut env = TestEnv::new(50);
    env.materialize(&["--service", "user_features"]);
    let (child, addr) = serve(&env, &[]);
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    env.redis.kill();
    let rt = tokio::runtime::Runtime::new().unwrap();
    const N: u64 = 40;
    let metrics = rt.block_on(async {
        for _ in 0..N {
            let r = send(addr, "POST", USERS, &[("authorization", &auth)], r#"{"entities": {"user_id": [1]}}"#).await;
            assert_eq!(r.status, 503);
        }
        send(addr, "GET", "/metrics", &[], "").await
    });
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let want =
        format!(r#"daeda_request_errors_total{{route="/v1/features/{{service}}",code="redis_unavailable"}} {N}"#);
    assert!(metrics.contains(&want), "{metrics}");

    let stderr = stop(child);
    let full = stderr.lines().filter(|l| l.contains("request failed")).count() as u64;
    let summed: u64 = stderr
        .lines()
        .filter(|l| l.contains("more requests failed"))
        .map(|l| {
            l.split("suppressed=").nth(1).and_then(|v| v.split_whitespace().next()).unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!((1..=3).contains(&full), "{full} full lines (one per 10 s interval expected):\n{stderr}");
    assert_eq!(full + summed, N, "every failure is logged or counted in a summary:\n{stderr}");
}

/// Reads until the server closes the connection, at most `within`; None if it
/// is still open then.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// A connection that sent half a request line and holds a slot (retried while
/// the gateway still counts an earlier connection).
async fn hold(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hea").await.unwrap();
        let mut buf = [0u8; 64];
        if tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await.is_err() {
            return s; // nothing said back: it holds a slot
        }
        assert!(Instant::now() < deadline, "no connection slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression (issue 14): connections sending half a request line, or nothing,
/// stayed open forever, and there was no cap. Now a request head has
/// `header_read_timeout` to arrive, a connection without a request is closed
/// after `idle_timeout` (HTTP/2 too), and past `max_connections` a connection
/// is answered 503 and closed; each is counted in /metrics. Raw sockets, from outside.
#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_surplus_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new(10);
    env.materialize(&["--service", "user_features"]);
    let mut cfg = http::config(&env);
    cfg.max_connections = 100;
    // Long enough that the 100 connects and 5 refusals below all happen
    // before the first slow client is dropped, on a loaded machine (and below
    // the idle timeout, which would close a half request line too).
    cfg.header_read_timeout = Duration::from_millis(1500);
    cfg.idle_timeout = Duration::from_millis(2500);
    let gw = http::start(&env, cfg).await;

    // A hundred slow clients take every slot...
    let t = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /hea").await.unwrap();
        slow.push(s);
    }
    // ...so the next ones are answered 503 and closed.
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let text = closed_within(&mut s, Duration::from_secs(5)).await.expect("a surplus connection is closed at once");
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("retry-after: 1") && text.contains(r#""code":"too_many_connections""#), "{text}");
    }
    // The slow ones are closed once the header-read timeout passes.
    for s in &mut slow {
        assert!(closed_within(s, Duration::from_secs(10)).await.is_some(), "a half request line held its connection");
    }
    assert!(t.elapsed() >= Duration::from_millis(1400), "closed before the timeout: {:?}", t.elapsed());

    // A connection that says nothing is closed after the idle timeout.
    let t = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(closed_within(&mut silent, Duration::from_secs(10)).await.as_deref(), Some(""));
    assert!(t.elapsed() >= Duration::from_millis(2400), "{:?}", t.elapsed());

    // So is an HTTP/2 connection once its last request is done.
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{}{USERS}", gw.addr))
        .header("authorization", &auth)
        .body(http_body_util::Full::new(bytes::Bytes::from(r#"{"entities": {"user_id": [1]}}"#)))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("an idle HTTP/2 connection stayed open")
        .unwrap()
        .ok();
    assert!(t.elapsed() >= Duration::from_millis(1000), "{:?}", t.elapsed());

    let m = send(gw.addr, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&m.body);
    assert_eq!(metric(&text, r#"daeda_connection_events_total{event="refused"}"#), 5.0);
    assert_eq!(metric(&text, r#"daeda_connection_events_total{event="header_timeout"}"#), 100.0);
    assert!(metric(&text, r#"daeda_connection_events_total{event="idle_closed"}"#) >= 2.0, "{text}");
    assert_eq!(metric(&text, "daeda_connections_max"), 100.0);
    assert_eq!(metric(&text, "daeda_connections_open"), 1.0, "only the /metrics request's own");
    gw.stop().await;
}

/// Regression (issue 14): the pool size, Redis timeout, request deadline,
/// refresh interval and connection limits were constants. They are keys of
/// daeda.toml and environment variables (which win); a bad value is a usage
/// error naming its key.
#[test]
fn serve_limits_come_from_daeda_toml_and_the_environment() {
    let env = TestEnv::new(10);
    let toml = env.dir.path().join("daeda.toml");
    let bad = |file: &str, extra: &[(&str, &str)], names: &[&str]| {
        std::fs::write(&toml, file).unwrap();
        let mut cmd = env.command(&["serve", "--listen", "127.0.0.1:0"]);
        cmd.env("DAEDA_JWT_SECRET", http::SECRET);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file} {extra:?}: {stderr}");
        for n in names {
            assert!(stderr.contains(n), "{file} {extra:?}: `{n}` not in {stderr}");
        }
    };
    bad("request_timeout_ms = \"soon\"\n", &[], &["daeda.toml", "request_timeout_ms", "soon"]);
    bad("refresh_interval_ms = 0\n", &[], &["refresh_interval_ms"]);
    bad("idle_timeout_ms = -5\n", &[], &["daeda.toml", "idle_timeout_ms"]);
    bad("max_connections = 0\n", &[], &["max_connections"]);
    bad("", &[("DAEDA_REDIS_TIMEOUT_MS", "fast")], &["DAEDA_REDIS_TIMEOUT_MS", "redis_timeout_ms", "fast"]);
    bad("", &[("DAEDA_REDIS_POOL_SIZE", "many")], &["DAEDA_REDIS_POOL_SIZE", "redis_pool_size"]);
    bad("header_read_timeout_ms = 100\n", &[("DAEDA_HEADER_READ_TIMEOUT_MS", "0")], &["header_read_timeout_ms"]);

    // The file's values are used, the environment's win over them.
    std::fs::write(
        &toml,
        "max_connections = 50\nheader_read_timeout_ms = 2000\nredis_pool_size = 4\nrequest_timeout_ms = 3000\n",
    )
    .unwrap();
    let (child, addr) = serve(&env, &[("DAEDA_MAX_CONNECTIONS", "1")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut held = hold(addr).await;
        let t = Instant::now();
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        let text = closed_within(&mut next, Duration::from_secs(5)).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 503"), "DAEDA_MAX_CONNECTIONS=1 wins over the file's 50: {text}");
        assert!(closed_within(&mut held, Duration::from_secs(10)).await.is_some());
        assert!(t.elapsed() >= Duration::from_millis(1500), "header_read_timeout_ms = 2000: {:?}", t.elapsed());
    });
    stop(child);
}

/// Operator metrics: per service, how old the live generation and its data
/// bound are, its rows, the time since the last successful run; and the build.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_each_live_generations_age_rows_and_the_build() {
    let env = TestEnv::new(50);
    let before = chrono::Utc::now();
    env.materialize(&["--service", "user_features"]);
    let gw = http::start(&env, http::config(&env)).await;
    let m = send(gw.addr, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let since_run = (chrono::Utc::now() - before).num_milliseconds() as f64 / 1000.0;

    let age = metric(&text, r#"daeda_live_generation_age_seconds{service="user_features"}"#);
    assert!((0.0..=since_run + 1.0).contains(&age), "age {age}, run began {since_run} s ago");
    assert_eq!(metric(&text, r#"daeda_seconds_since_last_materialization{service="user_features"}"#), age);
    let as_of = chrono::DateTime::parse_from_rfc3339("2026-06-28T12:00:00Z").unwrap();
    let want = (chrono::Utc::now() - as_of.with_timezone(&chrono::Utc)).num_seconds() as f64;
    let as_of_age = metric(&text, r#"daeda_live_generation_as_of_age_seconds{service="user_features"}"#);
    assert!((as_of_age - want).abs() < 60.0, "as-of age {as_of_age}, expected about {want}");
    assert_eq!(metric(&text, r#"daeda_live_generation_rows{service="user_features"}"#), 50.0);
    assert!(
        !text.contains(r#"daeda_live_generation_rows{service="item_features"}"#),
        "nothing live, no series:\n{text}"
    );
    assert!(!text.contains("pii_features"), "not served, not listed");
    assert_eq!(metric(&text, &format!(r#"daeda_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))), 1.0);
    assert!(text.contains("# TYPE daeda_live_generation_age_seconds gauge"), "{text}");
    gw.stop().await;
}
