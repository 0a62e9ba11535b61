//! Every kind of definition mistake fails with the file, the field and what was
//! expected; equivalent spellings load to the same definition.

use std::path::Path;

use daeda_catalog::{parse_definition, Catalog, CatalogError, ColumnType, ElemType, Listing, Source};

const GOOD: &str = r#"
name: user_features
version: 2026-06-27
owner: ranking-team
tags: [retrieval, dssm]
description: Per-user features.
entity:
  join_keys: [user_id]
timestamp: event_ts
source:
  kind: parquet
  path: ../data/user_features/*.parquet
columns:
  - {name: user_id,   type: BIGINT}
  - {name: event_ts,  type: TIMESTAMP}
  - {name: ctr_7d,    type: DOUBLE}
  - {name: country,   type: VARCHAR}
  - {name: clicks,    type: BIGINT, nullable: false}
  - {name: embedding, type: "FLOAT[64]"}
  - {name: tower,     type: "FLOAT[]", shape: {dimension: 1152}}
  - {name: ctr_src,   type: DOUBLE, ref: "user_stats:ctr_7d"}
serving:
  allowed: true
  ttl: 7d
"#;

fn file() -> &'static Path {
    Path::new("/catalog/feature_services/user_features.yaml")
}

/// Loads GOOD with one line replaced, expecting an error on `field` whose message
/// contains `needle`.
fn expect_error(from: &str, to: &str, field: &str, needle: &str) {
    assert!(GOOD.contains(from), "fixture does not contain {from:?}");
    let text = GOOD.replacen(from, to, 1);
    let errs = parse_definition(&text, file()).expect_err("definition should be rejected");
    assert!(
        errs.iter().any(|e| e.field == field && e.message.contains(needle) && e.file == file()),
        "expected an error on {field} containing {needle:?}, got {errs:#?}"
    );
}

#[test]
fn the_spec_example_loads() {
    let def = parse_definition(GOOD, file()).unwrap();
    assert_eq!(def.name, "user_features");
    assert_eq!(def.join_keys, ["user_id"]);
    assert!(def.serving.allowed);
    assert_eq!(def.serving.ttl.unwrap().as_secs(), 7 * 86_400);
    assert_eq!(def.column("tower").unwrap().ty, ColumnType::FixedArray { elem: ElemType::Float, len: 1152 });
    assert!(!def.column("clicks").unwrap().nullable);
    assert!(def.column("country").unwrap().nullable);
    assert!(!def.column("user_id").unwrap().nullable, "join keys are never nullable");
    assert_eq!(def.column("ctr_src").unwrap().lineage.as_deref(), Some("user_stats:ctr_7d"));
    assert_eq!(
        def.source,
        Source::Parquet { path: "/catalog/feature_services/../data/user_features/*.parquet".into() },
        "relative paths resolve from the YAML file"
    );
    let values: Vec<_> = def.value_columns().map(|c| c.name.as_str()).collect();
    assert_eq!(values, ["ctr_7d", "country", "clicks", "embedding", "tower", "ctr_src"]);
}

#[test]
fn a_client_listing_shows_the_schema_and_ttl_and_an_owner_listing_also_where_it_comes_from() {
    let def = parse_definition(GOOD, file()).unwrap();
    let client = def.listing_json(Listing::Client);
    let keys: Vec<_> = client.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "version",
            "owner",
            "tags",
            "description",
            "join_keys",
            "timestamp",
            "columns",
            "ttl_seconds",
            "fingerprint"
        ]
    );
    assert_eq!(client["ttl_seconds"], 7 * 86_400);
    assert_eq!(client["columns"][0].as_object().unwrap().len(), 3, "name, type, nullable: no lineage for clients");

    let owner = def.listing_json(Listing::Owner);
    let keys: Vec<_> = owner.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "version",
            "owner",
            "tags",
            "description",
            "join_keys",
            "timestamp",
            "source",
            "columns",
            "serving",
            "fingerprint",
            "file"
        ]
    );
    assert_eq!(owner["serving"], serde_json::json!({"allowed": true, "ttl_seconds": 7 * 86_400}));
    assert_eq!(owner["source"]["kind"], "parquet");
    let ctr_src = owner["columns"].as_array().unwrap().iter().find(|c| c["name"] == "ctr_src").unwrap();
    assert_eq!(ctr_src["ref"], "user_stats:ctr_7d");
    assert_eq!(owner["fingerprint"], client["fingerprint"]);
}

#[test]
fn fingerprint_is_stable_across_equivalent_spellings_and_changes_with_the_schema() {
    let a = parse_definition(GOOD, file()).unwrap();
    let b = parse_definition(
        &GOOD
            .replace(r#"type: "FLOAT[64]""#, r#"type: "float[]", shape: {dimension: 64}"#)
            .replace("description: Per-user features.", "description: Something else.")
            .replace("version: 2026-06-27", "version: 2026-07-01.2"),
        file(),
    )
    .unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let c = parse_definition(&GOOD.replace(r#""FLOAT[64]""#, r#""FLOAT[65]""#), file()).unwrap();
    assert_ne!(a.fingerprint(), c.fingerprint());
    let d = parse_definition(&GOOD.replace("type: DOUBLE}", "type: FLOAT}"), file()).unwrap();
    assert_ne!(a.fingerprint(), d.fingerprint());
}

#[test]
fn each_kind_of_mistake_names_its_field() {
    expect_error("type: VARCHAR}", "type: VARCHR}", "columns[3].type", "unknown type `VARCHR`");
    expect_error(
        "{name: clicks,    type: BIGINT, nullable: false}",
        "{name: ctr_7d, type: BIGINT}",
        "columns[4].name",
        "duplicate column `ctr_7d`",
    );
    expect_error("join_keys: [user_id]", "join_keys: [uid]", "entity.join_keys[0]", "not among the columns");
    expect_error(
        "join_keys: [user_id]",
        "join_keys: [ctr_7d]",
        "entity.join_keys[0]",
        "expected INTEGER, BIGINT or VARCHAR",
    );
    expect_error("timestamp: event_ts", "timestamp: ts", "timestamp", "not among the columns");
    expect_error("timestamp: event_ts", "timestamp: country", "timestamp", "expected TIMESTAMP or TIMESTAMPTZ");
    expect_error("version: 2026-06-27", "version: 2026-02-30", "version", "expected YYYY-MM-DD");
    expect_error("path: ../data/user_features/*.parquet", "table: t", "source.path", "missing");
    expect_error("kind: parquet", "kind: csv", "source.kind", "expected parquet, duckdb or ducklake");
    expect_error("ttl: 7d", "ttl: 7 days", "serving.ttl", "not a duration");
    expect_error("name: user_features", "name: User-Features", "name", "not a valid service name");
    expect_error(r#"ref: "user_stats:ctr_7d""#, r#"ref: "user_stats""#, "columns[7].ref", "view:column");
    expect_error(
        r#"type: "FLOAT[]", shape: {dimension: 1152}"#,
        r#"type: "FLOAT[4]", shape: {dimension: 1152}"#,
        "columns[6].type",
        "shape.dimension says 1152",
    );
    expect_error(
        "{name: user_id,   type: BIGINT}",
        "{name: user_id, type: BIGINT, nullable: true}",
        "columns[0].nullable",
        "never NULL",
    );
}

#[test]
fn unknown_keys_are_errors_not_ignored() {
    expect_error(
        "type: BIGINT, nullable: false}",
        "type: BIGINT, nulable: false}",
        "columns[4]",
        "unknown field `nulable`",
    );
    expect_error("owner: ranking-team", "ownr: ranking-team", "(file)", "unknown field `ownr`");
    expect_error("  allowed: true", "  allowed: true\n  alowed: false", "serving", "unknown field `alowed`");
}

#[test]
fn malformed_yaml_is_an_error_naming_the_file() {
    let errs = parse_definition("name: [unclosed\n", file()).unwrap_err();
    assert_eq!(errs[0].file, file());
    let errs = parse_definition(&GOOD.replace("entity:\n  join_keys: [user_id]\n", ""), file()).unwrap_err();
    assert!(errs[0].message.contains("missing field `entity`"), "{errs:?}");
}

#[test]
fn a_catalog_reports_duplicate_services_and_every_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("c.yml"), GOOD.replace("type: DOUBLE}", "type: DUBBLE}")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let err = Catalog::load(dir.path()).unwrap_err();
    let CatalogError::Definitions(list) = &err else { panic!("{err}") };
    assert_eq!(list.len(), 2, "{err}");
    assert!(err.to_string().contains("already defined in"), "{err}");
    assert!(err.to_string().contains("c.yml: columns[2].type"), "{err}");
}

#[test]
fn an_empty_or_missing_catalog_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Catalog::load(dir.path()), Err(CatalogError::Empty(_))));
    assert!(matches!(Catalog::load(dir.path().join("nope")), Err(CatalogError::Io { .. })));
}
