//! The Version Protocol, pure: canonical locks, every change class each way,
//! and the version rules.

use std::path::Path;

use daeda_catalog::lineage::lineage;
use daeda_catalog::lock::{check, diff, Class, LockedService};
use daeda_catalog::{parse_definition, Lock, ServiceDef};

const BASE: &str = r#"
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
  - {name: ctr_7d,    type: DOUBLE, ref: "user_stats:ctr_7d"}
  - {name: country,   type: VARCHAR}
  - {name: clicks,    type: BIGINT, nullable: false}
  - {name: tower,     type: "FLOAT[1152]"}
serving:
  allowed: true
  ttl: 7d
"#;

fn def(text: &str) -> ServiceDef {
    parse_definition(text, Path::new("/repo/feature_services/user_features.yaml"))
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

fn lock_of(texts: &[&str]) -> Lock {
    Lock {
        lock_format: 1,
        services: texts.iter().map(|t| def(t)).map(|d| (d.name.clone(), LockedService::of(&d))).collect(),
    }
}

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

type Classified = Vec<(Class, String)>;

/// The changes between BASE and BASE edited, both ways.
fn classify(from: &str, to: &str) -> (Classified, Classified) {
    let (a, b) = (lock_of(&[BASE]), lock_of(&[&edit(from, to)]));
    let pairs = |v: Vec<daeda_catalog::lock::Change>| v.into_iter().map(|c| (c.class, c.change)).collect::<Vec<_>>();
    (pairs(diff(&a, &b)), pairs(diff(&b, &a)))
}

#[test]
fn equivalent_spellings_lock_identically() {
    let other = BASE
        .replace(r#"type: "FLOAT[1152]"}"#, r#"type: "float[]", shape: {dimension: 1152}}"#)
        .replace("ttl: 7d", "ttl: 168h")
        .replace("type: BIGINT, nullable: false", "type: INT8, nullable: false")
        .replace("tags: [retrieval, dssm]", "tags: [dssm, retrieval, dssm]")
        // Column order is not part of the logical shape.
        .replace("  - {name: country,   type: VARCHAR}\n", "")
        .replace(
            "  - {name: user_id,   type: BIGINT}\n",
            "  - {name: user_id,   type: BIGINT}\n  - {name: country, type: text}\n",
        );
    assert_ne!(other, BASE);
    assert_eq!(lock_of(&[BASE]), lock_of(&[&other]));
    assert_eq!(lock_of(&[BASE]).to_json(), lock_of(&[&other]).to_json());
    assert!(diff(&lock_of(&[BASE]), &lock_of(&[&other])).is_empty());
}

#[test]
fn the_lock_is_stable_json_without_paths_or_hashes_and_reads_back() {
    let lock = lock_of(&[BASE]);
    let json = lock.to_json();
    assert_eq!(json, lock_of(&[BASE]).to_json());
    assert!(json.ends_with("}\n"));
    assert!(!json.contains("parquet\"") || json.contains("\"kind\": \"parquet\""));
    assert!(!json.contains("/repo"), "no paths: {json}");
    assert!(!json.contains("fingerprint"));
    assert!(json.contains("\"type\": \"FLOAT[1152]\""));
    assert!(json.contains("\"ttl_seconds\": 604800"));
    assert_eq!(Lock::parse(&json, "test").unwrap(), lock);
    // Columns sorted by name.
    let names: Vec<&str> = lock.services["user_features"].columns.iter().map(|c| c.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn a_malformed_lock_names_where_it_came_from() {
    let e = Lock::parse("{\"lock_format\": 1, \"services\": {}, \"extra\": 1}", "HEAD:registry.lock.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HEAD:registry.lock.json") && e.contains("extra"), "{e}");
    let e = Lock::parse("{\"lock_format\": 9, \"services\": {}}", "x").unwrap_err().to_string();
    assert!(e.contains("lock_format 9"), "{e}");
}

#[test]
fn breaking_changes() {
    for (from, to, forward) in [
        ("  - {name: country,   type: VARCHAR}\n", "", "column `country` removed"),
        ("{name: country,   type: VARCHAR}", "{name: nation, type: VARCHAR}", "column `country` renamed to `nation`"),
        ("{name: ctr_7d,    type: DOUBLE,", "{name: ctr_7d,    type: FLOAT,", "column `ctr_7d` type DOUBLE -> FLOAT"),
        (r#""FLOAT[1152]""#, r#""FLOAT[1024]""#, "column `tower` type FLOAT[1152] -> FLOAT[1024]"),
        (
            "{name: country,   type: VARCHAR}",
            "{name: country, type: VARCHAR, nullable: false}",
            "column `country` nullable -> not nullable",
        ),
        ("join_keys: [user_id]", "join_keys: [user_id, country]", "join keys [user_id] -> [user_id, country]"),
        ("allowed: true", "allowed: false", "serving allowed -> not allowed"),
    ] {
        let (fwd, _) = classify(from, to);
        assert!(fwd.contains(&(Class::Breaking, forward.to_string())), "{forward}: {fwd:?}");
    }
    // Timestamp: another TIMESTAMP column becomes the event time.
    let a = lock_of(&[&edit(
        "  - {name: country,   type: VARCHAR}\n",
        "  - {name: country,   type: VARCHAR}\n  - {name: ingested, type: TIMESTAMP}\n",
    )]);
    let b = lock_of(&[&edit(
        "  - {name: country,   type: VARCHAR}\n",
        "  - {name: country,   type: VARCHAR}\n  - {name: ingested, type: TIMESTAMP}\n",
    )
    .replace("timestamp: event_ts", "timestamp: ingested")]);
    let d = diff(&a, &b);
    assert!(
        d.iter().any(|c| c.class == Class::Breaking && c.change == "timestamp column `event_ts` -> `ingested`"),
        "{d:?}"
    );
    // A service removed.
    let d = diff(&lock_of(&[BASE]), &Lock::default());
    assert_eq!((d[0].class, d[0].change.as_str()), (Class::Breaking, "service removed"));
}

#[test]
fn additive_changes_and_their_reverse() {
    let new_col = (
        "  - {name: country,   type: VARCHAR}\n",
        "  - {name: country,   type: VARCHAR}\n  - {name: ctr_30d, type: DOUBLE}\n",
    );
    let (fwd, back) = classify(new_col.0, new_col.1);
    assert_eq!(fwd, vec![(Class::Additive, "new nullable column `ctr_30d` DOUBLE".to_string())]);
    assert_eq!(back, vec![(Class::Breaking, "column `ctr_30d` removed".to_string())]);

    let (fwd, back) = classify("allowed: true", "allowed: false");
    assert_eq!(back, vec![(Class::Additive, "serving not allowed -> allowed".to_string())]);
    assert_eq!(fwd[0].0, Class::Breaking);

    let (fwd, back) = classify("ttl: 7d", "ttl: 14d");
    assert_eq!(fwd, vec![(Class::Additive, "ttl 604800s -> 1209600s".to_string())]);
    assert_eq!(back[0].0, Class::Additive);

    // A new NOT NULL column is breaking (old rows cannot satisfy it).
    let (fwd, _) =
        classify(new_col.0, "  - {name: country,   type: VARCHAR}\n  - {name: n, type: BIGINT, nullable: false}\n");
    assert_eq!(fwd, vec![(Class::Breaking, "new column `n` BIGINT is not nullable".to_string())]);
    // Relaxing NOT NULL: readers may see NULL now, so it needs a bump too.
    let (fwd, back) = classify("{name: clicks,    type: BIGINT, nullable: false}", "{name: clicks,    type: BIGINT}");
    assert_eq!(fwd, vec![(Class::Additive, "column `clicks` not nullable -> nullable".to_string())]);
    assert_eq!(back, vec![(Class::Breaking, "column `clicks` nullable -> not nullable".to_string())]);
    // A new service.
    let d = diff(&Lock::default(), &lock_of(&[BASE]));
    assert_eq!((d[0].class, d[0].change.as_str()), (Class::Additive, "new service"));
}

#[test]
fn metadata_changes() {
    for (from, to, want) in [
        ("owner: ranking-team", "owner: search-team", "owner `ranking-team` -> `search-team`"),
        ("tags: [retrieval, dssm]", "tags: [retrieval]", "tags [dssm, retrieval] -> [retrieval]"),
        ("description: Per-user features.", "description: Something else.", "description changed"),
        (
            r#"ref: "user_stats:ctr_7d""#,
            r#"ref: "user_stats_v2:ctr""#,
            "column `ctr_7d` ref `user_stats:ctr_7d` -> `user_stats_v2:ctr`",
        ),
    ] {
        let (fwd, back) = classify(from, to);
        assert_eq!(fwd, vec![(Class::Metadata, want.to_string())]);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, Class::Metadata);
    }
}

#[test]
fn version_rules() {
    let locked = lock_of(&[BASE]);
    // Nothing changed: matches.
    let r = check(&locked, &lock_of(&[BASE]), "2026-11-26");
    assert!(r.matches() && r.violations.is_empty());

    // Breaking without a bump: a violation naming the change and the version needed.
    let dropped = edit("  - {name: country,   type: VARCHAR}\n", "");
    let r = check(&locked, &lock_of(&[&dropped]), "2026-11-26");
    assert_eq!(r.violations.len(), 1);
    let m = &r.violations[0].message;
    assert!(
        m.contains("breaking change (column `country` removed)") && m.contains("above 2026-06-27 (e.g. 2026-11-26)"),
        "{m}"
    );

    // With a bump (date or .N): changes listed, no violation.
    for v in ["2026-06-27.1", "2026-07-01"] {
        let r = check(
            &locked,
            &lock_of(&[&dropped.replace("version: 2026-06-27", &format!("version: {v}"))]),
            "2026-11-26",
        );
        assert!(r.violations.is_empty(), "{v}: {:?}", r.violations);
        assert!(!r.matches());
        assert_eq!(r.version_changes, vec![("user_features".into(), "2026-06-27".into(), v.into())]);
    }

    // Metadata only: no bump needed, but the lock must be rewritten.
    let r = check(&locked, &lock_of(&[&edit("owner: ranking-team", "owner: x")]), "2026-11-26");
    assert!(r.violations.is_empty() && !r.matches());

    // A bump alone: not matching (the lock is stale), no violation.
    let r = check(&locked, &lock_of(&[&edit("version: 2026-06-27", "version: 2026-06-28")]), "2026-11-26");
    assert!(r.violations.is_empty() && r.changes.is_empty() && !r.matches());

    // Going down is a violation, with or without changes.
    let r = check(&locked, &lock_of(&[&edit("version: 2026-06-27", "version: 2026-06-01")]), "2026-11-26");
    assert!(r.violations[0].message.contains("lower than the locked 2026-06-27"), "{:?}", r.violations);

    // Additive without a bump is a violation too.
    let r = check(&locked, &lock_of(&[&edit("ttl: 7d", "ttl: 1d")]), "2026-06-27");
    assert!(
        r.violations[0].message.contains("additive change (ttl 604800s -> 86400s)")
            && r.violations[0].message.contains("e.g. 2026-06-27.1")
    );
}

#[test]
fn lineage_follows_refs_and_finds_shared_views() {
    let a = def(BASE);
    let b = def(&BASE.replace("name: user_features", "name: user_ranker"));
    let l = lineage([&a, &b], None, Path::new("/repo/feature_services"));
    assert_eq!(l.services.len(), 2);
    assert_eq!(l.services[0].source.location, "../data/user_features/*.parquet");
    let ctr = l.services[0].columns.iter().find(|c| c.column == "ctr_7d").unwrap();
    assert_eq!(ctr.upstream.as_ref().map(|u| (u.view.as_str(), u.column.as_str())), Some(("user_stats", "ctr_7d")));
    assert_eq!(l.views.len(), 1);
    assert_eq!(l.views[0].services, vec!["user_features", "user_ranker"]);
    assert!(l.to_text().contains("user_stats -> user_features, user_ranker (shared)"), "{}", l.to_text());
    let dot = l.to_dot();
    assert!(
        dot.starts_with("digraph lineage {") && dot.contains("\"view:user_stats:ctr_7d\" -> \"user_features.ctr_7d\";"),
        "{dot}"
    );
    // One service: its views, and who else reads them.
    let one = lineage([&a, &b], Some("user_ranker"), Path::new("/repo/feature_services"));
    assert_eq!(one.services.len(), 1);
    assert_eq!(one.views[0].services, vec!["user_features", "user_ranker"]);
}
