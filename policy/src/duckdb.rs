//! The second wall: DuckDB's own parse of the exact text that will run must
//! agree with the policy. The SQL plane asks DuckDB for that parse
//! (`json_serialize_sql`, which parses and executes nothing) and hands the
//! JSON here; this module stays pure so it can be tested without DuckDB.
//!
//! Agreement means: exactly one SELECT; the relations it reads (outside its
//! own CTEs) are exactly the ones the policy approved and all granted; every
//! function DuckDB would call is allowlisted (or an operator or a name DuckDB
//! produces from syntax, such as `count_star` for `count(*)`); no table
//! function, parameter, time travel, or session keyword bound as a call; and
//! no node of a kind this walk does not know. Anything else is a
//! disagreement: the two parsers read the text differently, so it is denied.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::{rules, Approved, Grants};

/// DuckDB's parse differs from the policy's, or reads something the policy
/// would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DuckDB's parser reads this query differently from the policy: {0}")]
pub struct Disagreement(pub String);

fn differ<T>(why: impl Into<String>) -> Result<T, Disagreement> {
    Err(Disagreement(why.into()))
}

/// What DuckDB's parse reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DuckView {
    /// Relations read, outside the query's own CTEs (lower-case).
    pub relations: BTreeSet<String>,
    /// Functions called (lower-case), operators included.
    pub functions: BTreeSet<String>,
}

/// Reads DuckDB's `json_serialize_sql` output for the text that will run.
pub fn view(serialized: &Value, grants: &Grants) -> Result<DuckView, Disagreement> {
    if serialized.get("error").and_then(Value::as_bool) != Some(false) {
        let msg = serialized.get("error_message").and_then(Value::as_str).unwrap_or("no parse");
        return differ(format!("DuckDB does not read it as one SELECT ({msg})"));
    }
    let statements = serialized.get("statements").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let [statement] = statements else {
        return differ(format!("DuckDB reads {} statements", statements.len()));
    };
    let Some(node) = statement.get("node") else { return differ("DuckDB's statement has no query node") };
    if statement.get("named_param_map").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
        return differ("DuckDB reads parameters");
    }
    let mut walk = DuckWalk { grants, view: DuckView::default(), amplifiers: 0 };
    walk.value(node, &[], false)?;
    Ok(walk.view)
}

/// `view`, then the comparison with what the policy approved.
pub fn agree(serialized: &Value, grants: &Grants, approved: &Approved) -> Result<DuckView, Disagreement> {
    let v = view(serialized, grants)?;
    if v.relations != approved.relations {
        return differ(format!(
            "DuckDB reads relations {:?}, the policy approved {:?}",
            v.relations, approved.relations
        ));
    }
    Ok(v)
}

struct DuckWalk<'g> {
    grants: &'g Grants,
    view: DuckView,
    /// Amplifying calls ([`rules::AMPLIFIERS`]) enclosing the current node.
    amplifiers: usize,
}

/// `type` strings of objects that are not expressions: query nodes, table
/// references, result modifiers, sort orders. Type infos end in `_TYPE_INFO`.
const KNOWN_TYPES: &[&str] = &[
    "SELECT_NODE",
    "SET_OPERATION_NODE",
    "BASE_TABLE",
    "JOIN",
    "SUBQUERY",
    "EMPTY",
    "EXPRESSION_LIST",
    "ORDER_MODIFIER",
    "LIMIT_MODIFIER",
    "LIMIT_PERCENT_MODIFIER",
    "DISTINCT_MODIFIER",
    "ORDER_DEFAULT",
    "ASCENDING",
    "DESCENDING",
];

/// Expression classes the walk knows; their children are walked too.
const KNOWN_CLASSES: &[&str] = &[
    "BETWEEN",
    "CASE",
    "CAST",
    "COLUMN_REF",
    "COMPARISON",
    "CONJUNCTION",
    "CONSTANT",
    "FUNCTION",
    "LAMBDA",
    "LAMBDA_REF",
    "OPERATOR",
    "STAR",
    "SUBQUERY",
    "WINDOW",
    "COLLATE",
    "POSITIONAL_REFERENCE",
];

impl DuckWalk<'_> {
    /// Walks any JSON value; `ctes` are the CTE names in scope.
    fn value(&mut self, v: &Value, ctes: &[String], in_columns: bool) -> Result<(), Disagreement> {
        match v {
            Value::Object(o) => self.object(o, ctes, in_columns),
            Value::Array(a) => a.iter().try_for_each(|x| self.value(x, ctes, in_columns)),
            _ => Ok(()),
        }
    }

    fn object(&mut self, o: &Map<String, Value>, ctes: &[String], in_columns: bool) -> Result<(), Disagreement> {
        let mut in_columns = in_columns;
        let amplifier = o.get("class").and_then(Value::as_str) == Some("FUNCTION")
            && o.get("function_name")
                .and_then(Value::as_str)
                .is_some_and(|n| rules::AMPLIFIERS.contains(&n.to_ascii_lowercase().as_str()));
        if amplifier && self.amplifiers > 0 {
            return differ("DuckDB reads an amplifying function inside another");
        }
        if let Some(class) = o.get("class").and_then(Value::as_str) {
            if !KNOWN_CLASSES.contains(&class) {
                return differ(format!("DuckDB reads an expression of class {class}"));
            }
            match class {
                "FUNCTION" => self.function(o)?,
                "COLUMN_REF" => column_ref(o, in_columns)?,
                "STAR" if o.get("columns").and_then(Value::as_bool) == Some(true) => in_columns = true,
                _ => {}
            }
        } else if let Some(kind) = o.get("type").and_then(Value::as_str) {
            if !(KNOWN_TYPES.contains(&kind) || kind.ends_with("_TYPE_INFO")) {
                return differ(format!("DuckDB reads a node of type {kind}"));
            }
            if kind == "BASE_TABLE" {
                self.base_table(o, ctes)?;
            }
        }
        // A query node's CTEs: each body sees the CTEs before it; the rest of
        // the node sees them all.
        let mut scope = ctes.to_vec();
        if let Some(map) = o.get("cte_map") {
            let entries = map.get("map").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for entry in entries {
                let Some(name) = entry.get("key").and_then(Value::as_str) else {
                    return differ("DuckDB reads a CTE without a name");
                };
                self.value(entry.get("value").unwrap_or(&Value::Null), &scope, false)?;
                scope.push(name.to_ascii_lowercase());
            }
        }
        self.amplifiers += usize::from(amplifier);
        for (key, child) in o {
            if key != "cte_map" {
                self.value(child, &scope, in_columns)?;
            }
        }
        self.amplifiers -= usize::from(amplifier);
        Ok(())
    }

    fn base_table(&mut self, o: &Map<String, Value>, ctes: &[String]) -> Result<(), Disagreement> {
        let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        let (catalog, schema, table) = (text("catalog_name"), text("schema_name"), text("table_name"));
        if !o.get("at_clause").is_none_or(Value::is_null) {
            return differ(format!("DuckDB reads time travel on {table}"));
        }
        if !catalog.is_empty() || !(schema.is_empty() || schema == "main") {
            return differ(format!("DuckDB reads relation {catalog}.{schema}.{table}"));
        }
        if schema.is_empty() && ctes.contains(&table) {
            return Ok(());
        }
        if !self.grants.contains(&table) {
            return differ(format!("DuckDB reads relation {table}, which is not granted"));
        }
        self.view.relations.insert(table);
        Ok(())
    }

    fn function(&mut self, o: &Map<String, Value>) -> Result<(), Disagreement> {
        let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        let (name, schema, catalog) = (text("function_name"), text("schema"), text("catalog"));
        if !catalog.is_empty() || !(schema.is_empty() || schema == "main") {
            return differ(format!("DuckDB reads a call to {catalog}.{schema}.{name}"));
        }
        let operator = o.get("is_operator").and_then(Value::as_bool) == Some(true);
        let allowed = if operator {
            rules::DUCKDB_OPERATORS.contains(&name.as_str())
        } else {
            rules::is_allowed_function(&name) || rules::DUCKDB_SYNTAX_FUNCTIONS.contains(&name.as_str())
        };
        if !allowed {
            return differ(format!("DuckDB reads a call to {name}, which is not allowed"));
        }
        if let Some((arg, cap)) = rules::short_literal_argument(&name) {
            let children = o.get("children").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let literal = children.get(arg).filter(|c| c.get("class").and_then(Value::as_str) == Some("CONSTANT"));
            let text = literal.and_then(|c| c.get("value")).and_then(|v| v.get("value")).and_then(Value::as_str);
            if text.is_none_or(|t| t.len() > cap) {
                return differ(format!(
                    "DuckDB reads {name} with argument {} that is not a string literal of at most {cap} bytes",
                    arg + 1
                ));
            }
        }
        self.view.functions.insert(name);
        Ok(())
    }
}

/// A one-part name (or `alias.<name>`, or any name inside `COLUMNS(...)`)
/// that DuckDB's binder turns into a session-reading call when no column has
/// that name (`GetSQLValueFunctionName`).
fn column_ref(o: &Map<String, Value>, in_columns: bool) -> Result<(), Disagreement> {
    let parts: Vec<String> = o
        .get("column_names")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default();
    let Some(last) = parts.last() else { return Ok(()) };
    let binds_as_call = parts.len() == 1 || (parts.len() == 2 && parts[0] == "alias") || in_columns;
    if binds_as_call && rules::SESSION_KEYWORDS.contains(&last.as_str()) {
        return differ(format!("DuckDB may bind {last} as a call reading the session"));
    }
    Ok(())
}
