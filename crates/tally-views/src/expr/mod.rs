//! Compiled scalar expressions and their evaluation.
//!
//! The compiler ([`crate::sql`]) resolves every name to an index and every operator to the
//! operation for its operand types, inserting casts where types differ, so evaluation here is a
//! plain recursive match with no lookups. SQL's three-valued logic applies: comparisons with NULL
//! are NULL, `AND`/`OR` follow Kleene logic, and only `TRUE` passes a `WHERE` or `FILTER`.
//!
//! Evaluation can fail only where SQL fails (division by zero, overflow, an invalid cast). The
//! plan knows which expressions can fail ([`Expr::can_fail`]), and ingest evaluates those before
//! it acknowledges an event, so that `Engine::apply` never meets an error.
//!
//! Here: the IR, [`EvalCtx`] and evaluation; `convert.rs`: casts, text parsed as a type, JSON
//! access; `print.rs`: the SQL-like text plans display.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use jiff::tz::TimeZone;

use crate::decimal::Decimal;
use crate::time::Interval;
use crate::value::{SmolStr, Type, Value};

mod convert;
mod print;

use convert::json_get;
pub use convert::{cast, cast_can_fail, cast_exists, parse_text};

impl Expr {
    /// This expression with every operation that can fail wrapped in [`Expr::OrNull`]: what a
    /// live view evaluates per event, so that a failing operation yields NULL (and is counted)
    /// instead of rejecting the event. The innermost failing operation becomes NULL, so
    /// `coalesce(CAST(x AS BIGINT), 0)` gives 0 for an `x` that is not a number.
    pub fn lenient(mut self) -> Expr {
        self.for_each_child_mut(&mut |child| {
            let taken = std::mem::replace(child, Expr::Literal(Value::Null));
            *child = taken.lenient();
        });
        let fails_here = match &self {
            Expr::Arith { .. } | Expr::Func2(Func2::Power, ..) => true,
            Expr::Neg(_, NumKind::Int | NumKind::Decimal { .. }) => true,
            Expr::Cast { from, to, .. } => cast_can_fail(*from, *to),
            Expr::Func(Func::Abs | Func::Round(_) | Func::Ln | Func::Exp | Func::Sqrt, _) => true,
            _ => false,
        };
        if fails_here {
            Expr::OrNull(Box::new(self))
        } else {
            self
        }
    }
}

/// Why an expression could not be evaluated.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalError {
    DivisionByZero,
    Overflow(Type),
    InvalidCast {
        value: String,
        to: Type,
    },
    /// A math function outside its domain (`ln(0)`, `sqrt(-1)`).
    OutOfDomain(&'static str),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::DivisionByZero => f.write_str("division by zero"),
            EvalError::Overflow(ty) => write!(f, "result overflows {ty}"),
            EvalError::InvalidCast { value, to } => {
                let shown: String = value.chars().take(40).collect();
                write!(f, "cannot cast '{shown}' to {to}")
            }
            EvalError::OutOfDomain(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for EvalError {}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// The number representation an arithmetic operation works in, decided by the compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumKind {
    Int,
    Double,
    /// Both operands are decimals; the result has this scale.
    Decimal {
        scale: u8,
    },
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// Built-in scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Lower,
    Upper,
    Length,
    Abs,
    /// Rounds half away from zero to this many decimal places.
    Round(u8),
    /// Natural logarithm, of a `DOUBLE`.
    Ln,
    Exp,
    Sqrt,
    /// The largest whole number not above the argument (its type kept; decimals get scale 0).
    Floor,
    Ceil,
    /// A field of a timestamp in the tenant's time zone (`extract`), or the seconds of a
    /// difference of timestamps (`extract(epoch FROM a - b)`).
    Part(DatePart),
}

/// A field `extract` reads. `Epoch` and `Second` are `DECIMAL(…,6)` seconds, the others
/// `BIGINT`; local fields are read in the tenant's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePart {
    Epoch,
    Year,
    Quarter,
    Month,
    /// ISO 8601 week number.
    Week,
    Day,
    /// Day of the week, Sunday 0.
    Dow,
    /// Day of the week, Monday 1 … Sunday 7.
    IsoDow,
    Doy,
    Hour,
    Minute,
    Second,
}

impl DatePart {
    /// The field called `name` (PostgreSQL's spellings).
    pub fn parse(name: &str) -> Option<DatePart> {
        Some(match name.to_ascii_lowercase().as_str() {
            "epoch" => DatePart::Epoch,
            "year" | "years" => DatePart::Year,
            "quarter" => DatePart::Quarter,
            "month" | "months" => DatePart::Month,
            "week" | "weeks" => DatePart::Week,
            "day" | "days" => DatePart::Day,
            "dow" => DatePart::Dow,
            "isodow" => DatePart::IsoDow,
            "doy" => DatePart::Doy,
            "hour" | "hours" => DatePart::Hour,
            "minute" | "minutes" => DatePart::Minute,
            "second" | "seconds" => DatePart::Second,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DatePart::Epoch => "epoch",
            DatePart::Year => "year",
            DatePart::Quarter => "quarter",
            DatePart::Month => "month",
            DatePart::Week => "week",
            DatePart::Day => "day",
            DatePart::Dow => "dow",
            DatePart::IsoDow => "isodow",
            DatePart::Doy => "doy",
            DatePart::Hour => "hour",
            DatePart::Minute => "minute",
            DatePart::Second => "second",
        }
    }

    /// The type of the field's value.
    pub fn ty(self) -> Type {
        match self {
            DatePart::Epoch => Type::Decimal {
                precision: 20,
                scale: 6,
            },
            DatePart::Second => Type::Decimal {
                precision: 8,
                scale: 6,
            },
            _ => Type::BigInt,
        }
    }
}

/// Functions of two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func2 {
    /// `power(x, y)` over `DOUBLE`s.
    Power,
    /// `TIMESTAMP - TIMESTAMP`: the seconds between them, a `DECIMAL(20,6)`.
    TimeDiff,
}

/// A key of a JSON access: an object field or an array index.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonKey {
    Field(String),
    Index(i64),
}

/// A compiled `LIKE` pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct LikePattern {
    source: String,
    parts: Vec<LikePart>,
    case_insensitive: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum LikePart {
    Literal(char),
    AnyOne,
    AnyMany,
}

impl LikePattern {
    /// Compiles a pattern where `%` matches any run, `_` any one character and `\` escapes.
    pub fn new(source: &str, case_insensitive: bool) -> LikePattern {
        let mut parts = Vec::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '%' => LikePart::AnyMany,
                '_' => LikePart::AnyOne,
                '\\' => LikePart::Literal(chars.next().unwrap_or('\\')),
                c => LikePart::Literal(if case_insensitive { fold(c) } else { c }),
            });
        }
        LikePattern {
            source: source.to_owned(),
            parts,
            case_insensitive,
        }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = if self.case_insensitive {
            text.chars().map(fold).collect()
        } else {
            text.chars().collect()
        };
        // Classic two-pointer wildcard matching with backtracking to the last `%`.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < chars.len() {
            match self.parts.get(p) {
                Some(LikePart::AnyMany) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(LikePart::AnyOne) => {
                    p += 1;
                    t += 1;
                }
                Some(LikePart::Literal(c)) if *c == chars[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.parts[p..]
            .iter()
            .all(|part| *part == LikePart::AnyMany)
    }
}

fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// A compiled expression. `Column` reads the input row (an event for row-level expressions, the
/// group key for query filters); `Key` and `Agg` appear only in output expressions over a group.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column {
        index: usize,
        name: String,
    },
    Key {
        index: usize,
        name: String,
    },
    Agg {
        index: usize,
        display: String,
    },
    Literal(Value),
    Neg(Box<Expr>, NumKind),
    Arith {
        op: ArithOp,
        kind: NumKind,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Compare {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: LikePattern,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Coalesce(Vec<Expr>),
    NullIf(Box<Expr>, Box<Expr>),
    Cast {
        expr: Box<Expr>,
        from: Type,
        to: Type,
    },
    Concat(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    Func2(Func2, Box<Expr>, Box<Expr>),
    /// `greatest(…)` or `least(…)`: NULL arguments are ignored, NULL when all are.
    Extremum {
        greatest: bool,
        list: Vec<Expr>,
    },
    /// Evaluates to NULL where its operand fails: what a live view's expressions are wrapped in
    /// ([`Expr::lenient`]), so one bad event costs a NULL, not the event. Each failure is
    /// counted in [`EvalCtx::failures`].
    OrNull(Box<Expr>),
    JsonGet {
        expr: Box<Expr>,
        key: JsonKey,
        as_text: bool,
    },
    /// `slot` indexes the evaluation's bucket cache ([`EvalCtx::buckets`]).
    Bucket {
        interval: Interval,
        expr: Box<Expr>,
        display: String,
        slot: usize,
    },
}

/// What an expression is evaluated against.
pub struct EvalCtx<'a> {
    pub row: &'a [Value],
    pub keys: &'a [Value],
    pub aggs: &'a [Value],
    pub tz: &'a TimeZone,
    /// The last bucket range computed by each `Bucket` expression, as `(start, end)`
    /// microseconds: events mostly arrive in time order, so most floors are two comparisons.
    /// Empty when nothing is cached.
    pub buckets: &'a [Cell<(i64, i64)>],
    /// Counts the operands of [`Expr::OrNull`] that failed and became NULL.
    pub failures: Option<&'a Cell<u32>>,
}

impl<'a> EvalCtx<'a> {
    /// A context for row-level expressions.
    pub fn row(row: &'a [Value], tz: &'a TimeZone) -> EvalCtx<'a> {
        EvalCtx {
            row,
            keys: &[],
            aggs: &[],
            tz,
            buckets: &[],
            failures: None,
        }
    }

    /// A context for output expressions: a group's key and its finalized aggregates.
    pub fn outputs(keys: &'a [Value], aggs: &'a [Value], tz: &'a TimeZone) -> EvalCtx<'a> {
        EvalCtx {
            row: &[],
            keys,
            aggs,
            tz,
            buckets: &[],
            failures: None,
        }
    }
}

impl Expr {
    /// Whether evaluating this expression can return an error for some input.
    pub fn can_fail(&self) -> bool {
        let mut fails = false;
        self.walk(&mut |e| {
            fails |= match e {
                // Every operation can overflow its type, and division can divide by zero.
                Expr::Arith { .. } => true,
                Expr::Neg(_, NumKind::Int | NumKind::Decimal { .. }) => true,
                Expr::Cast { from, to, .. } => cast_can_fail(*from, *to),
                Expr::Func(Func::Abs | Func::Round(_) | Func::Ln | Func::Exp | Func::Sqrt, _) => {
                    true
                }
                Expr::Func2(Func2::Power, ..) => true,
                _ => false,
            };
        });
        fails
    }

    /// Calls `f` on this expression and every sub-expression.
    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Column { .. } | Expr::Key { .. } | Expr::Agg { .. } | Expr::Literal(_) => {}
            Expr::Neg(e, _) | Expr::Not(e) | Expr::Func(_, e) | Expr::OrNull(e) => e.walk(f),
            Expr::Func2(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Extremum { list, .. } => list.iter().for_each(|e| e.walk(f)),
            Expr::IsNull { expr, .. }
            | Expr::Like { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::JsonGet { expr, .. }
            | Expr::Bucket { expr, .. } => expr.walk(f),
            Expr::Arith { left, right, .. } | Expr::Compare { left, right, .. } => {
                left.walk(f);
                right.walk(f);
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::NullIf(a, b) | Expr::Concat(a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.walk(f);
                list.iter().for_each(|e| e.walk(f));
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk(f);
                }
                for (w, t) in branches {
                    w.walk(f);
                    t.walk(f);
                }
                if let Some(o) = otherwise {
                    o.walk(f);
                }
            }
            Expr::Coalesce(list) => list.iter().for_each(|e| e.walk(f)),
        }
    }

    /// Calls `f` on each direct sub-expression.
    pub fn for_each_child_mut(&mut self, f: &mut impl FnMut(&mut Expr)) {
        match self {
            Expr::Column { .. } | Expr::Key { .. } | Expr::Agg { .. } | Expr::Literal(_) => {}
            Expr::Neg(e, _) | Expr::Not(e) | Expr::Func(_, e) | Expr::OrNull(e) => f(e),
            Expr::Func2(_, a, b) => {
                f(a);
                f(b);
            }
            Expr::Extremum { list, .. } => list.iter_mut().for_each(f),
            Expr::IsNull { expr, .. }
            | Expr::Like { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::JsonGet { expr, .. }
            | Expr::Bucket { expr, .. } => f(expr),
            Expr::Arith { left, right, .. } | Expr::Compare { left, right, .. } => {
                f(left);
                f(right);
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::NullIf(a, b) | Expr::Concat(a, b) => {
                f(a);
                f(b);
            }
            Expr::InList { expr, list, .. } => {
                f(expr);
                list.iter_mut().for_each(f);
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                if let Some(o) = operand {
                    f(o);
                }
                for (w, t) in branches {
                    f(w);
                    f(t);
                }
                if let Some(o) = otherwise {
                    f(o);
                }
            }
            Expr::Coalesce(list) => list.iter_mut().for_each(f),
        }
    }

    /// Evaluates the expression, borrowing column values and literals instead of copying them:
    /// the hot loop reads most values without touching a reference count.
    pub fn eval_cow<'c>(&'c self, ctx: &EvalCtx<'c>) -> Result<Cow<'c, Value>, EvalError> {
        Ok(match self {
            Expr::Column { index, .. } => Cow::Borrowed(&ctx.row[*index]),
            Expr::Key { index, .. } => Cow::Borrowed(&ctx.keys[*index]),
            Expr::Agg { index, .. } => Cow::Borrowed(&ctx.aggs[*index]),
            Expr::Literal(v) => Cow::Borrowed(v),
            _ => Cow::Owned(self.eval(ctx)?),
        })
    }

    /// Evaluates the expression.
    pub fn eval(&self, ctx: &EvalCtx<'_>) -> Result<Value, EvalError> {
        Ok(match self {
            Expr::Column { index, .. } => ctx.row[*index].clone(),
            Expr::Key { index, .. } => ctx.keys[*index].clone(),
            Expr::Agg { index, .. } => ctx.aggs[*index].clone(),
            Expr::Literal(v) => v.clone(),
            Expr::Neg(e, kind) => match e.eval(ctx)? {
                Value::Null => Value::Null,
                v => arith(ArithOp::Sub, *kind, zero_of(*kind), v)?,
            },
            Expr::Arith {
                op,
                kind,
                left,
                right,
            } => {
                let l = left.eval(ctx)?;
                if l.is_null() {
                    return Ok(Value::Null);
                }
                let r = right.eval(ctx)?;
                if r.is_null() {
                    return Ok(Value::Null);
                }
                arith(*op, *kind, l, r)?
            }
            Expr::Compare { op, left, right } => {
                let l = left.eval_cow(ctx)?;
                let r = right.eval_cow(ctx)?;
                if l.is_null() || r.is_null() {
                    return Ok(Value::Null);
                }
                let ord = l.as_ref().cmp(r.as_ref());
                Value::Bool(match op {
                    CmpOp::Eq => ord.is_eq(),
                    CmpOp::NotEq => ord.is_ne(),
                    CmpOp::Lt => ord.is_lt(),
                    CmpOp::LtEq => ord.is_le(),
                    CmpOp::Gt => ord.is_gt(),
                    CmpOp::GtEq => ord.is_ge(),
                })
            }
            Expr::And(a, b) => match a.eval_cow(ctx)?.as_bool() {
                Some(false) => Value::Bool(false),
                left => match (left, b.eval_cow(ctx)?.as_bool()) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                },
            },
            Expr::Or(a, b) => match a.eval_cow(ctx)?.as_bool() {
                Some(true) => Value::Bool(true),
                left => match (left, b.eval_cow(ctx)?.as_bool()) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                },
            },
            Expr::Not(e) => match e.eval_cow(ctx)?.as_bool() {
                Some(b) => Value::Bool(!b),
                None => Value::Null,
            },
            Expr::IsNull { expr, negated } => {
                Value::Bool(expr.eval_cow(ctx)?.is_null() != *negated)
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval_cow(ctx)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    let candidate = item.eval_cow(ctx)?;
                    if candidate.is_null() {
                        saw_null = true;
                    } else if candidate == v {
                        return Ok(Value::Bool(!negated));
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => match expr.eval_cow(ctx)?.as_ref() {
                Value::Text(s) => Value::Bool(pattern.matches(s) != *negated),
                _ => Value::Null,
            },
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                let subject = match operand {
                    Some(o) => Some(o.eval_cow(ctx)?),
                    None => None,
                };
                for (when, then) in branches {
                    let hit = match &subject {
                        Some(s) => {
                            let w = when.eval_cow(ctx)?;
                            !s.is_null() && !w.is_null() && *s == w
                        }
                        None => when.eval_cow(ctx)?.as_bool() == Some(true),
                    };
                    if hit {
                        return then.eval(ctx);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(ctx)?,
                    None => Value::Null,
                }
            }
            Expr::Coalesce(list) => {
                for e in list {
                    let v = e.eval(ctx)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Value::Null
            }
            Expr::NullIf(a, b) => {
                let va = a.eval(ctx)?;
                let vb = b.eval_cow(ctx)?;
                if !va.is_null() && !vb.is_null() && va == *vb {
                    Value::Null
                } else {
                    va
                }
            }
            Expr::Cast { expr, from, to } => cast(expr.eval(ctx)?, *from, *to)?,
            Expr::Concat(a, b) => {
                let va = a.eval_cow(ctx)?;
                let vb = b.eval_cow(ctx)?;
                if va.is_null() || vb.is_null() {
                    return Ok(Value::Null);
                }
                Value::Text(SmolStr::from(format!("{va}{vb}")))
            }
            Expr::Func(func @ (Func::Lower | Func::Upper | Func::Length), e) => {
                match (func, e.eval_cow(ctx)?.as_ref()) {
                    (Func::Lower, Value::Text(s)) => Value::Text(SmolStr::from(s.to_lowercase())),
                    (Func::Upper, Value::Text(s)) => Value::Text(SmolStr::from(s.to_uppercase())),
                    (Func::Length, Value::Text(s)) => Value::Int(s.chars().count() as i64),
                    _ => Value::Null,
                }
            }
            Expr::Func(Func::Part(part), e) => match e.eval_cow(ctx)?.as_ref() {
                Value::Timestamp(ts) => date_part(*part, *ts, ctx.tz),
                // The seconds of a difference of timestamps are its epoch.
                Value::Decimal(d) => Value::Decimal(*d),
                _ => Value::Null,
            },
            Expr::Func2(func, a, b) => {
                let va = a.eval_cow(ctx)?;
                let vb = b.eval_cow(ctx)?;
                match (func, va.as_ref(), vb.as_ref()) {
                    (Func2::TimeDiff, Value::Timestamp(x), Value::Timestamp(y)) => {
                        Value::Decimal(Decimal::new(i128::from(x.0) - i128::from(y.0), 6))
                    }
                    (Func2::Power, Value::Double(x), Value::Double(y)) => {
                        let r = x.powf(*y);
                        if r.is_nan() {
                            return Err(EvalError::OutOfDomain(
                                "a negative number raised to a non-integer power is not a real number",
                            ));
                        }
                        if !r.is_finite() {
                            return Err(if *x == 0.0 {
                                EvalError::OutOfDomain(
                                    "zero raised to a negative power is undefined",
                                )
                            } else {
                                EvalError::Overflow(Type::Double)
                            });
                        }
                        Value::Double(r)
                    }
                    _ => Value::Null,
                }
            }
            Expr::Extremum { greatest, list } => {
                let mut best: Option<Value> = None;
                for e in list {
                    let v = e.eval(ctx)?;
                    if v.is_null() {
                        continue;
                    }
                    best = Some(match best {
                        None => v,
                        Some(b) if (v > b) == *greatest && v != b => v,
                        Some(b) => b,
                    });
                }
                best.unwrap_or(Value::Null)
            }
            Expr::OrNull(e) => match e.eval(ctx) {
                Ok(v) => v,
                Err(_) => {
                    if let Some(failures) = ctx.failures {
                        failures.set(failures.get() + 1);
                    }
                    Value::Null
                }
            },
            Expr::Func(func, e) => match (func, e.eval(ctx)?) {
                (_, Value::Null) => Value::Null,
                (Func::Ln, Value::Double(d)) => {
                    if d <= 0.0 {
                        return Err(EvalError::OutOfDomain(
                            "cannot take the logarithm of zero or a negative number",
                        ));
                    }
                    Value::Double(d.ln())
                }
                (Func::Exp, Value::Double(d)) => {
                    let r = d.exp();
                    if !r.is_finite() {
                        return Err(EvalError::Overflow(Type::Double));
                    }
                    Value::Double(r)
                }
                (Func::Sqrt, Value::Double(d)) => {
                    if d < 0.0 {
                        return Err(EvalError::OutOfDomain(
                            "cannot take the square root of a negative number",
                        ));
                    }
                    Value::Double(d.sqrt())
                }
                (Func::Floor, Value::Double(d)) => Value::Double(d.floor()),
                (Func::Ceil, Value::Double(d)) => Value::Double(d.ceil()),
                (Func::Floor | Func::Ceil, Value::Decimal(d)) => {
                    let unit = 10i128.pow(u32::from(d.scale()));
                    let m = d.mantissa();
                    let whole = if *func == Func::Floor {
                        m.div_euclid(unit)
                    } else {
                        -(-m).div_euclid(unit)
                    };
                    Value::Decimal(Decimal::new(whole, 0))
                }
                (Func::Abs, Value::Int(i)) => {
                    Value::Int(i.checked_abs().ok_or(EvalError::Overflow(Type::BigInt))?)
                }
                (Func::Abs, Value::Double(d)) => Value::Double(d.abs()),
                (Func::Round(n), Value::Double(d)) => {
                    let factor = 10f64.powi(i32::from(*n));
                    let r = (d * factor).round() / factor;
                    if r.is_finite() {
                        Value::Double(r)
                    } else {
                        Value::Double(d)
                    }
                }
                (Func::Round(n), Value::Decimal(d)) => {
                    Value::Decimal(d.rescale(*n).map_err(|_| {
                        EvalError::Overflow(Type::Decimal {
                            precision: 38,
                            scale: *n,
                        })
                    })?)
                }
                (Func::Abs, Value::Decimal(d)) => {
                    Value::Decimal(if d.mantissa() < 0 { -d } else { d })
                }
                (_, v) => v,
            },
            Expr::JsonGet { expr, key, as_text } => match expr.eval_cow(ctx)?.as_ref() {
                Value::Json(doc) => json_get(doc, key, *as_text),
                _ => Value::Null,
            },
            Expr::Bucket {
                interval,
                expr,
                slot,
                ..
            } => match *expr.eval_cow(ctx)? {
                Value::Timestamp(ts) => match ctx.buckets.get(*slot) {
                    Some(cache) => {
                        let (start, end) = cache.get();
                        if start <= ts.0 && ts.0 < end {
                            Value::Timestamp(crate::value::Timestamp(start))
                        } else {
                            let (start, end) = interval.bucket(ts, ctx.tz);
                            cache.set((start.0, end.0));
                            Value::Timestamp(start)
                        }
                    }
                    None => Value::Timestamp(interval.floor(ts, ctx.tz)),
                },
                _ => Value::Null,
            },
        })
    }
}

/// A field of a timestamp, read in `tz`.
fn date_part(part: DatePart, ts: crate::value::Timestamp, tz: &TimeZone) -> Value {
    if part == DatePart::Epoch {
        return Value::Decimal(Decimal::new(i128::from(ts.0), 6));
    }
    let Ok(instant) = jiff::Timestamp::from_microsecond(ts.0) else {
        return Value::Null;
    };
    let dt = instant.to_zoned(tz.clone()).datetime();
    let n = match part {
        DatePart::Year => i64::from(dt.year()),
        DatePart::Quarter => i64::from((dt.month() - 1) / 3 + 1),
        DatePart::Month => i64::from(dt.month()),
        DatePart::Week => i64::from(dt.date().iso_week_date().week()),
        DatePart::Day => i64::from(dt.day()),
        DatePart::Dow => i64::from(dt.weekday().to_sunday_zero_offset()),
        DatePart::IsoDow => i64::from(dt.weekday().to_monday_one_offset()),
        DatePart::Doy => i64::from(dt.day_of_year()),
        DatePart::Hour => i64::from(dt.hour()),
        DatePart::Minute => i64::from(dt.minute()),
        DatePart::Second => {
            let micros =
                i128::from(dt.second()) * 1_000_000 + i128::from(dt.subsec_nanosecond() / 1_000);
            return Value::Decimal(Decimal::new(micros, 6));
        }
        DatePart::Epoch => unreachable!("handled above"),
    };
    Value::Int(n)
}

fn zero_of(kind: NumKind) -> Value {
    match kind {
        NumKind::Int => Value::Int(0),
        NumKind::Double => Value::Double(0.0),
        NumKind::Decimal { scale } => Value::Decimal(Decimal::new(0, scale)),
    }
}

fn arith(op: ArithOp, kind: NumKind, l: Value, r: Value) -> Result<Value, EvalError> {
    match (kind, l, r) {
        (NumKind::Int, Value::Int(a), Value::Int(b)) => {
            let out = match op {
                ArithOp::Add => a.checked_add(b),
                ArithOp::Sub => a.checked_sub(b),
                ArithOp::Mul => a.checked_mul(b),
                ArithOp::Div | ArithOp::Mod if b == 0 => return Err(EvalError::DivisionByZero),
                ArithOp::Div => a.checked_div(b),
                ArithOp::Mod => a.checked_rem(b),
            };
            out.map(Value::Int).ok_or(EvalError::Overflow(Type::BigInt))
        }
        (NumKind::Double, Value::Double(a), Value::Double(b)) => {
            let out = match op {
                ArithOp::Add => a + b,
                ArithOp::Sub => a - b,
                ArithOp::Mul => a * b,
                ArithOp::Div | ArithOp::Mod if b == 0.0 => return Err(EvalError::DivisionByZero),
                ArithOp::Div => a / b,
                ArithOp::Mod => a % b,
            };
            if out.is_finite() {
                Ok(Value::Double(out))
            } else {
                Err(EvalError::Overflow(Type::Double))
            }
        }
        (NumKind::Decimal { scale }, Value::Decimal(a), Value::Decimal(b)) => {
            let overflow = |_| {
                EvalError::Overflow(Type::Decimal {
                    precision: 38,
                    scale,
                })
            };
            let out = match op {
                ArithOp::Add => a.checked_add(b).and_then(|d| d.rescale(scale)),
                ArithOp::Sub => a.checked_sub(b).and_then(|d| d.rescale(scale)),
                ArithOp::Mul => a.checked_mul(b, scale),
                ArithOp::Div | ArithOp::Mod => match a.checked_div(b, scale) {
                    None => return Err(EvalError::DivisionByZero),
                    Some(q) => q,
                },
            };
            out.map(Value::Decimal).map_err(overflow)
        }
        // The compiler coerces both operands to `kind`, so other combinations cannot occur.
        _ => Ok(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn like_patterns() {
        let p = LikePattern::new("/blog/%", false);
        assert!(p.matches("/blog/"));
        assert!(p.matches("/blog/a/b"));
        assert!(!p.matches("/Blog/a"));
        assert!(LikePattern::new("/BLOG/%", true).matches("/blog/x"));
        assert!(LikePattern::new("a_c", false).matches("abc"));
        assert!(!LikePattern::new("a_c", false).matches("abbc"));
        assert!(LikePattern::new("%b%b%", false).matches("abcbd"));
        assert!(LikePattern::new("100\\%", false).matches("100%"));
        assert!(!LikePattern::new("100\\%", false).matches("1000"));
    }

    #[test]
    fn casts_follow_postgres() {
        let dec = Type::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            cast(Value::text("1.005"), Type::Text, dec)
                .unwrap()
                .to_string(),
            "1.01"
        );
        assert_eq!(
            cast(Value::Double(2.5), Type::Double, Type::BigInt).unwrap(),
            Value::Int(3)
        );
        assert!(matches!(
            cast(Value::text("x1"), Type::Text, Type::BigInt),
            Err(EvalError::InvalidCast { .. })
        ));
        assert!(matches!(
            cast(Value::Int(10_000_000_000), Type::BigInt, dec),
            Err(EvalError::Overflow(_))
        ));
        assert_eq!(
            cast(Value::Json(Arc::from("\"42\"")), Type::Json, Type::BigInt).unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            cast(Value::Json(Arc::from("7.5")), Type::Json, Type::Double).unwrap(),
            Value::Double(7.5)
        );
    }

    #[test]
    fn json_access() {
        let doc = r#"{"plan":"pro","n":3,"tags":["a","b"],"nested":{"x":true},"none":null}"#;
        let field = |k: &str, t| json_get(doc, &JsonKey::Field(k.into()), t);
        assert_eq!(field("plan", true), Value::text("pro"));
        assert_eq!(field("n", true), Value::text("3"));
        assert_eq!(
            field("nested", false),
            Value::Json(Arc::from("{\"x\":true}"))
        );
        assert_eq!(field("none", true), Value::Null);
        assert_eq!(field("missing", true), Value::Null);
        assert_eq!(
            json_get("[1,2]", &JsonKey::Index(-1), true),
            Value::text("2")
        );
    }
}
