//! The first wall, before any recursive walk: bounded size, and only lexemes
//! that sqlparser and DuckDB read the same way.
//!
//! Why at the token level: the tokenizer is a loop, not a recursion, so it is
//! safe on any input of bounded length; and every literal or identifier that
//! reaches the printer passes here first. Two parsers disagree about exactly
//! these lexemes: sqlparser's DuckDB dialect reads `\'` inside a string as an
//! escaped quote, while DuckDB (standard-conforming strings) ends the string
//! at that quote, so the rest of the text would be live SQL the policy never
//! saw. `E''`, dollar quotes, `U&''`, national, hex, byte and raw strings are
//! each read or printed differently somewhere; they are refused outright.

use sqlparser::dialect::DuckDbDialect;
use sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

use crate::{deny, Denied};

/// Bounds on a query's text, checked before it is parsed. Every recursion
/// downstream (parse, walk, print, drop of the tree) is bounded by
/// `max_tokens`: no AST can be deeper than the number of tokens it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of SQL text.
    pub max_bytes: usize,
    /// Tokens other than whitespace and comments.
    pub max_tokens: usize,
    /// Nesting of `(`, `[` and `{`.
    pub max_nesting: usize,
}

impl Default for Limits {
    /// 64 KiB and 10,000 tokens: ten times the longest analytic query in the
    /// corpus; 64 levels of brackets, more than any hand-written query.
    fn default() -> Limits {
        Limits { max_bytes: 64 * 1024, max_tokens: 10_000, max_nesting: 64 }
    }
}

impl Limits {
    /// Stack a thread needs to check a query within these limits: a chain of
    /// `max_tokens / 2` binary operators is as deep as an AST can get, and
    /// each level costs a few frames in the walk, the printer and `Drop`
    /// (measured at under 4 KiB per level in debug builds; see the test
    /// `deepest_chains_fit_the_stated_stack`).
    pub fn stack_bytes(&self) -> usize {
        (self.max_tokens / 2 + 64) * 8 * 1024
    }
}

/// The longest string literal a query may hold: long texts are how a short
/// query makes a function produce a huge value.
pub const MAX_LITERAL_BYTES: usize = 4096;

/// Tokenizes `sql` within `limits` and refuses any lexeme the two parsers
/// could read differently. Returns the tokens for the parser (no second pass).
pub fn tokens(sql: &str, limits: &Limits) -> Result<Vec<TokenWithSpan>, Denied> {
    tokenize(sql, limits, true)
}

/// [`tokens`] without their locations (every span empty). The parser reads
/// spans only to say where an error is, and the tree keeps them only in fields
/// its equality and its printed form ignore, so the parse is the same; without
/// them each error a speculative parse builds and throws away skips formatting
/// a line and a column.
pub(crate) fn tokens_unlocated(sql: &str, limits: &Limits) -> Result<Vec<TokenWithSpan>, Denied> {
    tokenize(sql, limits, false)
}

fn tokenize(sql: &str, limits: &Limits, located: bool) -> Result<Vec<TokenWithSpan>, Denied> {
    if sql.len() > limits.max_bytes {
        return deny(format!("the query is {} bytes; the limit is {}", sql.len(), limits.max_bytes));
    }
    if sql.contains('\0') {
        return deny("the query contains a NUL character");
    }
    // Sized for about one token per two bytes (a query as typed, with its
    // whitespace), so that it rarely grows: each growth moves every token.
    let mut tokens = Vec::with_capacity(sql.len() / 2 + 8);
    let tokenized =
        Tokenizer::new(&DuckDbDialect {}, sql).tokenize_with_location_into_buf_with_mapper(&mut tokens, |t| {
            if located {
                t
            } else {
                TokenWithSpan { token: t.token, span: Span::empty() }
            }
        });
    if let Err(e) = tokenized {
        return deny(format!("the query could not be tokenized ({e})"));
    }
    let (mut count, mut depth) = (0usize, 0usize);
    // The last two tokens, and whether whitespace followed each.
    let mut recent: [(Option<&Token>, bool); 2] = [(None, false), (None, false)];
    for t in &tokens {
        if let Token::Whitespace(_) = t.token {
            recent[1].1 = true;
            continue;
        }
        if let Token::SingleQuotedString(_) = t.token {
            if let Some(prefix) = string_prefix(&recent) {
                return deny(format!(
                    "{prefix}'' strings are not allowed: DuckDB reads the prefix as part of the string, the policy's parser does not"
                ));
            }
        }
        recent = [recent[1], (Some(&t.token), false)];
        match &t.token {
            Token::Whitespace(_) => unreachable!("skipped above"),
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                if depth > limits.max_nesting {
                    return deny(format!("the query nests brackets deeper than {} levels", limits.max_nesting));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            Token::Word(w) => {
                if let Some(q) = w.quote_style {
                    if q != '"' {
                        return deny(format!("identifiers quoted with {q} are not allowed; use double quotes"));
                    }
                }
                if w.value.contains(['"', '\\']) || w.value.chars().any(char::is_control) {
                    return deny("identifiers may not contain double quotes, backslashes or control characters");
                }
            }
            Token::SingleQuotedString(s) if s.len() > MAX_LITERAL_BYTES => {
                return deny(format!("string literals are limited to {MAX_LITERAL_BYTES} bytes"));
            }
            Token::SingleQuotedString(s) => {
                // The tokenizer keeps escapes raw: `\'` here is the quote
                // sqlparser did not end the string at, and DuckDB would.
                if s.contains("\\'") {
                    return deny(
                        "a string literal may not contain a backslash before a quote: DuckDB ends the string there; write the quote as ''",
                    );
                }
            }
            Token::Number(..) => {}
            Token::Comma
            | Token::DoubleEq
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Period
            | Token::Colon
            | Token::DoubleColon
            | Token::SemiColon
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::Tilde
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Arrow
            | Token::ExclamationMark => {}
            Token::EscapedStringLiteral(_) => {
                return deny("E'' strings are not allowed: the two parsers unescape them differently")
            }
            Token::DollarQuotedString(_) => return deny("dollar-quoted strings are not allowed"),
            Token::UnicodeStringLiteral(_) => return deny("U&'' strings are not allowed"),
            Token::Placeholder(p) => return deny(format!("parameters ({p}) are not allowed")),
            other => return deny(format!("`{other}` is not allowed in a query here")),
        }
        count += 1;
        if count > limits.max_tokens {
            return deny(format!("the query has more than {} tokens", limits.max_tokens));
        }
    }
    Ok(tokens)
}

/// `E`, `N`, `X`, `B`, `R` or `U&` written right against a string: DuckDB
/// reads an escape, national, hex, bit or unicode string where sqlparser's
/// DuckDB dialect reads a word (or `U & '...'`) followed by a plain string.
fn string_prefix(recent: &[(Option<&Token>, bool); 2]) -> Option<String> {
    let word = |t: Option<&Token>| match t {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    match recent {
        [_, (last, false)] if word(*last).is_some_and(|w| ["E", "N", "X", "B", "R"].contains(&w.as_str())) => {
            word(*last)
        }
        [(Some(_), false), (Some(Token::Ampersand), false)] if word(recent[0].0).as_deref() == Some("U") => {
            Some("U&".into())
        }
        _ => None,
    }
}
