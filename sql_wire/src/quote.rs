//! Quoting of names and paths into DuckDB SQL text, shared by the side that
//! links DuckDB (`offline`, the SQL and Quack workers) and the gateway, which
//! links none but writes SQL for the Quack worker to run. One copy, so a fix to
//! quoting reaches both sides.
//!
//! Invariant: the quote character inside the value is doubled, so a value can
//! never end its literal or identifier early, whatever it holds.

/// A single-quoted SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A double-quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_so_a_name_cannot_end_its_literal_or_identifier() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("'); DROP TABLE t; --"), "'''); DROP TABLE t; --'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("\" OR 1=1 --"), "\"\"\" OR 1=1 --\"");
    }
}
