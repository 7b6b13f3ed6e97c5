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
use crate::sql::compile_key_filter;
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
    /// A condition on group columns.
    pub filter: Option<String>,
    /// Order by this column, descending when the flag is set.
    pub order_by: Option<(String, bool)>,
    pub limit: Option<usize>,
}

/// A query that cannot run, with a message for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryError(pub String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
    filter: Option<Expr>,
    /// Which keys survive the re-grouping.
    keep: Vec<bool>,
    grain: Option<Interval>,
    /// The columns of the result: indexes into `view.columns`.
    columns: Vec<usize>,
    order: Option<(usize, bool)>,
    limit: Option<usize>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

impl<'a> QueryPlan<'a> {
    /// Checks a request against the view.
    pub fn new(view: &'a ViewPlan, req: &QueryRequest) -> Result<QueryPlan<'a>, QueryError> {
        let err = |m: String| Err(QueryError(m));
        let bucket = view.bucket;
        if (req.from.is_some() || req.to.is_some() || req.grain.is_some()) && bucket.is_none() {
            return err(format!(
                "view {} has no time bucket column, so --from, --to and --grain do not apply",
                view.name
            ));
        }
        let mut keep = vec![true; view.keys.len()];
        if let Some(names) = &req.group_by {
            keep = vec![false; view.keys.len()];
            for name in names {
                match view.keys.iter().position(|k| &k.name == name) {
                    Some(i) => keep[i] = true,
                    None => {
                        let keys: Vec<&str> = view.keys.iter().map(|k| k.name.as_str()).collect();
                        return err(format!(
                            "--group-by {name} is not a group column of view {}; its group columns are: {}",
                            view.name,
                            keys.join(", ")
                        ));
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
                return err(format!(
                    "view {} has {width} buckets, which do not fit in {g} buckets; ask for a grain that is a multiple of {width}",
                    view.name
                ));
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
                        return err(format!(
                            "column {} depends on group column {key}, which --group-by leaves out",
                            c.name
                        ));
                    }
                }
                ColumnSource::Key(_) => {}
            }
            columns.push(i);
        }
        let order = match &req.order_by {
            None => None,
            Some((name, desc)) => match columns.iter().position(|&i| view.columns[i].name == *name)
            {
                Some(pos) => Some((pos, *desc)),
                None => return err(format!("--order-by {name} is not a column of the result")),
            },
        };
        let filter = match &req.filter {
            None => None,
            Some(text) => Some(
                compile_key_filter(view, text).map_err(|e| QueryError(format!("--where: {e}")))?,
            ),
        };
        Ok(QueryPlan {
            view,
            filter,
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
            let pass = filter
                .eval(&ctx)
                .map_err(|e| QueryError(format!("--where: {e}")))?;
            return Ok(pass.as_bool() == Some(true));
        }
        Ok(true)
    }

    /// Runs the query over `rows`: every row is a group key and its states. Rows with equal
    /// keys (stored and pending) are merged like any rows that re-grouping brings together.
    pub fn run(
        &self,
        rows: impl IntoIterator<Item = (Vec<Value>, Vec<AggState>)>,
        tz: &TimeZone,
    ) -> Result<ResultSet, QueryError> {
        let view = self.view;
        let mut groups: HashMap<Vec<Value>, Vec<AggState>, foldhash::fast::RandomState> =
            HashMap::default();
        for (key, states) in rows {
            if !self.accepts(&key, tz)? {
                continue;
            }
            let new_key: Vec<Value> = key
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    if !self.keep[i] {
                        return Value::Null;
                    }
                    match (self.grain, view.bucket == Some(i), &v) {
                        (Some(g), true, Value::Timestamp(t)) => Value::Timestamp(g.floor(*t, tz)),
                        _ => v,
                    }
                })
                .collect();
            match groups.get_mut(&new_key) {
                Some(existing) => {
                    for ((into, from), agg) in existing.iter_mut().zip(&states).zip(&view.aggs) {
                        into.merge(agg.kind, from);
                    }
                }
                None => {
                    groups.insert(new_key, states);
                }
            }
        }
        let mut rows = Vec::with_capacity(groups.len());
        for (key, states) in groups {
            let aggs = states
                .iter()
                .zip(&view.aggs)
                .map(|(s, a)| {
                    s.finalize(a.kind)
                        .map_err(|e| self.cell_error(&key, &a.display, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ctx = EvalCtx {
                row: &[],
                keys: &key,
                aggs: &aggs,
                tz,
                buckets: &[],
            };
            let mut row = Vec::with_capacity(self.columns.len());
            for &ci in &self.columns {
                let column = &view.columns[ci];
                row.push(match column.source {
                    ColumnSource::Key(k) => key[k].clone(),
                    ColumnSource::Output(o) => view.outputs[o]
                        .expr
                        .eval(&ctx)
                        .map_err(|e| self.cell_error(&key, &column.name, e))?,
                });
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

    fn cell_error(&self, key: &[Value], column: &str, e: EvalError) -> QueryError {
        let group: Vec<String> = self
            .view
            .keys
            .iter()
            .zip(key)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{}={v}", k.name))
            .collect();
        let hint = match e {
            EvalError::Overflow(_) => "; cast the argument to a wider DECIMAL or to DOUBLE",
            EvalError::DivisionByZero => "; guard the divisor with nullif(x, 0)",
            EvalError::InvalidCast { .. } => "",
        };
        QueryError(format!(
            "view {} column {column}: {e} in group ({}){hint}",
            self.view.name,
            group.join(", ")
        ))
    }

    /// Orders by the requested column (then the group columns), or by the group columns. NULLs
    /// sort last ascending and first descending, as in PostgreSQL.
    fn sort(&self, rows: &mut [Vec<Value>]) {
        let key_positions: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, ci)| matches!(self.view.columns[**ci].source, ColumnSource::Key(_)))
            .map(|(pos, _)| pos)
            .collect();
        let cmp_col = |a: &Vec<Value>, b: &Vec<Value>, pos: usize, desc: bool| -> Ordering {
            let ord = match (a[pos].is_null(), b[pos].is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => a[pos].cmp(&b[pos]),
            };
            if desc { ord.reverse() } else { ord }
        };
        rows.sort_by(|a, b| {
            let mut ord = Ordering::Equal;
            if let Some((pos, desc)) = self.order {
                ord = cmp_col(a, b, pos, desc);
            }
            for &pos in &key_positions {
                if ord != Ordering::Equal {
                    break;
                }
                ord = cmp_col(a, b, pos, false);
            }
            ord
        });
    }
}
