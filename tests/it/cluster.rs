//! Redis Cluster as the online store: the same jobs against three primaries,
//! given as a seed list. Rows spread over every node; per-service keys share
//! one slot; SCAN-based work (retirement, gc, counts) visits every primary.

use daeda_gateway::Plane;
use serde_json::Value;

use crate::http::{self, bearer, mint, send};
use crate::support::{output, Cluster, TestEnv};

fn run(env: &TestEnv, cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = output(env.command(args).env("DAEDA_REDIS_URL", cluster.url()));
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
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
    let out =
        json(&env, &cluster, &["materialize", "--online", "--service", "user_features", "--mode", "incremental", "--json", at[0], at[1]]);
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
