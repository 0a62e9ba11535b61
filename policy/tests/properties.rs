//! Property tests over generated SQL: the policy never panics, and whatever it
//! approves reads only granted services (or CTEs the query itself defines).
//! Inputs are random token soups from a vocabulary full of traps, and random
//! mutations of the corpus; a fixed seed keeps runs repeatable.

use std::collections::HashSet;
use std::ops::ControlFlow;

use daeda_policy::{check, Grants};
use sqlparser::ast::{ObjectName, Query, Visit, Visitor};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

const VOCAB: &[&str] = &[
    "SELECT", "*", "FROM", "WHERE", "JOIN", "ON", "USING", "(", ")", ",", "user_features", "item_features",
    "pii_features", "main.", "main.pii_features", "\"PII_FEATURES\"", "'x.parquet'", "read_parquet", "glob",
    "getenv", "('HOME')", "WITH", "AS", "t", "a", "UNION", "ALL", "SELECT 1", "LATERAL", "INTO", "FOR UPDATE",
    "VALUES", "(1)", "1", "=", "IN", "EXISTS", "information_schema.tables", "duckdb_settings()", "LIMIT",
    "ORDER BY", "GROUP BY", "count(*)", "lower", "x", ";", "INSERT INTO", "DELETE", "ATTACH", "COPY", "TO",
    "RECURSIVE", "QUALIFY", "row_number() OVER ()", "lambda", ":", "list_transform", "[1]", "--", "/*", "*/",
    "\r", "\n", "src_db.t", "CROSS", "FROM user_features", "SET", "PRAGMA", "query", "('SELECT 1')",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Relations and CTE names of a parsed query, to check approvals against.
#[derive(Default)]
struct Names {
    relations: Vec<String>,
    ctes: HashSet<String>,
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.relations.push(r.to_string().to_ascii_lowercase().replace('"', ""));
        ControlFlow::Continue(())
    }
}

fn assert_only_granted(sql: &str, grants: &Grants, granted: &[&str]) {
    let Ok(approved) = check(sql, grants) else { return };
    for r in &approved.relations {
        assert!(granted.contains(&r.as_str()), "approved {sql:?} reads {r}");
    }
    let statements = Parser::parse_sql(&DuckDbDialect {}, &approved.sql).expect("the approved form parses");
    let mut names = Names::default();
    let _ = statements.visit(&mut names);
    for r in names.relations {
        let bare = r.strip_prefix("main.").unwrap_or(&r);
        assert!(
            granted.contains(&bare) || names.ctes.contains(bare),
            "approved {sql:?} (runs as {:?}) names relation {r}",
            approved.sql
        );
    }
}

#[test]
fn random_sql_never_panics_and_approvals_stay_within_the_grants() {
    let granted = ["user_features", "item_features"];
    let grants = Grants::new(granted);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let n = 1 + rng.next(14);
        let sql = (0..n).map(|_| VOCAB[rng.next(VOCAB.len())]).collect::<Vec<_>>().join(" ");
        assert_only_granted(&sql, &grants, &granted);
    }
}

#[test]
fn mutated_corpus_queries_never_panic_and_stay_within_the_grants() {
    let corpus: serde_json::Value = serde_json::from_str(include_str!("corpus.json")).unwrap();
    let queries: Vec<String> = corpus["cases"].as_array().unwrap().iter().map(|c| c["sql"].as_str().unwrap().to_string()).collect();
    let granted = ["user_features", "item_features"];
    let grants = Grants::new(granted);
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let base = &queries[rng.next(queries.len())];
        let mut tokens: Vec<&str> = base.split(' ').collect();
        for _ in 0..1 + rng.next(3) {
            let at = rng.next(tokens.len() + 1);
            match rng.next(3) {
                0 => tokens.insert(at, VOCAB[rng.next(VOCAB.len())]),
                1 if at < tokens.len() => {
                    tokens.remove(at);
                }
                _ if at < tokens.len() => tokens[at] = VOCAB[rng.next(VOCAB.len())],
                _ => {}
            }
        }
        assert_only_granted(&tokens.join(" "), &grants, &granted);
    }
}
