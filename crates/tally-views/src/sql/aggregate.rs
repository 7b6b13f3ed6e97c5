//! The aggregates of live views, declared once in [`AGGREGATES`], and their binding.
//!
//! A row of the table names an aggregate, says which arguments it takes ([`Args`]) and picks
//! the state it keeps for its input type ([`AggKind`]), or says why the input does not fit.
//! Adding an aggregate is one row here, its state in `agg.rs` (update, merge, finalize,
//! encoding) and its oracle in `reference.rs`.

use sqlparser::ast;
use sqlparser::tokenizer::Location;

use super::bind::{Binder, Bound, function_name};
use super::{Result, error_at, unsupported};
use crate::agg::{AggKind, Moment};
use crate::decimal::MAX_PRECISION;
use crate::expr::Expr;
use crate::plan::AggPlan;
use crate::value::{Type, Value};

/// What an aggregate takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Args {
    /// `count(*)`, `count(x)` or `count(DISTINCT x)`.
    Count,
    /// One value.
    One,
    /// A value and the time that orders it: `first(x, ts)`.
    ValueAndTime,
    /// A fraction, and the value in `WITHIN GROUP (ORDER BY x)`.
    WithinGroup,
}

/// A bound call, as a row's `kind` sees it.
struct Call<'a> {
    name: &'a str,
    /// The type of the value aggregated (`BIGINT` for `count(*)`).
    input: Type,
    star: bool,
    distinct: bool,
    /// The fraction of a `WITHIN GROUP` aggregate.
    fraction: f64,
}

/// Why an input does not fit an aggregate.
struct Refusal {
    message: String,
    hint: Option<&'static str>,
}

/// One aggregate of the dialect.
pub(super) struct Aggregate {
    name: &'static str,
    args: Args,
    /// The state kept for the call's input, or why the input does not fit.
    kind: fn(&Call<'_>) -> Result<AggKind, Refusal>,
}

/// Every aggregate a live view may use.
const AGGREGATES: &[Aggregate] = &[
    Aggregate {
        name: "count",
        args: Args::Count,
        kind: |c| {
            Ok(match (c.star, c.distinct) {
                (true, _) => AggKind::CountStar,
                (false, true) => AggKind::CountDistinct,
                (false, false) => AggKind::Count,
            })
        },
    },
    Aggregate {
        name: "approx_count_distinct",
        args: Args::One,
        kind: |_| Ok(AggKind::ApproxCountDistinct),
    },
    Aggregate {
        name: "sum",
        args: Args::One,
        kind: |c| {
            Ok(match numeric(c)? {
                Type::BigInt => AggKind::SumInt,
                Type::Decimal { scale, .. } => AggKind::SumDecimal { scale },
                _ => AggKind::SumDouble,
            })
        },
    },
    Aggregate {
        name: "avg",
        args: Args::One,
        kind: |c| {
            Ok(match numeric(c)? {
                Type::BigInt => AggKind::AvgInt,
                Type::Decimal { precision, scale } => AggKind::AvgDecimal {
                    scale,
                    out_scale: scale + 6u8.min(MAX_PRECISION - precision),
                },
                _ => AggKind::AvgDouble,
            })
        },
    },
    Aggregate {
        name: "min",
        args: Args::One,
        kind: |c| ordered(c).map(|()| AggKind::Min),
    },
    Aggregate {
        name: "max",
        args: Args::One,
        kind: |c| ordered(c).map(|()| AggKind::Max),
    },
    Aggregate {
        name: "stddev",
        args: Args::One,
        kind: |c| moment(c, Moment::StddevSamp),
    },
    Aggregate {
        name: "stddev_samp",
        args: Args::One,
        kind: |c| moment(c, Moment::StddevSamp),
    },
    Aggregate {
        name: "stddev_pop",
        args: Args::One,
        kind: |c| moment(c, Moment::StddevPop),
    },
    Aggregate {
        name: "variance",
        args: Args::One,
        kind: |c| moment(c, Moment::VarSamp),
    },
    Aggregate {
        name: "var_samp",
        args: Args::One,
        kind: |c| moment(c, Moment::VarSamp),
    },
    Aggregate {
        name: "var_pop",
        args: Args::One,
        kind: |c| moment(c, Moment::VarPop),
    },
    Aggregate {
        name: "percentile_cont",
        args: Args::WithinGroup,
        kind: |c| {
            numeric(c)?;
            Ok(AggKind::Percentile {
                q: c.fraction,
                continuous: true,
            })
        },
    },
    Aggregate {
        name: "percentile_disc",
        args: Args::WithinGroup,
        kind: |c| {
            numeric(c)?;
            Ok(AggKind::Percentile {
                q: c.fraction,
                continuous: false,
            })
        },
    },
    Aggregate {
        name: "first",
        args: Args::ValueAndTime,
        kind: |_| Ok(AggKind::First),
    },
    Aggregate {
        name: "last",
        args: Args::ValueAndTime,
        kind: |_| Ok(AggKind::Last),
    },
    Aggregate {
        name: "bool_and",
        args: Args::One,
        kind: |c| boolean(c).map(|()| AggKind::BoolAnd),
    },
    Aggregate {
        name: "every",
        args: Args::One,
        kind: |c| boolean(c).map(|()| AggKind::BoolAnd),
    },
    Aggregate {
        name: "bool_or",
        args: Args::One,
        kind: |c| boolean(c).map(|()| AggKind::BoolOr),
    },
];

/// The input type, when it is a number.
fn numeric(c: &Call<'_>) -> Result<Type, Refusal> {
    if c.input.is_numeric() {
        Ok(c.input)
    } else {
        Err(Refusal {
            message: format!("{} needs a number, but its argument is {}", c.name, c.input),
            hint: None,
        })
    }
}

fn moment(c: &Call<'_>, moment: Moment) -> Result<AggKind, Refusal> {
    numeric(c)?;
    Ok(AggKind::Moment(moment))
}

/// Whether the input can be ordered (`min`, `max`).
fn ordered(c: &Call<'_>) -> Result<(), Refusal> {
    if c.input == Type::Json {
        return Err(Refusal {
            message: format!("{} cannot order JSON values", c.name),
            hint: Some("extract a field with ->> and cast it"),
        });
    }
    Ok(())
}

fn boolean(c: &Call<'_>) -> Result<(), Refusal> {
    if c.input != Type::Boolean {
        return Err(Refusal {
            message: format!(
                "{} needs a BOOLEAN, but its argument is {}",
                c.name, c.input
            ),
            hint: None,
        });
    }
    Ok(())
}

/// The aggregate called `name`, if it is one.
pub(super) fn lookup(name: &str) -> Option<&'static Aggregate> {
    AGGREGATES.iter().find(|a| a.name == name)
}

/// The call, when `e` is an aggregate call.
pub(super) fn is_aggregate(e: &ast::Expr) -> Option<&ast::Function> {
    match e {
        ast::Expr::Function(f) if lookup(&function_name(f)).is_some() => Some(f),
        _ => None,
    }
}

/// Whether an aggregate call appears anywhere in `e`.
pub(super) fn contains_aggregate(e: &ast::Expr) -> bool {
    use ast::Expr as E;
    if is_aggregate(e).is_some() {
        return true;
    }
    let any = |list: &[&ast::Expr]| list.iter().any(|x| contains_aggregate(x));
    match e {
    E::BinaryOp { left, right, .. } => any(&[left, right]),
    E::UnaryOp { expr, .. }
    | E::Nested(expr)
    | E::IsNull(expr)
    | E::IsNotNull(expr)
    | E::IsTrue(expr)
    | E::IsNotTrue(expr)
    | E::IsFalse(expr)
    | E::IsNotFalse(expr)
    | E::Cast { expr, .. } => contains_aggregate(expr),
    E::InList { expr, list, .. } => {
        contains_aggregate(expr) || list.iter().any(contains_aggregate)
    }
    E::Between {
        expr, low, high, ..
    } => any(&[expr, low, high]),
    E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => any(&[expr, pattern]),
    E::Case {
        operand,
        conditions,
        else_result,
        ..
    } => {
        operand.as_deref().is_some_and(contains_aggregate)
            || conditions
                .iter()
                .any(|c| contains_aggregate(&c.condition) || contains_aggregate(&c.result))
            || else_result.as_deref().is_some_and(contains_aggregate)
    }
    E::Function(f) => match &f.args {
        ast::FunctionArguments::List(list) => list.args.iter().any(|a| {
            matches!(a, ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) if contains_aggregate(x))
        }),
        _ => false,
    },
    _ => false,
}
}

impl Binder<'_> {
    /// Binds an aggregate call of the SELECT: its state joins the plan's aggregates (shared
    /// when the same aggregate appears twice) and the call becomes a reference to it.
    pub(super) fn aggregate(&mut self, f: &ast::Function, e: &ast::Expr) -> Result<Bound> {
        let at = self.loc(e);
        let name = function_name(f);
        if f.over.is_some() {
            return Err(unsupported(
                at,
                "a window function (OVER)",
                "window functions (rank, ntile, lag, running sums) run at query time: keep this view grouped and write them in a saved query (CREATE VIEW name AS SELECT …, rank() OVER (…) FROM this_view) or POST /v1/sql",
            ));
        }
        let Some(def) = lookup(&name) else {
            return Err(error_at(at, format!("unknown aggregate {name}"), None));
        };
        let distinct = match &f.args {
            ast::FunctionArguments::List(l) => matches!(
                l.duplicate_treatment,
                Some(ast::DuplicateTreatment::Distinct)
            ),
            _ => false,
        };
        let saved = (self.output, self.context);
        self.output = false;
        self.context = "an aggregate argument";
        let result = self.aggregate_inner(def, f, &name, distinct, at);
        (self.output, self.context) = saved;
        let plan = result?;
        let output = plan.output;
        let index = match self.aggs.iter().position(|a| a.display == plan.display) {
            Some(i) => i,
            None => {
                self.aggs.push(plan);
                self.aggs.len() - 1
            }
        };
        Ok((
            Expr::Agg {
                index,
                display: format!("#{index}"),
            },
            output,
        ))
    }

    fn aggregate_inner(
        &mut self,
        def: &Aggregate,
        f: &ast::Function,
        name: &str,
        distinct: bool,
        at: Location,
    ) -> Result<AggPlan> {
        let star = matches!(&f.args, ast::FunctionArguments::List(l) if l.args.len() == 1 && matches!(l.args[0], ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)));
        if distinct && def.args != Args::Count {
            return Err(unsupported(
                at,
                &format!("{name}(DISTINCT …)"),
                "DISTINCT is supported in count(DISTINCT x); approx_count_distinct(x) is the bounded-memory alternative",
            ));
        }
        let args = if star { Vec::new() } else { self.args(f, at)? };
        for a in &args {
            if contains_aggregate(a) {
                return Err(error_at(self.loc(a), "aggregates cannot be nested", None));
            }
        }
        let filter = match &f.filter {
            Some(cond) => {
                self.context = "FILTER";
                let (expr, ty) = self.expr(cond)?;
                self.require_bool(&expr, ty, cond, "FILTER")?;
                self.context = "an aggregate argument";
                Some(expr)
            }
            None => None,
        };
        let mut bound_args = Vec::new();
        for a in &args {
            bound_args.push(self.expr(a)?);
        }
        let arity = |n: usize| -> Result<()> {
            if bound_args.len() != n {
                return Err(error_at(
                    at,
                    format!("{name} takes {n} argument{}", if n == 1 { "" } else { "s" }),
                    None,
                ));
            }
            Ok(())
        };
        let mut time = None;
        let mut fraction = 0.0;
        let (arg, input) = match def.args {
            Args::Count if star => {
                if !f.within_group.is_empty() {
                    return Err(error_at(at, "count takes no WITHIN GROUP", None));
                }
                (None, Type::BigInt)
            }
            Args::Count | Args::One => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                (Some(x), ty)
            }
            Args::ValueAndTime => {
                arity(2)?;
                let (t, tt) = bound_args.remove(1);
                let (x, ty) = bound_args.remove(0);
                if tt != Type::Timestamp {
                    return Err(error_at(
                        at,
                        format!("the second argument of {name} must be a TIMESTAMP, not {tt}"),
                        Some("write first(value, time)"),
                    ));
                }
                time = Some(t);
                (Some(x), ty)
            }
            Args::WithinGroup => {
                arity(1)?;
                fraction = fraction_literal(name, &bound_args[0].0, at)?;
                let [order] = f.within_group.as_slice() else {
                    return Err(error_at(
                        at,
                        format!("{name} needs WITHIN GROUP (ORDER BY x)"),
                        Some("e.g. percentile_cont(0.95) WITHIN GROUP (ORDER BY x)"),
                    ));
                };
                if matches!(order.options.sort, Some(ast::OrderBySort::Desc)) {
                    return Err(error_at(
                        at,
                        "WITHIN GROUP (ORDER BY x DESC) is not supported",
                        Some("use ascending order and the fraction 1 - q"),
                    ));
                }
                let (x, ty) = self.expr(&order.expr)?;
                (Some(x), ty)
            }
        };
        let call = Call {
            name,
            input,
            star,
            distinct,
            fraction,
        };
        let kind = (def.kind)(&call).map_err(|r| error_at(at, r.message, r.hint))?;
        if !f.within_group.is_empty() && def.args != Args::WithinGroup {
            return Err(error_at(at, format!("{name} takes no WITHIN GROUP"), None));
        }
        let output = kind.output_type(input);
        let mut display = match (&arg, def.args) {
            (None, _) => "count(*)".to_owned(),
            (Some(x), Args::Count) if distinct => format!("count(DISTINCT {x})"),
            (Some(x), Args::WithinGroup) => {
                format!("{name}({fraction}) WITHIN GROUP (ORDER BY {x})")
            }
            (Some(x), Args::ValueAndTime) => {
                format!(
                    "{name}({x}, {})",
                    time.as_ref().map(ToString::to_string).unwrap_or_default()
                )
            }
            (Some(x), _) => format!("{name}({x})"),
        };
        if let Some(fl) = &filter {
            display.push_str(&format!(" FILTER (WHERE {fl})"));
        }
        Ok(AggPlan {
            kind,
            arg,
            time,
            filter,
            input,
            output,
            display,
        })
    }
}

/// The fraction of a `WITHIN GROUP` aggregate: a number literal from 0 to 1.
fn fraction_literal(name: &str, bound: &Expr, at: Location) -> Result<f64> {
    let q = match bound {
        Expr::Literal(Value::Decimal(d)) => d.to_f64(),
        Expr::Literal(Value::Int(i)) => *i as f64,
        Expr::Literal(Value::Double(d)) => *d,
        _ => {
            return Err(error_at(
                at,
                format!("the fraction of {name} must be a number literal"),
                Some("e.g. percentile_cont(0.95) WITHIN GROUP (ORDER BY x)"),
            ));
        }
    };
    if !(0.0..=1.0).contains(&q) {
        return Err(error_at(
            at,
            format!("the fraction of {name} must be between 0 and 1, not {q}"),
            None,
        ));
    }
    Ok(q)
}
