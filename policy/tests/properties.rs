//! Property tests over generated SQL: the policy never panics, and whatever it
//! approves reads only granted services (or CTEs in scope where they are named).
//! Inputs are random token soups from a vocabulary full of traps, random
//! mutations of the corpus, and random nested scopes whose CTEs shadow
//! services; fixed seeds keep runs repeatable, and each test must see a
//! minimum of approvals, so it cannot pass by checking nothing.

use std::ops::ControlFlow;

use daeda_policy::{check, Grants};
use fastrand::Rng;
use sqlparser::ast::{ObjectName, Query, Visit, Visitor};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

const VOCAB: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "WHERE",
    "JOIN",
    "ON",
    "USING",
    "(",
    ")",
    ",",
    "user_features",
    "item_features",
    "pii_features",
    "main.",
    "main.pii_features",
    "\"PII_FEATURES\"",
    "'x.parquet'",
    "read_parquet",
    "glob",
    "getenv",
    "('HOME')",
    "WITH",
    "AS",
    "t",
    "a",
    "UNION",
    "ALL",
    "SELECT 1",
    "LATERAL",
    "INTO",
    "FOR UPDATE",
    "VALUES",
    "(1)",
    "1",
    "=",
    "IN",
    "EXISTS",
    "information_schema.tables",
    "duckdb_settings()",
    "LIMIT",
    "ORDER BY",
    "GROUP BY",
    "count(*)",
    "lower",
    "x",
    ";",
    "INSERT INTO",
    "DELETE",
    "ATTACH",
    "COPY",
    "TO",
    "RECURSIVE",
    "QUALIFY",
    "row_number() OVER ()",
    "lambda",
    ":",
    "list_transform",
    "[1]",
    "--",
    "/*",
    "*/",
    "\r",
    "\n",
    "src_db.t",
    "CROSS",
    "FROM user_features",
    "SET",
    "PRAGMA",
    "query",
    "('SELECT 1')",
];

/// Approvals each property test must see (about half of what the fixed seeds
/// give today), so that a policy denying everything, or a generator that stopped
/// producing valid SQL, cannot pass the tests vacuously.
const MIN_RANDOM_APPROVALS: usize = 60;
const MIN_MUTATED_APPROVALS: usize = 500;
const MIN_SCOPED_APPROVALS: usize = 1000;

/// The oracle: each relation an approved query names, and whether a CTE of
/// that name is in scope where it is named. Scopes follow DuckDB's binding:
/// a CTE is visible in its query's body (and that body's subqueries) and in
/// the bodies of the CTEs after it, never outside its query; a qualified name
/// (`main.x`) is never a CTE.
#[derive(Default)]
struct Names {
    /// (relation, a CTE of that name is in scope)
    relations: Vec<(String, bool)>,
    frames: Vec<Frame>,
}

struct Frame {
    /// CTE names visible in this query's body.
    body: Vec<String>,
    /// CTE names visible in the body of each of this query's CTEs, by address.
    cte_bodies: Vec<(*const Query, Vec<String>)>,
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let outer = match self.frames.last() {
            None => Vec::new(),
            Some(f) => match f.cte_bodies.iter().find(|(at, _)| std::ptr::eq(*at, q)) {
                Some((_, visible)) => visible.clone(),
                None => f.body.clone(),
            },
        };
        let mut frame = Frame { body: outer, cte_bodies: Vec::new() };
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                frame.cte_bodies.push((&*cte.query as *const Query, frame.body.clone()));
                frame.body.push(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        self.frames.push(frame);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        let name = r.to_string().to_ascii_lowercase().replace('"', "");
        let cte = r.0.len() == 1 && self.frames.last().is_some_and(|f| f.body.contains(&name));
        self.relations.push((name, cte));
        ControlFlow::Continue(())
    }
}

/// Checks what the policy approved against the oracle; true when it approved.
fn assert_only_granted(sql: &str, grants: &Grants, granted: &[&str]) -> bool {
    let Ok(approved) = check(sql, grants) else { return false };
    for r in &approved.relations {
        assert!(granted.contains(&r.as_str()), "approved {sql:?} reads {r}");
    }
    let statements = Parser::parse_sql(&DuckDbDialect {}, &approved.sql).expect("the approved form parses");
    // What runs is a fixed point: parsed and printed again, it is itself.
    assert_eq!(statements.len(), 1, "{:?}", approved.sql);
    assert_eq!(statements[0].to_string(), approved.sql, "approved {sql:?} does not print back as itself");
    let mut names = Names::default();
    let _ = statements.visit(&mut names);
    for (r, cte) in names.relations {
        let bare = r.strip_prefix("main.").unwrap_or(&r);
        assert!(
            cte || granted.contains(&bare),
            "approved {sql:?} (runs as {:?}) reads relation {r}, which no CTE in scope defines",
            approved.sql
        );
    }
    true
}

/// Random queries of nested scopes: CTEs (some named like services, shadowing
/// them) and subqueries in FROM and WHERE, naming CTEs and services in and out
/// of their scopes. Mostly valid SQL, so the policy approves many of them.
fn scoped_query(rng: &mut Rng, depth: usize) -> String {
    const NAMES: &[&str] = &["x", "y", "user_features", "item_features", "pii_features"];
    let mut q = String::new();
    if depth < 3 && rng.usize(..2) == 0 {
        let n = 1 + rng.usize(..2);
        let ctes: Vec<String> = (0..n)
            .map(|_| format!("{} AS ({})", NAMES[rng.usize(..NAMES.len())], scoped_query(rng, depth + 1)))
            .collect();
        q.push_str(&format!("WITH {} ", ctes.join(", ")));
    }
    let from = |rng: &mut Rng| -> String {
        match rng.usize(..5) {
            0 if depth < 3 => format!("({}) AS s{depth}", scoped_query(rng, depth + 1)),
            1 => format!("main.{}", NAMES[rng.usize(..NAMES.len())]),
            _ => NAMES[rng.usize(..NAMES.len())].to_string(),
        }
    };
    q.push_str(&format!("SELECT 1 AS one FROM {}", from(rng)));
    if rng.usize(..3) == 0 {
        q.push_str(&format!(" CROSS JOIN {}", from(rng)));
    }
    if depth < 3 && rng.usize(..3) == 0 {
        q.push_str(&format!(" WHERE EXISTS ({})", scoped_query(rng, depth + 1)));
    }
    q
}

#[test]
fn random_sql_never_panics_and_approvals_stay_within_the_grants() {
    let granted = ["user_features", "item_features"];
    let grants = Grants::new(granted);
    let mut rng = Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut approved = 0;
    for _ in 0..20_000 {
        let n = 1 + rng.usize(..14);
        let sql = (0..n).map(|_| VOCAB[rng.usize(..VOCAB.len())]).collect::<Vec<_>>().join(" ");
        approved += usize::from(assert_only_granted(&sql, &grants, &granted));
    }
    // Without approvals the oracle checks nothing.
    println!("{approved} of 20000 random queries approved");
    assert!(approved >= MIN_RANDOM_APPROVALS, "only {approved} random queries were approved");
}

#[test]
fn mutated_corpus_queries_never_panic_and_stay_within_the_grants() {
    let corpus: serde_json::Value = serde_json::from_str(include_str!("corpus.json")).unwrap();
    let queries: Vec<String> =
        corpus["cases"].as_array().unwrap().iter().map(|c| c["sql"].as_str().unwrap().to_string()).collect();
    let granted = ["user_features", "item_features"];
    let grants = Grants::new(granted);
    let mut rng = Rng::with_seed(42);
    let mut approved = 0;
    for _ in 0..20_000 {
        let base = &queries[rng.usize(..queries.len())];
        let mut tokens: Vec<&str> = base.split(' ').collect();
        for _ in 0..1 + rng.usize(..3) {
            let at = rng.usize(..tokens.len() + 1);
            match rng.usize(..3) {
                0 => tokens.insert(at, VOCAB[rng.usize(..VOCAB.len())]),
                1 if at < tokens.len() => {
                    tokens.remove(at);
                }
                _ if at < tokens.len() => tokens[at] = VOCAB[rng.usize(..VOCAB.len())],
                _ => {}
            }
        }
        approved += usize::from(assert_only_granted(&tokens.join(" "), &grants, &granted));
    }
    println!("{approved} of 20000 mutated queries approved");
    assert!(approved >= MIN_MUTATED_APPROVALS, "only {approved} mutated queries were approved");
}

#[test]
fn nested_scopes_never_let_a_cte_name_hide_a_service_outside_its_scope() {
    let granted = ["user_features", "item_features"];
    let grants = Grants::new(granted);
    let mut rng = Rng::with_seed(7);
    let mut approved = 0;
    for _ in 0..20_000 {
        let sql = scoped_query(&mut rng, 0);
        approved += usize::from(assert_only_granted(&sql, &grants, &granted));
    }
    println!("{approved} of 20000 scoped queries approved");
    assert!(approved >= MIN_SCOPED_APPROVALS, "only {approved} scoped queries were approved");
}
