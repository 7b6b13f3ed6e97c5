//! Scalar function calls of live views: `lower`, `upper`, `length`, `abs`, `round`, `floor`,
//! `ceil`, `ln`, `exp`, `sqrt`, `power`, `greatest`, `least`, `coalesce`, `nullif`,
//! `date_part`, and the time buckets `time_bucket` and `date_trunc`. Functions whose
//! value depends on when they run (`now()`, `random()`) are refused: a view must give the same
//! rows when it is rebuilt from its events.

use sqlparser::ast;

use super::aggregate::lookup;
use super::bind::{
    Binder, Bound, function_name, interval_text, is_null_literal, is_text_literal, unify,
};
use super::{Result, error_at, unsupported};
use crate::decimal::MAX_PRECISION;
use crate::expr::{DatePart, Expr, Func, Func2};
use crate::time::Interval;
use crate::value::{Type, Value};

impl Binder<'_> {
    /// `floor(x)` / `ceil(x)`: a `BIGINT` is its own floor; a `DOUBLE` stays one; a `DECIMAL`
    /// gets scale 0.
    pub(super) fn floor_ceil(&mut self, floor: bool, arg: &ast::Expr) -> Result<Bound> {
        let name = if floor { "floor" } else { "ceil" };
        let (x, ty) = self.expr(arg)?;
        let func = if floor { Func::Floor } else { Func::Ceil };
        match ty {
            Type::BigInt => Ok((x, ty)),
            Type::Double => Ok((Expr::Func(func, Box::new(x)), ty)),
            Type::Decimal { precision, scale } => Ok((
                Expr::Func(func, Box::new(x)),
                Type::Decimal {
                    precision: (precision - scale + 1).min(MAX_PRECISION),
                    scale: 0,
                },
            )),
            _ => Err(error_at(
                self.loc(arg),
                format!("{name} needs a number, but {arg} is {ty}"),
                None,
            )),
        }
    }

    /// The arguments of `coalesce`, `greatest` or `least`, coerced to their common type (NULL
    /// and text literals take the others' type; `TEXT` when all are such literals).
    fn common_args(
        &mut self,
        name: &str,
        args: &[&ast::Expr],
        at: sqlparser::tokenizer::Location,
    ) -> Result<(Vec<Expr>, Type)> {
        if args.is_empty() {
            return Err(error_at(at, format!("{name} needs arguments"), None));
        }
        let mut bound = Vec::new();
        let mut common: Option<Type> = None;
        for a in args {
            let b = self.expr(a)?;
            if !is_null_literal(&b.0) && !is_text_literal(&b.0) {
                common = Some(match common {
                    None => b.1,
                    Some(t) => unify(t, b.1).ok_or_else(|| {
                        error_at(
                            self.loc(a),
                            format!("{name} arguments have different types: {t} and {}", b.1),
                            None,
                        )
                    })?,
                });
            }
            bound.push((b, *a));
        }
        let common = common.unwrap_or(Type::Text);
        let list = bound
            .into_iter()
            .map(|((x, t), a)| self.coerce(x, t, common, a))
            .collect::<Result<Vec<_>>>()?;
        Ok((list, common))
    }

    /// Binds a call of a scalar function.
    pub(super) fn function(&mut self, f: &ast::Function, e: &ast::Expr) -> Result<Bound> {
        let at = self.loc(e);
        let name = function_name(f);
        if f.over.is_some() {
            return Err(unsupported(
                at,
                "a window function (OVER)",
                "window functions (rank, ntile, lag, running sums) run at query time: keep this view grouped and write them in a saved query (CREATE VIEW name AS SELECT …, rank() OVER (…) FROM this_view) or POST /v1/sql",
            ));
        }
        if lookup(&name).is_some() {
            return Err(error_at(
                at,
                format!("aggregate functions are not allowed in {}", self.context),
                if self.context == "WHERE" {
                    Some(
                        "use FILTER (WHERE …) on the aggregate, or a view query's condition on group columns",
                    )
                } else {
                    None
                },
            ));
        }
        if f.filter.is_some() || !f.within_group.is_empty() {
            return Err(error_at(at, format!("{name} is not an aggregate"), None));
        }
        if matches!(&f.args, ast::FunctionArguments::List(l) if l.duplicate_treatment.is_some()) {
            return Err(error_at(
                at,
                format!("DISTINCT is only allowed in count(DISTINCT x), not in {name}"),
                None,
            ));
        }
        let args = self.args(f, at)?;
        let arity = |n: usize| -> Result<()> {
            if args.len() != n {
                return Err(error_at(
                    at,
                    format!("{name} takes {n} argument{}", if n == 1 { "" } else { "s" }),
                    None,
                ));
            }
            Ok(())
        };
        match name.as_str() {
            "lower" | "upper" | "length" => {
                arity(1)?;
                let (x, ty) = self.expr(args[0])?;
                if ty != Type::Text {
                    return Err(error_at(
                        self.loc(args[0]),
                        format!("{name} needs TEXT, but {} is {ty}", args[0]),
                        None,
                    ));
                }
                let (func, out) = match name.as_str() {
                    "lower" => (Func::Lower, Type::Text),
                    "upper" => (Func::Upper, Type::Text),
                    _ => (Func::Length, Type::BigInt),
                };
                Ok((Expr::Func(func, Box::new(x)), out))
            }
            "abs" => {
                arity(1)?;
                let (x, ty) = self.expr(args[0])?;
                if !ty.is_numeric() {
                    return Err(error_at(
                        self.loc(args[0]),
                        format!("abs needs a number, but {} is {ty}", args[0]),
                        None,
                    ));
                }
                Ok((Expr::Func(Func::Abs, Box::new(x)), ty))
            }
            "round" => {
                if args.is_empty() || args.len() > 2 {
                    return Err(error_at(
                        at,
                        "round takes 1 or 2 arguments: round(x) or round(x, digits)",
                        None,
                    ));
                }
                let digits = match args.get(1) {
                    None => 0,
                    Some(a) => match self.expr(a)?.0 {
                        Expr::Literal(Value::Int(n)) if (0..=18).contains(&n) => n as u8,
                        _ => {
                            return Err(error_at(
                                self.loc(a),
                                "the digits of round must be a whole number literal from 0 to 18",
                                None,
                            ));
                        }
                    },
                };
                let (x, ty) = self.expr(args[0])?;
                let out = match ty {
                    Type::Double | Type::BigInt => ty,
                    Type::Decimal { precision, scale } => Type::Decimal {
                        precision: (precision - scale + digits).min(MAX_PRECISION),
                        scale: digits,
                    },
                    _ => {
                        return Err(error_at(
                            self.loc(args[0]),
                            format!("round needs a number, but {} is {ty}", args[0]),
                            None,
                        ));
                    }
                };
                if ty == Type::BigInt {
                    return Ok((x, ty));
                }
                Ok((Expr::Func(Func::Round(digits), Box::new(x)), out))
            }
            "coalesce" => {
                let (list, common) = self.common_args(&name, &args, at)?;
                Ok((Expr::Coalesce(list), common))
            }
            "nullif" => {
                arity(2)?;
                let (a, at_) = self.expr(args[0])?;
                let (b, bt) = self.expr(args[1])?;
                let common = if is_null_literal(&b) || is_text_literal(&b) {
                    at_
                } else {
                    unify(at_, bt).ok_or_else(|| {
                        error_at(
                            at,
                            format!("nullif arguments have different types: {at_} and {bt}"),
                            None,
                        )
                    })?
                };
                let a = self.coerce(a, at_, common, args[0])?;
                let b = self.coerce(b, bt, common, args[1])?;
                Ok((Expr::NullIf(Box::new(a), Box::new(b)), common))
            }
            "time_bucket" | "date_trunc" => {
                if args.len() != 2 {
                    let hint =
                        "buckets follow the tenant's time zone; write time_bucket('1 day', ts)";
                    return Err(error_at(
                        at,
                        format!("{name} takes 2 arguments"),
                        Some(hint),
                    ));
                }
                let width_text = interval_text(args[0]).ok_or_else(|| {
                    error_at(
                        self.loc(args[0]),
                        format!("the first argument of {name} must be a text literal"),
                        Some(if name == "time_bucket" {
                            "e.g. time_bucket('15 minutes', ts)"
                        } else {
                            "e.g. date_trunc('day', ts)"
                        }),
                    )
                })?;
                let interval = if name == "time_bucket" {
                    Interval::parse(&width_text)
                        .map_err(|m| error_at(self.loc(args[0]), m, None))?
                } else {
                    Interval::of_unit(&width_text).ok_or_else(|| {
                        error_at(
                            self.loc(args[0]),
                            format!("unknown date_trunc unit '{width_text}'"),
                            Some("units are second, minute, hour, day, week, month, quarter, year"),
                        )
                    })?
                };
                let (ts, ty) = self.expr(args[1])?;
                if ty != Type::Timestamp {
                    return Err(error_at(
                        self.loc(args[1]),
                        format!("{name} needs a TIMESTAMP, but {} is {ty}", args[1]),
                        None,
                    ));
                }
                let display = format!("{name}('{width_text}', {ts})");
                Ok((
                    // Slots are numbered once the whole view is bound ([`number_buckets`]).
                    Expr::Bucket {
                        interval,
                        expr: Box::new(ts),
                        display,
                        slot: 0,
                    },
                    Type::Timestamp,
                ))
            }
            "ln" | "exp" | "sqrt" => {
                arity(1)?;
                let (x, ty) = self.expr(args[0])?;
                if !ty.is_numeric() {
                    return Err(error_at(
                        self.loc(args[0]),
                        format!("{name} needs a number, but {} is {ty}", args[0]),
                        None,
                    ));
                }
                let x = self.coerce(x, ty, Type::Double, args[0])?;
                let func = match name.as_str() {
                    "ln" => Func::Ln,
                    "exp" => Func::Exp,
                    _ => Func::Sqrt,
                };
                Ok((Expr::Func(func, Box::new(x)), Type::Double))
            }
            "floor" | "ceil" | "ceiling" => {
                arity(1)?;
                self.floor_ceil(name == "floor", args[0])
            }
            "power" | "pow" => {
                arity(2)?;
                let mut bound = Vec::new();
                for a in &args {
                    let (x, ty) = self.expr(a)?;
                    if !ty.is_numeric() {
                        return Err(error_at(
                            self.loc(a),
                            format!("{name} needs numbers, but {a} is {ty}"),
                            None,
                        ));
                    }
                    bound.push(self.coerce(x, ty, Type::Double, a)?);
                }
                let y = bound.pop().expect("two arguments");
                let x = bound.pop().expect("two arguments");
                Ok((
                    Expr::Func2(Func2::Power, Box::new(x), Box::new(y)),
                    Type::Double,
                ))
            }
            "greatest" | "least" => {
                let (list, common) = self.common_args(&name, &args, at)?;
                Ok((
                    Expr::Extremum {
                        greatest: name == "greatest",
                        list,
                    },
                    common,
                ))
            }
            "date_part" => {
                arity(2)?;
                let field = interval_text(args[0]).ok_or_else(|| {
                    error_at(
                        self.loc(args[0]),
                        "the first argument of date_part must be a text literal",
                        Some("e.g. date_part('hour', ts)"),
                    )
                })?;
                let part = DatePart::parse(&field).ok_or_else(|| {
                    error_at(
                        self.loc(args[0]),
                        format!("unknown date_part field '{field}'"),
                        Some(
                            "fields are epoch, year, quarter, month, week, day, dow, isodow, doy, hour, minute, second",
                        ),
                    )
                })?;
                // PostgreSQL's date_part answers DOUBLE PRECISION.
                let (x, ty) = self.date_part(part, args[1])?;
                Ok((
                    Expr::Cast {
                        expr: Box::new(x),
                        from: ty,
                        to: Type::Double,
                    },
                    Type::Double,
                ))
            }
            "now"
            | "current_timestamp"
            | "localtimestamp"
            | "random"
            | "clock_timestamp"
            | "statement_timestamp"
            | "gen_random_uuid" => Err(error_at(
                at,
                format!("{name}() is not allowed in a live view"),
                Some(
                    "a view must give the same result when it is rebuilt from its events; use the event's own time",
                ),
            )),
            _ => Err(error_at(
                at,
                format!("unknown function {name}"),
                Some(
                    "functions are lower, upper, length, abs, round, floor, ceil, ln, exp, sqrt, power, greatest, least, coalesce, nullif, date_part, time_bucket, date_trunc and the aggregates in docs/sql.md",
                ),
            )),
        }
    }
}
