//! Issue 16, Redis as it is deployed: with a password or an ACL user, over
//! TLS, restarting empty under a gateway that cached a pointer, and more
//! concurrent lookups than pooled connections.

use std::time::{Duration, Instant};

use daeda_gateway::Plane;

use crate::ha::{materialize_ha, write_ha, Load};
use crate::http::{self, bearer, mint, send};
use crate::support::{output, Redis, TestEnv};

/// One lookup of `ha` entity 1: its status and body.
async fn lookup(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let auth = bearer(&mint(&["ha"], &[Plane::Online]));
    let r = send(
        addr,
        "POST",
        "/v1/features/ha",
        &[("authorization", &auth)],
        r#"{"entities": {"id": [1]}, "include_stale": true}"#,
    )
    .await;
    (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or_default())
}

/// `requirepass` and an ACL user: the credentials in the URL reach Redis for
/// the materializer and the gateway; a wrong password fails the run with a
/// message that names the failure and not the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_or_an_acl_user_in_the_url_is_used_and_never_printed() {
    let env = TestEnv::new(10);
    let dir = env.dir.path().join("auth");
    std::fs::create_dir_all(&dir).unwrap();
    let redis = Redis::start_with(
        &dir,
        &[
            "--appendonly",
            "no",
            "--requirepass",
            "s3cret-default",
            "--user",
            "app",
            "on",
            ">app-pw",
            "~*",
            "&*",
            "+@all",
        ],
    );
    write_ha(&env, 1);
    let (code, generation, stderr) = materialize_ha(&env, &redis.url());
    assert_eq!(code, 0, "{stderr}");
    let acl = format!("redis://app:app-pw@127.0.0.1:{}/0", redis.port);
    let (code, _, stderr) = materialize_ha(&env, &acl);
    assert_eq!(code, 0, "{stderr}");

    let gw = http::start_at(&env, http::config(&env), false, &acl, 4).await;
    let (status, body) = lookup(gw.addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["columns"]["v"], serde_json::json!([1001.0]));
    assert_ne!(
        Some(body["generation"].as_str().unwrap()),
        generation.as_deref(),
        "the ACL user's run flipped a new generation"
    );
    gw.stop().await;

    let wrong = format!("redis://app:not-the-pw@127.0.0.1:{}/0", redis.port);
    let (code, _, stderr) = materialize_ha(&env, &wrong);
    assert_ne!(code, 0);
    assert!(!stderr.contains("not-the-pw"), "{stderr}");
    assert!(stderr.to_lowercase().contains("auth") || stderr.contains("WRONGPASS"), "{stderr}");
    let gw = http::start_at(&env, http::config(&env), false, &wrong, 4).await;
    let (status, body) = lookup(gw.addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.to_string().contains("not-the-pw"), "{body}");
    gw.stop().await;
}

/// `rediss://`: the materializer and `online get` reach Redis over TLS,
/// trusting a private CA named by `SSL_CERT_FILE` (rustls reads the system
/// store and that variable); a client that does not trust it fails cleanly.
#[test]
fn rediss_urls_reach_redis_over_tls() {
    let env = TestEnv::new(10);
    let dir = env.dir.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let redis = Redis::start_with(
        &dir,
        &[
            "--appendonly",
            "no",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert_pem.to_str().unwrap(),
            "--tls-key-file",
            key_pem.to_str().unwrap(),
            "--tls-ca-cert-file",
            cert_pem.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap().cert.pem())
        .unwrap();
    write_ha(&env, 1);
    let run = |args: &[&str], trust: bool| {
        let mut cmd = env.command(args);
        cmd.env("DAEDA_REDIS_URL", &url);
        if trust {
            cmd.env("SSL_CERT_FILE", &cert_pem);
        } else {
            cmd.env("SSL_CERT_FILE", &other_ca);
        }
        let out = output(&mut cmd);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) =
        run(&["materialize", "--online", "--service", "ha", "--json", "--as-of", crate::support::FIXED_AS_OF], true);
    assert_eq!(code, Some(0), "{text}");
    // The rows went over TLS into the server the plain port also serves.
    assert_eq!(redis.count("daeda:row:ha:*"), 200);
    let (code, text) =
        run(&["online", "get", "--service", "ha", "--entities", r#"{"id": [1, 2]}"#, "--include-stale"], true);
    assert_eq!(code, Some(0), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["columns"]["v"], serde_json::json!([1001.0, 1002.0]));
    let (code, text) = run(&["online", "get", "--service", "ha", "--entities", r#"{"id": [1]}"#], false);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("certificate") || text.contains("UnknownIssuer"), "{text}");
}

/// 64 concurrent lookups through a pool of 2 connections: they queue and
/// all succeed; with Redis stopped (SIGSTOP) they all end as 503 with
/// Retry-After after the wait timeout (500 ms here), none hangs; after
/// SIGCONT they succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn more_lookups_than_pooled_connections_queue_then_fail_cleanly_never_hang() {
    const BOUND: Duration = Duration::from_secs(5);
    let env = TestEnv::new(10);
    write_ha(&env, 1);
    let (code, _, text) = materialize_ha(&env, &env.redis.url());
    assert_eq!(code, 0, "{text}");
    let gw = http::start_at(&env, http::config(&env), false, &env.redis.url(), 2).await;
    let burst = |addr| async move {
        let started = Instant::now();
        let tasks: Vec<_> =
            (0..64).map(|_| tokio::spawn(async move { (lookup(addr).await.0, started.elapsed()) })).collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(tokio::time::timeout(BOUND, t).await.expect("a lookup hung").unwrap());
        }
        out
    };
    let ok = burst(gw.addr).await;
    assert!(ok.iter().all(|(s, _)| *s == 200), "{ok:?}");

    env.redis.signal("STOP");
    let stalled = burst(gw.addr).await;
    env.redis.signal("CONT");
    let worst = stalled.iter().map(|(_, d)| *d).max().unwrap();
    assert!(stalled.iter().all(|(s, _)| *s == 503), "{stalled:?}");
    assert!(worst < Duration::from_millis(2500), "the last 503 took {worst:?}");
    eprintln!("pool of 2, 64 lookups, Redis stopped: all 503, the last after {worst:?}");

    let again = burst(gw.addr).await;
    assert!(again.iter().all(|(s, _)| *s == 200), "{again:?}");
    gw.stop().await;
}

/// Redis restarts empty (kill -9, no persistence) under a gateway that cached
/// the live generation, while lookups run: they answer 503 while Redis is
/// down and 404 while it holds nothing (the cached pointer is dropped, never
/// served from), and the next materialization is served with its own
/// metadata, even though the counter restarted and issued the same id (a
/// materializer with its own run history would not: see
/// `materialize::generation_ids_are_not_issued_again_after_redis_lost_its_data`).
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarting_empty_is_answered_honestly_and_a_new_run_is_served() {
    let mut env = TestEnv::new(10);
    write_ha(&env, 1);
    let url = env.redis.url();
    let (code, g1, text) = materialize_ha(&env, &url);
    assert_eq!(code, 0, "{text}");
    let gw = http::start(&env, http::config(&env)).await;
    let load = Load::start_allowing(gw.addr, 4, &[404]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = tokio::task::block_in_place(|| {
        env.redis.restart();
        Instant::now()
    });
    assert_eq!(env.redis.dbsize(), 0, "Redis came back empty");
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_ha(&env, 2);
    // The next run comes from another host: a run history of its own, so the
    // counter's floor does not help and the id is issued again.
    std::fs::rename(env.dir.path().join("runs"), env.dir.path().join("runs-first-host")).unwrap();
    let (code, g2, text) = materialize_ha(&env, &url);
    assert_eq!(code, 0, "{text}");
    let flipped = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let report = load.finish().await;
    gw.stop().await;
    assert_eq!(
        g1, g2,
        "the counter restarted with Redis's data and this host has no history; the gateway tells the runs apart"
    );
    // No row of the lost data after the restart, no wrong answer at all.
    let wrong: Vec<_> = report.samples.iter().filter(|s| s.wrong.is_some()).collect();
    assert!(wrong.is_empty(), "{:?}", wrong.first());
    for s in report.samples.iter().filter(|s| s.at >= restarted) {
        if let Some((_, version)) = &s.answer {
            assert_eq!(*version, 2, "a lookup after the restart answered the lost data: {s:?}");
        }
    }
    let empty = report.samples.iter().filter(|s| s.at >= restarted && s.at < flipped && s.status == 404).count();
    assert!(empty > 0, "no lookup saw the empty Redis");
    let first = report.first_success_after(flipped).expect("the new run was never served");
    assert!(
        first.at - flipped < Duration::from_secs(2),
        "the new run was served {:?} after its flip",
        first.at - flipped
    );
    assert_eq!(report.last_answer().unwrap().1, 2);
}
