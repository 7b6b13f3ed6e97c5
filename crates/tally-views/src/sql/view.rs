//! `CREATE MATERIALIZED VIEW`: the clauses a live view may have, its one stream, its select
//! items, its `GROUP BY` keys, and which columns are keys and which are outputs over aggregates.
//!
//! [`compile_view`] reads as the steps it takes: refuse clauses a live view cannot have, find the
//! stream, bind `WHERE`, name the select items, bind the group keys, classify the columns, and
//! assemble the [`ViewPlan`].

use std::sync::Arc;

use sqlparser::ast::{self, Spanned};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use super::aggregate::contains_aggregate;
use super::bind::{Binder, Scope, ScopeTarget, function_name};
use super::limits::check_depth;
use super::{
    Compiled, LocationExt, Result, error_at, ident_name, key_values, new_object_name, object_name,
    parse_error, unsupported,
};
use crate::expr::Expr;
use crate::plan::{
    Catalog, ColumnSource, KeyColumn, OutputColumn, StreamDef, ViewColumn, ViewPlan,
};
use crate::time::Interval;
use crate::value::{Type, Value};

pub(super) fn create_view(
    parser: &mut Parser<'_>,
    catalog: &Catalog,
    at: Location,
) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    if parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]) {
        return Err(error_at(
            at,
            "IF NOT EXISTS is not supported",
            Some("applying a schema is idempotent: an unchanged view stays as it is"),
        ));
    }
    let name_at = parser.peek_token().span.start;
    let name = new_object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
    if catalog.stream(&name).is_some() {
        return Err(error_at(
            name_at,
            format!("{name} is already a stream"),
            None,
        ));
    }
    if parser.peek_token().token == Token::LParen {
        return Err(unsupported(
            parser.peek_token().span.start,
            "a column list",
            "name columns with AS in the SELECT",
        ));
    }
    if matches!(&parser.peek_token().token, Token::Word(w) if w.keyword == Keyword::WITH) {
        let option = parser.peek_nth_token(2);
        if let Token::Word(w) = &option.token
            && w.value.eq_ignore_ascii_case("timescaledb")
        {
            return Err(error_at(
                option.span.start,
                "TimescaleDB options are not needed",
                Some(
                    "every Tally view is continuous: it is kept up to date on every event; drop WITH (timescaledb.…) (the only view option is retention = '…')",
                ),
            ));
        }
    }
    let options = parser.parse_options(Keyword::WITH).map_err(perr)?;
    let mut retention = None;
    let mut retention_at = at;
    for (key, value, value_at) in key_values(&options, at)? {
        match key.as_str() {
            "retention" => {
                retention = Some(Interval::parse(&value).map_err(|e| error_at(value_at, e, None))?);
                retention_at = value_at;
            }
            other => {
                return Err(error_at(
                    value_at,
                    format!("unknown view option {other}"),
                    Some("the view option is retention"),
                ));
            }
        }
    }
    parser.expect_keyword(Keyword::AS).map_err(perr)?;
    let query = parser.parse_query().map_err(perr)?;
    let next = parser.peek_token();
    if matches!(&next.token, Token::Word(w) if w.keyword == Keyword::WITH) {
        let _ = parser.next_token();
        let _ = parser.parse_keyword(Keyword::NO);
        if parser.parse_keyword(Keyword::DATA) {
            return Err(error_at(
                next.span.start,
                "WITH [NO] DATA is not needed",
                Some(
                    "a live view is filled from the stream's retained events when it is created, and kept up to date from then on; drop the clause",
                ),
            ));
        }
        return Err(error_at(
            next.span.start,
            "syntax error: unexpected WITH after the view's query",
            Some(
                "view options go before AS: CREATE MATERIALIZED VIEW name WITH (retention = '90 days') AS SELECT …",
            ),
        ));
    }
    let plan = compile_view(catalog, name, retention, retention_at, &query, at)?;
    Ok(Compiled::View(Box::new(plan)))
}

/// Compiles the `SELECT` of view `name`.
fn compile_view(
    catalog: &Catalog,
    name: String,
    retention: Option<Interval>,
    retention_at: Location,
    query: &ast::Query,
    at: Location,
) -> Result<ViewPlan> {
    let select = live_select(query, at)?;
    let select_at = select.select_token.0.span.start.max_or(at);
    check_depths(select, select_at)?;
    // A window function is refused as such, before the GROUP BY checks would complain about
    // the columns it reads.
    for item in &select.projection {
        if let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } =
            item
            && let Some(window_at) = find_window(e)
        {
            return Err(unsupported(
                window_at.max_or(select_at),
                "a window function (OVER)",
                "window functions (rank, ntile, lag, running sums) run at query time: keep this view grouped and write them in a saved query (CREATE VIEW name AS SELECT …, rank() OVER (…) FROM this_view) or POST /v1/sql",
            ));
        }
    }
    let (stream, qualifiers) = from_stream(catalog, select, at)?;
    let scope = Scope {
        columns: stream
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty))
            .collect(),
        qualifiers,
        target: ScopeTarget::Row,
    };
    let mut binder = Binder::new(&scope, at);

    let filter = match &select.selection {
        None => None,
        Some(e) => {
            binder.context = "WHERE";
            let (expr, ty) = binder.expr(e)?;
            expect_bool(&expr, ty, e, at, "WHERE")?;
            Some(expr)
        }
    };
    let items = select_items(select, at)?;
    let keys = group_keys(&mut binder, &scope, select, &items, select_at, at)?;
    let Columns {
        columns,
        outputs,
        keys: key_columns,
    } = classify_columns(&mut binder, &items, keys)?;
    if binder.aggs.is_empty() && key_columns.is_empty() {
        return Err(error_at(
            select_at,
            "a live view needs aggregates or GROUP BY",
            None,
        ));
    }
    let bucket = key_columns.iter().position(|k| k.bucket.is_some());
    if retention.is_some() && bucket.is_none() {
        return Err(error_at(
            retention_at,
            "view retention needs a time bucket column",
            Some("group by time_bucket(…) or date_trunc(…), or drop the retention option"),
        ));
    }
    let warnings = std::mem::take(&mut binder.warnings);
    let mut plan = ViewPlan {
        sql: String::new(),
        warnings,
        stream: stream.name.clone(),
        retention,
        filter,
        keys: key_columns,
        aggs: binder.aggs,
        outputs,
        columns,
        bucket,
        bucket_slots: 0,
        can_fail: false,
        name,
    };
    plan.bucket_slots = number_all_buckets(&mut plan);
    plan.can_fail = can_fail(&plan);
    if plan.can_fail {
        lenient(&mut plan);
    }
    let options = match retention {
        Some(r) => format!(" WITH (retention = '{r}')"),
        None => String::new(),
    };
    plan.sql = format!(
        "CREATE MATERIALIZED VIEW {}{options} AS {}",
        plan.name,
        super::printable(query)
    );
    Ok(plan)
}

/// Where `e` calls a window function (`… OVER (…)`), looking through operators, casts, `CASE`
/// and function arguments.
fn find_window(e: &ast::Expr) -> Option<Location> {
    use ast::Expr as E;
    match e {
        E::Function(f) => {
            if f.over.is_some() {
                return Some(e.span().start);
            }
            match &f.args {
                ast::FunctionArguments::List(list) => list.args.iter().find_map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))
                    | ast::FunctionArg::Named {
                        arg: ast::FunctionArgExpr::Expr(x),
                        ..
                    } => find_window(x),
                    _ => None,
                }),
                _ => None,
            }
        }
        E::BinaryOp { left, right, .. } => find_window(left).or_else(|| find_window(right)),
        E::UnaryOp { expr, .. } | E::Nested(expr) | E::Cast { expr, .. } => find_window(expr),
        E::Case {
            conditions,
            else_result,
            ..
        } => conditions
            .iter()
            .find_map(|c| find_window(&c.condition).or_else(|| find_window(&c.result)))
            .or_else(|| else_result.as_deref().and_then(find_window)),
        _ => None,
    }
}

/// Checks every expression the compiler walks against [`MAX_DEPTH`](super::MAX_DEPTH), before
/// anything walks them recursively.
fn check_depths(select: &ast::Select, select_at: Location) -> Result<()> {
    if let Some(e) = &select.selection {
        check_depth(e, "WHERE", select_at)?;
    }
    for item in &select.projection {
        if let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } =
            item
        {
            check_depth(e, "the SELECT", select_at)?;
        }
    }
    if let ast::GroupByExpr::Expressions(exprs, _) = &select.group_by {
        for e in exprs {
            check_depth(e, "GROUP BY", select_at)?;
        }
    }
    Ok(())
}

/// The one `SELECT` of a live view, after refusing every clause a live view cannot have.
fn live_select(query: &ast::Query, at: Location) -> Result<&ast::Select> {
    if let Some(with) = &query.with {
        return Err(unsupported(
            with.span().start.max_or(at),
            "WITH (a common table expression)",
            "a live view is one SELECT over one stream",
        ));
    }
    if let Some(order) = &query.order_by {
        return Err(unsupported(
            order.span().start.max_or(at),
            "ORDER BY",
            "order the rows when you read the view; a view query takes an order column",
        ));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(unsupported(
            limit.span().start.max_or(at),
            "LIMIT",
            "limit the rows when you read the view; a view query takes a row limit",
        ));
    }
    if query.fetch.is_some()
        || !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(unsupported(
            at,
            "this query clause",
            "a live view is SELECT … FROM stream [WHERE …] GROUP BY …",
        ));
    }
    let select = match query.body.as_ref() {
        ast::SetExpr::Select(s) => s,
        ast::SetExpr::SetOperation { op, .. } => {
            return Err(unsupported(
                query.body.span().start.max_or(at),
                &format!("{op}"),
                "define one view per SELECT",
            ));
        }
        ast::SetExpr::Query(q) => {
            return Err(unsupported(
                q.span().start.max_or(at),
                "a parenthesized query",
                "write the SELECT without parentheses",
            ));
        }
        other => {
            return Err(unsupported(
                other.span().start.max_or(at),
                "this statement",
                "a live view is a SELECT",
            ));
        }
    };
    let select_at = select.select_token.0.span.start.max_or(at);
    if select.distinct.is_some() {
        return Err(unsupported(
            select_at,
            "SELECT DISTINCT",
            "GROUP BY the columns instead",
        ));
    }
    if let Some(having) = &select.having {
        return Err(unsupported(
            having.span().start.max_or(at),
            "HAVING",
            "filter groups when you read the view: a saved query (CREATE VIEW name AS SELECT … FROM this_view WHERE …), POST /v1/sql, or tally query --where",
        ));
    }
    if let Some(q) = &select.qualify {
        return Err(unsupported(
            q.span().start.max_or(at),
            "QUALIFY",
            "window functions are not supported",
        ));
    }
    if !select.named_window.is_empty() {
        return Err(unsupported(
            select_at,
            "WINDOW",
            "window functions are not supported; group by a time bucket instead",
        ));
    }
    if select.top.is_some()
        || select.into.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || select.exclude.is_some()
    {
        return Err(unsupported(
            select_at,
            "this SELECT clause",
            "a live view is SELECT … FROM stream [WHERE …] GROUP BY …",
        ));
    }
    Ok(select)
}

/// The stream a view reads (`FROM` holds exactly one), and the names that qualify its columns.
fn from_stream(
    catalog: &Catalog,
    select: &ast::Select,
    at: Location,
) -> Result<(Arc<StreamDef>, Vec<String>)> {
    match select.from.as_slice() {
        [] => Err(error_at(
            select.select_token.0.span.start.max_or(at),
            "a live view needs FROM stream",
            None,
        )),
        [one] => {
            if let Some(join) = one.joins.first() {
                return Err(unsupported(
                    join.relation.span().start.max_or(at),
                    "JOIN",
                    "a live view reads one stream; send the joined fields on each event, or join views in your BI tool",
                ));
            }
            match &one.relation {
                ast::TableFactor::Table {
                    name: table,
                    alias,
                    args,
                    ..
                } => {
                    let table_at = table.span().start.max_or(at);
                    if args.is_some() {
                        return Err(unsupported(
                            table_at,
                            "a table function",
                            "read a stream by name",
                        ));
                    }
                    let stream_name = object_name(table, table_at)?;
                    let Some(stream) = catalog.stream(&stream_name) else {
                        let hint = if catalog.view(&stream_name).is_some() {
                            "a view cannot read another view; define it over the stream, or re-group this view when you query it (a coarser grain, fewer group columns)"
                        } else {
                            "create the stream first with CREATE STREAM, or read the built-in events or metrics stream"
                        };
                        return Err(error_at(
                            table_at,
                            format!("there is no stream {stream_name}"),
                            Some(hint),
                        ));
                    };
                    let mut qualifiers = vec![stream_name];
                    if let Some(alias) = alias {
                        qualifiers.push(ident_name(&alias.name)?);
                    }
                    Ok((stream.clone(), qualifiers))
                }
                other => Err(unsupported(
                    other.span().start.max_or(at),
                    "a subquery or derived table in FROM",
                    "a live view reads one stream directly",
                )),
            }
        }
        [_, second, ..] => Err(unsupported(
            second.relation.span().start.max_or(at),
            "a second table in FROM",
            "a live view reads one stream",
        )),
    }
}

/// A select item: its column name, its expression and where it is.
struct Item<'q> {
    name: String,
    expr: &'q ast::Expr,
    at: Location,
}

/// Names the select items (`AS` or derived from the expression), refusing reserved and
/// repeated names.
fn select_items(select: &ast::Select, at: Location) -> Result<Vec<Item<'_>>> {
    let mut items: Vec<Item<'_>> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(e) => (e, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            other => {
                return Err(unsupported(
                    other.span().start.max_or(at),
                    &format!("{other}"),
                    "list the columns of the view by name",
                ));
            }
        };
        let item_at = expr.span().start.max_or(at);
        let name = match alias {
            Some(a) => ident_name(a)?,
            None => derived_name(expr).ok_or_else(|| {
                error_at(
                    item_at,
                    format!("the column {expr} needs a name"),
                    Some("add AS name"),
                )
            })?,
        };
        if name.starts_with('_') {
            return Err(error_at(
                item_at,
                format!("column name {name} is reserved"),
                Some("names starting with _ are Tally's own columns"),
            ));
        }
        if items.iter().any(|i| i.name == name) {
            return Err(error_at(
                item_at,
                format!("two columns are called {name}"),
                Some("give one of them another name with AS"),
            ));
        }
        items.push(Item {
            name,
            expr,
            at: item_at,
        });
    }

    Ok(items)
}

/// A bound `GROUP BY` key: its expression and type, the bucket width when it is a time bucket,
/// the select item that names it (when `GROUP BY` used an ordinal or an alias), and where it is.
struct Key {
    expr: Expr,
    ty: Type,
    bucket: Option<Interval>,
    item: Option<usize>,
    at: Location,
}

/// Binds the `GROUP BY` keys; ordinals and aliases refer to select items. Repeated keys count
/// once.
fn group_keys(
    binder: &mut Binder<'_>,
    scope: &Scope,
    select: &ast::Select,
    items: &[Item<'_>],
    select_at: Location,
    at: Location,
) -> Result<Vec<Key>> {
    let group_exprs: Vec<&ast::Expr> = match &select.group_by {
        ast::GroupByExpr::All(_) => {
            return Err(unsupported(
                select_at,
                "GROUP BY ALL",
                "list the group columns",
            ));
        }
        ast::GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err(unsupported(
                    select_at,
                    "GROUP BY modifiers (ROLLUP, CUBE, TOTALS)",
                    "re-group when you query the view, keeping fewer group columns",
                ));
            }
            exprs.iter().collect()
        }
    };
    let mut keys: Vec<Key> = Vec::new();
    binder.context = "GROUP BY";
    for g in group_exprs {
        let g_at = g.span().start.max_or(at);
        let (target, item): (&ast::Expr, Option<usize>) = match g {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(_, _)) => {
                let n: usize = v.value.to_string().parse().unwrap_or(0);
                if n == 0 || n > items.len() {
                    return Err(error_at(
                        g_at,
                        format!(
                            "GROUP BY {n} does not name a column of the SELECT (1..{})",
                            items.len()
                        ),
                        None,
                    ));
                }
                (items[n - 1].expr, Some(n - 1))
            }
            ast::Expr::Identifier(ident)
                if scope.find(&ident_name(ident).unwrap_or_default()).is_none() =>
            {
                let name = ident_name(ident)?;
                match items.iter().position(|i| i.name == name) {
                    Some(i) => (items[i].expr, Some(i)),
                    None => (g, None),
                }
            }
            other => (other, None),
        };
        if contains_aggregate(target) {
            return Err(error_at(
                g_at,
                "aggregate functions are not allowed in GROUP BY",
                None,
            ));
        }
        let (expr, ty) = binder.expr(target)?;
        if ty == Type::Json {
            return Err(error_at(
                g_at,
                "cannot group by a JSON value",
                Some("extract a field as text with ->>"),
            ));
        }
        if keys.iter().any(|k| k.expr == expr) {
            continue;
        }
        let bucket = match &expr {
            Expr::Bucket { interval, .. } => Some(*interval),
            _ => None,
        };
        keys.push(Key {
            expr,
            ty,
            bucket,
            item,
            at: g_at,
        });
    }

    Ok(keys)
}

/// The view's columns in `SELECT` order, its outputs, and its key columns.
struct Columns {
    columns: Vec<ViewColumn>,
    outputs: Vec<OutputColumn>,
    keys: Vec<KeyColumn>,
}

/// Classifies the select items: each is a group key or an output computed from aggregates
/// (binding the aggregates into `binder.aggs`). Every key must be a column.
fn classify_columns(
    binder: &mut Binder<'_>,
    items: &[Item<'_>],
    keys: Vec<Key>,
) -> Result<Columns> {
    binder.key_exprs = keys.iter().map(|k| k.expr.clone()).collect();
    let mut columns = Vec::new();
    let mut outputs = Vec::new();
    let mut key_names: Vec<Option<String>> = vec![None; keys.len()];
    for (idx, item) in items.iter().enumerate() {
        let (name, e, item_at) = (&item.name, item.expr, &item.at);
        // A key named by ordinal or alias is that item; otherwise compare the bound expression.
        let mut key_index = keys.iter().position(|k| k.item == Some(idx));
        if key_index.is_none() && !contains_aggregate(e) {
            binder.context = "the SELECT";
            binder.output = false;
            if let Ok((expr, _)) = binder.expr(e) {
                key_index = keys.iter().position(|k| k.expr == expr);
            }
        }
        if let Some(k) = key_index {
            if let Some(other) = &key_names[k] {
                return Err(error_at(
                    *item_at,
                    format!("columns {other} and {name} are the same group key"),
                    Some("keep one of them"),
                ));
            }
            key_names[k] = Some(name.clone());
            columns.push(ViewColumn {
                name: name.clone(),
                ty: keys[k].ty,
                source: ColumnSource::Key(k),
            });
            continue;
        }
        binder.output = true;
        binder.context = "the SELECT";
        let (expr, ty) = binder.expr(e)?;
        binder.output = false;
        if !matches!(expr, Expr::Agg { .. }) && !expr_has(&expr, |x| matches!(x, Expr::Agg { .. }))
        {
            return Err(error_at(
                *item_at,
                format!("column {name} is neither a group column nor computed from aggregates"),
                Some("add it to GROUP BY, or aggregate it"),
            ));
        }
        outputs.push(OutputColumn {
            name: name.clone(),
            expr,
            ty,
        });
        columns.push(ViewColumn {
            name: name.clone(),
            ty,
            source: ColumnSource::Output(outputs.len() - 1),
        });
    }
    let mut key_columns = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let Key {
            expr,
            ty,
            bucket,
            at,
            ..
        } = key;
        let Some(name) = key_names[i].clone() else {
            return Err(error_at(
                at,
                format!("GROUP BY {expr} is not a column of the SELECT"),
                Some(
                    "add it to the SELECT list with a name, so the view table has a column for it",
                ),
            ));
        };
        key_columns.push(KeyColumn {
            name,
            expr,
            ty,
            bucket,
        });
    }
    Ok(Columns {
        columns,
        outputs,
        keys: key_columns,
    })
}

/// Gives every time bucket expression of the plan its own cache slot: those of the filter and
/// the keys first, then those of the aggregates' arguments. Returns how many there are.
fn number_all_buckets(plan: &mut ViewPlan) -> usize {
    let mut slots = 0;
    for e in plan
        .filter
        .iter_mut()
        .chain(plan.keys.iter_mut().map(|k| &mut k.expr))
    {
        number_buckets(e, &mut slots);
    }
    for a in &mut plan.aggs {
        for e in [&mut a.arg, &mut a.time, &mut a.filter]
            .into_iter()
            .flatten()
        {
            number_buckets(e, &mut slots);
        }
    }
    slots
}

/// Whether some row-level expression of the plan can fail, so ingest must check events.
fn can_fail(plan: &ViewPlan) -> bool {
    plan.filter.as_ref().is_some_and(Expr::can_fail)
        || plan.keys.iter().any(|k| k.expr.can_fail())
        || plan.aggs.iter().any(|a| {
            [&a.arg, &a.time, &a.filter]
                .iter()
                .any(|e| e.as_ref().is_some_and(Expr::can_fail))
        })
}

/// Makes every row-level expression yield NULL where an operation fails ([`Expr::lenient`]):
/// an event a view cannot fully evaluate is kept, and counted by the engine.
fn lenient(plan: &mut ViewPlan) {
    let take = |e: &mut Expr| {
        let taken = std::mem::replace(e, Expr::Literal(crate::value::Value::Null));
        *e = taken.lenient();
    };
    if let Some(f) = &mut plan.filter {
        take(f);
    }
    for k in &mut plan.keys {
        take(&mut k.expr);
    }
    for a in &mut plan.aggs {
        for e in [&mut a.arg, &mut a.time, &mut a.filter]
            .into_iter()
            .flatten()
        {
            take(e);
        }
    }
}

/// Gives every time bucket expression its own cache slot.
fn number_buckets(e: &mut Expr, next: &mut usize) {
    if let Expr::Bucket { slot, .. } = e {
        *slot = *next;
        *next += 1;
    }
    e.for_each_child_mut(&mut |c| number_buckets(c, next));
}

fn derived_name(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Identifier(i) => ident_name(i).ok(),
        ast::Expr::CompoundIdentifier(parts) => parts.last().and_then(|i| ident_name(i).ok()),
        ast::Expr::Function(f) => Some(function_name(f)),
        _ => None,
    }
}

fn expect_bool(expr: &Expr, ty: Type, e: &ast::Expr, at: Location, context: &str) -> Result<()> {
    if ty != Type::Boolean && !matches!(expr, Expr::Literal(Value::Null)) {
        return Err(error_at(
            e.span().start.max_or(at),
            format!("{context} needs a condition, but {e} is {ty}"),
            None,
        ));
    }
    Ok(())
}

/// Whether `f` holds for the expression or one of its parts.
pub(super) fn expr_has(e: &Expr, f: impl Fn(&Expr) -> bool) -> bool {
    let mut found = false;
    e.walk(&mut |x| found |= f(x));
    found
}
