//! The oracle: a view computed from scratch over raw events, without any state merging.
//!
//! Differential tests compare every maintained view with this recomputation: the incremental
//! engine (any batch split, any restart, stored states merged with deltas) must give the same
//! answer as grouping all events at once and computing each aggregate from its full list of
//! inputs. Exact aggregates must match exactly; floating-point ones to 1e-9 relative error (sums
//! of doubles depend on order); sketches within their stated error bounds.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;

use crate::agg::{AggKind, Moment};
use crate::decimal::{Decimal, I256};
use crate::engine::Event;
use crate::expr::{EvalCtx, EvalError, Expr};
use crate::plan::{ColumnSource, ViewPlan};
use crate::query::ResultSet;
use crate::sketch::within_guarantee;
use crate::value::{Type, Value};

/// What a cell of the view must hold.
#[derive(Clone, Debug)]
pub enum Expected {
    Exact(Value),
    /// A double within a relative tolerance.
    Near(f64, f64),
    /// A percentile estimate: within 1 % of the exact order statistics.
    Quantile {
        sorted: Vec<f64>,
        q: f64,
        continuous: bool,
    },
    /// A distinct-count estimate of this exact count.
    Distinct(i64),
    /// The cell's computation fails (the query must report an error).
    Error(EvalError),
}

impl Expected {
    /// Whether `actual` is an acceptable value for this cell.
    pub fn accepts(&self, actual: &Value) -> bool {
        match (self, actual) {
            (Expected::Exact(v), a) => v == a,
            (Expected::Near(v, rel), Value::Double(a)) => {
                (v - a).abs() <= rel * v.abs().max(a.abs()) + 1e-12
            }
            (Expected::Quantile { sorted, .. }, Value::Null) => sorted.is_empty(),
            (
                Expected::Quantile {
                    sorted,
                    q,
                    continuous,
                },
                Value::Double(a),
            ) => !sorted.is_empty() && within_guarantee(sorted, *q, *a, *continuous),
            (Expected::Distinct(n), Value::Int(a)) => {
                // Relative standard error at lg_k = 12 is 1.63 %; allow 4 standard errors, and
                // small sets (kept as exact coupon lists) within 1.
                let tolerance = (*n as f64 * 0.0652).max(1.0);
                ((*n - *a) as f64).abs() <= tolerance
            }
            (Expected::Near(_, _), _)
            | (Expected::Distinct(_), _)
            | (Expected::Quantile { .. }, _) => false,
            (Expected::Error(_), _) => false,
        }
    }
}

/// One expected row: its group key and a cell per view column.
#[derive(Clone, Debug)]
pub struct ExpectedRow {
    pub key: Vec<Value>,
    pub cells: Vec<Expected>,
}

struct Input {
    value: Value,
    time: Value,
    seq: u64,
}

/// Recomputes `plan` over `events` (all of the view's stream, in any order).
pub fn recompute(plan: &ViewPlan, events: &[Event], tz: &TimeZone) -> Vec<ExpectedRow> {
    let mut groups: BTreeMap<Vec<Value>, Vec<Vec<Input>>> = BTreeMap::new();
    for event in events {
        let ctx = EvalCtx::row(&event.row, tz);
        let pass = match &plan.filter {
            Some(f) => f.eval(&ctx).ok().and_then(|v| v.as_bool()) == Some(true),
            None => true,
        };
        if !pass {
            continue;
        }
        let Ok(key) = plan
            .keys
            .iter()
            .map(|k| k.expr.eval(&ctx))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let inputs = groups
            .entry(key)
            .or_insert_with(|| plan.aggs.iter().map(|_| Vec::new()).collect());
        for (agg, list) in plan.aggs.iter().zip(inputs.iter_mut()) {
            let passes = match &agg.filter {
                Some(f) => f.eval(&ctx).ok().and_then(|v| v.as_bool()) == Some(true),
                None => true,
            };
            if !passes {
                continue;
            }
            let value = agg
                .arg
                .as_ref()
                .map(|e| e.eval(&ctx).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            let time = agg
                .time
                .as_ref()
                .map(|e| e.eval(&ctx).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            list.push(Input {
                value,
                time,
                seq: event.seq,
            });
        }
    }
    groups
        .into_iter()
        .map(|(key, inputs)| {
            let aggs: Vec<Expected> = plan
                .aggs
                .iter()
                .zip(&inputs)
                .map(|(a, list)| exact(a.kind, list))
                .collect();
            let cells = plan
                .columns
                .iter()
                .map(|c| match c.source {
                    ColumnSource::Key(k) => Expected::Exact(key[k].clone()),
                    ColumnSource::Output(o) => output_cell(plan, o, &key, &aggs, tz),
                })
                .collect();
            ExpectedRow { key, cells }
        })
        .collect()
}

fn output_cell(
    plan: &ViewPlan,
    o: usize,
    key: &[Value],
    aggs: &[Expected],
    tz: &TimeZone,
) -> Expected {
    let (expr, ty) = (&plan.outputs[o].expr, plan.outputs[o].ty);
    if let Expr::Agg { index, .. } = expr {
        return aggs[*index].clone();
    }
    // An expression over aggregates: evaluate it over the exact values.
    let mut approximate = false;
    let mut values = Vec::new();
    for a in aggs {
        values.push(match a {
            Expected::Exact(v) => v.clone(),
            Expected::Near(v, _) => {
                approximate = true;
                Value::Double(*v)
            }
            Expected::Distinct(n) => {
                approximate = true;
                Value::Int(*n)
            }
            Expected::Quantile {
                sorted,
                q,
                continuous,
            } => {
                approximate = true;
                let v = if *continuous {
                    crate::sketch::exact_percentile_cont(sorted, *q)
                } else {
                    crate::sketch::exact_percentile_disc(sorted, *q)
                };
                v.map(Value::Double).unwrap_or(Value::Null)
            }
            Expected::Error(e) => return Expected::Error(e.clone()),
        });
    }
    match plan.output_value(o, key, &values, tz) {
        Err(e) => Expected::Error(e),
        Ok(Value::Double(d)) => Expected::Near(d, if approximate { 0.07 } else { 1e-9 }),
        Ok(v) if approximate && ty != Type::Double => Expected::Exact(v),
        Ok(v) => Expected::Exact(v),
    }
}

fn exact(kind: AggKind, inputs: &[Input]) -> Expected {
    let values: Vec<&Value> = inputs
        .iter()
        .map(|i| &i.value)
        .filter(|v| !v.is_null())
        .collect();
    let doubles = || {
        values
            .iter()
            .filter_map(|v| v.as_f64())
            .collect::<Vec<f64>>()
    };
    match kind {
        AggKind::CountStar => Expected::Exact(Value::Int(inputs.len() as i64)),
        AggKind::Count => Expected::Exact(Value::Int(values.len() as i64)),
        AggKind::SumInt => {
            if values.is_empty() {
                return Expected::Exact(Value::Null);
            }
            let sum: i128 = values
                .iter()
                .map(|v| {
                    if let Value::Int(i) = v {
                        i128::from(*i)
                    } else {
                        0
                    }
                })
                .sum();
            match i64::try_from(sum) {
                Ok(s) => Expected::Exact(Value::Int(s)),
                Err(_) => Expected::Error(EvalError::Overflow(Type::BigInt)),
            }
        }
        AggKind::SumDecimal { scale } | AggKind::AvgDecimal { scale, .. } => {
            let mut sum = I256::ZERO;
            for v in &values {
                if let Value::Decimal(d) = v {
                    sum = sum + I256::from(d.rescale(scale).map(Decimal::mantissa).unwrap_or(0));
                }
            }
            if values.is_empty() {
                return Expected::Exact(Value::Null);
            }
            let (result, out_scale) = match kind {
                AggKind::AvgDecimal { out_scale, .. } => (
                    sum.mul_pow10(out_scale - scale)
                        .div_round_i128(values.len() as i128),
                    out_scale,
                ),
                _ => (sum, scale),
            };
            match Decimal::from_wide(result, out_scale) {
                Ok(d) => Expected::Exact(Value::Decimal(d)),
                Err(_) => Expected::Error(EvalError::Overflow(Type::Decimal {
                    precision: 38,
                    scale: out_scale,
                })),
            }
        }
        AggKind::SumDouble => {
            if values.is_empty() {
                return Expected::Exact(Value::Null);
            }
            Expected::Near(doubles().iter().sum(), 1e-9)
        }
        AggKind::AvgInt | AggKind::AvgDouble => {
            if values.is_empty() {
                return Expected::Exact(Value::Null);
            }
            let d = doubles();
            Expected::Near(d.iter().sum::<f64>() / d.len() as f64, 1e-9)
        }
        AggKind::Moment(m) => {
            let d = doubles();
            let n = d.len() as f64;
            let (divisor, root) = match m {
                Moment::VarSamp => (n - 1.0, false),
                Moment::VarPop => (n, false),
                Moment::StddevSamp => (n - 1.0, true),
                Moment::StddevPop => (n, true),
            };
            if divisor <= 0.0 {
                return Expected::Exact(Value::Null);
            }
            let mean = d.iter().sum::<f64>() / n;
            let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / divisor;
            Expected::Near(if root { var.sqrt() } else { var }, 1e-6)
        }
        AggKind::Min => Expected::Exact(
            values
                .iter()
                .min()
                .map(|v| (*v).clone())
                .unwrap_or(Value::Null),
        ),
        AggKind::Max => Expected::Exact(
            values
                .iter()
                .max()
                .map(|v| (*v).clone())
                .unwrap_or(Value::Null),
        ),
        AggKind::CountDistinct => Expected::Exact(Value::Int(
            values.iter().collect::<BTreeSet<_>>().len() as i64,
        )),
        AggKind::ApproxCountDistinct => {
            Expected::Distinct(values.iter().collect::<BTreeSet<_>>().len() as i64)
        }
        AggKind::Percentile { q, continuous } => {
            let mut sorted = doubles();
            sorted.sort_by(f64::total_cmp);
            Expected::Quantile {
                sorted,
                q,
                continuous,
            }
        }
        AggKind::First | AggKind::Last => {
            let timed = inputs.iter().filter_map(|i| match i.time {
                Value::Timestamp(t) => Some(((t, i.seq), &i.value)),
                _ => None,
            });
            let pick = if kind == AggKind::First {
                timed.min_by_key(|(k, _)| *k)
            } else {
                timed.max_by_key(|(k, _)| *k)
            };
            Expected::Exact(pick.map(|(_, v)| v.clone()).unwrap_or(Value::Null))
        }
        AggKind::BoolAnd => Expected::Exact(if values.is_empty() {
            Value::Null
        } else {
            Value::Bool(values.iter().all(|v| v.as_bool() == Some(true)))
        }),
        AggKind::BoolOr => Expected::Exact(if values.is_empty() {
            Value::Null
        } else {
            Value::Bool(values.iter().any(|v| v.as_bool() == Some(true)))
        }),
    }
}

/// Checks a full, un-regrouped query result of `plan` against the recomputation. Rows must be
/// in group-key order, as queries return them.
pub fn compare(
    plan: &ViewPlan,
    expected: &[ExpectedRow],
    actual: &ResultSet,
) -> Result<(), String> {
    let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
    let actual_names: Vec<&str> = actual.columns.iter().map(|(n, _)| n.as_str()).collect();
    if names != actual_names {
        return Err(format!("columns {actual_names:?}, expected {names:?}"));
    }
    let key_positions: Vec<(usize, usize)> = plan
        .columns
        .iter()
        .enumerate()
        .filter_map(|(pos, c)| match c.source {
            ColumnSource::Key(k) => Some((pos, k)),
            ColumnSource::Output(_) => None,
        })
        .collect();
    let mut by_key: BTreeMap<Vec<Value>, &Vec<Value>> = BTreeMap::new();
    for row in &actual.rows {
        let mut key = vec![Value::Null; plan.keys.len()];
        for &(pos, k) in &key_positions {
            key[k] = row[pos].clone();
        }
        if by_key.insert(key.clone(), row).is_some() {
            return Err(format!("view {}: group {key:?} appears twice", plan.name));
        }
    }
    if by_key.len() != expected.len() {
        let missing: Vec<_> = expected
            .iter()
            .filter(|e| !by_key.contains_key(&e.key))
            .map(|e| &e.key)
            .take(3)
            .collect();
        return Err(format!(
            "view {}: {} groups, expected {} (missing e.g. {missing:?})",
            plan.name,
            by_key.len(),
            expected.len()
        ));
    }
    for row in expected {
        let Some(actual_row) = by_key.get(&row.key) else {
            return Err(format!(
                "view {}: group {:?} is missing",
                plan.name, row.key
            ));
        };
        for ((cell, value), name) in row.cells.iter().zip(actual_row.iter()).zip(&names) {
            if !cell.accepts(value) {
                return Err(format!(
                    "view {} group {:?} column {name}: got {value:?}, expected {cell:?}",
                    plan.name, row.key
                ));
            }
        }
    }
    Ok(())
}
