//! Criterion benchmarks of in-process hot paths: the SQL policy check (cold and
//! through the gateway's decision cache), row decoding, and a lookup's CPU work
//! (request parse, keys, decode, render as JSON and as Arrow) at batch 1 and 100.
//! `cargo bench --bench hot_paths`.
//!
//! `HOT_PATHS_ITERS=N cargo bench --bench hot_paths -- OP` skips criterion and
//! runs OP (`json1`, `json100`, `arrow1`, `arrow100`, `policy_cold`,
//! `policy_cached`, or `none` for the fixed cost) N times: run it under
//! `valgrind --tool=callgrind` twice (N and 0) and divide the difference of
//! the instruction counts by N for a per-operation count that load on the
//! machine does not change.
#![allow(clippy::unwrap_used)] // test and bench code: a panic is the failure report

/// The daeda binary's allocator (see src/main.rs), so the counts are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::Path;

use std::sync::Arc;

use criterion::Criterion;
use daeda_catalog::ServiceDef;
use daeda_online::codec::{self, RowSchema};
use daeda_online::lookup::{self, EntityStatus, Fetched, LookupRequest};
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

/// A user_features row with realistic digits: an embedding of 64 random
/// float32s in [-1, 1) and random ratios (short values like 0.5 would flatter
/// the float formatting). Its event time is within the last 3 hours, so the
/// row is fresh under the service's 7-day ttl whenever the bench runs (a
/// fixed date turned every row stale, rendered as nulls, a week later).
fn random_row(seed: u64) -> codec::DecodedRow {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = move || rng.f64();
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    codec::DecodedRow {
        event_ts_micros: now_us - (next() * 1e10) as i64,
        values: vec![
            codec::Value::Double(next()),
            codec::Value::Double(next()),
            codec::Value::BigInt((next() * 400.0) as i64),
            codec::Value::BigInt((next() * 4000.0) as i64),
            codec::Value::Str("DE".into()),
            codec::Value::Bool(next() < 0.5),
            codec::Value::Int((next() * 10.0) as i32),
            codec::Value::Decimal { unscaled: (next() * 1e7) as i128, scale: 2 },
            codec::Value::Array(codec::Array::Float((0..64).map(|_| (next() * 2.0 - 1.0) as f32).collect())),
        ],
    }
}

/// What a gateway lookup of `n` entities works on: the request body and the
/// encoded rows the MGET answers.
struct LookupCase {
    def: ServiceDef,
    schema: Arc<RowSchema>,
    meta: GenerationMeta,
    body: Vec<u8>,
    raw: Vec<Option<Vec<u8>>>,
}

impl LookupCase {
    fn new(def: &ServiceDef, meta: &GenerationMeta, n: u64) -> LookupCase {
        let schema = RowSchema::of(def);
        let ids: Vec<u64> = (0..n).map(|i| 100_000 + i * 7919).collect();
        LookupCase {
            def: def.clone(),
            meta: meta.clone(),
            body: serde_json::to_vec(&serde_json::json!({"entities": {"user_id": ids}})).unwrap(),
            raw: (0..n).map(|i| Some(codec::encode(&schema, &random_row(i)))).collect(),
            schema: Arc::new(schema),
        }
    }

    /// The lookup's CPU work after the body is read and before it is written,
    /// as `POST /v1/features/{service}` runs it (the MGET's answer stands in).
    fn run(&self, arrow: bool) -> usize {
        let req: LookupRequest = serde_json::from_slice(black_box(&self.body)).unwrap();
        let wanted = lookup::selected(&self.def, &self.schema, req.features.as_deref()).unwrap();
        let keys = lookup::row_keys(&self.def, &req.entities, "daeda:user_features:1:", 1000).unwrap();
        black_box(&keys);
        let fetched =
            lookup::decode_rows(&self.def, self.schema.clone(), wanted, &self.meta, black_box(&self.raw)).unwrap();
        if arrow {
            daeda_online::render::arrow::encode(&self.def, &req, &fetched).unwrap().len()
        } else {
            daeda_online::render::json::body(&self.def, &self.meta, &req, &fetched).len()
        }
    }
}

fn meta_of(def: &ServiceDef) -> GenerationMeta {
    GenerationMeta {
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
    }
}

fn grant_list() -> Vec<String> {
    ["user_features", "item_features", "user_item_reranker"].map(String::from).to_vec()
}

fn main() {
    if let Ok(iters) = std::env::var("HOT_PATHS_ITERS") {
        let iters: u64 = iters.parse().expect("HOT_PATHS_ITERS is a count");
        let op = std::env::args().skip(1).find(|a| !a.starts_with('-')).expect("an operation to run");
        return count_mode(&op, iters);
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}

/// Runs one operation `iters` times, for instruction counting under callgrind.
fn count_mode(op: &str, iters: u64) {
    let def = user_features();
    let meta = meta_of(&def);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let runner = daeda_gateway::sql::policy_runner::PolicyRunner::start(1, 16);
    rt.block_on(runner.check(QUERY, grant_list())).unwrap().unwrap(); // the cache holds it from here on
    let (one, hundred) = (LookupCase::new(&def, &meta, 1), LookupCase::new(&def, &meta, 100));
    let policy = daeda_policy::Grants::new(grant_list());
    let mut sink = 0usize;
    for _ in 0..iters {
        sink += match op {
            "json1" => one.run(false),
            "json100" => hundred.run(false),
            "arrow1" => one.run(true),
            "arrow100" => hundred.run(true),
            "policy_cold" => daeda_policy::check(black_box(QUERY), &policy).is_ok() as usize,
            "policy_cached" => rt.block_on(runner.check(black_box(QUERY), grant_list())).unwrap().is_ok() as usize,
            "none" => 0,
            other => panic!("unknown operation `{other}`"),
        };
    }
    println!("{op} x{iters}: {sink}");
}

fn bench(c: &mut Criterion) {
    let grants = daeda_policy::Grants::new(["user_features", "item_features", "user_item_reranker"]);
    assert!(QUERY.len() > 800, "a ~1 KB query ({} bytes)", QUERY.len());
    if let Err(d) = daeda_policy::check(QUERY, &grants) {
        panic!("the benchmark query must be allowed: {d}");
    }
    c.bench_function("policy check, 1 KB analytic query", |b| {
        b.iter(|| daeda_policy::check(black_box(QUERY), &grants))
    });
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
    c.bench_function("decode one row (8 scalars + FLOAT[64])", |b| {
        b.iter(|| codec::decode(black_box(&bytes), &schema).unwrap())
    });

    let fetched = Fetched {
        wanted: (0..schema.len()).collect(),
        rows: (0..100).map(|_| Some(std::sync::Arc::new(row.clone()))).collect(),
        status: vec![EntityStatus::Ok; 100],
        schema: std::sync::Arc::new(schema.clone()),
    };
    let ids: Vec<i64> = (0..100).collect();
    let req: LookupRequest = serde_json::from_value(serde_json::json!({"entities": {"user_id": ids}})).unwrap();
    let meta = meta_of(&def);
    c.bench_function("render 100 entities as JSON", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(64 * 1024);
            daeda_online::render::json::write_json(&def, &meta, &req, black_box(&fetched), &mut out);
            out
        })
    });
    c.bench_function("render 100 entities as Arrow IPC", |b| {
        b.iter(|| daeda_online::render::arrow::encode(&def, &req, black_box(&fetched)).unwrap())
    });

    for n in [1, 100] {
        let case = LookupCase::new(&def, &meta, n);
        c.bench_function(&format!("lookup CPU, batch {n}, JSON (random floats)"), |b| b.iter(|| case.run(false)));
        c.bench_function(&format!("lookup CPU, batch {n}, Arrow (random floats)"), |b| b.iter(|| case.run(true)));
    }

    // The gateway's policy cache: SHA-256 of text and grants, an LRU hit, a clone.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let runner = daeda_gateway::sql::policy_runner::PolicyRunner::start(1, 16);
    rt.block_on(runner.check(QUERY, grant_list())).unwrap().unwrap();
    c.bench_function("policy check, 1 KB analytic query, repeated (decision cache)", |b| {
        b.iter(|| rt.block_on(runner.check(black_box(QUERY), grant_list())).unwrap().is_ok())
    });
}
