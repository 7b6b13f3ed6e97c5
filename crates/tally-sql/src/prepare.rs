//! Parsing a query and deciding what it needs, before any data is read.
//!
//! One statement, a read-only query, and nothing else: DDL, DML, `SET`, `COPY`, `EXPLAIN
//! ANALYZE` and the like are refused here, by statement kind, and refused again by DataFusion's
//! own verification of the plan. The statement is then rewritten in place:
//! - `:name` parameters become DataFusion's `$name` (both spellings are accepted);
//! - each `view_at('view', grain => 'month', group_by => 'a, b')` in a `FROM` becomes a relation
//!   of its own (`view_at#1`, …), which the caller computes by re-grouping the view.
//!
//! What remains is the list of relations the query names, which the caller looks up among the
//! tenant's views, tables and streams.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArgOperator, Ident, ObjectName, ObjectNamePart,
    Statement, TableFactor, Value as SqlValue, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::SqlError;

/// The deepest nesting of expressions the parser accepts.
const RECURSION_LIMIT: usize = 64;

/// A relation a query reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelationRequest {
    /// A view, table or stream by name (as the query spells it, identifiers normalized).
    Named(String),
    /// A view re-grouped by merging its states, registered as `name`.
    ViewAt {
        name: String,
        view: String,
        grain: Option<String>,
        group_by: Option<String>,
    },
}

impl RelationRequest {
    /// The name the query reads the relation by.
    pub fn name(&self) -> &str {
        match self {
            RelationRequest::Named(n) => n,
            RelationRequest::ViewAt { name, .. } => name,
        }
    }
}

/// A parsed, checked and rewritten query.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) statement: DFStatement,
    /// What the query reads; the caller supplies each as a [`crate::Relation`].
    pub relations: Vec<RelationRequest>,
    /// The names of the query's parameters.
    pub params: BTreeSet<String>,
}

/// How many saved queries deep a query may read saved queries that read saved queries.
const SAVED_DEPTH: usize = 16;

/// Parses `sql` and checks that it is one read-only query.
pub fn prepare(sql: &str) -> Result<Prepared, SqlError> {
    prepare_with(sql, &|_| None)
}

/// [`prepare`], where a relation named like a saved query (`saved(name)` gives its text) reads
/// that query: it is put into the query as a common table expression, before anything else is
/// rewritten, so its parameters become the query's and its relations are read like the
/// query's own. Saved queries may read saved queries, [`SAVED_DEPTH`] deep.
pub fn prepare_with(
    sql: &str,
    saved: &dyn Fn(&str) -> Option<String>,
) -> Result<Prepared, SqlError> {
    let mut statement = parse_query(sql)?;
    for _ in 0..SAVED_DEPTH {
        let inline: Vec<(String, String)> = referenced_tables(&statement)?
            .into_iter()
            .filter_map(|name| saved(&name).map(|text| (name, text)))
            .collect();
        if inline.is_empty() {
            return finish(statement);
        }
        for (name, text) in inline {
            let template = format!(
                "WITH \"{}\" AS ({text}) SELECT 1",
                name.replace('"', "\"\"")
            );
            let cte = match parse_query(&template)? {
                DFStatement::Statement(s) => match *s {
                    Statement::Query(q) => q.with.and_then(|w| w.cte_tables.into_iter().next()),
                    _ => None,
                },
                _ => None,
            }
            .ok_or_else(|| SqlError::Parse(format!("saved query {name} cannot be read")))?;
            let DFStatement::Statement(inner) = &mut statement else {
                unreachable!("parse_query answers queries only");
            };
            let Statement::Query(query) = inner.as_mut() else {
                unreachable!("parse_query answers queries only");
            };
            match &mut query.with {
                Some(with) => with.cte_tables.insert(0, cte),
                None => {
                    let mut with = match parse_query(&template)? {
                        DFStatement::Statement(s) => match *s {
                            Statement::Query(q) => q.with,
                            _ => None,
                        },
                        _ => None,
                    }
                    .expect("the template has a WITH");
                    with.cte_tables = vec![cte];
                    query.with = Some(with);
                }
            }
        }
    }
    Err(SqlError::Plan(format!(
        "saved queries read saved queries more than {SAVED_DEPTH} deep (or in a cycle)"
    )))
}

/// Parses one read-only query.
fn parse_query(sql: &str) -> Result<DFStatement, SqlError> {
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| SqlError::Parse(e.to_string()))?;
    if statements.len() != 1 {
        return Err(SqlError::NotReadOnly(format!(
            "a query is exactly one SELECT statement; this text holds {}",
            statements.len()
        )));
    }
    let statement = statements.pop_front().expect("one statement");
    let DFStatement::Statement(inner) = &statement else {
        return Err(not_read_only(&statement.to_string()));
    };
    let Statement::Query(_) = inner.as_ref() else {
        return Err(not_read_only(&inner.to_string()));
    };
    Ok(statement)
}

/// Rewrites parameters and `view_at` calls and lists what the query reads.
fn finish(mut statement: DFStatement) -> Result<Prepared, SqlError> {
    let DFStatement::Statement(inner) = &mut statement else {
        return Err(not_read_only(&statement.to_string()));
    };
    let Statement::Query(query) = inner.as_mut() else {
        return Err(not_read_only(&inner.to_string()));
    };
    let mut rewriter = Rewriter::default();
    if let ControlFlow::Break(e) = query.visit(&mut rewriter) {
        return Err(e);
    }
    let mut relations: Vec<RelationRequest> = Vec::new();
    for name in referenced_tables(&statement)? {
        if !rewriter.view_ats.iter().any(|v| v.name() == name) {
            relations.push(RelationRequest::Named(name));
        }
    }
    relations.extend(rewriter.view_ats);
    Ok(Prepared {
        statement,
        relations,
        params: rewriter.params,
    })
}

fn not_read_only(statement: &str) -> SqlError {
    let head: String = statement
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    SqlError::NotReadOnly(format!(
        "only read-only queries (SELECT, WITH … SELECT, VALUES) are allowed here, not {head} …; \
         streams, views and tables are defined in schema files and written through their routes"
    ))
}

/// The tables a statement names, without CTEs, identifiers normalized as the planner does.
fn referenced_tables(statement: &DFStatement) -> Result<Vec<String>, SqlError> {
    let (refs, _ctes) = datafusion::sql::resolve::resolve_table_references(statement, true)
        .map_err(|e| SqlError::Plan(e.to_string()))?;
    let mut names = Vec::new();
    for r in refs {
        if r.schema().is_some() {
            return Err(SqlError::Plan(format!(
                "{r}: relations are named without a schema or catalog (a tenant sees only its own)"
            )));
        }
        let name = r.table().to_owned();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

#[derive(Default)]
struct Rewriter {
    params: BTreeSet<String>,
    view_ats: Vec<RelationRequest>,
}

impl VisitorMut for Rewriter {
    type Break = SqlError;

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<SqlError> {
        if let Expr::Value(v) = expr
            && let SqlValue::Placeholder(p) = &mut v.value
        {
            let name = match p.strip_prefix(':').or_else(|| p.strip_prefix('$')) {
                Some(n) if !n.is_empty() && !n.starts_with(|c: char| c.is_ascii_digit()) => {
                    n.to_owned()
                }
                _ => {
                    return ControlFlow::Break(SqlError::Param {
                        name: p.clone(),
                        message: "parameters are named, as :name".into(),
                    });
                }
            };
            *p = format!("${name}");
            self.params.insert(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
        let TableFactor::Table { name, args, .. } = factor else {
            return ControlFlow::Continue(());
        };
        let Some(call) = args.take() else {
            return ControlFlow::Continue(());
        };
        if !is_named(name, "view_at") {
            return ControlFlow::Break(SqlError::Plan(format!(
                "{name}(…): the only table function is view_at('view', grain => '…', group_by => '…')"
            )));
        }
        let request = match view_at(&call.args, self.view_ats.len() + 1) {
            Ok(r) => r,
            Err(e) => return ControlFlow::Break(e),
        };
        *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
            '"',
            request.name(),
        ))]);
        self.view_ats.push(request);
        ControlFlow::Continue(())
    }
}

fn is_named(name: &ObjectName, want: &str) -> bool {
    matches!(&name.0[..], [ObjectNamePart::Identifier(id)] if id.value.eq_ignore_ascii_case(want))
}

/// `view_at('view', grain => '…', group_by => '…')`: the view first, then named options.
fn view_at(args: &[FunctionArg], n: usize) -> Result<RelationRequest, SqlError> {
    let text = |e: &FunctionArgExpr, what: &str| -> Result<String, SqlError> {
        match e {
            FunctionArgExpr::Expr(Expr::Value(v)) => match &v.value {
                SqlValue::SingleQuotedString(s) => Ok(s.clone()),
                _ => Err(SqlError::ViewAt(format!("{what} is a quoted string"))),
            },
            _ => Err(SqlError::ViewAt(format!("{what} is a quoted string"))),
        }
    };
    let mut view = None;
    let mut grain = None;
    let mut group_by = None;
    for (i, arg) in args.iter().enumerate() {
        // `name => value` parses as a named argument whose name is an identifier or, in the
        // PostgreSQL dialect, an expression that is one.
        let named = match arg {
            FunctionArg::Named {
                name,
                arg,
                operator: FunctionArgOperator::RightArrow | FunctionArgOperator::Assignment,
            } => Some((name.value.clone(), arg)),
            FunctionArg::ExprNamed {
                name: Expr::Identifier(name),
                arg,
                operator: FunctionArgOperator::RightArrow | FunctionArgOperator::Assignment,
            } => Some((name.value.clone(), arg)),
            _ => None,
        };
        match (arg, named) {
            (FunctionArg::Unnamed(e), _) if i == 0 => view = Some(text(e, "the view name")?),
            (_, Some((name, arg))) => match name.to_ascii_lowercase().as_str() {
                "grain" => grain = Some(text(arg, "grain")?),
                "group_by" => group_by = Some(text(arg, "group_by")?),
                other => {
                    return Err(SqlError::ViewAt(format!(
                        "unknown option {other}; the options are grain and group_by"
                    )));
                }
            },
            (_, None) => {
                return Err(SqlError::ViewAt(
                    "write view_at('view', grain => 'month', group_by => 'a, b')".into(),
                ));
            }
        }
    }
    let view = view.ok_or_else(|| SqlError::ViewAt("the first argument names the view".into()))?;
    Ok(RelationRequest::ViewAt {
        name: format!("view_at#{n}"),
        view,
        grain,
        group_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass_and_name_their_relations() {
        let p = prepare(
            "WITH recent AS (SELECT * FROM hits WHERE at > now() - interval '1 day') \
             SELECT v.name, count(*) FROM recent JOIN vaults v USING (vault_id) \
             WHERE v.status = :status GROUP BY 1",
        )
        .unwrap();
        assert_eq!(
            p.relations,
            vec![
                RelationRequest::Named("hits".into()),
                RelationRequest::Named("vaults".into())
            ]
        );
        assert_eq!(p.params.iter().collect::<Vec<_>>(), ["status"]);
        assert!(p.statement.to_string().contains("$status"));
    }

    #[test]
    fn view_at_becomes_a_relation() {
        let p = prepare(
            "SELECT * FROM view_at('daily', grain => 'month', group_by => 'country') AS m \
             JOIN view_at('daily') d ON true",
        )
        .unwrap();
        assert_eq!(
            p.relations,
            vec![
                RelationRequest::ViewAt {
                    name: "view_at#1".into(),
                    view: "daily".into(),
                    grain: Some("month".into()),
                    group_by: Some("country".into())
                },
                RelationRequest::ViewAt {
                    name: "view_at#2".into(),
                    view: "daily".into(),
                    grain: None,
                    group_by: None
                }
            ]
        );
        let e = prepare("SELECT * FROM view_at('daily', size => 3)").unwrap_err();
        assert!(e.to_string().contains("unknown option size"), "{e}");
        let e = prepare("SELECT * FROM read_csv('/etc/passwd')").unwrap_err();
        assert!(e.to_string().contains("only table function"), "{e}");
    }

    #[test]
    fn everything_but_a_query_is_refused() {
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO hits VALUES (1)",
            "DELETE FROM hits",
            "DROP VIEW daily",
            "SET datafusion.execution.time_zone = 'UTC'",
            "COPY hits TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "SELECT 1; SELECT 2",
            "EXPLAIN SELECT 1",
        ] {
            let e = prepare(sql).unwrap_err();
            assert!(
                matches!(e, SqlError::NotReadOnly(_) | SqlError::Parse(_)),
                "{sql}: {e}"
            );
        }
        let e = prepare("SELECT * FROM other.hits").unwrap_err();
        assert!(e.to_string().contains("without a schema"), "{e}");
    }
}
