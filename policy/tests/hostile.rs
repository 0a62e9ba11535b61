//! The policy against someone who has read it: parser differentials, deep
//! trees and allocation bombs. Each test names the class it pins.

use daeda_policy::{check, check_with, Grants, Limits};

fn grants() -> Grants {
    Grants::new(["user_features"])
}

fn denied(sql: &str) -> String {
    match check(sql, &grants()) {
        Ok(a) => panic!("approved but must be denied: {sql:?} (would run {:?})", a.sql),
        Err(d) => d.reason,
    }
}

/// The breakout seen from outside: sqlparser reads `\'` as an escaped quote,
/// DuckDB ends the string there, and `item_features` (never granted) was read.
#[test]
fn backslash_quote_breakout_is_denied() {
    let r = denied(r"SELECT '\'' AS x, count(*) AS n FROM item_features --'");
    assert!(r.contains("backslash before a quote"), "{r}");
    denied(r"SELECT '\'' AS x FROM user_features WHERE 'a' = '\' UNION SELECT 1 FROM item_features --'");
    denied("SELECT \"a\\\"\" FROM user_features");
}

#[test]
fn backslashes_elsewhere_stay_usable() {
    let a = check(r"SELECT regexp_matches(country, '\d+') FROM user_features", &grants()).unwrap();
    assert_eq!(a.sql, r"SELECT regexp_matches(country, '\d+') FROM user_features");
}

#[test]
fn every_string_form_the_parsers_read_differently_is_denied() {
    for (sql, why) in [
        ("SELECT E'\\x41' FROM user_features", "E'' strings"),
        ("SELECT $$a$$ FROM user_features", "dollar-quoted"),
        ("SELECT $tag$a$tag$ FROM user_features", "dollar-quoted"),
        ("SELECT U&'\\0041' FROM user_features", "U&''"),
        ("SELECT e'a' FROM user_features", "E'' strings"),
        ("SELECT N'a' FROM user_features", "not allowed"),
        ("SELECT X'41' FROM user_features", "not allowed"),
        ("SELECT B'01' FROM user_features", "not allowed"),
        ("SELECT $1 FROM user_features", "parameters"),
        ("SELECT ? FROM user_features", "parameters"),
        ("SELECT `user_id` FROM user_features", "not allowed"),
        ("SELECT \"a\"\"b\" FROM user_features", "double quotes"),
        ("SELECT \"a\u{1}\" FROM user_features", "control characters"),
        ("SELECT 1\0 FROM user_features", "NUL"),
    ] {
        let r = denied(sql);
        assert!(r.contains(why), "{sql:?}: {r:?} lacks {why:?}");
    }
}

/// A comment ended by a carriage return is read differently by the two
/// parsers; what runs is the printed text, which holds no comment at all.
#[test]
fn comments_never_reach_the_printed_text() {
    let a = check("SELECT user_id --\r, secret\nFROM user_features /* x */", &grants()).unwrap();
    assert_eq!(a.sql, "SELECT user_id FROM user_features");
}

#[test]
fn multi_statement_texts_are_denied() {
    for sql in [
        "SELECT 1; SELECT 2",
        "SELECT * FROM user_features; DROP VIEW user_features",
        "SELECT 1; CREATE TABLE main.loot AS SELECT 42 AS v",
        "SELECT 1; CREATE MACRO main.lower(x) AS 'pwned'",
    ] {
        assert!(denied(sql).contains("one statement"), "{sql}");
    }
}

#[test]
fn session_keywords_are_denied_unless_qualified_by_a_table() {
    for kw in [
        "current_user",
        "CURRENT_USER",
        "current_catalog",
        "current_schema",
        "current_role",
        "session_user",
        "user",
        "\"user\"",
    ] {
        let r = denied(&format!("SELECT {kw} FROM user_features"));
        assert!(r.contains("reads the session"), "{kw}: {r}");
        denied(&format!("SELECT alias.{kw} FROM user_features"));
        denied(&format!("SELECT 1 FROM user_features WHERE {kw} = 'x'"));
    }
    // The clock keywords are harmless, and a table-qualified name is a column.
    check("SELECT current_date, current_timestamp FROM user_features", &grants()).unwrap();
    check("SELECT u.user FROM user_features u", &grants()).unwrap();
}

#[test]
fn allocation_by_argument_is_capped_or_gone() {
    for sql in [
        "SELECT length(repeat('a', 100000000)) FROM user_features LIMIT 1",
        "SELECT repeat('a', user_id) FROM user_features",
        "SELECT repeat('a', -1) FROM user_features",
        "SELECT lpad('a', 1000000000, 'b') FROM user_features",
        "SELECT rpad('a', 10, 'b') FROM user_features",
        "SELECT length(list_aggregate([1], 'bitstring_agg', 0, 100000000)::VARCHAR) AS n",
        "SELECT list_reduce(list(country), (a, b) -> a || b) FROM user_features",
        "SELECT replace(country, 'a', country) FROM user_features",
        "SELECT array_to_string(string_split(country, ','), 'x') FROM user_features",
        "SELECT format('{:>100000000}', 1) FROM user_features",
        "SELECT printf('%100000000d', 1) FROM user_features",
        "SELECT levenshtein(country, country) FROM user_features",
        "SELECT jaro_winkler_similarity(country, country) FROM user_features",
    ] {
        denied(sql);
    }
    // Nesting multiplies: the attacker's workaround for a capped count.
    denied("SELECT repeat(repeat(country, 10000), 10000) FROM user_features");
    denied("SELECT len(list_transform(repeat([1], 10000), x -> repeat([1], 10000)))");
    denied("SELECT repeat([true], 10000) AS b FROM user_features");
    denied("SELECT replace(lpad('', 10000, 'a'), 'a', lpad('', 10000, 'a'))");
    check(
        "SELECT replace(country, 'a', 'bb'), list_transform(embedding, x -> x * 2), string_agg(country, ',') FROM user_features",
        &grants(),
    )
    .unwrap();
}

/// Builders of the deepest trees each kind of syntax allows, `n` levels.
fn deep_queries(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("binary chain", format!("SELECT 1{} FROM user_features", "+1".repeat(n))),
        ("string concat chain", format!("SELECT 'a'{} FROM user_features", " || 'a'".repeat(n))),
        ("AND chain", format!("SELECT 1 FROM user_features WHERE true{}", " AND true".repeat(n))),
        ("cast chain", format!("SELECT 1{} FROM user_features", "::INT".repeat(n))),
        ("UNION chain", format!("SELECT 1 FROM user_features{}", " UNION SELECT 1 FROM user_features".repeat(n))),
        ("parentheses", format!("SELECT {}1{} FROM user_features", "(".repeat(n), ")".repeat(n))),
        ("nested calls", format!("SELECT {}1{} FROM user_features", "abs(".repeat(n), ")".repeat(n))),
        ("nested arrays", format!("SELECT {}1{} FROM user_features", "[".repeat(n), "]".repeat(n))),
        ("nested array type", format!("SELECT CAST(NULL AS INT{}) FROM user_features", "[]".repeat(n))),
        ("NOT chain", format!("SELECT 1 FROM user_features WHERE {}true", "NOT ".repeat(n))),
        ("unary minus chain", format!("SELECT {}1 FROM user_features", "- ".repeat(n))),
        (
            "CASE nesting",
            format!("SELECT {}1{} FROM user_features", "CASE WHEN true THEN ".repeat(n), " END".repeat(n)),
        ),
        ("subquery nesting", format!("SELECT {}1{} FROM user_features", "(SELECT ".repeat(n), ")".repeat(n))),
        ("CTE chain", {
            let ctes: Vec<String> = (0..n).map(|i| format!("c{i} AS (SELECT 1)")).collect();
            format!("WITH {} SELECT * FROM user_features", ctes.join(", "))
        }),
    ]
}

/// The stack overflow seen from outside (`'SELECT 1' + '+1' * 300000` killed
/// the gateway): every kind of deep tree, at and far past the limits, ends in
/// an answer on a thread with the stack the limits state.
#[test]
fn deepest_chains_fit_the_stated_stack() {
    let limits = Limits::default();
    let mut sizes = vec![10, 60, limits.max_tokens / 4, limits.max_tokens / 2 - 10];
    sizes.push(300_000);
    let handle = std::thread::Builder::new()
        .stack_size(limits.stack_bytes())
        .spawn(move || {
            let mut outcomes = Vec::new();
            for n in sizes {
                for (kind, sql) in deep_queries(n) {
                    let r = check_with(&sql, &grants(), &limits);
                    outcomes.push((kind, n, r.is_ok()));
                }
            }
            outcomes
        })
        .unwrap();
    let outcomes = handle.join().expect("the policy must answer every deep query, never overflow");
    // Past the limits everything is denied; the shallowest chains pass.
    assert!(outcomes.iter().filter(|o| o.1 == 300_000).all(|o| !o.2));
    assert!(outcomes.iter().any(|o| o.1 == 10 && o.2));
}

#[test]
fn size_limits_name_themselves() {
    let limits = Limits { max_bytes: 100, max_tokens: 20, max_nesting: 3 };
    let g = grants();
    let r = check_with(&format!("SELECT '{}' FROM user_features", "a".repeat(100)), &g, &limits).unwrap_err();
    assert!(r.reason.contains("bytes"), "{}", r.reason);
    let r = check_with(&format!("SELECT 1{} FROM user_features", "+1".repeat(10)), &g, &limits).unwrap_err();
    assert!(r.reason.contains("tokens"), "{}", r.reason);
    let r = check_with("SELECT ((((1)))) FROM user_features", &g, &limits).unwrap_err();
    assert!(r.reason.contains("nests"), "{}", r.reason);
    check_with("SELECT (((1))) FROM user_features", &g, &limits).unwrap();
}

/// What runs is a fixed point: the approved text, checked again, is itself.
#[test]
fn approved_text_is_a_fixed_point() {
    for sql in [
        "select  user_id , 'it''s' AS \"Quoted Name\" from USER_FEATURES where country like 'a%' -- c",
        "WITH x AS (SELECT * FROM user_features) SELECT [1, 2][1], {'a': 1}.a, list_transform([1], y -> y + 1) FROM x",
    ] {
        let a = check(sql, &grants()).unwrap();
        let b = check(&a.sql, &grants()).unwrap();
        assert_eq!(a, b);
    }
}
