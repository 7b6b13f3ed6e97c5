//! Reading a view: time range, re-grouping, filtering, ordering.
//!
//! A query never reads raw events. It takes the view's stored group rows merged with the
//! unflushed delta, keeps the rows inside the time range and the `--where`, maps each group key
//! to the coarser key asked for (a coarser time bucket, fewer group columns), merges the states
//! of rows that now share a key, and only then finalizes. Because states merge exactly (sums,
//! sets) or within their stated error (sketches), re-grouping hour → day → month gives the same
//! answer as a view computed by day directly.

use std::cmp::Ordering;
use std::collections::HashMap;

use jiff::tz::TimeZone;

use crate::agg::AggState;
use crate::expr::{EvalCtx, EvalError, Expr};
use crate::plan::{ColumnSource, ViewPlan};
use crate::sql::{CompileError, compile_key_filter, compile_row_filter};
use crate::time::Interval;
use crate::value::{Timestamp, Type, Value};

/// What a caller asks of a view (`tally query` flags and HTTP query parameters).
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    /// Keep buckets starting at or after this instant.
    pub from: Option<Timestamp>,
    /// Keep buckets starting before this instant.
    pub to: Option<Timestamp>,
    /// Re-group the time bucket to this coarser width.
    pub grain: Option<Interval>,
    /// Keep only these group columns, merging the others away.
    pub group_by: Option<Vec<String>>,
    /// A condition on the group columns (applied before re-grouping) or, when it names an
    /// output column, on the answer's columns (applied after re-grouping).
    pub filter: Option<String>,
    /// The column to order by, then the group columns.
    pub order_by: Option<OrderBy>,
    pub limit: Option<usize>,
}

/// `order_by`: a column, its direction and where NULLs go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderBy {
    pub column: String,
    pub desc: bool,
    /// `NULLS FIRST` (`Some(true)`) or `NULLS LAST`; by default, as in PostgreSQL, NULLs sort
    /// last ascending and first descending.
    pub nulls_first: Option<bool>,
}

/// A parameter of a view query. Its concept lives here; each edge spells it its own way
/// (`--group-by` on the command line, `group_by` in a URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    From,
    To,
    Grain,
    GroupBy,
    Where,
    OrderBy,
    Limit,
}

impl Param {
    /// The parameter's name: `from`, `to`, `grain`, `group_by`, `where`, `order_by`, `limit`.
    pub fn name(self) -> &'static str {
        match self {
            Param::From => "from",
            Param::To => "to",
            Param::Grain => "grain",
            Param::GroupBy => "group_by",
            Param::Where => "where",
            Param::OrderBy => "order_by",
            Param::Limit => "limit",
        }
    }
}

/// A query that cannot run: what is wrong, and with which parameter. [`QueryError::message`]
/// words it with the parameters spelled as the caller spells them; `Display` uses
/// [`Param::name`].
#[derive(Clone, Debug, PartialEq)]
pub enum QueryError {
    /// A parameter's text cannot be read (not a time, not a grain, not a number): `message`
    /// follows the parameter's name, e.g. `'fortnight' is not a grain; use one of …`.
    Invalid { param: Param, message: String },
    /// `from`, `to` or `grain` on a view without a time bucket column.
    NoTimeBucket { view: String },
    /// `group_by` names a column that is not a group column.
    UnknownGroupColumn {
        view: String,
        column: String,
        group_columns: Vec<String>,
    },
    /// The view's buckets do not nest in the requested grain.
    GrainTooFine {
        view: String,
        width: Interval,
        grain: Interval,
    },
    /// An output column depends on a group column that `group_by` leaves out.
    DroppedKey { column: String, key: String },
    /// `order_by` names a column that is not in the result.
    UnknownOrderColumn { column: String },
    /// The `where` condition does not compile.
    Filter(CompileError),
    /// The `where` condition failed on a group.
    FilterFailed(EvalError),
    /// A cell of the result cannot be computed.
    Cell {
        view: String,
        column: String,
        /// The group, as `name=value, …`.
        group: String,
        error: EvalError,
    },
}

impl QueryError {
    /// The parameter at fault, when one is.
    pub fn param(&self) -> Option<Param> {
        match self {
            QueryError::Invalid { param, .. } => Some(*param),
            QueryError::NoTimeBucket { .. } | QueryError::GrainTooFine { .. } => Some(Param::Grain),
            QueryError::UnknownGroupColumn { .. } | QueryError::DroppedKey { .. } => {
                Some(Param::GroupBy)
            }
            QueryError::UnknownOrderColumn { .. } => Some(Param::OrderBy),
            QueryError::Filter(_) | QueryError::FilterFailed(_) => Some(Param::Where),
            QueryError::Cell { .. } => None,
        }
    }

    /// The message for a user, with each parameter named by `name`.
    pub fn message(&self, name: impl Fn(Param) -> String) -> String {
        match self {
            QueryError::Invalid { param, message } => format!("{} {message}", name(*param)),
            QueryError::NoTimeBucket { view } => format!(
                "view {view} has no time bucket column, so {}, {} and {} do not apply",
                name(Param::From),
                name(Param::To),
                name(Param::Grain)
            ),
            QueryError::UnknownGroupColumn {
                view,
                column,
                group_columns,
            } => format!(
                "{} {column} is not a group column of view {view}; its group columns are: {}",
                name(Param::GroupBy),
                group_columns.join(", ")
            ),
            QueryError::GrainTooFine { view, width, grain } => format!(
                "view {view} has {width} buckets, which do not fit in {grain} buckets; ask for a grain that is a multiple of {width}"
            ),
            QueryError::DroppedKey { column, key } => format!(
                "column {column} depends on group column {key}, which {} leaves out",
                name(Param::GroupBy)
            ),
            QueryError::UnknownOrderColumn { column } => format!(
                "{} {column} is not a column of the result",
                name(Param::OrderBy)
            ),
            QueryError::Filter(e) => format!("{}: {e}", name(Param::Where)),
            QueryError::FilterFailed(e) => format!("{}: {e}", name(Param::Where)),
            QueryError::Cell {
                view,
                column,
                group,
                error,
            } => {
                let hint = match error {
                    EvalError::Overflow(_) => "; cast the argument to a wider DECIMAL or to DOUBLE",
                    EvalError::DivisionByZero => "; guard the divisor with nullif(x, 0)",
                    EvalError::InvalidCast { .. } | EvalError::OutOfDomain(_) => "",
                };
                format!("view {view} column {column}: {error} in group ({group}){hint}")
            }
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(|p| p.name().to_owned()))
    }
}

impl std::error::Error for QueryError {}

/// The columns and rows of a query result.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Value>>,
}

/// A validated query over one view.
#[derive(Debug)]
pub struct QueryPlan<'a> {
    view: &'a ViewPlan,
    /// A condition on group keys, applied to rows before re-grouping.
    filter: Option<Expr>,
    /// A condition on the answer's columns, applied to its rows after re-grouping.
    row_filter: Option<Expr>,
    /// Which keys survive the re-grouping.
    keep: Vec<bool>,
    grain: Option<Interval>,
    /// The columns of the result: indexes into `view.columns`.
    columns: Vec<usize>,
    /// Position in the answer, descending, NULLs first.
    order: Option<(usize, bool, bool)>,
    limit: Option<usize>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

impl<'a> QueryPlan<'a> {
    /// Checks a request against the view.
    pub fn new(view: &'a ViewPlan, req: &QueryRequest) -> Result<QueryPlan<'a>, QueryError> {
        let bucket = view.bucket;
        if (req.from.is_some() || req.to.is_some() || req.grain.is_some()) && bucket.is_none() {
            return Err(QueryError::NoTimeBucket {
                view: view.name.clone(),
            });
        }
        let mut keep = vec![true; view.keys.len()];
        if let Some(names) = &req.group_by {
            keep = vec![false; view.keys.len()];
            for name in names {
                match view.keys.iter().position(|k| &k.name == name) {
                    Some(i) => keep[i] = true,
                    None => {
                        return Err(QueryError::UnknownGroupColumn {
                            view: view.name.clone(),
                            column: name.clone(),
                            group_columns: view.keys.iter().map(|k| k.name.clone()).collect(),
                        });
                    }
                }
            }
        }
        let mut grain = None;
        if let (Some(g), Some(b)) = (req.grain, bucket) {
            let width = view.keys[b].bucket.unwrap_or(g);
            // A grain asks for time buckets, so the time column stays even when --group-by
            // leaves it out.
            keep[b] = true;
            if !width.nests_in(g) {
                return Err(QueryError::GrainTooFine {
                    view: view.name.clone(),
                    width,
                    grain: g,
                });
            }
            if width != g {
                grain = Some(g);
            }
        }
        // Outputs may only use the keys that survive.
        let mut columns = Vec::new();
        for (i, c) in view.columns.iter().enumerate() {
            match c.source {
                ColumnSource::Key(k) if !keep[k] => continue,
                ColumnSource::Output(o) => {
                    let mut dropped = None;
                    view.outputs[o].expr.walk(&mut |e| {
                        if let Expr::Key { index, .. } = e
                            && !keep[*index]
                        {
                            dropped = Some(view.keys[*index].name.clone());
                        }
                    });
                    if let Some(key) = dropped {
                        return Err(QueryError::DroppedKey {
                            column: c.name.clone(),
                            key,
                        });
                    }
                }
                ColumnSource::Key(_) => {}
            }
            columns.push(i);
        }
        let order = match &req.order_by {
            None => None,
            Some(o) => match columns
                .iter()
                .position(|&i| view.columns[i].name == o.column)
            {
                Some(pos) => Some((pos, o.desc, o.nulls_first.unwrap_or(o.desc))),
                None => {
                    return Err(QueryError::UnknownOrderColumn {
                        column: o.column.clone(),
                    });
                }
            },
        };
        let (mut filter, mut row_filter) = (None, None);
        if let Some(text) = &req.filter {
            match compile_key_filter(view, text) {
                Ok(f) => filter = Some(f),
                Err(key_error) => {
                    // Not a condition on group columns alone: one on the answer's columns
                    // (outputs included), applied after re-grouping.
                    let result: Vec<(String, Type)> = columns
                        .iter()
                        .map(|&i| (view.columns[i].name.clone(), view.columns[i].ty))
                        .collect();
                    let names_key_columns_only = result
                        .iter()
                        .filter(|(n, _)| view.keys.iter().any(|k| &k.name == n))
                        .count()
                        == result.len();
                    row_filter =
                        Some(compile_row_filter(&view.name, &result, text).map_err(|e| {
                            QueryError::Filter(if names_key_columns_only { key_error } else { e })
                        })?);
                }
            }
        }
        Ok(QueryPlan {
            view,
            filter,
            row_filter,
            keep,
            grain,
            columns,
            order,
            limit: req.limit,
            from: req.from,
            to: req.to,
        })
    }

    /// The index of the time bucket key and the time range, for the store to push down.
    /// The answer group a stored group falls in: its kept key values in key order, the time
    /// bucket at the query's grain; `None` when the query's range or condition leaves it out.
    pub fn answer_group(
        &self,
        key: &[Value],
        tz: &TimeZone,
    ) -> Result<Option<Vec<Value>>, QueryError> {
        if !self.accepts(key, tz)? {
            return Ok(None);
        }
        Ok(Some(
            key.iter()
                .enumerate()
                .filter(|(i, _)| self.keep[*i])
                .map(
                    |(i, v)| match (self.grain, self.view.bucket == Some(i), v) {
                        (Some(g), true, Value::Timestamp(t)) => Value::Timestamp(g.floor(*t, tz)),
                        _ => v.clone(),
                    },
                )
                .collect(),
        ))
    }

    /// The answer group of a row of this query's answer, as [`QueryPlan::answer_group`] gives it.
    pub fn row_group(&self, row: &[Value]) -> Vec<Value> {
        (0..self.view.keys.len())
            .filter(|&k| self.keep[k])
            .filter_map(|k| {
                self.columns
                    .iter()
                    .position(|&c| self.view.columns[c].source == ColumnSource::Key(k))
                    .map(|p| row[p].clone())
            })
            .collect()
    }

    /// The names of the answer's columns, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(|&i| self.view.columns[i].name.as_str())
            .collect()
    }

    pub fn time_range(&self) -> Option<(usize, Option<Timestamp>, Option<Timestamp>)> {
        self.view.bucket.map(|b| (b, self.from, self.to))
    }

    /// Whether a stored or pending row with this key belongs to the result.
    pub fn accepts(&self, key: &[Value], tz: &TimeZone) -> Result<bool, QueryError> {
        if let Some(b) = self.view.bucket
            && let Value::Timestamp(t) = &key[b]
            && (self.from.is_some_and(|from| *t < from) || self.to.is_some_and(|to| *t >= to))
        {
            return Ok(false);
        }
        if let Some(filter) = &self.filter {
            let ctx = EvalCtx::row(key, tz);
            let pass = filter.eval(&ctx).map_err(QueryError::FilterFailed)?;
            return Ok(pass.as_bool() == Some(true));
        }
        Ok(true)
    }

    /// Runs the query over `rows`: every row is a group key and its states. Rows with equal
    /// keys (stored and pending) are merged like any rows that re-grouping brings together.
    /// Rows are borrowed: only the first row of each answer group is copied, the others are
    /// merged into it, and rows outside the query are never copied.
    pub fn run<'r>(
        &self,
        rows: impl IntoIterator<Item = (&'r [Value], &'r [AggState])>,
        tz: &TimeZone,
    ) -> Result<ResultSet, QueryError> {
        let view = self.view;
        let mut groups: HashMap<Vec<Value>, Vec<AggState>, foldhash::fast::RandomState> =
            HashMap::default();
        for (key, states) in rows {
            if !self.accepts(key, tz)? {
                continue;
            }
            let new_key: Vec<Value> = key
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if !self.keep[i] {
                        return Value::Null;
                    }
                    match (self.grain, view.bucket == Some(i), v) {
                        (Some(g), true, Value::Timestamp(t)) => Value::Timestamp(g.floor(*t, tz)),
                        _ => v.clone(),
                    }
                })
                .collect();
            match groups.get_mut(&new_key) {
                Some(existing) => view.merge_row(existing, states),
                None => {
                    // Merged into empty states rather than copied: sketches then defer every
                    // merge, the first included (see `crate::hll`).
                    let mut fresh: Vec<AggState> =
                        view.aggs.iter().map(|a| a.kind.new_state()).collect();
                    view.merge_row(&mut fresh, states);
                    groups.insert(new_key, fresh);
                }
            }
        }
        if groups.is_empty() && self.keep.iter().all(|keep| !keep) {
            // Without group columns the answer is one row, as SQL's aggregates over no rows
            // are: counts 0, other aggregates NULL.
            groups.insert(
                vec![Value::Null; view.keys.len()],
                view.aggs.iter().map(|a| a.kind.new_state()).collect(),
            );
        }
        let mut rows = Vec::with_capacity(groups.len());
        for (key, mut states) in groups {
            view.settle_row(&mut states);
            let mut full = view
                .finalize_row(&key, &states, tz)
                .map_err(|e| self.cell_error(&key, &e.column, e.error))?;
            let row: Vec<Value> = self
                .columns
                .iter()
                .map(|&ci| std::mem::replace(&mut full[ci], Value::Null))
                .collect();
            if let Some(f) = &self.row_filter {
                let pass = f
                    .eval(&EvalCtx::row(&row, tz))
                    .map_err(QueryError::FilterFailed)?;
                if pass.as_bool() != Some(true) {
                    continue;
                }
            }
            rows.push(row);
        }
        self.sort(&mut rows);
        if let Some(limit) = self.limit {
            rows.truncate(limit);
        }
        Ok(ResultSet {
            columns: self
                .columns
                .iter()
                .map(|&i| (view.columns[i].name.clone(), view.columns[i].ty))
                .collect(),
            rows,
        })
    }

    fn cell_error(&self, key: &[Value], column: &str, error: EvalError) -> QueryError {
        let group: Vec<String> = self
            .view
            .keys
            .iter()
            .zip(key)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{}={v}", k.name))
            .collect();
        QueryError::Cell {
            view: self.view.name.clone(),
            column: column.to_owned(),
            group: group.join(", "),
            error,
        }
    }

    /// Orders by the requested column (then the group columns), or by the group columns. NULLs
    /// sort last ascending and first descending, as in PostgreSQL, unless `NULLS FIRST|LAST`
    /// says otherwise.
    fn sort(&self, rows: &mut [Vec<Value>]) {
        let key_positions: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, ci)| matches!(self.view.columns[**ci].source, ColumnSource::Key(_)))
            .map(|(pos, _)| pos)
            .collect();
        let cmp_col =
            |a: &Vec<Value>, b: &Vec<Value>, pos: usize, desc: bool, nulls_first: bool| match (
                a[pos].is_null(),
                b[pos].is_null(),
            ) {
                (true, true) => Ordering::Equal,
                (true, false) if nulls_first => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, true) if nulls_first => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ if desc => a[pos].cmp(&b[pos]).reverse(),
                _ => a[pos].cmp(&b[pos]),
            };
        rows.sort_by(|a, b| {
            let mut ord = Ordering::Equal;
            if let Some((pos, desc, nulls_first)) = self.order {
                ord = cmp_col(a, b, pos, desc, nulls_first);
            }
            for &pos in &key_positions {
                if ord != Ordering::Equal {
                    break;
                }
                ord = cmp_col(a, b, pos, false, false);
            }
            ord
        });
    }
}
