//! Redis Cluster as the online store: the same jobs against three primaries,
//! given as a seed list. Rows spread over every node; per-service keys share
//! one slot; SCAN-based work (retirement, gc, counts) visits every primary.

use std::collections::HashMap;

use daeda_gateway::Plane;
use serde_json::Value;

use crate::ha::{materialize_ha, write_ha, Load};
use crate::http::{self, bearer, mint, send};
use crate::support::{output, Cluster, TestEnv};

fn run(env: &TestEnv, cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = output(env.command(args).env("DAEDA_REDIS_URL", cluster.url()));
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(env: &TestEnv, cluster: &Cluster, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(env, cluster, args);
    assert_eq!(code, 0, "daeda {args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_job_runs_against_a_cluster() {
    let env = TestEnv::new(400);
    let cluster = Cluster::start(env.dir.path());
    let at = ["--as-of", "2026-06-28T12:00:00Z"];

    let out = json(&env, &cluster, &["materialize", "--online", "--all", "--json", at[0], at[1]]);
    assert_eq!(out["runs"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(cluster.count("daeda:row:user_features:1:*"), 400);
    assert!(cluster.nodes.iter().all(|n| n.count("daeda:row:user_features:1:*") > 50), "rows spread over every node");

    // A second full run retires the first generation on every node.
    let out = json(&env, &cluster, &["materialize", "--online", "--service", "user_features", "--json", at[0], at[1]]);
    assert_eq!(out["runs"][0]["generation"], "2");
    assert_eq!(cluster.count("daeda:row:user_features:1:*"), 0);
    assert_eq!(cluster.count("daeda:row:user_features:2:*"), 400);

    // Reads, directly and through the gateway.
    let body = json(
        &env,
        &cluster,
        &[
            "online",
            "get",
            "--service",
            "user_item_reranker",
            "--entities",
            r#"{"user_id": [0, 0], "item_id": [1, -1]}"#,
            "--include-stale",
        ],
    );
    assert_eq!(body["status"][1], "missing");
    let store = daeda_online::OnlineStore::connect(&cluster.url(), &Default::default()).unwrap();
    let catalog = daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let gw = daeda_gateway::Gateway::bind(http::config(&env), catalog, store).await.unwrap();
    let addr = gw.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gw.run(async move {
        let _ = stopped.await;
    }));
    let auth = bearer(&mint(&["*"], &[Plane::Online]));
    let r = send(
        addr,
        "POST",
        "/v1/features/user_features",
        &[("authorization", &auth)],
        r#"{"entities": {"user_id": [1, 2, 3, 999999]}, "include_stale": true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], serde_json::json!(["stale", "stale", "stale", "missing"]));
    assert_eq!(r.json()["generation"], "2");
    let _ = stop.send(());
    task.await.unwrap();

    // Incremental writes (slot-grouped compare-and-set) and the skew gate.
    let late = env.data().join("user_features/ds=2026-06-28");
    std::fs::create_dir_all(&late).unwrap();
    env.duckdb()
        .execute_batch(&format!(
            "COPY (SELECT * REPLACE (TIMESTAMP '2026-06-28 06:00:00' AS event_ts, 0.999 AS ctr_7d)
                   FROM read_parquet('{}') WHERE ds = '2026-06-27' AND user_id < 50)
             TO '{}' (FORMAT parquet)",
            env.data().join("user_features/*/*.parquet").display(),
            late.join("late.parquet").display()
        ))
        .unwrap();
    let out = json(
        &env,
        &cluster,
        &["materialize", "--online", "--service", "user_features", "--mode", "incremental", "--json", at[0], at[1]],
    );
    assert_eq!(out["runs"][0]["rows_written"], 50, "{out}");
    for service in ["user_features", "item_features", "user_item_reranker"] {
        let report = json(&env, &cluster, &["skew", "check", "--service", service, "--all", "--json"]);
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(report["extra_online"], 0, "{report}");
    }

    // gc finds a service that left the catalog on every node.
    std::fs::remove_file(env.yaml("user_item_reranker")).unwrap();
    let (code, stdout, stderr) = run(&env, &cluster, &["online", "gc", "--force", "user_item_reranker"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed service user_item_reranker"), "{stdout}");
    assert_eq!(cluster.count("daeda:*user_item_reranker*"), 0);
    assert_eq!(cluster.count("daeda:row:user_features:2:*"), 400);
}

/// Flips under load on a three-primary cluster, with different data in every
/// generation (`ha`'s values encode their data version): four clients look
/// up through a gateway at the default refresh interval while full runs flip
/// the pointer (and retire the previous generation) again and again. Every
/// answer is a 200 with all its rows of one version (or a 503 with
/// Retry-After, never a row missing), and a generation id always
/// means one version. ≈ 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn flips_under_load_on_a_cluster_never_mix_generations() {
    let env = TestEnv::new(10);
    let cluster = Cluster::start(env.dir.path());
    let url = cluster.url();
    write_ha(&env, 1);
    let (code, g1, text) = materialize_ha(&env, &url);
    assert_eq!(code, 0, "{text}");
    let mut known = HashMap::from([(g1.unwrap(), 1)]);

    let mut cfg = http::config(&env);
    cfg.refresh = daeda_gateway::GatewayConfig::new("127.0.0.1:0".parse().unwrap(), Default::default()).refresh;
    let gw = http::start_at(&env, cfg.clone(), false, &url, 16).await;
    let load = Load::start(gw.addr, 4);
    const FLIPS: u32 = 6;
    tokio::task::block_in_place(|| {
        for version in 2..=FLIPS + 1 {
            write_ha(&env, version);
            let (code, g, text) = materialize_ha(&env, &url);
            assert_eq!(code, 0, "{text}");
            known.insert(g.unwrap(), version);
            std::thread::sleep(cfg.refresh / 2);
        }
    });
    // The last flip is seen within a refresh interval.
    tokio::time::sleep(cfg.refresh * 2).await;
    let report = load.finish().await;
    gw.stop().await;

    report.assert_no_wrong_answer(&known);
    let versions: std::collections::BTreeSet<u32> =
        report.samples.iter().filter_map(|s| s.answer.as_ref().map(|a| a.1)).collect();
    eprintln!(
        "cluster flips at refresh {:?}: {} lookups ({} × 503), versions answered {versions:?}",
        cfg.refresh,
        report.samples.len(),
        report.count(503)
    );
    assert!(versions.len() >= 3, "the lookups saw too few flips to show anything: versions {versions:?}");
    assert_eq!(report.last_answer().map(|a| a.1), Some(FLIPS + 1), "the last generation is served");
    assert_eq!(cluster.count("daeda:row:ha:*"), 200, "only the live generation's rows remain");
}
