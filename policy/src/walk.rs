//! The walk over a parsed query: every relation a granted service or a CTE
//! in scope, every function on the allowlist, every clause recognised.
//! Whatever it does not recognise, it denies.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::Value;
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Join, JoinConstraint, JoinOperator, ObjectName,
    ObjectNamePart, Query, Select, SelectItem, SetExpr, TableFactor, TableWithJoins, Visit, Visitor,
};

use crate::{deny, rules, Denied, Grants};

/// CTE names visible at a point of the query.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    ctes: Vec<String>,
}

impl Scope {
    fn with(&self, name: &str) -> Scope {
        let mut s = self.clone();
        s.ctes.push(name.to_ascii_lowercase());
        s
    }

    fn has(&self, name: &str) -> bool {
        self.ctes.iter().any(|c| c == name)
    }
}

pub(crate) struct Walk<'a> {
    pub(crate) grants: &'a Grants,
    pub(crate) relations: BTreeSet<String>,
}

impl Walk<'_> {
    pub(crate) fn query(&mut self, q: &Query, outer: &Scope) -> Result<(), Denied> {
        if !q.locks.is_empty() {
            return deny("locking clauses (FOR UPDATE / FOR SHARE) are not allowed");
        }
        if q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() {
            return deny("FOR, SETTINGS and FORMAT clauses are not allowed");
        }
        if !q.pipe_operators.is_empty() {
            return deny("pipe operators are not allowed");
        }
        let mut scope = outer.clone();
        if let Some(with) = &q.with {
            if with.recursive {
                return deny("recursive CTEs are not allowed");
            }
            for cte in &with.cte_tables {
                if cte.from.is_some() {
                    return deny("CTE ... FROM is not allowed");
                }
                // A CTE body sees the CTEs before it, not itself or later ones.
                self.query(&cte.query, &scope)?;
                scope = scope.with(&cte.alias.name.value);
            }
        }
        self.set_expr(&q.body, &scope)?;
        self.exprs(&q.order_by, &scope)?;
        self.exprs(&q.limit_clause, &scope)?;
        self.exprs(&q.fetch, &scope)
    }

    fn set_expr(&mut self, body: &SetExpr, scope: &Scope) -> Result<(), Denied> {
        match body {
            SetExpr::Select(s) => self.select(s, scope),
            SetExpr::Query(q) => self.query(q, scope),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, scope)?;
                self.set_expr(right, scope)
            }
            SetExpr::Values(v) => self.exprs(v, scope),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                deny("data-modifying statements are not allowed, in CTEs or anywhere else")
            }
            SetExpr::Table(_) => deny("the TABLE statement is not allowed; use SELECT * FROM"),
        }
    }

    fn select(&mut self, s: &Select, scope: &Scope) -> Result<(), Denied> {
        if s.into.is_some() {
            return deny("SELECT ... INTO is not allowed");
        }
        if !s.lateral_views.is_empty() || !s.connect_by.is_empty() || s.value_table_mode.is_some() {
            return deny("LATERAL VIEW, CONNECT BY and value-table modes are not allowed");
        }
        if !s.optimizer_hints.is_empty() || s.select_modifiers.is_some() {
            return deny("optimizer hints and SELECT modifiers are not allowed");
        }
        for t in &s.from {
            self.table_with_joins(t, scope)?;
        }
        self.exprs(&s.distinct, scope)?;
        self.exprs(&s.top, scope)?;
        for item in &s.projection {
            match item {
                SelectItem::QualifiedWildcard(..)
                | SelectItem::Wildcard(_)
                | SelectItem::UnnamedExpr(_)
                | SelectItem::ExprWithAlias { .. } => self.exprs(item, scope)?,
                #[allow(unreachable_patterns)]
                _ => return deny("this kind of select item is not allowed"),
            }
        }
        self.exprs(&s.exclude, scope)?;
        self.exprs(&s.prewhere, scope)?;
        self.exprs(&s.selection, scope)?;
        match &s.group_by {
            GroupByExpr::All(_) => {}
            GroupByExpr::Expressions(exprs, _) => self.exprs(exprs, scope)?,
        }
        self.exprs(&s.cluster_by, scope)?;
        self.exprs(&s.distribute_by, scope)?;
        self.exprs(&s.sort_by, scope)?;
        self.exprs(&s.having, scope)?;
        self.exprs(&s.named_window, scope)?;
        self.exprs(&s.qualify, scope)
    }

    fn table_with_joins(&mut self, t: &TableWithJoins, scope: &Scope) -> Result<(), Denied> {
        self.table_factor(&t.relation, scope)?;
        for Join { relation, join_operator, .. } in &t.joins {
            self.table_factor(relation, scope)?;
            let constraint = match join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c) => c,
                JoinOperator::AsOf { match_condition, constraint } => {
                    self.exprs(match_condition, scope)?;
                    constraint
                }
                _ => return deny("this kind of join is not allowed"),
            };
            if let JoinConstraint::On(e) = constraint {
                self.exprs(e, scope)?;
            }
        }
        Ok(())
    }

    fn table_factor(&mut self, f: &TableFactor, scope: &Scope) -> Result<(), Denied> {
        match f {
            TableFactor::Table {
                name,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                index_directives,
                ..
            } => {
                if args.is_some() {
                    return deny(format!("table function {name} is not allowed"));
                }
                if !with_hints.is_empty()
                    || version.is_some()
                    || *with_ordinality
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || !index_directives.is_empty()
                {
                    return deny(format!("table hints, versions, partitions and paths are not allowed on {name}"));
                }
                self.relation(name, scope)
            }
            TableFactor::Derived { subquery, .. } => self.query(subquery, scope),
            TableFactor::NestedJoin { table_with_joins, .. } => self.table_with_joins(table_with_joins, scope),
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } | TableFactor::UNNEST { .. } => {
                deny("table functions are not allowed in FROM")
            }
            TableFactor::Pivot { .. } | TableFactor::Unpivot { .. } | TableFactor::UnpivotExpr { .. } => {
                deny("PIVOT and UNPIVOT are not allowed")
            }
            _ => deny("this kind of FROM item is not allowed"),
        }
    }

    /// A relation read in FROM: a CTE in scope, or a granted service named bare
    /// or as `main.<service>`. DuckDB resolves identifiers case-insensitively,
    /// quoted or not, so they are compared lower-cased.
    fn relation(&mut self, name: &ObjectName, scope: &Scope) -> Result<(), Denied> {
        let mut parts = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            let ObjectNamePart::Identifier(ident) = part else {
                return deny(format!("relation {name} is not allowed"));
            };
            if ident.quote_style == Some('\'') {
                return deny(format!("reading files ({name}) is not allowed; name a service"));
            }
            parts.push(ident.value.to_ascii_lowercase());
        }
        let table = match parts.as_slice() {
            [t] => {
                if scope.has(t) {
                    return Ok(());
                }
                t.clone()
            }
            [schema, t] if schema == "main" => t.clone(),
            [schema, ..] | [.., schema, _] if rules::is_catalog_schema(schema) => {
                return deny(format!("catalog schema {schema} is not allowed"))
            }
            _ => return deny(format!("relation {name} is not allowed; name a service bare or as main.<service>")),
        };
        if rules::is_catalog_schema(&table) {
            return deny(format!("catalog relation {table} is not allowed"));
        }
        if !self.grants.contains(&table) {
            return deny(format!("relation {table} is not an approved service granted to this token"));
        }
        self.relations.insert(table);
        Ok(())
    }

    /// Checks every expression inside `node`: functions against the allowlist,
    /// subqueries (directly nested ones) with the query walk in this scope.
    fn exprs<V: Visit>(&mut self, node: &V, scope: &Scope) -> Result<(), Denied> {
        let mut v = ExprCheck { walk: self, scope, depth: 0 };
        match node.visit(&mut v) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(d) => Err(d),
        }
    }
}

struct ExprCheck<'w, 'a, 's> {
    walk: &'w mut Walk<'a>,
    scope: &'s Scope,
    /// Queries entered below the checked node; only the outermost ones are
    /// walked here (the walk handles what is inside them, in their own scope).
    depth: usize,
}

impl Visitor for ExprCheck<'_, '_, '_> {
    type Break = Denied;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Denied> {
        self.depth += 1;
        if self.depth == 1 {
            if let Err(d) = self.walk.query(q, self.scope) {
                return ControlFlow::Break(d);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<Denied> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Denied> {
        if self.depth > 0 {
            return ControlFlow::Continue(()); // the query walk checks those
        }
        let session_keyword = match e {
            Expr::Identifier(i) => Some(i),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 && parts[0].value.eq_ignore_ascii_case("alias") => {
                parts.get(1)
            }
            _ => None,
        };
        // The keywords are lower-case ASCII: comparing without case is
        // comparing the lower-cased name, without allocating it.
        if let Some(i) =
            session_keyword.filter(|i| rules::SESSION_KEYWORDS.iter().any(|k| i.value.eq_ignore_ascii_case(k)))
        {
            return ControlFlow::Break(Denied {
                reason: format!(
                    "{} reads the session, not a service; a column of that name is read as <table>.{}",
                    i.value, i.value
                ),
            });
        }
        if let Expr::Function(f) = e {
            let name = match f.name.0.as_slice() {
                [ObjectNamePart::Identifier(i)] => i.value.to_ascii_lowercase(),
                _ => {
                    return ControlFlow::Break(Denied {
                        reason: format!("qualified function {} is not allowed", f.name),
                    })
                }
            };
            if !rules::is_allowed_function(&name) {
                return ControlFlow::Break(Denied { reason: format!("function {name} is not allowed") });
            }
            if let Some((arg, cap)) = rules::short_literal_argument(&name) {
                if !short_literal(&f.args, arg, cap) {
                    return ControlFlow::Break(Denied {
                        reason: format!(
                            "function {name} needs argument {} as a string literal of at most {cap} bytes",
                            arg + 1
                        ),
                    });
                }
            }
            if rules::AMPLIFIERS.contains(&name.as_str()) {
                if let Some(inner) = nested_amplifier(&f.args) {
                    return ControlFlow::Break(Denied {
                        reason: format!("{inner} may not be used inside {name}: their outputs multiply"),
                    });
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether argument `index` of a call is a string literal of at most `cap` bytes.
fn short_literal(args: &FunctionArguments, index: usize, cap: usize) -> bool {
    let FunctionArguments::List(list) = args else { return false };
    match list.args.get(index) {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) => s.len() <= cap,
            _ => false,
        },
        _ => false,
    }
}

/// The first amplifying function called anywhere inside `args`.
fn nested_amplifier(args: &FunctionArguments) -> Option<String> {
    struct Find(Option<String>);
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let name = f.name.to_string().to_ascii_lowercase();
                if rules::AMPLIFIERS.contains(&name.as_str()) {
                    self.0 = Some(name);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut find = Find(None);
    let _ = args.visit(&mut find);
    find.0
}
