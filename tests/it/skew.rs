//! `daeda skew check` after real materializations: clean runs pass on every
//! source kind; each kind of injected skew fails the gate naming the column
//! and the entity.

use daeda_online::codec::{self, Array, RowSchema, Value};
use serde_json::Value as Json;

use crate::support::TestEnv;

fn check(env: &TestEnv, service: &str, extra: &[&str]) -> (i32, Json) {
    let mut args = vec!["skew", "check", "--service", service, "--json"];
    args.extend_from_slice(extra);
    let out = env.daeda(&args);
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), json)
}

/// Rewrites the online row of `entity` through `f`.
fn tamper(env: &TestEnv, entity: &str, f: impl FnOnce(&mut codec::DecodedRow)) {
    let def = daeda_catalog::Catalog::load(env.catalog()).unwrap().get("user_features").unwrap().clone();
    let schema = RowSchema::of(&def);
    let generation = env.redis.current("user_features").unwrap();
    let key = format!("daeda:row:user_features:{generation}:{entity}");
    let mut row = codec::decode(&env.redis.get(&key).unwrap(), &schema).unwrap();
    f(&mut row);
    let _: () = redis::cmd("SET").arg(&key).arg(codec::encode(&schema, &row)).query(&mut env.redis.conn()).unwrap();
}

fn col(def_schema: &RowSchema, name: &str) -> usize {
    def_schema.names.iter().position(|n| n == name).unwrap()
}

fn schema(env: &TestEnv) -> RowSchema {
    RowSchema::of(daeda_catalog::Catalog::load(env.catalog()).unwrap().get("user_features").unwrap())
}

#[test]
fn a_clean_materialization_passes_on_every_source_kind() {
    let env = TestEnv::new(400);
    env.materialize(&["--all"]);
    for service in ["user_features", "item_features", "user_item_reranker"] {
        let (code, report) = check(&env, service, &["--all"]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["mismatched"], 0);
        assert_eq!(report["missing_online"], 0);
        assert_eq!(report["extra_online"], 0);
        assert!(report["entities_compared"].as_u64().unwrap() > 0);
        assert_eq!(report["matched"], report["entities_compared"]);
    }
    let (code, report) = check(&env, "user_features", &["--sample", "50"]);
    assert_eq!((code, report["entities_compared"].as_u64()), (0, Some(50)));
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["kind"], "skew_check");
    assert_eq!(runs[0]["status"], "passed");
}

#[test]
fn each_kind_of_skew_fails_the_gate_naming_column_and_entity() {
    // A list column (no fixed length) so that a truncated array still decodes.
    let env = TestEnv::new(400);
    env.edit("user_features", r#"type: "FLOAT[64]""#, r#"type: "FLOAT[]""#);
    env.materialize(&["--service", "user_features"]);
    let s = schema(&env);
    let (ctr, country, emb, clicks) =
        (col(&s, "ctr_7d"), col(&s, "country"), col(&s, "embedding"), col(&s, "clicks_7d"));

    // A float beyond the tolerance; within it, it passes.
    tamper(&env, "7", |r| {
        let Value::Double(v) = r.values[ctr] else { panic!() };
        r.values[ctr] = Value::Double(v + 1e-9);
    });
    let (code, report) = check(&env, "user_features", &["--all"]);
    assert_eq!(code, 1);
    assert_eq!(report["columns"]["ctr_7d"]["mismatches"], 1);
    assert_eq!(report["columns"]["ctr_7d"]["examples"][0]["entity"], "7");
    let (code, _) = check(&env, "user_features", &["--all", "--float-tolerance", "1e-6"]);
    assert_eq!(code, 0, "within tolerance");

    // A changed string, an integer, a truncated array, a NULL that became a value.
    tamper(&env, "8", |r| r.values[country] = Value::Str("XX".into()));
    tamper(&env, "9", |r| r.values[clicks] = Value::BigInt(-1));
    tamper(&env, "10", |r| {
        let Value::Array(Array::Float(v)) = &r.values[emb] else { panic!() };
        r.values[emb] = Value::Array(Array::Float(v[..63].to_vec()));
    });
    let null_country = (20..400)
        .find(|i| {
            let key = format!("daeda:row:user_features:1:{i}");
            codec::decode(&env.redis.get(&key).unwrap(), &s).unwrap().values[country] == Value::Null
        })
        .expect("the demo data has NULL countries");
    tamper(&env, &null_country.to_string(), |r| r.values[country] = Value::Str("DE".into()));

    // A deleted entity and an extra one.
    let mut c = env.redis.conn();
    let _: () = redis::cmd("DEL").arg("daeda:row:user_features:1:11").query(&mut c).unwrap();
    let row: Vec<u8> = redis::cmd("GET").arg("daeda:row:user_features:1:12").query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("daeda:row:user_features:1:777777").arg(row).query(&mut c).unwrap();

    let (code, report) = check(&env, "user_features", &["--all"]);
    assert_eq!(code, 1, "{report}");
    let entities = |column: &str| -> Vec<String> {
        report["columns"][column]["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["entity"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(entities("country"), ["8".to_string(), null_country.to_string()]);
    assert_eq!(report["columns"]["country"]["examples"][1]["offline"], Json::Null);
    assert_eq!(report["columns"]["country"]["examples"][1]["online"], "DE");
    assert_eq!(entities("clicks_7d"), ["9"]);
    assert_eq!(entities("embedding"), ["10"]);
    assert_eq!(report["columns"]["embedding"]["examples"][0]["online"].as_array().unwrap().len(), 63);
    assert_eq!(report["missing_online"], 1);
    assert_eq!(report["extra_online"], 1);
    assert_eq!(report["mismatched"], 5);
    let rate = report["mismatch_rate"].as_f64().unwrap();
    assert!((rate - 7.0 / 401.0).abs() < 1e-12, "{rate}");

    // The human report names them too, and a lenient gate passes.
    let out = env.daeda(&["skew", "check", "--service", "user_features", "--all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("country: 2 mismatches") && text.contains("entity 8: offline") && text.contains("=> SKEW"),
        "{text}"
    );
    let (code, _) = check(&env, "user_features", &["--all", "--max-mismatch-rate", "0.05"]);
    assert_eq!(code, 0);
    let runs = env.json(&["runs", "list", "--json"]);
    assert_eq!(runs[1]["status"], "skewed");
}

#[test]
fn the_check_reads_the_snapshot_the_generation_read() {
    // New offline data after the run is not skew: the check reads the recorded
    // files and DuckLake snapshot, not whatever is there now.
    let env = TestEnv::new(200);
    env.materialize(&["--service", "user_features", "--service", "item_features"]);
    std::fs::create_dir_all(env.data().join("user_features/ds=2026-06-28")).unwrap();
    let db = env.duckdb();
    db.execute_batch(&format!(
        "COPY (SELECT * REPLACE (ctr_7d + 1 AS ctr_7d, TIMESTAMP '2026-06-28 01:00:00' AS event_ts) FROM read_parquet('{}'))
         TO '{}' (FORMAT parquet)",
        env.data().join("user_features/*/*.parquet").display(),
        env.data().join("user_features/ds=2026-06-28/newer.parquet").display()
    ))
    .unwrap();
    // A third DuckLake snapshot: newer rows (within the as-of) for every item,
    // with other values, written through the lake as a producer would.
    let lake = daeda_offline::session().unwrap();
    daeda_offline::load_ducklake(&lake).unwrap();
    lake.execute_batch(&format!(
        "ATTACH 'ducklake:{}' AS lake (DATA_PATH '{}', OVERRIDE_DATA_PATH true);
         INSERT INTO lake.item_features
         SELECT * REPLACE (TIMESTAMPTZ '2026-06-28 01:00:00+00' AS event_ts, popularity + 1 AS popularity)
         FROM lake.item_features;
         DETACH lake;",
        env.data().join("item_features/metadata.ducklake").display(),
        env.data().join("item_features/files").display()
    ))
    .unwrap();
    drop(lake);

    let (code, report) = check(&env, "user_features", &["--all"]);
    assert_eq!(code, 0, "{report}");
    let (code, report) = check(&env, "item_features", &["--all"]);
    assert_eq!(code, 0, "{report}");
    let (_, stderr) = env.expect(2, &["skew", "check", "--service", "pii_features", "--all"]);
    assert!(stderr.contains("not approved for serving"), "{stderr}");

    // The new data is visible to a new run, so the checks above had something
    // to get wrong: a rematerialized generation reads snapshot 3.
    let out = env.materialize(&["--service", "item_features"]);
    assert_eq!(out["runs"][0]["source_snapshot"]["snapshot_id"], 3, "{out}");
    let body = env.json(&[
        "online",
        "get",
        "--service",
        "item_features",
        "--entities",
        r#"{"item_id": [1]}"#,
        "--include-stale",
    ]);
    assert_eq!(body["event_ts"][0], "2026-06-28T01:00:00.000000Z", "{body}");
    let (code, report) = check(&env, "item_features", &["--all"]);
    assert_eq!(code, 0, "{report}");
}
