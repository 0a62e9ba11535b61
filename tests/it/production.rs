//! Issue 15, running it in production: schema rollouts under load, catalog
//! reloads on SIGHUP, namespaces, purge and an honest /readyz; and from issue
//! 16, requests in flight on SIGTERM and a stdout closed by its reader.

use std::time::{Duration, Instant};

use daeda_gateway::Plane;

use crate::http::{self, bearer, mint, send};
use crate::support::{signal, TestEnv};

/// `grow`: a Parquet source with columns id, ts, a and b; the definition
/// serves `a`, and `b` too when `with_b`.
fn write_grow(env: &TestEnv, with_b: bool) {
    let file = env.data().join("grow.parquet");
    if !file.exists() {
        env.duckdb()
            .execute_batch(&format!(
                "COPY (SELECT i::BIGINT AS id, TIMESTAMP '2026-06-28 00:00:00' AS ts, (i * 1.5)::DOUBLE AS a, (i * 2.0)::DOUBLE AS b FROM range(1, 201) t(i))
                 TO '{}' (FORMAT parquet)",
                file.display()
            ))
            .unwrap();
    }
    let (version, b) = if with_b { ("2026-06-29", "  - {name: b, type: DOUBLE}\n") } else { ("2026-06-28", "") };
    std::fs::write(
        env.yaml("grow"),
        format!(
            "name: grow\nversion: {version}\nentity:\n  join_keys: [id]\ntimestamp: ts\n\
             source:\n  kind: parquet\n  path: ../data/grow.parquet\n\
             columns:\n  - {{name: id, type: BIGINT}}\n  - {{name: ts, type: TIMESTAMP}}\n  - {{name: a, type: DOUBLE}}\n{b}\
             serving:\n  allowed: true\n"
        ),
    )
    .unwrap();
}

/// Regression (issue 15): once a generation with a new fingerprint went live,
/// a running gateway answered 409 to every lookup of the service until it was
/// restarted. Each generation now carries its schema and is decoded with it:
/// adding a column flips under load without one failed lookup, and the new
/// column is served by the gateway that loaded the old definition.
#[tokio::test(flavor = "multi_thread")]
async fn adding_a_column_flips_under_load_without_a_failed_lookup() {
    let env = TestEnv::new(10);
    write_grow(&env, false);
    env.materialize(&["--service", "grow"]);
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["grow"], &[Plane::Online]));
    let body = r#"{"entities": {"id": [1, 2, 300]}}"#;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (addr, auth, stop) = (gw.addr, auth.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut with_b) = (0u64, Vec::new(), 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = send(addr, "POST", "/v1/features/grow", &[("authorization", &auth)], body).await;
                if r.status != 200 {
                    failed.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                    continue;
                }
                let j = r.json();
                assert_eq!(j["columns"]["a"], serde_json::json!([1.5, 3.0, null]), "{j}");
                if j["columns"].get("b").is_some() {
                    assert_eq!(j["columns"]["b"], serde_json::json!([2.0, 4.0, null]), "{j}");
                    with_b += 1;
                }
                ok += 1;
            }
            (ok, failed, with_b)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| {
        write_grow(&env, true);
        env.materialize(&["--service", "grow"]);
    });
    // Until the clients have seen the new column for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send(gw.addr, "POST", "/v1/features/grow", &[("authorization", &auth)], body).await;
        if r.status == 200 && r.json()["columns"].get("b").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new schema was never served: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut with_b) = (0, 0);
    for c in clients {
        let (n, failed, b) = c.await.unwrap();
        assert!(failed.is_empty(), "{} failed lookups, e.g. {}", failed.len(), failed[0]);
        ok += n;
        with_b += b;
    }
    assert!(ok > with_b && with_b > 0, "both schemas were served: {ok} lookups, {with_b} with b");
    gw.stop().await;
}

/// A generation stored before its schema was (no `schema` field) is still
/// refused when its fingerprint differs from the loaded definition's.
#[tokio::test(flavor = "multi_thread")]
async fn a_generation_without_a_stored_schema_and_another_fingerprint_is_refused() {
    let env = TestEnv::new(10);
    write_grow(&env, false);
    env.materialize(&["--service", "grow"]);
    let generation = env.redis.current("grow").unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(format!("daeda:{{svc:grow}}:gen:{generation}"))
        .arg("schema")
        .query(&mut env.redis.conn())
        .unwrap();
    write_grow(&env, true);
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["grow"], &[Plane::Online]));
    let r =
        send(gw.addr, "POST", "/v1/features/grow", &[("authorization", &auth)], r#"{"entities": {"id": [1]}}"#).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "schema_mismatch".into()), "{}", String::from_utf8_lossy(&r.body));
    gw.stop().await;
}

/// `daeda serve` without the SQL plane, its logs on the test's stderr.
pub fn serve(env: &TestEnv, extra_env: &[(&str, &str)]) -> (crate::support::Killed, std::net::SocketAddr) {
    let env_vars: Vec<(&str, &str)> =
        [("DAEDA_SQL_ENABLED", "false")].into_iter().chain(extra_env.iter().copied()).collect();
    crate::support::serve(env, &env_vars, std::process::Stdio::inherit())
}

/// Regression (issue 15): turning a service's serving off needed a restart of
/// `daeda serve` (and SIGHUP killed it). SIGHUP now reloads the catalog: the
/// service is refused at once, and the gateway keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_catalog_and_a_service_turned_off_is_refused_at_once() {
    let env = TestEnv::new(10);
    env.materialize(&["--service", "user_features"]);
    let (mut child, addr) = serve(&env, &[]);
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let headers = [("authorization", auth.as_str())];
    let lookup = || send(addr, "POST", "/v1/features/user_features", &headers, r#"{"entities": {"user_id": [1]}}"#);
    assert_eq!(lookup().await.status, 200);
    env.edit("user_features", "allowed: true", "allowed: false");
    signal(&child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = lookup().await;
        if r.status == 403 {
            break;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(Instant::now() < deadline, "still served 10 s after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = send(addr, "GET", "/v1/services", &[("authorization", &auth)], "").await.json();
    assert!(!listed["services"].as_array().unwrap().iter().any(|s| s["name"] == "user_features"), "{listed}");
    // A catalog that does not load is reported and the one in use kept.
    std::fs::write(env.yaml("broken"), "name: [").unwrap();
    signal(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP stopped the gateway");
    assert_eq!(lookup().await.status, 403);
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `env`'s commands against a second catalog (holding only `services`) in
/// namespace `ns`, on the same Redis.
fn other_catalog(env: &TestEnv, ns: &str, services: &[&str]) -> std::path::PathBuf {
    let dir = env.dir.path().join(format!("catalog-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    for s in services {
        std::fs::copy(env.yaml(s), dir.join(format!("{s}.yaml"))).unwrap();
    }
    dir
}

fn in_ns(env: &TestEnv, ns: &str, catalog: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = crate::support::output(env.command(args).env("DAEDA_NAMESPACE", ns).env("DAEDA_CATALOG", catalog));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 15: two catalogs on one Redis. Before namespaces every catalog wrote
/// the same keys, and gc from one removed the other's services (they are not
/// in its catalog). Each namespace now has its own keys; gc sees only its own.
#[test]
fn two_namespaces_share_one_redis_and_gc_from_one_never_touches_the_other() {
    let env = TestEnv::new(50);
    // Namespace `default` (the catalog's own): user_features and item_features.
    env.materialize(&["--service", "user_features,item_features"]);
    let before_default = env.redis.count("daeda:*");
    // Namespace `team-b`: another catalog with the same service names.
    let b = other_catalog(&env, "team-b", &["user_features", "user_item_reranker", "item_features"]);
    let (code, _, stderr) = in_ns(
        &env,
        "team-b",
        &b,
        &[
            "materialize",
            "--online",
            "--as-of",
            crate::support::FIXED_AS_OF,
            "--service",
            "user_features,user_item_reranker",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    // One generation of rows (numbered above the shared run history's
    // highest, so not necessarily 1).
    assert_eq!(env.redis.count("daeda@team-b:row:user_features:*"), 50);
    assert_eq!(env.redis.count("daeda:*"), before_default, "team-b wrote into the default namespace");
    let lookup = |ns: &str, catalog: &std::path::Path| {
        in_ns(&env, ns, catalog, &["online", "get", "--service", "user_features", "--entities", r#"{"user_id": [1]}"#])
    };
    assert_eq!(lookup("team-b", &b).0, 0);

    // gc from team-b with a catalog lacking user_features: the default
    // namespace's user_features (and its item_features, live only there) are
    // not its business.
    std::fs::remove_file(b.join("user_features.yaml")).unwrap();
    std::fs::remove_file(b.join("user_item_reranker.yaml")).unwrap();
    let (code, stdout, stderr) = in_ns(&env, "team-b", &b, &["online", "gc", "--force", "user_features"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed service user_features"), "{stdout}");
    assert!(!stdout.contains("item_features"), "{stdout}");
    // The one with a live generation but not named stays.
    assert!(stdout.contains("skipped user_item_reranker: not in the catalog but generation 1 is live"), "{stdout}");
    assert_eq!(env.redis.count("daeda@team-b:row:user_features:*"), 0);
    assert!(env.redis.count("daeda@team-b:row:user_item_reranker:*") > 0);
    assert_eq!(env.redis.count("daeda:*"), before_default, "gc from team-b touched the default namespace");
    assert_eq!(lookup("default", &env.catalog()).0, 0);

    // And gc from the default namespace, whose catalog has every service, leaves team-b alone.
    let b_keys = env.redis.count("daeda@team-b:*");
    env.expect(0, &["online", "gc"]);
    assert_eq!(env.redis.count("daeda@team-b:*"), b_keys);

    // A namespace that cannot be part of a key is a usage error.
    let (code, _, stderr) = in_ns(&env, "a{b}", &b, &["online", "gc"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("namespace"), "{stderr}");
}

/// Issue 15: `online purge` removes everything a service holds (its pointer,
/// every generation, rows outside any registered generation), under its lease,
/// and keeps the generation counter so an id is never reused.
#[test]
fn online_purge_removes_a_services_rows_generations_and_pointer_under_its_lease() {
    let env = TestEnv::new(50);
    env.materialize(&["--service", "user_features,item_features"]);
    let mut c = env.redis.conn();
    let _: () = redis::cmd("SADD").arg("daeda:{svc:user_features}:gens").arg("99").query(&mut c).unwrap();
    let _: () = redis::cmd("MSET")
        .arg("daeda:row:user_features:99:1")
        .arg("x")
        .arg("daeda:row:user_features:77:1")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let items = env.redis.count("daeda:row:item_features:*");
    assert!(items > 0);

    // A run holds the lease: purge refuses and removes nothing.
    let lease = "daeda:{svc:user_features}:lease";
    let _: () = redis::cmd("SET").arg(lease).arg("some-run").query(&mut c).unwrap();
    let (_, stderr) = env.expect(1, &["online", "purge", "--service", "user_features"]);
    assert!(stderr.contains("some-run"), "{stderr}");
    assert_eq!(env.redis.count("daeda:row:user_features:*"), 52);
    let _: () = redis::cmd("DEL").arg(lease).query(&mut c).unwrap();

    let (stdout, _) = env.expect(0, &["online", "purge", "--service", "user_features"]);
    assert!(stdout.contains("purged user_features (namespace default): 52 rows"), "{stdout}");
    assert_eq!(env.redis.count("daeda:row:user_features:*"), 0);
    assert_eq!(env.redis.current("user_features"), None);
    assert_eq!(env.redis.count("daeda:{svc:user_features}:gen*"), 1, "only the counter is left");
    assert_eq!(env.redis.get(lease), None, "purge releases the lease");
    assert_eq!(env.redis.count("daeda:row:item_features:*"), items, "other services are untouched");
    let (_, stderr) =
        env.expect(1, &["online", "get", "--service", "user_features", "--entities", r#"{"user_id": [1]}"#]);
    assert!(stderr.contains("no live generation"), "{stderr}");
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "2", "a generation id was reused: {out}");
}

/// Regression (issue 15): /readyz said ready whenever Redis answered PING, so
/// a Redis restarted empty kept a gateway in rotation that could answer
/// nothing. Ready now needs a live generation, with the definition's
/// fingerprint, for every served service; the body names the one that is not.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_naming_the_service_when_redis_comes_back_empty() {
    let mut env = TestEnv::new(20);
    env.materialize(&["--all"]);
    let gw = http::start(&env, http::config(&env)).await;
    let r = send(gw.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["serving"]["user_features"]["ready"], true);
    assert!(r.json()["serving"].get("pii_features").is_none(), "not served, not waited for");

    env.redis.restart(); // no AOF: it comes back empty
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = send(gw.addr, "GET", "/readyz", &[], "").await;
        if r.status == 503 && r.code() != "redis_unavailable" {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after Redis came back empty: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let j = r.json();
    assert_eq!(j["status"], "not_ready", "{j}");
    assert_eq!(j["serving"]["user_features"]["ready"], false, "{j}");
    assert!(j["serving"]["user_features"]["reason"].as_str().unwrap().contains("no live generation"), "{j}");
    assert!(j.get("sql").is_some(), "{j}");
    gw.stop().await;

    // One service back: `any` is ready, `all` is not.
    tokio::task::block_in_place(|| env.materialize(&["--service", "user_features"]));
    let mut cfg = http::config(&env);
    cfg.ready_when = daeda_gateway::ReadyWhen::Any;
    let gw = http::start(&env, cfg).await;
    assert_eq!(send(gw.addr, "GET", "/readyz", &[], "").await.status, 200);
    gw.stop().await;
    let gw = http::start(&env, http::config(&env)).await;
    let j = send(gw.addr, "GET", "/readyz", &[], "").await.json();
    assert_eq!(j["status"], "not_ready", "{j}");
    assert_eq!(j["serving"]["user_features"]["ready"], true, "{j}");
    assert_eq!(j["serving"]["item_features"]["ready"], false, "{j}");

    // A definition changed after its generation was written: not ready until rematerialized.
    gw.stop().await;
    tokio::task::block_in_place(|| env.materialize(&["--all"]));
    env.edit("user_features", "{name: ctr_30d,        type: DOUBLE}", "{name: ctr_30d, type: FLOAT}");
    let gw = http::start(&env, http::config(&env)).await;
    let r = send(gw.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 503);
    assert!(r.json()["serving"]["user_features"]["reason"].as_str().unwrap().contains("fingerprint"), "{}", r.json());
    gw.stop().await;
}

fn oct_key(kid: &str, secret: &str) -> serde_json::Value {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut k = String::new();
    for chunk in secret.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            k.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    serde_json::json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": k})
}

fn keyed_token(kid: &str, secret: &str, exp_in: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"sub": "svc", "exp": now + exp_in, "services": ["*"], "planes": ["online"]});
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.to_string());
    bearer(&jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())).unwrap())
}

/// Issue 15: keys rotate without a restart. `jwt.jwks` holds several keys at
/// once, a token's `kid` picks one, SIGHUP re-reads the file; refusals say why
/// (unknown kid, bad signature, expired) without naming a secret.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_keys_rotate_through_a_jwks_file_on_sighup() {
    let env = TestEnv::new(10);
    env.materialize(&["--service", "user_features"]);
    let jwks = env.dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [oct_key("k1", "first-secret")]}).to_string()).unwrap();
    let (mut child, addr) = serve(&env, &[("DAEDA_JWT_SECRET", ""), ("DAEDA_JWT_JWKS", jwks.to_str().unwrap())]);
    let lookup = |auth: String| async move {
        send(
            addr,
            "POST",
            "/v1/features/user_features",
            &[("authorization", &auth)],
            r#"{"entities": {"user_id": [1]}}"#,
        )
        .await
    };
    let message = |r: &http::Reply| r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(lookup(keyed_token("k1", "first-secret", 600)).await.status, 200);
    let r = lookup(keyed_token("k2", "second-secret", 600)).await;
    assert_eq!(r.status, 401);
    assert!(message(&r).contains("key id (kid) is not a key this gateway knows"), "{}", message(&r));
    let r = lookup(keyed_token("k1", "second-secret", 600)).await;
    assert!(message(&r).contains("signature does not verify"), "{}", message(&r));
    let r = lookup(keyed_token("k1", "first-secret", -3600)).await;
    assert!(message(&r).contains("expired"), "{}", message(&r));
    assert!(!String::from_utf8_lossy(&r.body).contains("secret"));

    // Rotation: add k2 beside k1, then retire k1.
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [oct_key("k1", "first-secret"), oct_key("k2", "second-secret")]}).to_string(),
    )
    .unwrap();
    signal(&child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lookup(keyed_token("k2", "second-secret", 600)).await.status != 200 {
        assert!(Instant::now() < deadline, "k2 not accepted 10 s after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lookup(keyed_token("k1", "first-secret", 600)).await.status, 200);
    std::fs::write(&jwks, serde_json::json!({"keys": [oct_key("k2", "second-secret")]}).to_string()).unwrap();
    signal(&child, "-HUP");
    let old = keyed_token("k1", "first-secret", 600);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lookup(old.clone()).await.status != 401 {
        assert!(Instant::now() < deadline, "k1 still accepted 10 s after it left the key set");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lookup(keyed_token("k2", "second-secret", 600)).await.status, 200);
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Regression (issue 15): log lines carried ANSI colour codes into files and
/// collectors when stderr was a pipe. Without a terminal they are plain text.
#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let env = TestEnv::new(10);
    env.materialize(&["--service", "user_features"]);
    let addr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let mut cmd = env.command(&["serve", "--listen", &addr]);
    cmd.env_remove("NO_COLOR")
        .env("DAEDA_LOG", "info")
        .env("DAEDA_JWT_SECRET", http::SECRET)
        .env("DAEDA_SQL_ENABLED", "false")
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "daeda serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("live generation changed"), "no log line to check: {logs}");
    assert!(!logs.contains('\x1b'), "colour codes in piped logs: {logs:?}");
}

/// Issue 15: `/metrics` on its own address (`admin_listen`), so it can be
/// scraped from a network the lookups are not exposed to; it leaves the main one.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_to_the_admin_address_when_one_is_set() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let admin: std::net::SocketAddr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
            .parse()
            .unwrap();
    let (mut child, addr) = serve(&env, &[("DAEDA_ADMIN_LISTEN", &admin.to_string())]);
    let r = send(admin, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("daeda_build_info"));
    assert_eq!(send(admin, "GET", "/readyz", &[], "").await.status, 200);
    assert_eq!(send(admin, "POST", "/v1/features/user_features", &[], "{}").await.status, 404);
    assert_eq!(send(addr, "GET", "/metrics", &[], "").await.status, 404);
    assert_eq!(send(addr, "GET", "/healthz", &[], "").await.status, 200);
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // A remote admin address without TLS is refused like a remote listen address.
    let out = crate::support::output(
        env.command(&["serve", "--listen", "127.0.0.1:0"])
            .env("DAEDA_JWT_SECRET", "x")
            .env("DAEDA_ADMIN_LISTEN", "0.0.0.0:0"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 15: the MetadataStore grew forever. `runs prune --older-than` removes
/// whole old runs and keeps each service's latest success.
#[test]
fn runs_prune_removes_old_runs_and_keeps_the_latest_success() {
    let env = TestEnv::new(10);
    env.materialize(&["--service", "user_features"]);
    env.materialize(&["--service", "user_features"]);
    let (stdout, _) = env.expect(0, &["runs", "prune", "--older-than", "90d"]);
    assert!(stdout.starts_with("removed 0 runs"), "{stdout}");
    std::thread::sleep(Duration::from_millis(2100));
    let (stdout, _) = env.expect(0, &["runs", "prune", "--older-than", "1s", "--dry-run"]);
    assert!(stdout.starts_with("would remove 1 runs (2 records)"), "{stdout}");
    let (stdout, _) = env.expect(0, &["runs", "prune", "--older-than", "1s"]);
    assert!(stdout.starts_with("removed 1 runs (2 records)"), "{stdout}");
    let list = env.json(&["runs", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["status"], "succeeded");
    env.expect(2, &["runs", "prune", "--older-than", "soon"]);
}

/// Sends a request head with `Expect: 100-continue` and waits for the
/// gateway's `100 Continue`: from then on the handler is running and reading
/// the body, so the request is in flight. The body is still to be sent.
async fn in_flight(addr: std::net::SocketAddr, path: &str, auth: &str, body_len: usize) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\ncontent-type: application/json\r\n\
         content-length: {body_len}\r\nexpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("no 100 Continue within 30 s")
            .unwrap();
        assert!(n > 0, "closed before 100 Continue: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&got));
    s
}

/// Sends the rest of the request and reads the response to its end: status, body.
async fn finish(mut s: tokio::net::TcpStream, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("no response within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not a response: {text}"));
    // Both are small, whole bodies (content-length, not chunked).
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Issue 16: requests in flight when SIGTERM arrives finish with 200 while new
/// connections are refused, then the gateway exits 0. A lookup and a SQL
/// query are held in flight (head read, body not yet sent) across the signal.
/// Before, shutdown killed the SQL worker first, so the query failed (503).
#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_finish_on_sigterm_while_new_connections_are_refused() {
    let env = TestEnv::new(20);
    env.materialize(&["--service", "user_features"]);
    // Long request deadlines: the test, not the gateway, decides when bodies arrive.
    let limits = [("DAEDA_REQUEST_TIMEOUT_MS", "60000"), ("DAEDA_SQL_TIMEOUT_MS", "30000")];
    let (mut child, addr) = crate::support::serve(&env, &limits, std::process::Stdio::inherit());
    let deadline = Instant::now() + Duration::from_secs(60);
    while send(addr, "GET", "/readyz", &[], "").await.json()["sql"]["worker"] != "up" {
        assert!(Instant::now() < deadline, "the SQL worker did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let auth = bearer(&mint(&["user_features"], &[Plane::Online, Plane::Sql]));
    let lookup_body = r#"{"entities": {"user_id": [1, 2]}, "features": ["country"]}"#;
    let sql_body = r#"{"sql": "SELECT count(*) AS n FROM user_features"}"#;
    let lookup = in_flight(addr, "/v1/features/user_features", &auth, lookup_body.len()).await;
    let query = in_flight(addr, "/v1/sql", &auth, sql_body.len()).await;

    signal(&child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "the gateway exited with requests in flight");

    let (status, body) = finish(lookup, lookup_body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["columns"]["country"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    let (status, body) = finish(query, sql_body).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"n\""), "{body}");
    let status = tokio::task::block_in_place(|| {
        crate::support::wait_timeout(&mut child, Duration::from_secs(30), "daeda serve after SIGTERM")
    });
    assert_eq!(status.code(), Some(0));
}

/// Issue 16: `daeda … --json | head -c 10` panicked ("failed printing to
/// stdout: Broken pipe", exit 101) once the reader had gone. Now the output
/// ends quietly and the command exits with its own code: 0, its work done
/// (the materialization below still reaches Redis). A full disk is still an
/// error (exit 1). The reader is closed before daeda starts, so the first
/// write meets the closed pipe whatever the timing.
#[test]
fn a_closed_stdout_ends_the_output_quietly_and_keeps_the_exit_code() {
    let env = TestEnv::new(10);
    let closed_pipe = || {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        std::process::Stdio::from(writer)
    };
    for args in [
        &["services", "--json"][..],
        &["services"],
        &["validate"],
        &["materialize", "--online", "--json", "--service", "user_features", "--as-of", crate::support::FIXED_AS_OF],
        &["runs", "list", "--json"],
    ] {
        let child = env.command(args).stdout(closed_pipe()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let out = crate::support::output_timeout(child, crate::support::DAEDA_LIMIT, "daeda with a closed stdout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "daeda {args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "daeda {args:?}: {stderr}");
    }
    assert_eq!(env.redis.current("user_features").as_deref(), Some("1"), "the run's work was done");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let child = env.command(&["services", "--json"]).stdout(full).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let out = crate::support::output_timeout(child, crate::support::DAEDA_LIMIT, "daeda writing to /dev/full");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: writing the output") && !stderr.contains("panicked"), "{stderr}");
}
