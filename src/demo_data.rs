//! `daeda demo generate`: the example services' offline outputs, built with
//! DuckDB from deterministic hashes so the demo, the tests and the benchmarks
//! can make them on any machine instead of committing binaries:
//!
//! - `user_features`: hive-partitioned Parquet (embedding stored as a FLOAT[]
//!   list, as DuckDB-written Parquet stores arrays), two rows per user, plus a
//!   few rows with a NULL `user_id`;
//! - `item_features`: a DuckLake table written in two snapshots;
//! - `user_item_reranker`: a DuckDB table with a composite key;
//! - `pii_features`: Parquet for a service whose serving is not allowed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{NaiveDate, Utc};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the example data under OUT (default: data).
    Generate {
        #[arg(long, default_value = "data")]
        out: PathBuf,
        /// Users in user_features (two rows each).
        #[arg(long, default_value_t = 10_000)]
        users: u64,
        /// Items in item_features.
        #[arg(long, default_value_t = 2_000)]
        items: u64,
        /// Day the newest rows belong to (YYYY-MM-DD) [default: today, UTC]
        #[arg(long)]
        base_date: Option<String>,
    },
}

pub fn run(c: Command) -> Result<ExitCode> {
    let Command::Generate { out, users, items, base_date } = c;
    let base = match base_date {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|_| crate::UsageError(format!("--base-date `{d}` is not YYYY-MM-DD")))?,
        None => Utc::now().date_naive(),
    };
    generate(&out, users, items, base)?;
    outln!("example data for {users} users and {items} items written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn lit(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// Writes all example outputs under `out`, replacing earlier ones.
pub fn generate(out: &Path, users: u64, items: u64, base: NaiveDate) -> Result<()> {
    for sub in ["user_features", "item_features", "user_item_reranker", "pii_features"] {
        let p = out.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot clear {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let conn = daeda_offline::session()?;
    let base = format!("TIMESTAMP '{base} 00:00:00'");
    let sql = |what: &str, s: &str| conn.execute_batch(s).with_context(|| format!("generating the example {what}"));

    // Two rows per user: an older one (day -2) and the latest (day -1 + jitter),
    // so "latest per entity" has something to choose.
    sql(
        "user_features",
        &format!(
            "COPY (
           SELECT
             CASE WHEN r = 0 AND i % 997 = 996 THEN NULL ELSE i END AS user_id,
             {base} - INTERVAL 2 DAY + r * INTERVAL 1 DAY + (hash(i, r) % 3600)::BIGINT * INTERVAL 1 SECOND AS event_ts,
             (hash(i, r, 1) % 10000) / 10000.0 AS ctr_7d,
             (hash(i, r, 2) % 10000) / 10000.0 AS ctr_30d,
             (hash(i, r, 3) % 500)::BIGINT AS clicks_7d,
             (hash(i, r, 4) % 20000)::BIGINT AS impressions_7d,
             CASE WHEN hash(i, 5) % 10 = 0 THEN NULL ELSE ['DE','FR','US','JP','BR'][(1 + hash(i, 5) % 5)::BIGINT] END AS country,
             hash(i, 6) % 4 = 0 AS is_premium,
             (hash(i, 7) % 8)::INTEGER AS age_bucket,
             ((hash(i, r, 8) % 10000000) / 100.0)::DECIMAL(12,2) AS ltv,
             list_transform(range(64), lambda j: ((hash(i, r, j) % 2001)::FLOAT / 1000.0 - 1.0)::FLOAT)::FLOAT[] AS embedding,
             strftime({base} - INTERVAL 2 DAY + r * INTERVAL 1 DAY, '%Y-%m-%d') AS ds
           FROM range({users}) t(i), range(2) s(r)
         ) TO {} (FORMAT parquet, PARTITION_BY (ds), OVERWRITE_OR_IGNORE true)",
            lit(&out.join("user_features"))
        ),
    )?;

    sql(
        "pii_features",
        &format!(
            "COPY (
           SELECT i AS user_id, {base} - INTERVAL 1 DAY AS event_ts,
                  'user' || i || '@example.com' AS email
           FROM range({}) t(i)
         ) TO {} (FORMAT parquet)",
            users.min(1000),
            lit(&out.join("pii_features/part-0.parquet"))
        ),
    )?;

    let db = out.join("user_item_reranker/reranker.duckdb");
    sql(
        "user_item_reranker",
        &format!(
            "ATTACH {} AS rr;
         CREATE TABLE rr.reranker_features AS
         SELECT u AS user_id, (hash(u, k) % {items})::BIGINT AS item_id,
                {base} - INTERVAL 1 DAY + (hash(u, k, 1) % 86400)::BIGINT * INTERVAL 1 SECOND AS event_ts,
                (hash(u, k, 2) % 10000) / 10000.0 AS prev_score,
                hash(u, k, 3) % 3 = 0 AS clicked_before,
                (hash(u, k, 4) % 90)::INTEGER AS days_since_view,
                ({base} - (hash(u, k, 4) % 90)::BIGINT * INTERVAL 1 DAY)::DATE AS last_view_date,
                ((hash(u, k, 5) % 2000) / 1000.0)::FLOAT AS price_ratio,
                CASE WHEN hash(u, k, 6) % 7 = 0 THEN NULL ELSE (hash(u, k, 6) % 10000) / 10000.0 END AS user_item_ctr
         FROM range({}) t(u), range(5) s(k);
         DETACH rr;",
            lit(&db),
            users.min(2000)
        ),
    )?;

    daeda_offline::load_ducklake(&conn)?;
    let lake = out.join("item_features");
    sql(
        "item_features",
        &format!(
            "ATTACH {} AS lake (DATA_PATH {});
         CREATE TABLE lake.item_features AS
         SELECT i AS item_id, ({base} - INTERVAL 3 DAY)::TIMESTAMPTZ AS event_ts,
                ((hash(i, 1) % 100000) / 100.0)::DECIMAL(10,2) AS price,
                ['books','music','games','garden'][(1 + hash(i, 2) % 4)::BIGINT] AS category,
                (hash(i, 3) % 10000) / 10000.0 AS popularity,
                (hash(i, 4) % 50)::INTEGER AS tag_count,
                list_transform(range(32), lambda j: ((hash(i, j) % 2001)::FLOAT / 1000.0 - 1.0)::FLOAT)::FLOAT[] AS tower
         FROM range({items}) t(i);
         INSERT INTO lake.item_features
         SELECT i, ({base} - INTERVAL 1 DAY)::TIMESTAMPTZ, ((hash(i, 9) % 100000) / 100.0)::DECIMAL(10,2),
                ['books','music','games','garden'][(1 + hash(i, 2) % 4)::BIGINT], (hash(i, 10) % 10000) / 10000.0,
                (hash(i, 4) % 50)::INTEGER,
                list_transform(range(32), lambda j: ((hash(i, j, 1) % 2001)::FLOAT / 1000.0 - 1.0)::FLOAT)::FLOAT[]
         FROM range({items}) t(i) WHERE i % 2 = 0;
         DETACH lake;",
            lit(Path::new(&format!("ducklake:{}", lake.join("metadata.ducklake").display()))),
            lit(&lake.join("files")),
        ),
    )?;
    Ok(())
}
