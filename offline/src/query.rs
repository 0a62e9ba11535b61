//! The offline side of a service: its source's schema checked against the
//! definition, and the one query that defines "the online row": the latest row
//! per entity with `timestamp <= as_of`. The skew checker reuses this query, so
//! what it recomputes is what the materializer wrote.

use chrono::{DateTime, Utc};
use daeda_catalog::{ColumnType, ScalarType, ServiceDef};
use duckdb::Connection;

use crate::sql::ident;
use crate::OfflineError;

/// Compares the source's columns with the declared ones. Only declared columns
/// matter: extra source columns are ignored and order is free. A list is accepted
/// for a declared fixed-size array; each row's length is checked when read.
pub fn check_schema(conn: &Connection, def: &ServiceDef, relation: &str) -> Result<(), OfflineError> {
    let mut stmt = conn.prepare(&format!("DESCRIBE SELECT * FROM {relation}"))?;
    let found: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut diff = Vec::new();
    let mut bad = 0;
    for col in &def.columns {
        let line = match found.iter().find(|(n, _)| n.eq_ignore_ascii_case(&col.name)) {
            None => Some(format!("  - {}: declared {}, missing from the source", col.name, col.ty)),
            Some((_, src_ty)) if !compatible(col.ty, src_ty) => {
                Some(format!("  ! {}: declared {}, source has {src_ty}", col.name, col.ty))
            }
            Some(_) => None,
        };
        match line {
            Some(l) => {
                bad += 1;
                diff.push(l);
            }
            None => diff.push(format!("  = {}: {}", col.name, col.ty)),
        }
    }
    if bad == 0 {
        return Ok(());
    }
    Err(OfflineError::SchemaDrift { service: def.name.clone(), mismatches: bad, diff: diff.join("\n") })
}

fn compatible(declared: ColumnType, source: &str) -> bool {
    let upper = source.to_ascii_uppercase();
    // Parquet from pandas/Spark often carries coarser or finer timestamps; they
    // are read as microseconds, the declared precision.
    if declared == ColumnType::Scalar(ScalarType::Timestamp)
        && matches!(upper.as_str(), "TIMESTAMP_S" | "TIMESTAMP_MS" | "TIMESTAMP_NS")
    {
        return true;
    }
    match (declared, ColumnType::parse(source, None)) {
        (d, Ok(s)) if d == s => true,
        (ColumnType::FixedArray { elem, .. }, Ok(ColumnType::List { elem: e })) => elem == e,
        _ => false,
    }
}

/// A SQL literal of `as_of` of the timestamp column's type.
fn ts_literal(def: &ServiceDef, at: DateTime<Utc>) -> String {
    let text = at.format("%Y-%m-%d %H:%M:%S%.6f");
    match def.timestamp_type() {
        ScalarType::TimestampTz => format!("TIMESTAMPTZ '{text}+00'"),
        _ => format!("TIMESTAMP '{text}'"),
    }
}

/// One of `count` disjoint slices of the key space, by a hash of the join
/// keys: every row of an entity lands in the same slice, so the latest-rows
/// query over each slice, put together, is the query over the whole source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlice {
    pub index: u64,
    pub count: u64,
}

impl KeySlice {
    /// The whole key space.
    pub const ALL: KeySlice = KeySlice { index: 0, count: 1 };

    /// The `count` slices, in order.
    pub fn all_of(count: u64) -> impl Iterator<Item = KeySlice> {
        let count = count.max(1);
        (0..count).map(move |index| KeySlice { index, count })
    }
}

/// Rows that can be served: join keys and timestamp present, not after `as_of`.
fn servable(def: &ServiceDef, as_of: DateTime<Utc>) -> String {
    let mut conds: Vec<String> = def.join_keys.iter().map(|k| format!("{} IS NOT NULL", ident(k))).collect();
    conds.push(format!("{} IS NOT NULL", ident(&def.timestamp)));
    conds.push(format!("{} <= {}", ident(&def.timestamp), ts_literal(def, as_of)));
    conds.join(" AND ")
}

/// The latest row per entity as of `as_of`, every declared column cast to its
/// declared type (a list of the wrong length fails the cast, and so the run).
/// With `newer_than`, only entities whose latest row is newer than that
/// watermark (incremental runs). With a [`KeySlice`] of more than one, only
/// the entities of that slice.
///
/// Shaped for streaming rather than as one window over the whole table: the
/// latest event time per entity is found on the narrow (keys, timestamp)
/// columns, and the full rows are a semi join against it, so DuckDB holds
/// state per entity, not per row. Entities whose latest event time is shared by
/// several rows are resolved apart, deterministically, by a hash of the row's
/// values, so a rerun (and the skew checker) picks the same row.
pub fn latest_rows_sql(
    def: &ServiceDef,
    relation: &str,
    as_of: DateTime<Utc>,
    newer_than: Option<DateTime<Utc>>,
    slice: KeySlice,
) -> String {
    // A VARCHAR join key groups byte for byte, whatever collation the source
    // gives it: Redis keys are exact, and the key slices hash the raw bytes
    // (a NOCASE key grouped 'abc' with 'ABC' into one entity, and passes split
    // them apart).
    let projection = def
        .columns
        .iter()
        .map(|c| {
            let exact = def.join_keys.contains(&c.name) && c.ty == ColumnType::Scalar(ScalarType::Varchar);
            let collate = if exact { " COLLATE \"binary\"" } else { "" };
            format!("CAST({0} AS {1}){collate} AS {0}", ident(&c.name), c.ty)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let keys = def.join_keys.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let ts = ident(&def.timestamp);
    let mut tiebreak = def.value_columns().map(|c| ident(&c.name)).collect::<Vec<_>>();
    if tiebreak.is_empty() {
        tiebreak.push(ts.clone());
    }
    let newer = newer_than.map(|wm| format!(" HAVING max({ts}) > {}", ts_literal(def, wm))).unwrap_or_default();
    let mut servable = servable(def, as_of);
    if slice.count > 1 {
        servable.push_str(&format!(" AND hash({keys}) % {} = {}", slice.count, slice.index));
    }
    format!(
        "WITH src AS NOT MATERIALIZED (SELECT {projection} FROM {relation} WHERE {servable}), \
         latest AS (SELECT {keys}, max({ts}) AS {ts} FROM src GROUP BY {keys}{newer}), \
         candidates AS NOT MATERIALIZED (SELECT * FROM src SEMI JOIN latest USING ({keys}, {ts})), \
         tied AS (SELECT {keys} FROM candidates GROUP BY {keys} HAVING count(*) > 1) \
         SELECT * FROM candidates ANTI JOIN tied USING ({keys}) \
         UNION ALL \
         SELECT * FROM (SELECT * FROM candidates SEMI JOIN tied USING ({keys})) \
         QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY hash({})) = 1",
        tiebreak.join(", "),
    )
}

/// About how many entities the source holds as of `as_of`: the exact count
/// in one 64th of the key space (by the hash the passes slice on), times 64.
/// It sizes the passes of [`crate::stream::LatestRows`]. Not DuckDB's
/// `approx_count_distinct`: at 10M entities it said 11.8M over the hash and
/// 9.0M over the key; this says 9.99M, holding a 64th of the keys.
pub fn entity_estimate(
    conn: &Connection,
    def: &ServiceDef,
    relation: &str,
    as_of: DateTime<Utc>,
) -> Result<u64, duckdb::Error> {
    let keys = def.join_keys.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let count = |filter: &str| {
        let sql =
            format!("SELECT count(DISTINCT hash({keys})) FROM {relation} WHERE {} {filter}", servable(def, as_of));
        conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64)
    };
    let sampled = count(&format!("AND hash({keys}) % 64 = 0"))?;
    // Under about 64,000 entities the sample is too small to scale, and the
    // exact count is cheap.
    if sampled < 1000 {
        return count("");
    }
    Ok(sampled * 64)
}

/// What the source held as of the run, for the run record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceStats {
    /// Rows with event time <= as_of, or with no event time.
    pub rows: u64,
    /// Rows skipped because a join key or the timestamp was NULL.
    pub skipped_null_keys: u64,
    /// Fraction of those rows with a NULL, per join key.
    pub join_key_null_rates: serde_json::Map<String, serde_json::Value>,
    pub event_ts_min_micros: Option<i64>,
    pub event_ts_max_micros: Option<i64>,
}

pub fn stats(
    conn: &Connection,
    def: &ServiceDef,
    relation: &str,
    as_of: DateTime<Utc>,
) -> Result<SourceStats, OfflineError> {
    let ts = ident(&def.timestamp);
    let mut cols = vec![
        "count(*)".to_string(),
        format!("count(*) FILTER (WHERE NOT ({}))", servable(def, as_of)),
        format!("min(epoch_us({ts})) FILTER (WHERE {})", servable(def, as_of)),
        format!("max(epoch_us({ts})) FILTER (WHERE {})", servable(def, as_of)),
    ];
    cols.extend(def.join_keys.iter().map(|k| format!("count(*) FILTER (WHERE {} IS NULL)", ident(k))));
    let sql =
        format!("SELECT {} FROM {relation} WHERE {ts} IS NULL OR {ts} <= {}", cols.join(", "), ts_literal(def, as_of));
    conn.query_row(&sql, [], |r| {
        let rows: i64 = r.get(0)?;
        let mut rates = serde_json::Map::new();
        for (i, k) in def.join_keys.iter().enumerate() {
            let nulls: i64 = r.get(4 + i)?;
            let rate = if rows == 0 { 0.0 } else { nulls as f64 / rows as f64 };
            rates.insert(k.clone(), serde_json::json!(rate));
        }
        Ok(SourceStats {
            rows: rows as u64,
            skipped_null_keys: r.get::<_, i64>(1)? as u64,
            join_key_null_rates: rates,
            event_ts_min_micros: r.get(2)?,
            event_ts_max_micros: r.get(3)?,
        })
    })
    .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> ServiceDef {
        let yaml = "name: s\nversion: 2026-01-01\nowner: t\nentity: {join_keys: [k]}\ntimestamp: ts\n\
                    source: {kind: parquet, path: x.parquet}\ncolumns:\n  - {name: k, type: VARCHAR}\n\
                    \x20 - {name: ts, type: TIMESTAMP}\n  - {name: x, type: INTEGER}\nserving: {allowed: true}\n";
        daeda_catalog::parse_definition(yaml, std::path::Path::new("s.yaml")).unwrap()
    }

    fn latest(conn: &Connection, slices: u64) -> Vec<(String, i32)> {
        let at = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let mut rows = Vec::new();
        for slice in KeySlice::all_of(slices) {
            let sql = latest_rows_sql(&service(), "t", at, None, slice);
            let mut stmt = conn.prepare(&format!("SELECT k, x FROM ({sql})")).unwrap();
            rows.extend(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap));
        }
        rows.sort();
        rows
    }

    /// A key column with a case-insensitive collation: one pass and many
    /// passes find the same entities, one per exact key (Redis keys are exact).
    #[test]
    fn collated_keys_are_exact_entities_in_one_pass_or_many() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k VARCHAR COLLATE NOCASE, ts TIMESTAMP, x INTEGER);
             INSERT INTO t SELECT (CASE WHEN i % 2 = 0 THEN 'key' ELSE 'KEY' END) || (i // 2), TIMESTAMP '2024-01-01', i
             FROM range(200) r(i);",
        )
        .unwrap();
        let one = latest(&conn, 1);
        assert_eq!(one.len(), 200, "{one:?}");
        for slices in [2, 7, 64] {
            assert_eq!(latest(&conn, slices), one, "{slices} passes");
        }
    }
}
