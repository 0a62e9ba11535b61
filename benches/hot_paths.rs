//! Criterion benchmarks of in-process hot paths: the SQL policy check, row
//! decoding, and rendering a 100-entity lookup as JSON and as Arrow.
//! `cargo bench --bench hot_paths`.
#![allow(clippy::unwrap_used)] // test and bench code: a panic is the failure report

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use daeda_online::codec::{self, RowSchema};
use daeda_online::lookup::{EntityStatus, Fetched, LookupRequest};
use daeda_online::GenerationMeta;

const QUERY: &str = "WITH recent AS (
    SELECT user_id, ctr_7d, ctr_30d, clicks_7d, country, event_ts
    FROM user_features
    WHERE event_ts >= TIMESTAMP '2026-06-01 00:00:00' AND country IN ('DE', 'FR', 'US')
), pairs AS (
    SELECT r.user_id, r.item_id, r.prev_score, r.clicked_before, i.price, i.category
    FROM user_item_reranker r JOIN item_features i ON i.item_id = r.item_id
    WHERE r.prev_score > 0.2
)
SELECT recent.country, pairs.category,
       count(*) AS n, avg(recent.ctr_7d) AS ctr, sum(pairs.price) AS revenue,
       quantile_cont(pairs.prev_score, 0.9) AS p90,
       row_number() OVER (PARTITION BY recent.country ORDER BY count(*) DESC) AS rank
FROM recent JOIN pairs USING (user_id)
WHERE recent.clicks_7d BETWEEN 1 AND 400 AND coalesce(pairs.category, 'x') <> 'garden'
GROUP BY ALL
HAVING count(*) > 1
QUALIFY rank <= 5
ORDER BY recent.country, n DESC
LIMIT 100";

fn user_features() -> daeda_catalog::ServiceDef {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("feature_services/user_features.yaml");
    daeda_catalog::parse_definition(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

fn bench(c: &mut Criterion) {
    let grants = daeda_policy::Grants::new(["user_features", "item_features", "user_item_reranker"]);
    assert!(QUERY.len() > 800, "a ~1 KB query ({} bytes)", QUERY.len());
    if let Err(d) = daeda_policy::check(QUERY, &grants) {
        panic!("the benchmark query must be allowed: {d}");
    }
    c.bench_function("policy check, 1 KB analytic query", |b| b.iter(|| daeda_policy::check(black_box(QUERY), &grants)));
    c.bench_function("policy check, point query", |b| {
        b.iter(|| daeda_policy::check(black_box("SELECT * FROM user_features WHERE user_id = 42"), &grants))
    });

    // One encoded user_features row (8 scalars + FLOAT[64]), as the materializer writes it.
    let def = user_features();
    let schema = RowSchema::of(&def);
    let row = codec::DecodedRow {
        event_ts_micros: 1_782_548_100_000_000,
        values: vec![
            codec::Value::Double(0.4119),
            codec::Value::Double(0.12),
            codec::Value::BigInt(42),
            codec::Value::BigInt(1234),
            codec::Value::Str("DE".into()),
            codec::Value::Bool(true),
            codec::Value::Int(3),
            codec::Value::Decimal { unscaled: 4_205_142, scale: 2 },
            codec::Value::Array(codec::Array::Float((0..64).map(|i| i as f32 / 64.0 - 0.5).collect())),
        ],
    };
    let bytes = codec::encode(&schema, &row);
    c.bench_function("decode one row (8 scalars + FLOAT[64])", |b| b.iter(|| codec::decode(black_box(&bytes), &schema).unwrap()));

    let fetched = Fetched {
        wanted: (0..schema.len()).collect(),
        rows: (0..100).map(|_| Some(row.clone())).collect(),
        status: vec![EntityStatus::Ok; 100],
        schema: std::sync::Arc::new(schema.clone()),
    };
    let ids: Vec<i64> = (0..100).collect();
    let req: LookupRequest = serde_json::from_value(serde_json::json!({"entities": {"user_id": ids}})).unwrap();
    let meta = GenerationMeta {
        service: def.name.clone(),
        version: def.version.clone(),
        fingerprint: def.fingerprint().into(),
        generation: "1".into(),
        run_id: "r".into(),
        as_of: "2026-06-28T00:00:00.000000Z".into(),
        row_count: 100,
        bytes: 0,
        materialized_at: "2026-06-28T00:00:00.000000Z".into(),
        source_snapshot: "{}".into(),
        watermark_micros: 0,
        schema: None,
    };
    c.bench_function("render 100 entities as JSON", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(64 * 1024);
            daeda_online::lookup::write_json(&def, &meta, &req, black_box(&fetched), &mut out);
            out
        })
    });
    c.bench_function("render 100 entities as Arrow IPC", |b| {
        b.iter(|| daeda_gateway::arrow::encode(&def, &req, black_box(&fetched)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
