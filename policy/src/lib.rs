//! The SQL policy: whether a query may run on the SQL plane, and exactly what
//! runs. Pure: no I/O, no DuckDB.
//!
//! A query passes only if, parsed with sqlparser's DuckDB dialect, it is one
//! read-only query whose every relation is a granted service (bare or
//! `main.`-qualified; CTE names are local and scoped the way DuckDB binds
//! them), with no table function, no function outside [`rules::ALLOWED_FUNCTIONS`],
//! no catalog schema, and no clause that writes, locks or configures. The walk
//! is exhaustive over the query structure and denies whatever it does not
//! recognise; what it approves is the statement as sqlparser prints it back,
//! never the raw text.
//!
//! Walls in this crate, each of which stops the known breakouts alone:
//! - [`lexical`]: bounded size before any recursion, and only lexemes both
//!   parsers read alike (no `\'` in strings, no `E''`, dollar quotes or odd
//!   identifiers);
//! - [`walk`] (deny by default);
//! - the fixed point: the printed text, parsed again, must give the same tree
//!   and print identically, so the text that runs is the tree that was checked;
//! - [`duckdb`]: DuckDB's own parse of that text must agree (the SQL plane
//!   feeds it DuckDB's JSON).
//!
//! Invariant: [`check`] recurses at most as deep as its input has tokens
//! ([`Limits::max_tokens`]); run it on a thread with [`Limits::stack_bytes`]
//! of stack. On a smaller stack a hostile query could overflow it.

pub mod duckdb;
pub mod lexical;
pub mod rules;
mod walk;

pub use lexical::Limits;

use walk::{Scope, Walk};

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use sqlparser::ast::Statement;
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

/// The services a caller may read: approved for serving and granted by the token.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    services: HashSet<String>,
}

impl Grants {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(services: I) -> Grants {
        Grants { services: services.into_iter().map(|s| s.as_ref().to_ascii_lowercase()).collect() }
    }

    fn contains(&self, name: &str) -> bool {
        self.services.contains(name)
    }
}

/// A query that may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The statement as sqlparser prints it back: what runs.
    pub sql: String,
    /// The services it reads (lower-case).
    pub relations: BTreeSet<String>,
}

/// Why a query may not run, in words a person understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    pub reason: String,
}

pub(crate) fn deny<T>(reason: impl Into<String>) -> Result<T, Denied> {
    Err(Denied { reason: reason.into() })
}

/// Checks `sql` against `grants` within the default [`Limits`].
pub fn check(sql: &str, grants: &Grants) -> Result<Approved, Denied> {
    check_with(sql, grants, &Limits::default())
}

/// Checks `sql` against `grants`; see the crate's invariant on stack size.
pub fn check_with(sql: &str, grants: &Grants, limits: &Limits) -> Result<Approved, Denied> {
    let statement = parse_one(sql, limits)?;
    let Statement::Query(query) = &statement else {
        return deny(format!("statement {} is not allowed; only read-only queries are", statement_kind(&statement)));
    };
    let mut walk = Walk { grants, relations: BTreeSet::new() };
    walk.query(query, &Scope::default())?;
    // The fixed point: what runs is the printed text, so the printed text must
    // be exactly the tree that was checked.
    // Sized up front: printing into a growing string moves it at each doubling.
    let mut printed = String::with_capacity(sql.len() + 64);
    write!(printed, "{statement}").map_err(|_| Denied { reason: "the query could not be printed".into() })?;
    let again = parse_one(&printed, limits).map_err(|d| Denied {
        reason: format!("the query's printed form does not parse back ({}); it is denied", d.reason),
    })?;
    if again != statement || again.to_string() != printed {
        return deny("the query's printed form reads differently from the query; it is denied");
    }
    Ok(Approved { sql: printed, relations: walk.relations })
}

/// The one statement `sql` holds, parsed within `limits`.
fn parse_one(sql: &str, limits: &Limits) -> Result<Statement, Denied> {
    let tokens = lexical::tokens_unlocated(sql, limits)?;
    let statements = match Parser::new(&DuckDbDialect {}).with_tokens_with_locations(tokens).parse_statements() {
        Ok(s) => s,
        Err(_) => {
            // The same parse again, with locations, for a message that says where.
            let mut located = Parser::new(&DuckDbDialect {}).with_tokens_with_locations(lexical::tokens(sql, limits)?);
            let e = match located.parse_statements() {
                Err(e) => e.to_string(),
                Ok(_) => "the parser disagreed with itself".into(),
            };
            return deny(format!(
            "the query could not be parsed ({e}); SQL the policy's parser does not understand is denied, even where DuckDB would accept it"
        ));
        }
    };
    let mut statements = statements.into_iter();
    match (statements.next(), statements.next()) {
        (None, _) => deny("the request holds no SQL statement"),
        (Some(one), None) => Ok(one),
        (Some(_), Some(_)) => deny("only one statement is allowed"),
    }
}

/// The first keyword of a statement, for messages (`INSERT`, `ATTACH`, ...).
fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("?").to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => format!("{first} {}", words.next().unwrap_or("").to_ascii_uppercase()),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_queries() -> Vec<String> {
        let corpus: serde_json::Value = serde_json::from_str(include_str!("../tests/corpus.json")).unwrap();
        corpus["cases"].as_array().unwrap().iter().map(|c| c["sql"].as_str().unwrap().to_string()).collect()
    }

    fn parse(tokens: Vec<sqlparser::tokenizer::TokenWithSpan>) -> Result<Vec<Statement>, String> {
        Parser::new(&DuckDbDialect {}).with_tokens_with_locations(tokens).parse_statements().map_err(|e| e.to_string())
    }

    /// The policy parses tokens without locations: the parse, and so what is
    /// checked and what runs, is the same as with them.
    #[test]
    fn locations_change_no_parse() {
        let limits = Limits::default();
        let mut parsed = 0;
        for sql in corpus_queries() {
            let (Ok(located), Ok(unlocated)) =
                (lexical::tokens(&sql, &limits), lexical::tokens_unlocated(&sql, &limits))
            else {
                continue;
            };
            assert_eq!(
                located.iter().map(|t| &t.token).collect::<Vec<_>>(),
                unlocated.iter().map(|t| &t.token).collect::<Vec<_>>()
            );
            match (parse(located), parse(unlocated)) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "{sql}");
                    assert_eq!(
                        a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                        b.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                    );
                    parsed += 1;
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{sql}: located {a:?}, unlocated {b:?}"),
            }
        }
        assert!(parsed >= 100, "only {parsed} corpus queries parsed");
    }

    /// A query that does not parse is still denied with where it stopped.
    #[test]
    fn parse_errors_still_say_where() {
        let sql = "SELECT a FROM user_features WHERE )";
        let d = check(sql, &Grants::new(["user_features"])).unwrap_err();
        let e = Parser::parse_sql(&DuckDbDialect {}, sql).unwrap_err().to_string();
        assert!(e.contains("at Line: 1, Column: 35"), "{e}");
        assert!(d.reason.contains(&format!("({e})")), "{}", d.reason);
    }

    /// The walk compares session keywords without case, which is comparing
    /// the lower-cased name only while the list is lower-case ASCII.
    #[test]
    fn session_keywords_are_lower_case_ascii() {
        for k in rules::SESSION_KEYWORDS {
            assert!(k.is_ascii() && !k.bytes().any(|b| b.is_ascii_uppercase()), "{k}");
        }
    }
}
