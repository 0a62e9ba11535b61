//! The gateway end to end over real sockets: lookups (JSON and Arrow), every
//! token failure, every scope decision, bad requests, Redis going away and
//! coming back, a flip under load, TLS.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daeda_gateway::Plane;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::http::{self, bearer, mint, send, SECRET};
use crate::support::{output, wait_timeout, TestEnv};

const USERS: &str = "/v1/features/user_features";

fn env_with_data() -> TestEnv {
    let env = TestEnv::new(300);
    env.materialize(&["--all"]);
    env
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn signed(claims: serde_json::Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn claims() -> serde_json::Value {
    json!({"sub": "x", "exp": now() + 600, "services": ["*"], "planes": ["online"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_answer_the_same_body_as_online_get_and_arrow_on_request() {
    let env = env_with_data();
    let gw = http::start(&env, http::config(&env)).await;
    let token = mint(&["user_features", "user_item_reranker"], &[Plane::Online]);
    let auth = bearer(&token);
    let body = r#"{"entities": {"user_id": [1, 2, 999999]}, "features": ["ctr_7d", "ltv", "embedding"], "include_stale": true}"#;
    let r = send(gw.addr, "POST", USERS, &[("authorization", &auth)], body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = r.json();
    let cli = env.json(&[
        "online",
        "get",
        "--service",
        "user_features",
        "--entities",
        r#"{"user_id": [1, 2, 999999]}"#,
        "--features",
        "ctr_7d,ltv,embedding",
        "--include-stale",
    ]);
    assert_eq!(got, cli);
    assert_eq!(got["status"], json!(["stale", "stale", "missing"]));
    assert_eq!(got["columns"]["embedding"][0].as_array().unwrap().len(), 64);

    // Stale values are withheld unless asked for.
    let r = send(gw.addr, "POST", USERS, &[("authorization", &auth)], r#"{"entities": {"user_id": [1]}}"#).await;
    assert_eq!(r.json()["columns"]["ctr_7d"][0], serde_json::Value::Null);
    assert_eq!(r.json()["status"][0], "stale");

    // Composite keys.
    let r = send(
        gw.addr,
        "POST",
        "/v1/features/user_item_reranker",
        &[("authorization", &auth)],
        r#"{"entities": {"user_id": [0, 0], "item_id": [1, -1]}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"][1], "missing");

    // Arrow IPC.
    let r = send(
        gw.addr,
        "POST",
        USERS,
        &[("authorization", &auth), ("accept", "application/vnd.apache.arrow.stream")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/vnd.apache.arrow.stream");
    let mut reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body.to_vec()), None).unwrap();
    let batch = reader.next().unwrap().unwrap();
    let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["user_id", "ctr_7d", "ltv", "embedding", "_status", "_event_ts"]);
    assert_eq!(batch.num_rows(), 3);
    let ltv = batch.column(2).as_any().downcast_ref::<arrow_array::Decimal128Array>().unwrap();
    assert_eq!(ltv.value_as_string(0), cli["columns"]["ltv"][0].as_str().unwrap());
    assert!(arrow_array::Array::is_null(ltv, 2));
    // FLOAT[64]: the same floats as the JSON body; a missing row is a NULL list.
    let emb = batch.column(3).as_any().downcast_ref::<arrow_array::FixedSizeListArray>().unwrap();
    assert!(arrow_array::Array::is_null(emb, 2));
    let first = emb.value(0);
    let first = first.as_any().downcast_ref::<arrow_array::Float32Array>().unwrap();
    let want: Vec<f32> =
        cli["columns"]["embedding"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(first.values().to_vec(), want);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_token_failure_is_401() {
    let env = env_with_data();
    let mut cfg = http::config(&env);
    cfg.auth.issuer = Some("daeda-test".into());
    cfg.auth.audience = Some("ranking".into());
    let gw = http::start(&env, cfg).await;
    let body = r#"{"entities": {"user_id": [1]}}"#;
    let good = {
        let mut c = claims();
        c["iss"] = json!("daeda-test");
        c["aud"] = json!("ranking");
        c
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let none_alg = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(good.to_string().as_bytes()));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong scheme", Some(format!("Basic {}", signed(good.clone(), Algorithm::HS256, SECRET)))),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("empty", Some("Bearer ".into())),
        ("alg none", Some(bearer(&none_alg))),
        ("wrong key", Some(bearer(&signed(good.clone(), Algorithm::HS256, "another-secret")))),
        ("other algorithm", Some(bearer(&signed(good.clone(), Algorithm::HS512, SECRET)))),
        ("expired", Some(bearer(&signed(with("exp", json!(now() - 3600)), Algorithm::HS256, SECRET)))),
        ("not yet valid", Some(bearer(&signed(with("nbf", json!(now() + 3600)), Algorithm::HS256, SECRET)))),
        ("issued in the future", Some(bearer(&signed(with("iat", json!(now() + 3600)), Algorithm::HS256, SECRET)))),
        ("no exp", Some(bearer(&signed(without("exp"), Algorithm::HS256, SECRET)))),
        ("no sub", Some(bearer(&signed(without("sub"), Algorithm::HS256, SECRET)))),
        ("no services", Some(bearer(&signed(without("services"), Algorithm::HS256, SECRET)))),
        ("services not an array", Some(bearer(&signed(with("services", json!("*")), Algorithm::HS256, SECRET)))),
        ("no planes", Some(bearer(&signed(without("planes"), Algorithm::HS256, SECRET)))),
        ("unknown plane", Some(bearer(&signed(with("planes", json!(["offline"])), Algorithm::HS256, SECRET)))),
        ("wrong issuer", Some(bearer(&signed(with("iss", json!("evil")), Algorithm::HS256, SECRET)))),
        ("no issuer", Some(bearer(&signed(without("iss"), Algorithm::HS256, SECRET)))),
        ("wrong audience", Some(bearer(&signed(with("aud", json!("ads")), Algorithm::HS256, SECRET)))),
        ("no audience", Some(bearer(&signed(without("aud"), Algorithm::HS256, SECRET)))),
    ];
    for (what, header) in cases {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        let r = send(gw.addr, "POST", USERS, &headers, body).await;
        assert_eq!(r.status, 401, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.code(), "unauthorized", "{what}");
    }
    // A token in the query string is ignored.
    let token = signed(good.clone(), Algorithm::HS256, SECRET);
    let r = send(gw.addr, "POST", &format!("{USERS}?access_token={token}"), &[], body).await;
    assert_eq!(r.status, 401);
    // The right token, with a lower-case scheme word, passes.
    let r = send(gw.addr, "POST", USERS, &[("authorization", &format!("bearer {token}"))], body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_and_serving_allowed_are_enforced_on_every_route() {
    let env = env_with_data();
    let gw = http::start(&env, http::config(&env)).await;
    let body = r#"{"entities": {"user_id": [1]}}"#;
    let star = bearer(&mint(&["*"], &[Plane::Online, Plane::Sql]));
    let items_only = bearer(&mint(&["item_features"], &[Plane::Online]));
    let sql_only = bearer(&mint(&["user_features"], &[Plane::Sql]));

    let r = send(gw.addr, "POST", "/v1/features/pii_features", &[("authorization", &star)], body).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "forbidden".into()), "serving_allowed false beats \"*\"");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("not approved for serving"));
    let r = send(gw.addr, "POST", USERS, &[("authorization", &items_only)], body).await;
    assert_eq!(r.status, 403);
    let r = send(gw.addr, "POST", USERS, &[("authorization", &sql_only)], body).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("online plane"));
    let r = send(gw.addr, "POST", USERS, &[("authorization", &star)], body).await;
    assert_eq!(r.status, 200);

    // The listing shows what the token may read, never pii_features.
    let r = send(gw.addr, "GET", "/v1/services", &[("authorization", &star)], "").await;
    let names: Vec<String> =
        r.json()["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["item_features", "user_features", "user_item_reranker"]);
    assert_eq!(r.json()["services"][1]["generation"], "1");
    let r = send(gw.addr, "GET", "/v1/services", &[("authorization", &items_only)], "").await;
    assert_eq!(r.json()["services"].as_array().unwrap().len(), 1);
    let r = send(gw.addr, "GET", "/v1/services", &[], "").await;
    assert_eq!(r.status, 401);

    // Operations routes need no token.
    assert_eq!(send(gw.addr, "GET", "/healthz", &[], "").await.status, 200);
    assert_eq!(send(gw.addr, "GET", "/readyz", &[], "").await.status, 200);
    let doc = send(gw.addr, "GET", "/openapi.json", &[], "").await;
    assert_eq!((doc.status.as_u16(), doc.content_type.as_str()), (200, "application/json"));
    assert!(doc.json()["openapi"].as_str().unwrap().starts_with("3.1."));
    let m = send(gw.addr, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains(r#"daeda_requests_total{route="/v1/features/{service}",status="403"} 3"#), "{text}");
    assert!(text.contains("daeda_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"daeda_entities_served_total{status="stale"} 1"#), "{text}");
    assert!(text.contains("daeda_redis_lookup_seconds_count 1"), "{text}");
    assert!(text.contains(r#"daeda_redis_pool_connections{state="open"}"#), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_status_and_code() {
    let env = env_with_data();
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let h = [("authorization", auth.as_str())];
    let too_many = format!(
        r#"{{"entities": {{"user_id": [{}]}}}}"#,
        (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    );
    let huge = format!(r#"{{"entities": {{"user_id": [1]}}, "pad": "{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{not json".into(), 400, "bad_request"),
        ("wrong key type", r#"{"entities": {"user_id": ["1"]}}"#.into(), 400, "bad_request"),
        ("missing join key", r#"{"entities": {}}"#.into(), 400, "bad_request"),
        ("extra key column", r#"{"entities": {"user_id": [1], "item_id": [2]}}"#.into(), 400, "bad_request"),
        ("unknown field", r#"{"entities": {"user_id": [1]}, "featurez": ["a"]}"#.into(), 400, "bad_request"),
        ("empty batch", r#"{"entities": {"user_id": []}}"#.into(), 400, "bad_request"),
        ("over the batch limit", too_many, 400, "batch_too_large"),
        ("unknown feature", r#"{"entities": {"user_id": [1]}, "features": ["nope"]}"#.into(), 404, "not_found"),
        ("body over the limit", huge, 413, "body_too_large"),
    ];
    for (what, body, status, code) in cases {
        let r = send(gw.addr, "POST", USERS, &h, &body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.to_string()),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = send(
        gw.addr,
        "POST",
        "/v1/features/user_item_reranker",
        &h,
        r#"{"entities": {"user_id": [1, 2], "item_id": [1]}}"#,
    )
    .await;
    assert_eq!(r.status, 400, "columns of unequal length");
    let r = send(gw.addr, "POST", "/v1/features/nope", &h, r#"{"entities": {}}"#).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found".into()));
    let r = send(gw.addr, "GET", USERS, &h, "").await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "method_not_allowed".into()));
    assert_eq!(r.headers["allow"], "POST", "a 405 names the method the route takes");
    let r = send(gw.addr, "GET", "/nowhere", &h, "").await;
    assert_eq!(r.status, 404);
    gw.stop().await;
}

/// A definition changed after the live generation was written (issue 15): the
/// rows are decoded with the schema stored with the generation, never with the
/// loaded definition's types (which would read garbage), and never refused.
/// A change of join keys, and an old generation without a stored schema, are
/// still refused (see `production.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn a_generation_written_for_another_schema_is_decoded_with_its_own() {
    let env = env_with_data();
    env.edit("user_features", "{name: ctr_30d,        type: DOUBLE}", "{name: ctr_30d, type: FLOAT}");
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let r = send(
        gw.addr,
        "POST",
        USERS,
        &[("authorization", &auth)],
        r#"{"entities": {"user_id": [1]}, "features": ["ctr_30d"]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (cli, _) = env.expect(
        0,
        &["online", "get", "--service", "user_features", "--entities", r#"{"user_id": [1]}"#, "--features", "ctr_30d"],
    );
    let cli: serde_json::Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(r.json()["columns"]["ctr_30d"], cli["columns"]["ctr_30d"]);
    env.edit("user_features", "join_keys: [user_id]", "join_keys: [user_id, country]");
    gw.stop().await;
    let gw = http::start(&env, http::config(&env)).await;
    let r = send(
        gw.addr,
        "POST",
        USERS,
        &[("authorization", &auth)],
        r#"{"entities": {"user_id": [1], "country": ["DE"]}}"#,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "schema_mismatch".into()), "{}", String::from_utf8_lossy(&r.body));
    gw.stop().await;
}

/// The value of an unlabelled metric (or a labelled series, given with its
/// labels); None when the exposition does not have it.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_going_away_is_a_fast_503_and_the_gateway_recovers_by_itself() {
    let mut env = TestEnv::with_redis(200, true);
    env.materialize(&["--service", "user_features"]);
    let cfg = http::config(&env);
    let deadline = cfg.request_timeout;
    let gw = http::start(&env, cfg).await;
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let body = r#"{"entities": {"user_id": [1]}}"#;
    assert_eq!(send(gw.addr, "POST", USERS, &[("authorization", &auth)], body).await.status, 200);
    let errors = |text: &str| {
        metric(text, "daeda_redis_errors_total").unwrap_or_else(|| panic!("no daeda_redis_errors_total: {text}"))
    };
    let m = send(gw.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(errors(&String::from_utf8_lossy(&m.body)), 0.0);

    env.redis.kill();
    // Every answer that says Redis is unavailable is one Redis error.
    let mut unavailable = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let r = send(gw.addr, "POST", USERS, &[("authorization", &auth)], body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (503, "redis_unavailable".into()),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        // A hang would end at the request deadline as a 504: the Redis timeout
        // answered first.
        assert!(t.elapsed() < deadline, "503 took {:?}", t.elapsed());
        unavailable += 1;
    }
    let r = send(gw.addr, "GET", "/readyz", &[], "").await;
    assert_eq!((r.status.as_u16(), r.code()), (503, "redis_unavailable".into()));
    unavailable += 1;
    assert_eq!(send(gw.addr, "GET", "/healthz", &[], "").await.status, 200);

    env.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send(gw.addr, "POST", USERS, &[("authorization", &auth)], body).await;
        if r.status == 200 {
            break;
        }
        if r.code() == "redis_unavailable" {
            unavailable += 1;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = send(gw.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(errors(&String::from_utf8_lossy(&m.body)), f64::from(unavailable));
    gw.stop().await;
}

/// Writes, for every user, a row newer than the generated ones whose `ctr_7d`
/// and `clicks_7d` are `marker`: the next full run serves `marker` everywhere.
fn write_marker(env: &TestEnv, marker: i64) {
    let dir = env.data().join("user_features/ds=9999-12-31");
    std::fs::create_dir_all(&dir).unwrap();
    let at = (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%Y-%m-%d %H:%M:%S");
    let tmp = env.dir.path().join("marker.parquet");
    env.duckdb()
        .execute_batch(&format!(
            "COPY (SELECT * EXCLUDE (ds) REPLACE (TIMESTAMP '{at}' AS event_ts, {marker}::DOUBLE AS ctr_7d, {marker}::BIGINT AS clicks_7d)
                   FROM read_parquet('{}', hive_partitioning = true) WHERE user_id IS NOT NULL AND ds <> '9999-12-31'
                   QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY event_ts DESC) = 1)
             TO '{}' (FORMAT parquet)",
            env.data().join("user_features/*/*.parquet").display(),
            tmp.display()
        ))
        .unwrap();
    std::fs::rename(tmp, dir.join("marker.parquet")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flip_under_load_never_mixes_or_loses_rows() {
    // Each generation serves its own value in every row (its marker), so a
    // response mixing two generations, or labelled with the wrong one, shows.
    let env = TestEnv::fresh(2000);
    let mut marker_of = std::collections::BTreeMap::new();
    write_marker(&env, 100);
    let out = env.materialize(&["--service", "user_features"]);
    marker_of.insert(out["runs"][0]["generation"].as_str().unwrap().to_string(), 100.0);
    let gw = http::start(&env, http::config(&env)).await;
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let ids: Vec<String> = (0..100).map(|i| (i * 7).to_string()).collect();
    let body = format!(r#"{{"entities": {{"user_id": [{}]}}, "features": ["ctr_7d", "clicks_7d"]}}"#, ids.join(","));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (addr, auth, body, stop) = (gw.addr, auth.clone(), body.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            // generation -> the values its responses held
            let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = send(addr, "POST", USERS, &[("authorization", &auth)], &body).await;
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                let j = r.json();
                assert!(j["status"].as_array().unwrap().iter().all(|s| s == "ok"), "a row went missing or stale: {j}");
                let mut values: std::collections::BTreeSet<String> = Default::default();
                for col in ["ctr_7d", "clicks_7d"] {
                    values
                        .extend(j["columns"][col].as_array().unwrap().iter().map(|v| v.as_f64().unwrap().to_string()));
                }
                assert_eq!(values.len(), 1, "one response, several generations: {j}");
                seen.entry(j["generation"].as_str().unwrap().to_string()).or_default().extend(values);
            }
            seen
        }));
    }
    for marker in [200, 300, 400] {
        let env_ref = &env;
        let out = tokio::task::block_in_place(|| {
            write_marker(env_ref, marker);
            env_ref.materialize(&["--service", "user_features"])
        });
        marker_of.insert(out["runs"][0]["generation"].as_str().unwrap().to_string(), marker as f64);
    }
    // Let the clients see the last generation before stopping them.
    let last = marker_of.keys().last().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = send(gw.addr, "POST", USERS, &[("authorization", &auth)], &body).await;
        if r.json()["generation"] == last.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never served generation {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut generations = std::collections::BTreeSet::new();
    for c in clients {
        let seen = c.await.unwrap();
        assert!(!seen.is_empty(), "a client got no answer");
        for (generation, values) in seen {
            let want =
                marker_of.get(&generation).unwrap_or_else(|| panic!("served generation {generation}, never written"));
            assert_eq!(values, [want.to_string()].into(), "generation {generation} served another generation's values");
            generations.insert(generation);
        }
    }
    assert!(generations.len() >= 2, "the flips were not observed: {generations:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_https_and_remote_binds_need_tls_and_consent() {
    let env = env_with_data();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = env.dir.path().join("cert.pem");
    let key_path = env.dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let mut cfg = http::config(&env);
    cfg.tls = Some((cert_path.clone(), key_path.clone()));
    let gw = http::start(&env, cfg).await;
    let connector = http::tls_connector(&cert.cert.pem());
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let r = http::send_on(
        hyper_util::rt::TokioIo::new(tls),
        "POST",
        USERS,
        &[("authorization", &auth)],
        r#"{"entities": {"user_id": [1]}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    gw.stop().await;

    let catalog = || daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let store = || daeda_online::OnlineStore::connect(&env.redis.url(), &Default::default()).unwrap();
    let mut remote = http::config(&env);
    remote.listen = "0.0.0.0:0".parse().unwrap();
    let err = daeda_gateway::Gateway::bind(remote.clone(), catalog(), store()).await.err().unwrap();
    assert!(err.to_string().contains("needs TLS"), "{err}");
    remote.tls = Some((cert_path, key_path));
    let err = daeda_gateway::Gateway::bind(remote.clone(), catalog(), store()).await.err().unwrap();
    assert!(err.to_string().contains("needs allow_remote"), "{err}");
    remote.allow_remote = true;
    assert!(daeda_gateway::Gateway::bind(remote, catalog(), store()).await.is_ok());
}

#[test]
fn serve_refuses_a_remote_address_and_token_mint_prints_a_token() {
    let env = TestEnv::new(10);
    let out = output(env.command(&["serve", "--listen", "0.0.0.0:7999"]).env("DAEDA_JWT_SECRET", SECRET));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs TLS"));
    let out = output(
        env.command(&["token", "mint", "--sub", "svc", "--services", "user_features", "--planes", "online,sql"])
            .env("DAEDA_JWT_SECRET", SECRET),
    );
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3);
    let v = daeda_gateway::auth::Verifier::new(&daeda_gateway::AuthSettings {
        secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let p = v.verify(Some(&bearer(token.trim()))).unwrap();
    assert_eq!(p.sub, "svc");
    assert_eq!(p.planes, [Plane::Online, Plane::Sql]);
    let out = output(env.command(&["token", "mint", "--sub", "svc", "--services", "x"]).env_remove("DAEDA_JWT_SECRET"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set DAEDA_JWT_SECRET to mint tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_with_prior_knowledge_is_served() {
    use http_body_util::{BodyExt, Full};
    let env = env_with_data();
    let gw = http::start(&env, http::config(&env)).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    for _ in 0..3 {
        let req = hyper::Request::builder()
            .method("POST")
            .uri(format!("http://{}{USERS}", gw.addr))
            .header("authorization", &auth)
            .body(Full::new(bytes::Bytes::from(r#"{"entities": {"user_id": [1, 2]}}"#)))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["status"].as_array().unwrap().len(), 2);
    }
    gw.stop().await;
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    use std::io::BufRead;
    let env = env_with_data();
    // Port 0: the server picks its port and prints it, so no other process can
    // take the port between choosing and binding it.
    let mut child = env
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .env("DAEDA_JWT_SECRET", SECRET)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr: std::net::SocketAddr = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let addr = line.split("serving on http://").nth(1).map(|a| a.trim().parse().unwrap());
                lines.push(line);
                if let Some(a) = addr {
                    break a;
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("daeda serve did not say where it serves ({e}): {lines:?}");
            }
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(send(addr, "GET", "/healthz", &[], ""));
    assert_eq!(r.status, 200);
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = wait_timeout(&mut child, Duration::from_secs(60), "daeda serve after SIGTERM");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:?}");
}
