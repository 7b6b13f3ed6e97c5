//! The size limits of SQL text, checked before anything walks it recursively.
//!
//! Parsing, binding, evaluating, printing and dropping an expression all recurse over its tree,
//! so an input deep enough would overflow the stack of the thread that handles it and abort the
//! process. Two limits bound every input, whatever its shape (parenthesised or flat, `AND`,
//! `OR`, `+`, `CASE`, `IN`, function calls):
//!
//! - [`MAX_TOKENS`] per statement or condition, counted on the token stream (iteratively) before
//!   parsing: it bounds the depth of any tree the parser can build, flat chains included;
//! - [`MAX_DEPTH`] levels of expression nesting, measured iteratively on the parsed tree before
//!   the binder sees it: it bounds every recursive walk of the compiler and of the evaluator.
//!
//! The parser's own recursion limit ([`RECURSION_LIMIT`](super::RECURSION_LIMIT)) bounds
//! parenthesised nesting while it parses.

use sqlparser::ast;
use sqlparser::dialect::Dialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::{RECURSION_LIMIT, Result, error_at, parse_error};

/// The most tokens one statement (or one query condition) may have.
pub const MAX_TOKENS: usize = 10_000;

/// The deepest an expression may nest: each operator, function call, `CASE` or parenthesis is
/// a level, so `a + b + c` is 3 levels deep (a chain of `n` terms, `n`; `IN (…)` lists of any
/// length count once).
pub const MAX_DEPTH: usize = 128;

/// A parser over `sql`, after checking that no statement has more than [`MAX_TOKENS`] tokens.
pub(super) fn parser<'d>(dialect: &'d dyn Dialect, sql: &str) -> Result<Parser<'d>> {
    let start = Location { line: 1, column: 1 };
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| parse_error(e.into(), start))?;
    let mut count = 0;
    let mut statement_at = start;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::SemiColon => {
                count = 0;
                continue;
            }
            _ => {}
        }
        if count == 0 {
            statement_at = t.span.start;
        }
        count += 1;
        if count > MAX_TOKENS {
            return Err(error_at(
                statement_at,
                format!("the statement is longer than {MAX_TOKENS} tokens"),
                Some("split it into smaller statements or conditions"),
            ));
        }
    }
    Ok(Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens))
}

/// Checks that `root` nests at most [`MAX_DEPTH`] levels, without recursion. `what` names the
/// clause for the message ("WHERE", "the SELECT", …) and `at` is where it starts.
pub(super) fn check_depth(root: &ast::Expr, what: &str, at: Location) -> Result<()> {
    let mut stack: Vec<(&ast::Expr, usize)> = vec![(root, 1)];
    while let Some((e, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(error_at(
                at,
                format!("an expression in {what} nests more than {MAX_DEPTH} levels deep"),
                Some("write long lists of alternatives as x IN (…), or split the expression"),
            ));
        }
        for_each_child(e, |child| stack.push((child, depth + 1)));
    }
    Ok(())
}

/// Calls `f` on each direct sub-expression of `e` that the compiler may walk.
fn for_each_child<'a>(e: &'a ast::Expr, mut f: impl FnMut(&'a ast::Expr)) {
    use ast::Expr as E;
    match e {
        E::BinaryOp { left, right, .. } => {
            f(left);
            f(right);
        }
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::IsTrue(expr)
        | E::IsNotTrue(expr)
        | E::IsFalse(expr)
        | E::IsNotFalse(expr)
        | E::IsUnknown(expr)
        | E::IsNotUnknown(expr)
        | E::Cast { expr, .. }
        | E::Collate { expr, .. }
        | E::AtTimeZone {
            timestamp: expr, ..
        }
        | E::Extract { expr, .. }
        | E::Ceil { expr, .. }
        | E::Floor { expr, .. } => f(expr),
        E::IsDistinctFrom(a, b) | E::IsNotDistinctFrom(a, b) => {
            f(a);
            f(b);
        }
        E::InList { expr, list, .. } => {
            f(expr);
            list.iter().for_each(f);
        }
        E::Between {
            expr, low, high, ..
        } => {
            f(expr);
            f(low);
            f(high);
        }
        E::Like { expr, pattern, .. }
        | E::ILike { expr, pattern, .. }
        | E::SimilarTo { expr, pattern, .. }
        | E::RLike { expr, pattern, .. } => {
            f(expr);
            f(pattern);
        }
        E::AnyOp { left, right, .. } | E::AllOp { left, right, .. } => {
            f(left);
            f(right);
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            if let Some(o) = operand {
                f(o);
            }
            for c in conditions {
                f(&c.condition);
                f(&c.result);
            }
            if let Some(e) = else_result {
                f(e);
            }
        }
        E::Function(func) => {
            if let ast::FunctionArguments::List(list) = &func.args {
                for arg in &list.args {
                    let (ast::FunctionArg::Unnamed(arg)
                    | ast::FunctionArg::Named { arg, .. }
                    | ast::FunctionArg::ExprNamed { arg, .. }) = arg;
                    if let ast::FunctionArgExpr::Expr(x) = arg {
                        f(x);
                    }
                }
            }
            if let Some(filter) = &func.filter {
                f(filter);
            }
            for order in &func.within_group {
                f(&order.expr);
            }
        }
        E::Tuple(items) => items.iter().for_each(f),
        E::Array(array) => array.elem.iter().for_each(f),
        E::Interval(interval) => f(&interval.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! Inputs at and past the limits, of every shape, on a thread with the stack of a server
    //! thread: each compiles or fails with a message, none overflows the stack.

    use crate::plan::Catalog;
    use crate::sql::{apply, compile_key_filter};

    const STREAM: &str = "CREATE STREAM s (a BIGINT, t TEXT, at TIMESTAMP NOT NULL) \
                          WITH (event_time = 'at');";

    fn view(expr: &str) -> String {
        format!(
            "{STREAM} CREATE MATERIALIZED VIEW v AS SELECT a, sum({expr}) AS x FROM s GROUP BY a;"
        )
    }

    fn chain(op: &str, n: usize) -> String {
        vec!["a"; n].join(op)
    }

    fn nested(open: &str, close: &str, inner: &str, n: usize) -> String {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    }

    /// Every shape, just inside and well past the limits.
    fn shapes() -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (n, ok) in [(100, true), (1_100, false), (4_000, false)] {
            out.push((chain(" + ", n), ok));
            out.push((
                format!(
                    "CASE WHEN {} THEN 1 ELSE 0 END",
                    vec!["a = 1"; n].join(" OR ")
                ),
                ok,
            ));
            out.push((nested("abs(", ")", "a", n), n <= 60));
            out.push((nested("(", ")", "a", n), n <= 60));
            out.push((nested("-", "", "a", n), n <= 60));
            out.push((
                nested("CASE WHEN a > 0 THEN ", " ELSE 0 END", "a", n),
                n <= 60,
            ));
            out.push((
                format!("CASE WHEN a IN ({}) THEN 1 END", chain(", ", n)),
                true,
            ));
        }
        out.push((chain(" * ", 20_000), false));
        out
    }

    #[test]
    fn no_input_overflows_the_stack() {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for (expr, ok) in shapes() {
                    let sql = view(&expr);
                    let result = apply(&Catalog::new(), &sql);
                    assert_eq!(
                        result.is_ok(),
                        ok,
                        "{}…: {:?}",
                        &expr[..expr.len().min(60)],
                        result.err()
                    );
                }
                let plan = apply(&Catalog::new(), &view("a"))
                    .unwrap()
                    .catalog
                    .view("v")
                    .unwrap()
                    .clone();
                for n in [50, 1_100, 20_000] {
                    let filter = vec!["a = 1"; n].join(" OR ");
                    assert_eq!(compile_key_filter(&plan, &filter).is_ok(), n == 50);
                    let parens = nested("(", ")", "a = 1", n);
                    assert_eq!(compile_key_filter(&plan, &parens).is_ok(), n == 50);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_limits_say_what_to_do() {
        let err = apply(&Catalog::new(), &view(&chain(" + ", 1_100))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1, column 115: an expression in the SELECT nests more than 128 levels deep; hint: write long lists of alternatives as x IN (…), or split the expression"
        );
        let err = apply(&Catalog::new(), &view(&chain(" + ", 6_000))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1, column 85: the statement is longer than 10000 tokens; hint: split it into smaller statements or conditions"
        );
    }
}
