//! The scalar binder: names resolve to column indexes, operators to the operation for their
//! operand types (with casts inserted where types differ), literals to values. Aggregates are
//! bound in [`aggregate`](super::aggregate) and function calls in
//! [`function`](super::function); both are methods of the same [`Binder`].

use sqlparser::ast::{self, Spanned};
use sqlparser::tokenizer::Location;

use super::aggregate::{contains_aggregate, is_aggregate};
use super::view::expr_has;
use super::{LocationExt, Result, data_type, error_at, ident_name, unsupported};
use crate::decimal::{Decimal, MAX_PRECISION, digit_count};
use crate::expr::{
    ArithOp, CmpOp, DatePart, Expr, Func, Func2, JsonKey, LikePattern, NumKind, cast_exists,
    parse_text,
};
use crate::plan::AggPlan;
use crate::value::{Type, Value};

/// Where bare names resolve.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ScopeTarget {
    /// Stream columns of the event row.
    Row,
    /// Group columns of a view (query filters).
    Key,
}

pub(super) struct Scope {
    pub(super) columns: Vec<(String, Type)>,
    pub(super) qualifiers: Vec<String>,
    pub(super) target: ScopeTarget,
}

impl Scope {
    pub(super) fn find(&self, name: &str) -> Option<(usize, Type)> {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| (i, self.columns[i].1))
    }
}

pub(super) struct Binder<'s> {
    scope: &'s Scope,
    /// The statement start, for nodes without a span.
    at: Location,
    /// What is being compiled, for error messages ("WHERE", "GROUP BY", …).
    pub(super) context: &'static str,
    /// Whether aggregates are allowed: output expressions of the SELECT.
    pub(super) output: bool,
    /// The bound group keys: sub-expressions of outputs equal to one become key references.
    pub(super) key_exprs: Vec<Expr>,
    /// The aggregate states the SELECT uses, each once.
    pub(super) aggs: Vec<AggPlan>,
    /// What the definition may not mean as written, with its position.
    pub(super) warnings: Vec<String>,
}

/// A bound expression and its type.
pub(super) type Bound = (Expr, Type);

impl<'s> Binder<'s> {
    pub(super) fn new(scope: &'s Scope, at: Location) -> Binder<'s> {
        Binder {
            scope,
            at,
            context: "the view",
            output: false,
            key_exprs: Vec::new(),
            aggs: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn loc(&self, e: &ast::Expr) -> Location {
        e.span().start.max_or(self.at)
    }

    pub(super) fn expr(&mut self, e: &ast::Expr) -> Result<Bound> {
        if self.output {
            if let Some(f) = is_aggregate(e) {
                return self.aggregate(f, e);
            }
            if !contains_aggregate(e) {
                // A sub-expression without aggregates must be a group key (or a constant).
                self.output = false;
                let bound = self.expr(e);
                self.output = true;
                let (expr, ty) = bound?;
                if let Some(i) = self.key_exprs.iter().position(|k| *k == expr) {
                    return Ok((
                        Expr::Key {
                            index: i,
                            name: format!("{expr}"),
                        },
                        ty,
                    ));
                }
                if expr_has(&expr, |x| matches!(x, Expr::Column { .. })) {
                    return Err(error_at(
                        self.loc(e),
                        format!("{e} must appear in GROUP BY or be used inside an aggregate"),
                        None,
                    ));
                }
                return Ok((expr, ty));
            }
        }
        self.structural(e)
    }

    fn structural(&mut self, e: &ast::Expr) -> Result<Bound> {
        use ast::Expr as E;
        let at = self.loc(e);
        match e {
            E::Identifier(ident) => self.column(ident, None),
            E::CompoundIdentifier(parts) => match parts.as_slice() {
                [qualifier, ident] => self.column(ident, Some(qualifier)),
                _ => Err(error_at(at, format!("{e} is not a column"), None)),
            },
            E::Value(v) => literal(&v.value, at),
            E::TypedString(ts) => self.typed_string(ts, at),
            E::Nested(inner) => self.expr(inner),
            E::UnaryOp { op, expr } => self.unary(op, expr, at),
            E::BinaryOp { left, op, right } => self.binary(left, op, right, at),
            E::IsNull(inner) | E::IsNotNull(inner) => self.is_null(e, inner),
            E::IsTrue(inner) | E::IsNotTrue(inner) | E::IsFalse(inner) | E::IsNotFalse(inner) => {
                self.is_truth(e, inner)
            }
            E::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated),
            E::InSubquery { .. } | E::Subquery(_) | E::Exists { .. } => Err(unsupported(
                at,
                "a subquery",
                "a live view reads one stream; compare with literal values",
            )),
            E::Between {
                expr,
                negated,
                low,
                high,
            } => self.between(expr, *negated, low, high, at),
            E::Like {
                negated,
                expr,
                pattern,
                escape_char,
                any,
            }
            | E::ILike {
                negated,
                expr,
                pattern,
                escape_char,
                any,
            } => {
                if escape_char.is_some() || *any {
                    return Err(unsupported(
                        at,
                        "LIKE … ESCAPE / LIKE ANY",
                        "escape % and _ with a backslash",
                    ));
                }
                self.like(e, *negated, expr, pattern)
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref(), at),
            E::Cast {
                kind,
                expr,
                data_type: dt,
                format,
            } => self.cast(kind, expr, dt, format, at),
            E::Function(f) => self.function(f, e),
            E::Interval(_) => Err(error_at(
                at,
                "an INTERVAL can only be the width of time_bucket",
                None,
            )),
            E::AtTimeZone { .. } => Err(unsupported(
                at,
                "AT TIME ZONE",
                "buckets follow the tenant's time zone, chosen when the tenant is created",
            )),
            E::Floor { expr, field } | E::Ceil { expr, field } => {
                if !matches!(
                    field,
                    ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime)
                ) {
                    return Err(unsupported(
                        at,
                        "FLOOR/CEIL with a scale or TO a field",
                        "write floor(x) or ceil(x); round(x, digits) rounds to digits",
                    ));
                }
                self.floor_ceil(matches!(e, E::Floor { .. }), expr)
            }
            E::Extract { field, expr, .. } => {
                let name = field.to_string().to_lowercase();
                let part = DatePart::parse(&name).ok_or_else(|| {
                    error_at(
                        at,
                        format!("unknown EXTRACT field {name}"),
                        Some(
                            "fields are epoch, year, quarter, month, week, day, dow, isodow, doy, hour, minute, second",
                        ),
                    )
                })?;
                self.date_part(part, expr)
            }
            E::Substring { .. } | E::Trim { .. } | E::Position { .. } | E::Overlay { .. } => {
                Err(unsupported(
                    at,
                    "this string function",
                    "supported functions: lower, upper, length, coalesce, nullif",
                ))
            }
            other => Err(unsupported(
                at,
                &format!("the expression {other}"),
                "see docs/sql.md for the supported expressions",
            )),
        }
    }

    #[inline(never)]
    fn typed_string(&mut self, ts: &ast::TypedString, at: Location) -> Result<Bound> {
        let ty = data_type(&ts.data_type, at)?;
        let text = match &ts.value.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        };
        let v = parse_text(&text, ty)
            .ok_or_else(|| error_at(at, format!("'{text}' is not a valid {ty}"), None))?;
        Ok((Expr::Literal(v), ty))
    }

    #[inline(never)]
    fn unary(&mut self, op: &ast::UnaryOperator, expr: &ast::Expr, at: Location) -> Result<Bound> {
        let (inner, ty) = self.expr(expr)?;
        match op {
            ast::UnaryOperator::Not => {
                self.require_bool(&inner, ty, expr, "NOT")?;
                Ok((Expr::Not(Box::new(inner)), Type::Boolean))
            }
            ast::UnaryOperator::Minus => {
                if let Expr::Literal(Value::Int(i)) = inner {
                    return Ok((Expr::Literal(Value::Int(-i)), ty));
                }
                if let Expr::Literal(Value::Decimal(d)) = inner {
                    return Ok((Expr::Literal(Value::Decimal(-d)), ty));
                }
                let kind = num_kind(ty)
                    .ok_or_else(|| error_at(at, format!("cannot negate {ty}"), None))?;
                Ok((Expr::Neg(Box::new(inner), kind), ty))
            }
            ast::UnaryOperator::Plus if ty.is_numeric() => Ok((inner, ty)),
            other => Err(unsupported(
                at,
                &format!("operator {other}"),
                "use + - * / %, comparisons, AND, OR, NOT",
            )),
        }
    }

    #[inline(never)]
    fn is_null(&mut self, e: &ast::Expr, inner: &ast::Expr) -> Result<Bound> {
        use ast::Expr as E;
        let (expr, _) = self.expr(inner)?;
        Ok((
            Expr::IsNull {
                expr: Box::new(expr),
                negated: matches!(e, E::IsNotNull(_)),
            },
            Type::Boolean,
        ))
    }

    #[inline(never)]
    fn is_truth(&mut self, e: &ast::Expr, inner: &ast::Expr) -> Result<Bound> {
        use ast::Expr as E;
        let (expr, ty) = self.expr(inner)?;
        self.require_bool(&expr, ty, inner, "IS TRUE/FALSE")?;
        let t = |b| Expr::Literal(Value::Bool(b));
        let out = match e {
            E::IsTrue(_) => Expr::Coalesce(vec![expr, t(false)]),
            E::IsNotTrue(_) => Expr::Not(Box::new(Expr::Coalesce(vec![expr, t(false)]))),
            E::IsFalse(_) => Expr::Coalesce(vec![Expr::Not(Box::new(expr)), t(false)]),
            _ => Expr::Coalesce(vec![expr, t(true)]),
        };
        Ok((out, Type::Boolean))
    }

    #[inline(never)]
    fn in_list(&mut self, expr: &ast::Expr, list: &[ast::Expr], negated: bool) -> Result<Bound> {
        let (subject, ty) = self.expr(expr)?;
        let mut items = Vec::new();
        let mut common = ty;
        let mut bound = Vec::new();
        for item in list {
            let b = self.expr(item)?;
            if !is_null_literal(&b.0) && !is_text_literal(&b.0) {
                common = unify(common, b.1).ok_or_else(|| {
                    error_at(
                        self.loc(item),
                        format!("{item} ({}) cannot be compared with {expr} ({ty})", b.1),
                        None,
                    )
                })?;
            }
            bound.push((b, item));
        }
        let subject = self.coerce(subject, ty, common, expr)?;
        for ((item, item_ty), ast_item) in bound {
            items.push(self.coerce(item, item_ty, common, ast_item)?);
        }
        Ok((
            Expr::InList {
                expr: Box::new(subject),
                list: items,
                negated,
            },
            Type::Boolean,
        ))
    }

    #[inline(never)]
    fn between(
        &mut self,
        expr: &ast::Expr,
        negated: bool,
        low: &ast::Expr,
        high: &ast::Expr,
        at: Location,
    ) -> Result<Bound> {
        let l = self.comparison(expr, if negated { CmpOp::Lt } else { CmpOp::GtEq }, low, at)?;
        let h = self.comparison(
            expr,
            if negated { CmpOp::Gt } else { CmpOp::LtEq },
            high,
            at,
        )?;
        let out = if negated {
            Expr::Or(Box::new(l), Box::new(h))
        } else {
            Expr::And(Box::new(l), Box::new(h))
        };
        Ok((out, Type::Boolean))
    }

    #[inline(never)]
    fn like(
        &mut self,
        e: &ast::Expr,
        negated: bool,
        expr: &ast::Expr,
        pattern: &ast::Expr,
    ) -> Result<Bound> {
        use ast::Expr as E;
        let (subject, ty) = self.expr(expr)?;
        if ty != Type::Text {
            return Err(error_at(
                self.loc(expr),
                format!("LIKE needs TEXT, but {expr} is {ty}"),
                None,
            ));
        }
        let source = match pattern {
            E::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                _ => {
                    return Err(error_at(
                        self.loc(pattern),
                        "the LIKE pattern must be a text literal",
                        None,
                    ));
                }
            },
            _ => {
                return Err(error_at(
                    self.loc(pattern),
                    "the LIKE pattern must be a text literal",
                    None,
                ));
            }
        };
        let case_insensitive = matches!(e, E::ILike { .. });
        Ok((
            Expr::Like {
                expr: Box::new(subject),
                pattern: LikePattern::new(&source, case_insensitive),
                negated,
            },
            Type::Boolean,
        ))
    }

    #[inline(never)]
    fn cast(
        &mut self,
        kind: &ast::CastKind,
        expr: &ast::Expr,
        dt: &ast::DataType,
        format: &Option<ast::CastFormat>,
        at: Location,
    ) -> Result<Bound> {
        if !matches!(kind, ast::CastKind::Cast | ast::CastKind::DoubleColon) || format.is_some() {
            return Err(unsupported(
                at,
                &format!("{kind:?}"),
                "use CAST(x AS type) or x::type",
            ));
        }
        let to = data_type(dt, at)?;
        let (inner, from) = self.expr(expr)?;
        if !cast_exists(from, to) {
            return Err(error_at(at, format!("cannot cast {from} to {to}"), None));
        }
        if let Expr::Literal(v) = &inner {
            // Fold casts of literals, so that errors show at compile time.
            let folded = crate::expr::cast(v.clone(), from, to)
                .map_err(|err| error_at(at, err.to_string(), None))?;
            return Ok((Expr::Literal(folded), to));
        }
        if from == to {
            return Ok((inner, to));
        }
        Ok((
            Expr::Cast {
                expr: Box::new(inner),
                from,
                to,
            },
            to,
        ))
    }

    fn column(&mut self, ident: &ast::Ident, qualifier: Option<&ast::Ident>) -> Result<Bound> {
        let at = ident.span.start.max_or(self.at);
        if let Some(q) = qualifier {
            let q = ident_name(q)?;
            if !self.scope.qualifiers.contains(&q) {
                return Err(error_at(
                    at,
                    format!("{q} is not the stream of this view"),
                    None,
                ));
            }
        }
        let name = ident_name(ident)?;
        match self.scope.find(&name) {
            Some((index, ty)) => {
                let expr = match self.scope.target {
                    ScopeTarget::Row => Expr::Column { index, name },
                    ScopeTarget::Key => Expr::Column { index, name },
                };
                Ok((expr, ty))
            }
            None => {
                let names: Vec<&str> = self.scope.columns.iter().map(|(n, _)| n.as_str()).collect();
                let what = match self.scope.target {
                    ScopeTarget::Row => "column",
                    ScopeTarget::Key => "group column",
                };
                Err(error_at(
                    at,
                    format!("there is no {what} {name}"),
                    Some(&format!("the {what}s are: {}", names.join(", "))),
                ))
            }
        }
    }

    pub(super) fn require_bool(
        &self,
        expr: &Expr,
        ty: Type,
        e: &ast::Expr,
        what: &str,
    ) -> Result<()> {
        if ty != Type::Boolean && !is_null_literal(expr) {
            return Err(error_at(
                self.loc(e),
                format!("{what} needs a BOOLEAN, but {e} is {ty}"),
                None,
            ));
        }
        Ok(())
    }

    /// Coerces `expr` of type `from` to `to`: literals are converted now, others get a cast.
    /// `extract(part FROM x)` / `date_part('part', x)`: `x` a timestamp, or for `epoch` a
    /// difference of timestamps.
    pub(super) fn date_part(&mut self, part: DatePart, arg: &ast::Expr) -> Result<Bound> {
        let (x, ty) = self.expr(arg)?;
        let difference = matches!(x, Expr::Func2(Func2::TimeDiff, ..));
        if ty != Type::Timestamp && !(difference && part == DatePart::Epoch) {
            return Err(error_at(
                self.loc(arg),
                format!(
                    "extract({} FROM …) needs a TIMESTAMP{}, but {arg} is {ty}",
                    part.name(),
                    if part == DatePart::Epoch {
                        " or a difference of timestamps"
                    } else {
                        ""
                    }
                ),
                None,
            ));
        }
        Ok((Expr::Func(Func::Part(part), Box::new(x)), part.ty()))
    }

    pub(super) fn coerce(&self, expr: Expr, from: Type, to: Type, e: &ast::Expr) -> Result<Expr> {
        if from == to || is_null_literal(&expr) {
            return Ok(expr);
        }
        if let (Type::Decimal { scale: s1, .. }, Type::Decimal { scale: s2, .. }) = (from, to)
            && s1 == s2
        {
            // Same scale: the value is already right; a wider precision needs no conversion.
            return Ok(expr);
        }
        if let Expr::Literal(v) = &expr {
            let converted = match v {
                Value::Text(s) => parse_text(s, to),
                other => crate::expr::cast(other.clone(), from, to).ok(),
            };
            return converted
                .map(Expr::Literal)
                .ok_or_else(|| error_at(self.loc(e), format!("{e} is not a valid {to}"), None));
        }
        if !cast_exists(from, to) {
            return Err(error_at(
                self.loc(e),
                format!("{e} is {from}, which cannot be used as {to}"),
                None,
            ));
        }
        Ok(Expr::Cast {
            expr: Box::new(expr),
            from,
            to,
        })
    }

    fn comparison(
        &mut self,
        left: &ast::Expr,
        op: CmpOp,
        right: &ast::Expr,
        at: Location,
    ) -> Result<Expr> {
        let (l, lt) = self.expr(left)?;
        let (r, rt) = self.expr(right)?;
        let common = if is_null_literal(&l) || is_text_literal(&l) && rt != Type::Text {
            rt
        } else if is_null_literal(&r) || is_text_literal(&r) && lt != Type::Text {
            lt
        } else {
            unify(lt, rt).ok_or_else(|| {
                error_at(
                    at,
                    format!("cannot compare {left} ({lt}) with {right} ({rt})"),
                    Some("cast one side with CAST(x AS type)"),
                )
            })?
        };
        if common == Type::Json && !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
            return Err(error_at(
                at,
                "JSON values can only be compared for equality",
                Some("extract a field with ->> and cast it"),
            ));
        }
        let l = self.coerce(l, lt, common, left)?;
        let r = self.coerce(r, rt, common, right)?;
        Ok(Expr::Compare {
            op,
            left: Box::new(l),
            right: Box::new(r),
        })
    }

    fn binary(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
        at: Location,
    ) -> Result<Bound> {
        use ast::BinaryOperator as B;
        let cmp = match op {
            B::Eq => Some(CmpOp::Eq),
            B::NotEq => Some(CmpOp::NotEq),
            B::Lt => Some(CmpOp::Lt),
            B::LtEq => Some(CmpOp::LtEq),
            B::Gt => Some(CmpOp::Gt),
            B::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(cmp) = cmp {
            return Ok((self.comparison(left, cmp, right, at)?, Type::Boolean));
        }
        match op {
            B::And | B::Or => self.logical(left, op, right),
            B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                self.arithmetic(left, op, right, at)
            }
            B::StringConcat => {
                let (l, _) = self.expr(left)?;
                let (r, _) = self.expr(right)?;
                Ok((Expr::Concat(Box::new(l), Box::new(r)), Type::Text))
            }
            B::Arrow | B::LongArrow => self.json_access(left, op, right),
            other => Err(unsupported(
                at,
                &format!("operator {other}"),
                "see docs/sql.md for the supported operators",
            )),
        }
    }

    #[inline(never)]
    fn logical(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
    ) -> Result<Bound> {
        use ast::BinaryOperator as B;
        let (l, lt) = self.expr(left)?;
        self.require_bool(&l, lt, left, &op.to_string())?;
        let (r, rt) = self.expr(right)?;
        self.require_bool(&r, rt, right, &op.to_string())?;
        let out = if matches!(op, B::And) {
            Expr::And(Box::new(l), Box::new(r))
        } else {
            Expr::Or(Box::new(l), Box::new(r))
        };
        Ok((out, Type::Boolean))
    }

    #[inline(never)]
    fn arithmetic(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
        at: Location,
    ) -> Result<Bound> {
        use ast::BinaryOperator as B;
        let arith = match op {
            B::Plus => ArithOp::Add,
            B::Minus => ArithOp::Sub,
            B::Multiply => ArithOp::Mul,
            B::Divide => ArithOp::Div,
            _ => ArithOp::Mod,
        };
        let (l, lt) = self.expr(left)?;
        let (r, rt) = self.expr(right)?;
        let lt = if is_null_literal(&l) { rt } else { lt };
        let rt = if is_null_literal(&r) { lt } else { rt };
        if arith == ArithOp::Sub && lt == Type::Timestamp && rt == Type::Timestamp {
            // PostgreSQL gives an interval; a live view keeps its seconds, which is what
            // `extract(epoch FROM a - b)` reads from it.
            return Ok((
                Expr::Func2(Func2::TimeDiff, Box::new(l), Box::new(r)),
                DatePart::Epoch.ty(),
            ));
        }
        if !lt.is_numeric() || !rt.is_numeric() {
            return Err(error_at(
                at,
                format!("{op} needs numbers, but {left} is {lt} and {right} is {rt}"),
                if lt == Type::Text || rt == Type::Text {
                    Some("join text with ||")
                } else {
                    None
                },
            ));
        }
        let (kind, result) = arith_types(arith, lt, rt);
        if arith == ArithOp::Div && lt == Type::BigInt && rt == Type::BigInt {
            self.warnings.push(format!(
                "line {}, column {}: {left} / {right} divides integers, so the result is truncated \
                 as in PostgreSQL (7 / 2 is 3); for a fraction write \
                 CAST({left} AS DECIMAL(38,6)) / {right}",
                at.line, at.column
            ));
        }
        if arith == ArithOp::Mod && matches!(kind, NumKind::Decimal { .. }) {
            return Err(error_at(
                at,
                "% needs BIGINT or DOUBLE operands",
                Some("cast the operands"),
            ));
        }
        // Decimal arithmetic takes operands of any scale; other operands are converted.
        let operand = |ty: Type| match (kind, ty) {
            (NumKind::Decimal { .. }, Type::Decimal { .. }) => ty,
            (NumKind::Decimal { .. }, _) => Type::Decimal {
                precision: 19,
                scale: 0,
            },
            (NumKind::Double, _) => Type::Double,
            (NumKind::Int, _) => Type::BigInt,
        };
        let l = self.coerce(l, lt, operand(lt), left)?;
        let r = self.coerce(r, rt, operand(rt), right)?;
        Ok((
            Expr::Arith {
                op: arith,
                kind,
                left: Box::new(l),
                right: Box::new(r),
            },
            result,
        ))
    }

    #[inline(never)]
    fn json_access(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
    ) -> Result<Bound> {
        use ast::BinaryOperator as B;
        let (doc, ty) = self.expr(left)?;
        if ty != Type::Json {
            return Err(error_at(
                self.loc(left),
                format!("{op} needs a JSON value, but {left} is {ty}"),
                None,
            ));
        }
        let key = match right {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => JsonKey::Field(s.clone()),
                ast::Value::Number(n, _) => JsonKey::Index(n.parse().map_err(|_| {
                    error_at(self.loc(right), "JSON index must be an integer", None)
                })?),
                _ => {
                    return Err(error_at(
                        self.loc(right),
                        "JSON key must be a text or integer literal",
                        None,
                    ));
                }
            },
            _ => {
                return Err(error_at(
                    self.loc(right),
                    "JSON key must be a text or integer literal",
                    None,
                ));
            }
        };
        let as_text = matches!(op, B::LongArrow);
        Ok((
            Expr::JsonGet {
                expr: Box::new(doc),
                key,
                as_text,
            },
            if as_text { Type::Text } else { Type::Json },
        ))
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        else_result: Option<&ast::Expr>,
        at: Location,
    ) -> Result<Bound> {
        let subject = match operand {
            Some(o) => Some((self.expr(o)?, o)),
            None => None,
        };
        let mut whens = Vec::new();
        for c in conditions {
            whens.push((self.expr(&c.condition)?, &c.condition));
        }
        let (operand, whens) = match subject {
            Some(((s, st), ast_s)) => {
                let mut common = st;
                for ((w, wt), ast_w) in &whens {
                    if !is_null_literal(w) && !is_text_literal(w) {
                        common = unify(common, *wt).ok_or_else(|| {
                            error_at(self.loc(ast_w), format!("WHEN {ast_w} ({wt}) cannot be compared with the CASE operand ({st})"), None)
                        })?;
                    }
                }
                let s = self.coerce(s, st, common, ast_s)?;
                let whens = whens
                    .into_iter()
                    .map(|((w, wt), ast_w)| self.coerce(w, wt, common, ast_w))
                    .collect::<Result<Vec<_>>>()?;
                (Some(Box::new(s)), whens)
            }
            None => {
                for ((w, wt), ast_w) in &whens {
                    self.require_bool(w, *wt, ast_w, "WHEN")?;
                }
                (None, whens.into_iter().map(|((w, _), _)| w).collect())
            }
        };
        let mut thens = Vec::new();
        for c in conditions {
            thens.push((self.expr(&c.result)?, &c.result));
        }
        let otherwise = match else_result {
            Some(e) => Some((self.expr(e)?, e)),
            None => None,
        };
        let mut result_ty: Option<Type> = None;
        for ((expr, ty), _) in thens.iter().chain(otherwise.iter()) {
            if is_null_literal(expr) {
                continue;
            }
            result_ty = Some(match result_ty {
                None => *ty,
                Some(t) => unify(t, *ty).ok_or_else(|| {
                    error_at(
                        at,
                        format!("CASE branches have different types: {t} and {ty}"),
                        None,
                    )
                })?,
            });
        }
        let result_ty = result_ty.unwrap_or(Type::Text);
        let mut branches = Vec::new();
        for (w, ((t, tt), ast_t)) in whens.into_iter().zip(thens) {
            branches.push((w, self.coerce(t, tt, result_ty, ast_t)?));
        }
        let otherwise = match otherwise {
            Some(((e, t), ast_e)) => Some(Box::new(self.coerce(e, t, result_ty, ast_e)?)),
            None => None,
        };
        Ok((
            Expr::Case {
                operand,
                branches,
                otherwise,
            },
            result_ty,
        ))
    }

    pub(super) fn args<'f>(
        &self,
        f: &'f ast::Function,
        at: Location,
    ) -> Result<Vec<&'f ast::Expr>> {
        let list = match &f.args {
            ast::FunctionArguments::List(list) => list,
            ast::FunctionArguments::None => return Ok(Vec::new()),
            ast::FunctionArguments::Subquery(_) => {
                return Err(unsupported(at, "a subquery", "pass values"));
            }
        };
        if !list.clauses.is_empty() {
            return Err(unsupported(
                at,
                "clauses inside a function call",
                "pass plain arguments",
            ));
        }
        list.args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) => Err(error_at(
                    at,
                    format!("{} does not take *", function_name(f)),
                    Some("only count(*) takes *"),
                )),
                other => Err(unsupported(
                    at,
                    &format!("the argument {other}"),
                    "pass plain arguments",
                )),
            })
            .collect()
    }
}

pub(super) fn interval_text(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        ast::Expr::Interval(iv) => {
            let base = interval_text(&iv.value)?;
            Some(match &iv.leading_field {
                Some(unit) => format!("{base} {unit}"),
                None => base,
            })
        }
        _ => None,
    }
}

pub(super) fn is_null_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(Value::Null))
}

pub(super) fn is_text_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(Value::Text(_)))
}

fn literal(v: &ast::Value, at: Location) -> Result<Bound> {
    Ok(match v {
        ast::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                (Expr::Literal(Value::Int(i)), Type::BigInt)
            } else {
                let d = Decimal::parse(n).map_err(|_| {
                    error_at(
                        at,
                        format!("{n} is not a number with at most 38 digits"),
                        None,
                    )
                })?;
                let precision = (digit_count(d.mantissa()) as u8).max(d.scale()).max(1);
                (
                    Expr::Literal(Value::Decimal(d)),
                    Type::Decimal {
                        precision,
                        scale: d.scale(),
                    },
                )
            }
        }
        ast::Value::SingleQuotedString(s) => (Expr::Literal(Value::text(s)), Type::Text),
        ast::Value::Boolean(b) => (Expr::Literal(Value::Bool(*b)), Type::Boolean),
        ast::Value::Null => (Expr::Literal(Value::Null), Type::Text),
        other => {
            return Err(unsupported(
                at,
                &format!("the literal {other}"),
                "use 'text', numbers, TRUE, FALSE or NULL",
            ));
        }
    })
}

fn num_kind(ty: Type) -> Option<NumKind> {
    match ty {
        Type::BigInt => Some(NumKind::Int),
        Type::Double => Some(NumKind::Double),
        Type::Decimal { scale, .. } => Some(NumKind::Decimal { scale }),
        _ => None,
    }
}

fn as_decimal(ty: Type) -> (u8, u8) {
    match ty {
        Type::Decimal { precision, scale } => (precision, scale),
        _ => (19, 0),
    }
}

/// The operation and result type of arithmetic on two numeric types.
fn arith_types(op: ArithOp, l: Type, r: Type) -> (NumKind, Type) {
    match (l, r) {
        (Type::BigInt, Type::BigInt) => (NumKind::Int, Type::BigInt),
        (Type::Double, _) | (_, Type::Double) => (NumKind::Double, Type::Double),
        _ => {
            let (p1, s1) = as_decimal(l);
            let (p2, s2) = as_decimal(r);
            let int1 = p1 - s1;
            let int2 = p2 - s2;
            let (precision, scale) = match op {
                ArithOp::Add | ArithOp::Sub | ArithOp::Mod => {
                    let s = s1.max(s2);
                    ((int1.max(int2) + s + 1).min(MAX_PRECISION), s)
                }
                ArithOp::Mul => {
                    // The exact product has s1 + s2 decimals; when that does not fit beside the
                    // integer digits, keep as many decimals as fit, but never fewer than the
                    // larger operand scale (rounding half away from zero).
                    let exact = s1 + s2;
                    let int = int1 + int2;
                    if int + exact <= MAX_PRECISION {
                        (int + exact, exact)
                    } else {
                        let s = MAX_PRECISION.saturating_sub(int).max(s1.max(s2)).min(exact);
                        (MAX_PRECISION, s)
                    }
                }
                ArithOp::Div => (MAX_PRECISION, s1.max(s2).max(6)),
            };
            (
                NumKind::Decimal { scale },
                Type::Decimal { precision, scale },
            )
        }
    }
}

/// The type two values are compared or combined in, if any.
pub(super) fn unify(a: Type, b: Type) -> Option<Type> {
    if a == b {
        return Some(a);
    }
    match (a, b) {
        (Type::Double, t) | (t, Type::Double) if t.is_numeric() => Some(Type::Double),
        (Type::Decimal { .. } | Type::BigInt, Type::Decimal { .. } | Type::BigInt) => {
            let (p1, s1) = as_decimal(a);
            let (p2, s2) = as_decimal(b);
            let scale = s1.max(s2);
            let precision = ((p1 - s1).max(p2 - s2) + scale).min(MAX_PRECISION);
            Some(Type::Decimal { precision, scale })
        }
        _ => None,
    }
}

/// A function's name as written, lower-cased.
pub(super) fn function_name(f: &ast::Function) -> String {
    f.name.to_string().to_lowercase()
}
