//! The hot-entity row cache against a real Redis: a write (an incremental
//! run's, or the same conditional write many times over a hot key) and a flip
//! are served by the next lookup once their invalidation arrived, and no
//! lookup ever goes back to an older row; a killed tracking connection flushes
//! the cache; the off switch, the byte bound and the metrics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daeda_gateway::Plane;
use daeda_online::codec::{self, RowSchema, Value};
use serde_json::json;

use crate::http::{self, bearer, metric, metrics, mint, send, wait_metric};
use crate::support::TestEnv;

const USERS: &str = "/v1/features/user_features";
/// How long an invalidation, a reconnect or a flip may take to show, at most:
/// generous on 2 busy cores; they take about a millisecond.
const BOUND: Duration = Duration::from_secs(10);

fn cached_config(env: &TestEnv, max_bytes: usize) -> daeda_gateway::GatewayConfig {
    let mut cfg = http::config(env);
    cfg.cache_max_bytes = max_bytes;
    // Only the tracking connection can make a flip visible within the tests' bounds.
    cfg.refresh = Duration::from_secs(3600);
    cfg
}

async fn lookup(addr: std::net::SocketAddr, user: i64) -> serde_json::Value {
    let auth = bearer(&mint(&["user_features"], &[Plane::Online]));
    let body = json!({"entities": {"user_id": [user]}, "features": ["ctr_7d"], "include_stale": true}).to_string();
    let r = send(addr, "POST", USERS, &[("authorization", &auth)], &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn ctr(body: &serde_json::Value) -> f64 {
    body["columns"]["ctr_7d"][0].as_f64().unwrap_or_else(|| panic!("no ctr_7d: {body}"))
}

/// User `user`'s row key and its row again with `ctr_7d` = `value` and an
/// event time `bump` µs newer.
fn rewritten(env: &TestEnv, user: i64, value: f64, bump: i64) -> (String, Vec<u8>) {
    let catalog = daeda_catalog::Catalog::load(env.catalog()).unwrap();
    let def = catalog.get("user_features").unwrap();
    let schema = RowSchema::of(def);
    let key = format!("daeda:row:user_features:1:{user}");
    let bytes = env.redis.get(&key).unwrap();
    let mut row = codec::decode(&bytes, &schema).unwrap();
    let i = schema.names.iter().position(|n| n == "ctr_7d").unwrap();
    row.values[i] = match row.values[i] {
        Value::Float(_) => Value::Float(value as f32),
        _ => Value::Double(value),
    };
    row.event_ts_micros += bump;
    let bytes = codec::encode(&schema, &row);
    (key, bytes)
}

/// Writes user `user`'s row as [`rewritten`] makes it, the way an incremental
/// run does (the lease-fenced conditional write), holding the lease as run `cache-test`.
async fn incremental_write(env: &TestEnv, store: &daeda_online::OnlineStore, user: i64, value: f64, bump: i64) {
    let (key, bytes) = rewritten(env, user, value, bump);
    let mut batch = daeda_online::RowBatch::default();
    batch.push(key.as_bytes(), &bytes);
    let mut conn = store.conn().await.unwrap();
    let w = store.put_rows_if_newer(&mut conn, &batch, "user_features", "cache-test").await.unwrap();
    assert_eq!(w.replaced, 1, "the write replaced the row");
}

fn hold_lease(env: &TestEnv) {
    let _: () = redis::cmd("SET")
        .arg("daeda:{svc:user_features}:lease")
        .arg("cache-test")
        .query(&mut env.redis.conn())
        .unwrap();
}

/// A materialized `user_features`, its lease held (so the test's own writes
/// are the only ones), a store to write with and a caching gateway whose
/// tracking connection is up.
async fn writable_cached_gateway(env: &TestEnv) -> (daeda_online::OnlineStore, http::Running) {
    env.materialize(&["--service", "user_features"]);
    hold_lease(env);
    let store = daeda_online::OnlineStore::connect(&env.redis.url(), &Default::default()).unwrap();
    let gw = http::start(env, cached_config(env, 1 << 20)).await;
    wait_metric(gw.addr, "daeda_cache_tracking_up", 1.0).await;
    (store, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_run_is_served_by_the_next_lookup_once_its_invalidation_arrived() {
    let env = TestEnv::new(100);
    env.materialize(&["--service", "user_features", "--as-of", "2026-06-27T00:30:00Z"]);
    let gw = http::start(&env, cached_config(&env, 1 << 20)).await;
    wait_metric(gw.addr, "daeda_cache_tracking_up", 1.0).await;
    let before = ctr(&lookup(gw.addr, 1).await);
    assert_eq!(ctr(&lookup(gw.addr, 1).await), before);
    let m = metrics(gw.addr).await;
    assert!(metric(&m, "daeda_cache_hits_total") >= 1.0, "the second lookup was a hit");
    assert!(metric(&m, "daeda_cache_misses_total") >= 1.0);
    assert!(metric(&m, "daeda_cache_entries") >= 1.0);

    // A late row for user 1 (as in materialize.rs), written by a real incremental run.
    let db = env.duckdb();
    let src = env.data().join("user_features/*/*.parquet");
    let late = env.data().join("user_features/ds=2026-06-28/late.parquet");
    std::fs::create_dir_all(late.parent().unwrap()).unwrap();
    db.execute_batch(&format!(
        "COPY (SELECT * REPLACE (TIMESTAMP '2026-06-28 06:00:00' AS event_ts, 0.999 AS ctr_7d)
           FROM read_parquet('{}') WHERE user_id = 1 AND ds = '2026-06-27') TO '{}' (FORMAT parquet)",
        src.display(),
        late.display()
    ))
    .unwrap();
    let invalidations = metric(&metrics(gw.addr).await, "daeda_cache_invalidations_total");
    let out = env.materialize(&["--service", "user_features", "--mode", "incremental"]);
    assert_eq!(out["runs"][0]["generation"], "1", "{out}");
    wait_metric(gw.addr, "daeda_cache_invalidations_total", invalidations + 1.0).await;
    let body = lookup(gw.addr, 1).await;
    assert_eq!(body["columns"]["ctr_7d"][0], 0.999, "{body}");
    assert_eq!(body["event_ts"][0], "2026-06-28T06:00:00.000000Z");
    gw.stop().await;
}

/// Many conditional writes of one hot key while readers hammer it: after each
/// write's invalidation arrived the next lookup serves it, and no lookup
/// started after a value was confirmed ever answers an older one.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_key_rewritten_many_times_is_never_read_stale() {
    const ROUNDS: i64 = 150;
    let env = TestEnv::new(20);
    let (store, gw) = writable_cached_gateway(&env).await;
    incremental_write(&env, &store, 1, 0.0, 1).await;
    // The value every lookup started from now on must at least answer.
    let confirmed = Arc::new(AtomicI64::new(-1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (confirmed, stop, addr) = (confirmed.clone(), stop.clone(), gw.addr);
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let floor = confirmed.load(Ordering::Acquire);
                    let got = ctr(&lookup(addr, 1).await) as i64;
                    assert!(got >= floor, "a lookup started after {floor} was confirmed answered {got}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 1..=ROUNDS {
        let before = metric(&metrics(gw.addr).await, "daeda_cache_invalidations_total");
        incremental_write(&env, &store, 1, round as f64, 1).await;
        wait_metric(gw.addr, "daeda_cache_invalidations_total", before + 1.0).await;
        assert_eq!(ctr(&lookup(gw.addr, 1).await) as i64, round, "the next lookup after the invalidation");
        confirmed.store(round, Ordering::Release);
        // And it is cached again: a hit answers it.
        assert_eq!(ctr(&lookup(gw.addr, 1).await) as i64, round);
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    let m = metrics(gw.addr).await;
    assert!(metric(&m, "daeda_cache_hits_total") >= ROUNDS as f64, "every round's second lookup was a hit");
    eprintln!(
        "{ROUNDS} writes of one hot key, {reads} concurrent lookups, hits {}, refused inserts {}",
        metric(&m, "daeda_cache_hits_total"),
        metric(&m, "daeda_cache_refused_inserts_total")
    );
    gw.stop().await;
}

/// A full run flips to generation 2: with the pointer refresh an hour away,
/// only the tracked pointer makes the gateway serve it, and once it did it
/// never serves generation 1 again.
#[tokio::test(flavor = "multi_thread")]
async fn a_flip_is_served_once_its_pointer_invalidation_arrived_without_waiting_for_the_refresh() {
    let env = TestEnv::new(20);
    env.materialize(&["--service", "user_features"]);
    let gw = http::start(&env, cached_config(&env, 1 << 20)).await;
    wait_metric(gw.addr, "daeda_cache_tracking_up", 1.0).await;
    for _ in 0..3 {
        assert_eq!(lookup(gw.addr, 1).await["generation"], "1");
    }
    let out = env.materialize(&["--service", "user_features"]);
    assert_eq!(out["runs"][0]["generation"], "2", "{out}");
    let flipped = Instant::now();
    let deadline = flipped + BOUND;
    while lookup(gw.addr, 1).await["generation"] != "2" {
        assert!(Instant::now() < deadline, "generation 2 not served {BOUND:?} after the flip");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("the flip was served {:?} after the materialize process exited", flipped.elapsed());
    for _ in 0..50 {
        assert_eq!(lookup(gw.addr, 1).await["generation"], "2");
    }

    // A run retires the generation it replaced, so the lookups above may
    // have found its rows gone and re-read the pointer. A pointer moved with
    // both generations intact (a copy of generation 2 as generation 3, as a
    // rollback would leave them) is seen through its invalidation alone.
    let mut c = env.redis.conn();
    let rows: Vec<String> = redis::cmd("KEYS").arg("daeda:row:user_features:2:*").query(&mut c).unwrap();
    assert!(!rows.is_empty());
    for k in &rows {
        let v: Vec<u8> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
        let _: () = redis::cmd("SET").arg(k.replace(":2:", ":3:")).arg(v).query(&mut c).unwrap();
    }
    let mut meta: Vec<(String, String)> =
        redis::cmd("HGETALL").arg("daeda:{svc:user_features}:gen:2").query(&mut c).unwrap();
    for (f, v) in meta.iter_mut() {
        if f == "generation" {
            *v = "3".into();
        }
    }
    let _: () = redis::cmd("HSET").arg("daeda:{svc:user_features}:gen:3").arg(&meta).query(&mut c).unwrap();
    let _: () = redis::cmd("SADD").arg("daeda:{svc:user_features}:gens").arg("3").query(&mut c).unwrap();
    for _ in 0..3 {
        assert_eq!(lookup(gw.addr, 1).await["generation"], "2");
    }
    let invalidations = metric(&metrics(gw.addr).await, "daeda_cache_invalidations_total");
    let _: () = redis::cmd("SET").arg("daeda:{svc:user_features}:current").arg("3").query(&mut c).unwrap();
    wait_metric(gw.addr, "daeda_cache_invalidations_total", invalidations + 1.0).await;
    assert_eq!(lookup(gw.addr, 1).await["generation"], "3", "the next lookup after the pointer's invalidation");
    gw.stop().await;
}

/// The tracking connection killed (as a failover or an operator would):
/// the cache is emptied and bypassed until tracking is back, so a write made
/// meanwhile (whose invalidation nobody received) is never hidden by the
/// cached row.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_tracking_connection_flushes_the_cache_and_a_write_meanwhile_is_served() {
    let env = TestEnv::new(20);
    let (store, gw) = writable_cached_gateway(&env).await;
    for round in 1..=5i64 {
        incremental_write(&env, &store, 1, (round * 10) as f64, 1).await;
        let deadline = Instant::now() + BOUND;
        while ctr(&lookup(gw.addr, 1).await) as i64 != round * 10 {
            assert!(Instant::now() < deadline, "round {round}: the write was never served");
        }
        lookup(gw.addr, 1).await; // cached
        let m = metrics(gw.addr).await;
        let connects = metric(&m, "daeda_cache_tracking_connects_total");
        let flushes = metric(&m, "daeda_cache_flushes_total");
        // Kill exactly the tracking connection, found by its name.
        let mut c = env.redis.conn();
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        let id = list
            .lines()
            .find(|l| l.contains(&format!("name={}", daeda_online::cache::tracking::CLIENT_NAME)))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id=")))
            .unwrap_or_else(|| panic!("no tracking connection in {list}"))
            .to_string();
        assert!(list.lines().any(|l| l.contains(&format!("id={id} ")) && l.contains("flags=t")), "{list}");
        // The kill and the write in one transaction: the write's invalidation
        // is certainly lost with the connection.
        let value = (round * 10 + 5) as f64;
        let (key, bytes) = rewritten(&env, 1, value, 1);
        let _: () = redis::pipe()
            .atomic()
            .cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .ignore()
            .cmd("SET")
            .arg(&key)
            .arg(bytes)
            .ignore()
            .query(&mut c)
            .unwrap();
        wait_metric(gw.addr, "daeda_cache_flushes_total", flushes + 1.0).await;
        assert_eq!(ctr(&lookup(gw.addr, 1).await), value, "round {round}: read while tracking is down");
        wait_metric(gw.addr, "daeda_cache_tracking_connects_total", connects + 1.0).await;
        assert_eq!(ctr(&lookup(gw.addr, 1).await), value, "round {round}: read after tracking is back");
        assert_eq!(ctr(&lookup(gw.addr, 1).await), value);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_is_off_at_zero_and_stays_within_its_byte_bound() {
    let env = TestEnv::new(300);
    env.materialize(&["--service", "user_features"]);
    let off = http::start(&env, cached_config(&env, 0)).await;
    lookup(off.addr, 1).await;
    assert!(!metrics(off.addr).await.contains("daeda_cache_"), "no cache, no cache metrics");
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut env.redis.conn()).unwrap();
    assert!(!list.contains(daeda_online::cache::tracking::CLIENT_NAME), "no tracking connection: {list}");
    off.stop().await;

    const MAX: usize = 64 * 1024;
    let gw = http::start(&env, cached_config(&env, MAX)).await;
    wait_metric(gw.addr, "daeda_cache_tracking_up", 1.0).await;
    for user in 1..=300 {
        lookup(gw.addr, user).await;
        if user % 50 == 0 {
            let bytes = metric(&metrics(gw.addr).await, "daeda_cache_bytes");
            assert!(bytes <= MAX as f64, "{bytes} bytes cached, bound {MAX}");
        }
    }
    let m = metrics(gw.addr).await;
    assert!(metric(&m, "daeda_cache_evictions_total") > 0.0, "300 rows do not fit in 64 KiB");
    assert!(metric(&m, "daeda_cache_entries") > 0.0);
    assert_eq!(metric(&m, "daeda_cache_max_bytes"), MAX as f64);
    gw.stop().await;
}

/// `daeda serve` takes the bound from `DAEDA_CACHE_MAX_BYTES` (and refuses a
/// value that is not a number).
#[tokio::test(flavor = "multi_thread")]
async fn daeda_serve_turns_the_cache_on_from_its_configuration() {
    let env = TestEnv::new(10);
    env.materialize(&["--service", "user_features"]);
    let (mut child, addr) =
        crate::support::serve(&env, &[("DAEDA_CACHE_MAX_BYTES", "1048576")], std::process::Stdio::null());
    wait_metric(addr, "daeda_cache_tracking_up", 1.0).await;
    assert_eq!(metric(&metrics(addr).await, "daeda_cache_max_bytes"), 1_048_576.0);
    lookup(addr, 1).await;
    lookup(addr, 1).await;
    assert!(metric(&metrics(addr).await, "daeda_cache_hits_total") >= 1.0);
    let _ = child.kill();
    let _ = child.wait();

    let out =
        crate::support::output(env.command(&["serve", "--listen", "127.0.0.1:0"]).env("DAEDA_CACHE_MAX_BYTES", "lots"));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DAEDA_CACHE_MAX_BYTES"));
}
