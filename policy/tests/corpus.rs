//! The policy corpus (`corpus.json`, data the tests read): queries that must
//! be allowed — a false denial is a defect too — and queries that must be
//! denied, each with the reason a person should see. Approved queries are
//! also re-checked in their printed-back form, which is what runs.

use daeda_policy::{check, Grants};

#[derive(serde::Deserialize)]
struct Corpus {
    default_grants: Vec<String>,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    sql: String,
    allow: bool,
    reason: Option<String>,
    grants: Option<Vec<String>>,
}

/// Words that say nothing about which rule denied a query.
const GENERIC: &[&str] = &["not", "is", "are", "allowed", "denied", "the", "a", "an", "in", "no", "be"];

#[test]
fn corpus() {
    let corpus: Corpus = serde_json::from_str(include_str!("corpus.json")).unwrap();
    assert!(corpus.cases.len() >= 120, "the corpus has {} cases", corpus.cases.len());
    let allowed = corpus.cases.iter().filter(|c| c.allow).count();
    assert!(allowed * 3 >= corpus.cases.len(), "only {allowed} allowed cases");
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let grants = Grants::new(case.grants.as_ref().unwrap_or(&corpus.default_grants));
        match (check(&case.sql, &grants), case.allow) {
            (Ok(approved), true) => {
                let again = check(&approved.sql, &grants);
                if again.as_ref().map(|a| &a.sql) != Ok(&approved.sql) {
                    failures.push(format!(
                        "printed form does not re-check the same: {:?} -> {:?} -> {again:?}",
                        case.sql, approved.sql
                    ));
                }
            }
            (Ok(approved), false) => {
                failures.push(format!("ALLOWED but must be denied: {:?} (ran as {:?})", case.sql, approved.sql))
            }
            (Err(denied), true) => {
                failures.push(format!("DENIED but must be allowed: {:?}: {}", case.sql, denied.reason))
            }
            (Err(denied), false) => {
                // A fragment such as "not" matches nearly every denial: each
                // denial names the rule (and what broke it) it must be denied by.
                let want = case.reason.as_deref().unwrap_or("");
                if !want.split_whitespace().any(|w| !GENERIC.contains(&w)) {
                    failures.push(format!("a denial needs a specific expected reason: {:?} has {want:?}", case.sql));
                } else if !denied.reason.contains(want) {
                    failures.push(format!(
                        "denied for the wrong reason: {:?}: got {:?}, want {want:?}",
                        case.sql, denied.reason
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases fail:\n{}", failures.len(), corpus.cases.len(), failures.join("\n"));
}
