//! Expressions printed as SQL-like text: what plans display, and so what their fingerprints
//! compare.

use std::fmt;

use super::{ArithOp, CmpOp, Expr, Func, Func2, JsonKey};
use crate::value::Value;

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column { name, .. } | Expr::Key { name, .. } => f.write_str(name),
            Expr::Agg { display, .. } => f.write_str(display),
            Expr::Literal(v) => match v {
                Value::Null => f.write_str("NULL"),
                Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
                Value::Timestamp(t) => write!(f, "TIMESTAMP '{t}'"),
                Value::Json(s) => write!(f, "JSON '{s}'"),
                v => write!(f, "{v}"),
            },
            Expr::Neg(e, _) => write!(f, "-{}", Paren(e)),
            Expr::Arith {
                op, left, right, ..
            } => {
                let sym = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                    ArithOp::Mod => "%",
                };
                write!(f, "{} {sym} {}", Paren(left), Paren(right))
            }
            Expr::Compare { op, left, right } => {
                let sym = match op {
                    CmpOp::Eq => "=",
                    CmpOp::NotEq => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::LtEq => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::GtEq => ">=",
                };
                write!(f, "{} {sym} {}", Paren(left), Paren(right))
            }
            Expr::And(a, b) => write!(f, "{} AND {}", Paren(a), Paren(b)),
            Expr::Or(a, b) => write!(f, "{} OR {}", Paren(a), Paren(b)),
            Expr::Not(e) => write!(f, "NOT {}", Paren(e)),
            Expr::IsNull { expr, negated } => {
                write!(
                    f,
                    "{} IS {}NULL",
                    Paren(expr),
                    if *negated { "NOT " } else { "" }
                )
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                write!(
                    f,
                    "{} {}IN (",
                    Paren(expr),
                    if *negated { "NOT " } else { "" }
                )?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => write!(
                f,
                "{} {}{} '{}'",
                Paren(expr),
                if *negated { "NOT " } else { "" },
                if pattern.case_insensitive {
                    "ILIKE"
                } else {
                    "LIKE"
                },
                pattern.source.replace('\'', "''")
            ),
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                f.write_str("CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in branches {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(o) = otherwise {
                    write!(f, " ELSE {o}")?;
                }
                f.write_str(" END")
            }
            Expr::Coalesce(list) => {
                f.write_str("coalesce(")?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::NullIf(a, b) => write!(f, "nullif({a}, {b})"),
            Expr::Cast { expr, to, .. } => write!(f, "CAST({expr} AS {to})"),
            Expr::Concat(a, b) => write!(f, "{} || {}", Paren(a), Paren(b)),
            Expr::Func(func, e) => {
                let name = match func {
                    Func::Lower => "lower",
                    Func::Upper => "upper",
                    Func::Length => "length",
                    Func::Abs => "abs",
                    Func::Round(n) => return write!(f, "round({e}, {n})"),
                    Func::Ln => "ln",
                    Func::Exp => "exp",
                    Func::Sqrt => "sqrt",
                    Func::Floor => "floor",
                    Func::Ceil => "ceil",
                    Func::Part(part) => return write!(f, "extract({} FROM {e})", part.name()),
                };
                write!(f, "{name}({e})")
            }
            Expr::Func2(Func2::Power, a, b) => write!(f, "power({a}, {b})"),
            Expr::Func2(Func2::TimeDiff, a, b) => write!(f, "{} - {}", Paren(a), Paren(b)),
            Expr::Extremum { greatest, list } => {
                f.write_str(if *greatest { "greatest(" } else { "least(" })?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            // Evaluation detail, not part of the definition.
            Expr::OrNull(e) => write!(f, "{e}"),
            Expr::JsonGet { expr, key, as_text } => {
                let op = if *as_text { "->>" } else { "->" };
                match key {
                    JsonKey::Field(name) => {
                        write!(f, "{}{op}'{}'", Paren(expr), name.replace('\'', "''"))
                    }
                    JsonKey::Index(i) => write!(f, "{}{op}{i}", Paren(expr)),
                }
            }
            Expr::Bucket { display, .. } => f.write_str(display),
        }
    }
}

/// Displays an operand, in parentheses when it is itself an operator expression.
struct Paren<'a>(&'a Expr);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Expr::OrNull(e) => write!(f, "{}", Paren(e)),
            Expr::Arith { .. }
            | Expr::Compare { .. }
            | Expr::And(..)
            | Expr::Or(..)
            | Expr::Not(_)
            | Expr::IsNull { .. }
            | Expr::InList { .. }
            | Expr::Like { .. }
            | Expr::Concat(..)
            | Expr::Func2(Func2::TimeDiff, ..)
            | Expr::Neg(..) => write!(f, "({})", self.0),
            e => write!(f, "{e}"),
        }
    }
}
