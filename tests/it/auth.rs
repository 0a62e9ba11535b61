//! Token verification through HTTP against the in-process gateway: the edges
//! `every_token_failure_is_401` (gateway.rs) does not reach — the verifier's
//! cache, the public-key algorithms, algorithm confusion, the leeway's two
//! sides, and the SQL route.
//!
//! The RSA keys under `keys/` are test fixtures generated for these tests
//! (`openssl genpkey -algorithm RSA`), never used anywhere else; EC and Ed25519
//! keys are generated per test with rcgen.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use daeda_gateway::auth::LEEWAY_SECS;
use daeda_gateway::Plane;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::http::{self, bearer, send, SECRET};
use crate::support::TestEnv;

const USERS: &str = "/v1/features/user_features";
const BODY: &str = r#"{"entities": {"user_id": [1]}}"#;

const RSA_A_PRIVATE: &str = include_str!("keys/rsa_a.key.pem");
const RSA_A_PUBLIC: &str = include_str!("keys/rsa_a.pub.pem");
const RSA_B_PRIVATE: &str = include_str!("keys/rsa_b.key.pem");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> serde_json::Value {
    json!({"sub": "x", "exp": now() + 600, "services": ["*"], "planes": ["online", "sql"]})
}

fn with(k: &str, v: serde_json::Value) -> serde_json::Value {
    let mut c = claims();
    c[k] = v;
    c
}

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A gateway whose tokens are verified with the PEM public key `public_pem`.
async fn start_with_public_key(env: &TestEnv, public_pem: &str) -> http::Running {
    let path: PathBuf = env.dir.path().join("jwt-public.pem");
    std::fs::write(&path, public_pem).unwrap();
    let mut cfg = http::config(env);
    cfg.auth = daeda_gateway::AuthSettings { public_key: Some(path), ..Default::default() };
    http::start(env, cfg).await
}

async fn status(gw: &http::Running, token: &str) -> u16 {
    send(gw.addr, "POST", USERS, &[("authorization", &bearer(token))], BODY).await.status.as_u16()
}

/// Issue 16: a token whose `sub` is empty or only whitespace (ASCII or not)
/// names no caller; it is refused like any invalid token, every time.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_or_blank_sub_is_401() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let gw = http::start(&env, http::config(&env)).await;
    for sub in ["", " ", "   ", "\t\n", "\u{3000}"] {
        let token = hs256(&with("sub", json!(sub)), SECRET.as_bytes());
        for path in [USERS, "/v1/sql"] {
            let body = if path == USERS { BODY } else { r#"{"sql": "SELECT 1"}"# };
            let r = send(gw.addr, "POST", path, &[("authorization", &bearer(&token))], body).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (401, "unauthorized".into()),
                "sub {sub:?} on {path}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        // And the same token is refused again (a refusal is not cached as a pass).
        assert_eq!(status(&gw, &token).await, 401, "sub {sub:?}, second time");
    }
    assert_eq!(status(&gw, &hs256(&claims(), SECRET.as_bytes())).await, 200);
    assert_eq!(
        status(&gw, &hs256(&with("sub", json!(" padded ")), SECRET.as_bytes())).await,
        200,
        "a sub with text is a sub"
    );
    gw.stop().await;
}

/// The verifier caches a verified token and only repeats the time checks: a
/// token that expires while cached must be refused from then on.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_token_that_expires_is_401_after_its_expiry() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let gw = http::start(&env, http::config(&env)).await;
    // Valid for two more seconds, counting the leeway.
    let token = hs256(&with("exp", json!(now() + 2 - LEEWAY_SECS)), SECRET.as_bytes());
    assert_eq!(status(&gw, &token).await, 200, "accepted (and cached) while valid");
    assert_eq!(status(&gw, &token).await, 200, "served from the cache while valid");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status(&gw, &token).await, 401, "still served from the cache after expiry");
    gw.stop().await;
}

/// `exp` and `nbf` are honoured with exactly `LEEWAY_SECS` of skew, on both
/// sides of the edge (two seconds of margin for the clock ticking mid-test).
#[tokio::test(flavor = "multi_thread")]
async fn the_leeway_edges_of_exp_and_nbf() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let gw = http::start(&env, http::config(&env)).await;
    let t = now();
    let cases = [
        ("exp just inside the leeway", with("exp", json!(t + 2 - LEEWAY_SECS)), 200),
        ("exp just past the leeway", with("exp", json!(t - 2 - LEEWAY_SECS)), 401),
        ("nbf just inside the leeway", with("nbf", json!(t - 2 + LEEWAY_SECS)), 200),
        ("nbf just ahead of the leeway", with("nbf", json!(t + 2 + LEEWAY_SECS)), 401),
        ("iat just inside the leeway", with("iat", json!(t - 2 + LEEWAY_SECS)), 200),
        ("iat just ahead of the leeway", with("iat", json!(t + 2 + LEEWAY_SECS)), 401),
    ];
    for (what, c, want) in cases {
        assert_eq!(status(&gw, &hs256(&c, SECRET.as_bytes())).await, want, "{what}");
    }
    gw.stop().await;
}

/// Each public-key algorithm: its token passes with the configured key and is
/// 401 when signed by another key of the same kind.
#[tokio::test(flavor = "multi_thread")]
async fn rs256_es256_and_eddsa_pass_with_their_key_and_not_with_another() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let c = claims();
    let sign = |alg: Algorithm, key: EncodingKey| jsonwebtoken::encode(&Header::new(alg), &c, &key).unwrap();

    let gw = start_with_public_key(&env, RSA_A_PUBLIC).await;
    assert_eq!(
        status(&gw, &sign(Algorithm::RS256, EncodingKey::from_rsa_pem(RSA_A_PRIVATE.as_bytes()).unwrap())).await,
        200
    );
    assert_eq!(
        status(&gw, &sign(Algorithm::RS256, EncodingKey::from_rsa_pem(RSA_B_PRIVATE.as_bytes()).unwrap())).await,
        401
    );
    // Same key, other RSA algorithm: the key is for RS256 only.
    assert_eq!(
        status(&gw, &sign(Algorithm::RS512, EncodingKey::from_rsa_pem(RSA_A_PRIVATE.as_bytes()).unwrap())).await,
        401
    );
    assert_eq!(
        status(&gw, &sign(Algorithm::PS256, EncodingKey::from_rsa_pem(RSA_A_PRIVATE.as_bytes()).unwrap())).await,
        401
    );
    gw.stop().await;

    for (alg, rc_alg) in [(Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256), (Algorithm::EdDSA, &rcgen::PKCS_ED25519)]
    {
        let right = rcgen::KeyPair::generate_for(rc_alg).unwrap();
        let other = rcgen::KeyPair::generate_for(rc_alg).unwrap();
        let encoding = |k: &rcgen::KeyPair| match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(k.serialize_pem().as_bytes()).unwrap(),
        };
        let gw = start_with_public_key(&env, &right.public_key_pem()).await;
        assert_eq!(status(&gw, &sign(alg, encoding(&right))).await, 200, "{alg:?} with its key");
        assert_eq!(status(&gw, &sign(alg, encoding(&other))).await, 401, "{alg:?} with another key");
        // A symmetric token is never accepted by a public-key gateway.
        assert_eq!(status(&gw, &hs256(&c, SECRET.as_bytes())).await, 401, "HS256 against {alg:?}");
        gw.stop().await;
    }
}

/// Algorithm confusion (CVE-2015-9235's family): an HS256 token whose HMAC
/// secret is the gateway's own RSA public key PEM — which anyone may know —
/// must not pass a gateway configured with that public key.
#[tokio::test(flavor = "multi_thread")]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_401() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let gw = start_with_public_key(&env, RSA_A_PUBLIC).await;
    let c = claims();
    for (what, secret) in [
        ("the PEM as written", RSA_A_PUBLIC.as_bytes().to_vec()),
        ("the PEM trimmed", RSA_A_PUBLIC.trim().as_bytes().to_vec()),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(&Header::new(alg), &c, &EncodingKey::from_secret(&secret)).unwrap();
            let r = send(gw.addr, "POST", USERS, &[("authorization", &bearer(&token))], BODY).await;
            assert_eq!((r.status.as_u16(), r.code()), (401, "unauthorized".into()), "{alg:?} keyed with {what}");
        }
    }
    gw.stop().await;
}

/// `POST /v1/sql` refuses a bad token with 401 — before the body, the policy or
/// the worker are looked at — and never 403 or 500.
#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_on_the_sql_route_are_401() {
    let env = TestEnv::new(10);
    env.materialize(&["--all"]);
    let gw = http::start_with_sql(&env, http::config(&env), true).await;
    let sql = r#"{"sql": "SELECT count(*) AS n FROM user_features"}"#;
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("wrong key", Some(bearer(&hs256(&claims(), b"another-secret")))),
        ("expired", Some(bearer(&hs256(&with("exp", json!(now() - 3600)), SECRET.as_bytes())))),
        ("not yet valid", Some(bearer(&hs256(&with("nbf", json!(now() + 3600)), SECRET.as_bytes())))),
        ("empty sub", Some(bearer(&hs256(&with("sub", json!("")), SECRET.as_bytes())))),
        ("unknown plane", Some(bearer(&hs256(&with("planes", json!(["offline"])), SECRET.as_bytes())))),
    ];
    for (what, header) in cases {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        for body in [sql, "not json at all"] {
            let r = send(gw.addr, "POST", "/v1/sql", &headers, body).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (401, "unauthorized".into()),
                "{what}, body {body}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    // The good token reaches the SQL plane.
    let good = bearer(&http::mint(&["*"], &[Plane::Sql]));
    let r = send(gw.addr, "POST", "/v1/sql", &[("authorization", &good)], sql).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    gw.stop().await;
}
