//! The rules in one place: which scalar functions may be called, which schema
//! names are the catalog's own. Everything not listed here is denied.

/// Pure (or harmless, read-nothing) functions callable anywhere in a query.
/// Names are compared lower-cased. Anything else, including `read_*`, `glob`,
/// `getenv`, `current_setting`, `getvariable`, `version`, `duckdb_*` and
/// `pragma_*`, is denied.
///
/// Left out on purpose, because their cost is set by an argument rather than
/// by the data and one call cannot be interrupted: `repeat`, `lpad`, `rpad`
/// (a long output from a short text, and they nest), `format`/`printf` (a
/// width in the format string allocates), `list_aggregate` (it calls any
/// aggregate named by a string, `bitstring_agg` included), `list_reduce`
/// (quadratic concatenation), `levenshtein`, `damerau_levenshtein`,
/// `jaccard`, `jaro_winkler_similarity` (quadratic in their inputs). The
/// functions that multiply are bounded by [`short_literal_argument`] and
/// [`AMPLIFIERS`].
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates
    "count", "sum", "avg", "mean", "min", "max", "median", "mode", "stddev", "stddev_pop", "stddev_samp",
    "variance", "var_pop", "var_samp", "corr", "covar_pop", "covar_samp", "quantile", "quantile_cont",
    "quantile_disc", "percentile_cont", "percentile_disc", "approx_count_distinct", "approx_quantile", "arg_max", "arg_min", "argmax", "argmin",
    "max_by", "min_by", "list", "array_agg", "string_agg", "group_concat", "bool_and", "bool_or", "first",
    "last", "any_value", "count_if", "countif", "sum_no_overflow", "product", "histogram", "entropy",
    "kurtosis", "skewness", "regr_slope", "regr_intercept", "regr_r2", "bit_and", "bit_or", "bit_xor",
    // window
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
    // conditional and null handling
    "coalesce", "nullif", "ifnull", "if", "greatest", "least", "typeof",
    // math
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "pow", "power", "exp", "ln", "log",
    "log2", "log10", "sign", "mod", "pi", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "degrees",
    "radians", "isnan", "isinf", "isfinite", "even", "factorial", "gcd", "lcm", "bit_count", "xor",
    // strings
    "lower", "upper", "lcase", "ucase", "length", "len", "char_length", "character_length", "strlen",
    "octet_length", "concat", "concat_ws", "substr", "substring", "trim", "ltrim", "rtrim", "replace",
    "split_part", "string_split", "str_split", "starts_with", "ends_with", "contains", "prefix", "suffix",
    "regexp_matches", "regexp_replace", "regexp_extract", "regexp_full_match", "like_escape", "left", "right", "reverse", "strpos", "instr", "position", "ascii", "chr", "md5",
    "sha256", "hash", "initcap", "translate", "array_to_string",
    // dates and times
    "date_trunc", "datetrunc", "date_part", "datepart", "extract", "date_diff", "datediff", "date_sub",
    "datesub", "date_add", "strftime", "strptime", "epoch", "epoch_ms", "epoch_us", "epoch_ns",
    "make_date", "make_time", "make_timestamp", "to_timestamp", "year", "month", "day", "hour", "minute",
    "second", "microsecond", "millisecond", "week", "weekday", "dayofweek", "dayofmonth", "dayofyear",
    "quarter", "isodow", "yearweek", "last_day", "monthname", "dayname", "age", "to_days", "to_hours",
    "to_minutes", "to_seconds", "to_months", "to_years", "time_bucket", "current_date", "now",
    "current_timestamp", "today",
    // lists, arrays and structs
    "list_value", "list_pack", "array_value", "list_extract", "list_element", "array_extract", "list_slice",
    "array_slice", "array_length", "list_contains", "list_has", "array_contains", "list_position",
    "list_transform", "array_transform", "list_apply", "list_filter", "array_filter",
    "list_sort", "array_sort", "list_reverse_sort", "list_distinct", "list_unique", "list_sum",
    "list_avg", "list_min", "list_max", "list_count", "list_concat", "array_concat", "flatten",
    "list_dot_product", "list_inner_product", "list_cosine_similarity", "list_distance",
    "array_dot_product", "array_inner_product", "array_cosine_similarity", "array_cosine_distance",
    "array_distance", "array_cross_product", "cardinality", "struct_pack", "struct_extract", "row",
    "unnest", "generate_subscripts", "columns",
    // casts spelled as functions
    "try_cast", "to_json", "json_extract", "json_extract_string",
];

/// Schemas that expose the catalog or settings rather than data.
pub fn is_catalog_schema(name: &str) -> bool {
    matches!(name, "information_schema" | "pg_catalog" | "system" | "temp")
        || name.starts_with("duckdb_")
        || name.starts_with("pragma_")
        || name.starts_with("sqlite_")
}

pub fn is_allowed_function(name: &str) -> bool {
    ALLOWED_FUNCTIONS.contains(&name)
}

/// Arguments that multiply a call's output and must therefore be short
/// string literals: `(index, most bytes)`. `replace(s, 'a', <1 KB>)` is up to
/// a thousand times `s`; a separator is paid once per element joined.
pub fn short_literal_argument(name: &str) -> Option<(usize, usize)> {
    match name {
        "replace" | "regexp_replace" => Some((2, MAX_MULTIPLIER_BYTES)),
        "string_agg" | "group_concat" | "array_to_string" => Some((1, MAX_MULTIPLIER_BYTES)),
        "concat_ws" => Some((0, MAX_MULTIPLIER_BYTES)),
        _ => None,
    }
}

/// The longest replacement or separator a query may give.
pub const MAX_MULTIPLIER_BYTES: usize = 64;

/// Functions whose output can be many times their input (they multiply,
/// split or map over a list). One may not appear inside another's arguments:
/// each level would multiply the last (`replace(replace(s, ...), ...)`,
/// `list_transform(string_split(...), x -> replace(...))`), and a single call
/// cannot be interrupted.
pub const AMPLIFIERS: &[&str] = &[
    "replace", "regexp_replace", "string_agg", "group_concat", "array_to_string", "concat_ws", "string_split",
    "str_split", "list_transform", "array_transform", "list_apply", "list_filter", "array_filter",
];

/// Names DuckDB's binder turns into a call reading the session (user, role,
/// catalog, schema) when no column has that name. The clock keywords
/// (`current_date`, `current_timestamp`...) are harmless and allowed.
pub const SESSION_KEYWORDS: &[&str] =
    &["current_catalog", "current_role", "current_schema", "current_user", "session_user", "user"];

/// Function names DuckDB's parser produces from syntax rather than from a call
/// the query spells: `count(*)`, `EXTRACT`, list and struct literals, list
/// comprehensions, `SIMILAR TO`, `ROW(...)`.
pub const DUCKDB_SYNTAX_FUNCTIONS: &[&str] =
    &["count_star", "date_part", "list_value", "struct_pack", "row", "regexp_full_match", "list_filter", "list_transform"];

/// Operators as DuckDB's parser names them (`is_operator`): arithmetic,
/// string, bit, pattern matching, list and JSON access. None reads state.
pub const DUCKDB_OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "//", "%", "**", "^", "||", "&", "|", "<<", ">>", "~", "!", "~~", "!~~", "~~*",
    "!~~*", "~~~", "!~~~", "@>", "<@", "&&", "->>", "->", "^@",
];
