//! Evaluating an alert, with no IO: which buckets it looks at (newest first, the one filling
//! now first), each group's values over them from a view answer, and the verdict.
//!
//! `above` and `change_pct_above` read the bucket still filling, so they fire the moment it
//! crosses; `below` and `change_pct_below` read the last complete bucket (one that has just
//! begun is always low). `for = n` asks the condition to hold in n consecutive buckets ending
//! at the bucket read. A group without events in a bucket has the value of its aggregate over
//! no rows there (0 for counts and sums, else NULL, which never satisfies a condition).

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use tally_views::expr::Expr;
use tally_views::{AggKind, AggState, Interval, ResultSet, TimeZone, Timestamp, Value, ViewPlan};

use super::spec::Condition;
use crate::output::json_value;

/// The buckets an alert reads, newest first: `starts[0]` is the bucket holding `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub starts: Vec<Timestamp>,
}

impl Window {
    pub(crate) fn new(
        condition: Condition,
        for_buckets: u32,
        grain: Interval,
        tz: &TimeZone,
        now: Timestamp,
    ) -> Window {
        let n = for_buckets as usize
            + usize::from(condition.is_change())
            + usize::from(!condition.reads_current());
        let mut starts = Vec::with_capacity(n);
        let mut start = grain.floor(now, tz);
        starts.push(start);
        while starts.len() < n {
            start = grain.floor(Timestamp(start.0 - 1), tz);
            starts.push(start);
        }
        Window { starts }
    }

    /// The view query's range: from the oldest bucket to the end of the one filling now (the
    /// view's own, finer buckets in it all count).
    pub(crate) fn range(&self, grain: Interval, tz: &TimeZone) -> (Timestamp, Timestamp) {
        let current = self.starts[0];
        // The next bucket's start: a local day or month may be an hour shorter or longer than
        // its width in UTC, so step past the boundary and floor back to it.
        let end = match grain {
            Interval::Micros(_) => grain.after(current),
            Interval::Days(_) | Interval::Months(_) => {
                let end = grain.floor(Timestamp(grain.after(current).0 + 2 * 3_600_000_000), tz);
                if end > current {
                    end
                } else {
                    grain.after(current)
                }
            }
        };
        (*self.starts.last().unwrap_or(&current), end)
    }
}

/// One alert group's values over a window, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The group's columns and values, as the notification shows them.
    pub group: Map<String, Json>,
    pub values: Vec<Option<f64>>,
}

/// A value as a number (`None` for NULL and non-numbers).
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) if d.is_finite() => Some(*d),
        Value::Decimal(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

/// The value of output column `value` for a group with no rows in a bucket.
pub(crate) fn empty_value(plan: &ViewPlan, value: &str, tz: &TimeZone) -> Option<f64> {
    let o = plan.outputs.iter().position(|o| o.name == value)?;
    if let Expr::Agg { index, .. } = &plan.outputs[o].expr
        && matches!(
            plan.aggs[*index].kind,
            AggKind::CountStar
                | AggKind::Count
                | AggKind::SumInt
                | AggKind::SumDecimal { .. }
                | AggKind::SumDouble
                | AggKind::CountDistinct
                | AggKind::ApproxCountDistinct
        )
    {
        return Some(0.0);
    }
    let states: Vec<AggState> = plan.agg_kinds().map(AggKind::new_state).collect();
    let key = vec![Value::Null; plan.keys.len()];
    let aggs: Vec<Value> = states
        .iter()
        .zip(&plan.aggs)
        .map(|(s, a)| s.finalize(a.kind).unwrap_or(Value::Null))
        .collect();
    number(&plan.output_value(o, &key, &aggs, tz).ok()?)
}

/// Each group's series from a view answer over the window, keyed by the group's JSON text;
/// buckets a group has no row in hold `empty`.
pub(crate) fn series(
    answer: &ResultSet,
    time_column: &str,
    group_columns: &[String],
    value: &str,
    window: &Window,
    empty: Option<f64>,
) -> BTreeMap<String, Series> {
    let position = |name: &str| answer.columns.iter().position(|(c, _)| c == name);
    let (Some(t), Some(v)) = (position(time_column), position(value)) else {
        return BTreeMap::new();
    };
    let groups: Vec<(String, usize)> = group_columns
        .iter()
        .filter_map(|g| position(g).map(|i| (g.clone(), i)))
        .collect();
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for row in &answer.rows {
        let Value::Timestamp(start) = &row[t] else {
            continue;
        };
        let Some(k) = window.starts.iter().position(|s| s == start) else {
            continue;
        };
        let group: Map<String, Json> = groups
            .iter()
            .map(|(name, i)| (name.clone(), json_value(&row[*i])))
            .collect();
        let id = group_id(&group);
        let entry = out.entry(id).or_insert_with(|| Series {
            group,
            values: vec![empty; window.starts.len()],
        });
        entry.values[k] = number(&row[v]);
    }
    // With no group columns there is one group, whether or not the window holds rows.
    if group_columns.is_empty() {
        out.entry(group_id(&Map::new())).or_insert_with(|| Series {
            group: Map::new(),
            values: vec![empty; window.starts.len()],
        });
    }
    out
}

/// A group's identity: its JSON text (columns in the view's order).
pub(crate) fn group_id(group: &Map<String, Json>) -> String {
    Json::Object(group.clone()).to_string()
}

/// Whether an alert's condition holds for a series, and the value it compared (the change in %
/// for the `change_pct_` conditions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub holds: bool,
    pub value: Option<f64>,
}

/// The verdict of `condition` against `threshold` over `for_buckets` buckets of `values`
/// (newest first, as [`Window`] orders them).
pub fn verdict(
    condition: Condition,
    threshold: f64,
    for_buckets: u32,
    values: &[Option<f64>],
) -> Verdict {
    let first = usize::from(!condition.reads_current());
    let measure = |k: usize| -> Option<f64> {
        let v = (*values.get(k)?)?;
        if !condition.is_change() {
            return Some(v);
        }
        let before = (*values.get(k + 1)?)?;
        (before != 0.0).then(|| (v - before) / before.abs() * 100.0)
    };
    let crosses = |m: f64| match condition {
        Condition::Above | Condition::ChangePctAbove => m > threshold,
        Condition::Below | Condition::ChangePctBelow => m < threshold,
    };
    let holds = (first..first + for_buckets as usize).all(|k| measure(k).is_some_and(crosses));
    Verdict {
        holds,
        value: measure(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn windows_count_back_from_the_bucket_filling_now() {
        let minute = Interval::parse("1 minute").unwrap();
        let now = ts("2026-03-01T10:05:30Z");
        let w = Window::new(Condition::Above, 1, minute, &TimeZone::UTC, now);
        assert_eq!(w.starts, [ts("2026-03-01T10:05:00Z")]);
        let w = Window::new(Condition::ChangePctBelow, 2, minute, &TimeZone::UTC, now);
        assert_eq!(
            w.starts,
            [
                ts("2026-03-01T10:05:00Z"),
                ts("2026-03-01T10:04:00Z"),
                ts("2026-03-01T10:03:00Z"),
                ts("2026-03-01T10:02:00Z"),
            ]
        );
        assert_eq!(
            w.range(minute, &TimeZone::UTC),
            (ts("2026-03-01T10:02:00Z"), ts("2026-03-01T10:06:00Z"))
        );
        // Days are local: New York's day starts at 05:00 UTC in winter.
        let ny = TimeZone::get("America/New_York").unwrap();
        let day = Interval::parse("1 day").unwrap();
        let w = Window::new(Condition::Below, 1, day, &ny, ts("2026-01-10T03:00:00Z"));
        assert_eq!(
            w.starts,
            [ts("2026-01-09T05:00:00Z"), ts("2026-01-08T05:00:00Z")]
        );
        assert_eq!(w.range(day, &ny).1, ts("2026-01-10T05:00:00Z"));
        // A 23-hour day (DST begins on 8 March 2026) and the day after it.
        let w = Window::new(Condition::Above, 1, day, &ny, ts("2026-03-08T12:00:00Z"));
        assert_eq!(
            w.range(day, &ny),
            (ts("2026-03-08T05:00:00Z"), ts("2026-03-09T04:00:00Z"))
        );
        let month = Interval::parse("1 month").unwrap();
        let w = Window::new(Condition::Above, 1, month, &ny, ts("2026-03-08T12:00:00Z"));
        assert_eq!(
            w.range(month, &ny),
            (ts("2026-03-01T05:00:00Z"), ts("2026-04-01T04:00:00Z"))
        );
    }

    #[test]
    fn verdicts_read_the_right_buckets() {
        let v = |c, t, f, vals: &[Option<f64>]| verdict(c, t, f, vals);
        // above: the current bucket, strictly above.
        assert!(v(Condition::Above, 100.0, 1, &[Some(101.0)]).holds);
        assert!(!v(Condition::Above, 100.0, 1, &[Some(100.0)]).holds);
        assert!(!v(Condition::Above, 100.0, 1, &[None]).holds);
        // for = 2: this bucket and the one before.
        assert!(!v(Condition::Above, 1.0, 2, &[Some(5.0), Some(1.0)]).holds);
        assert!(v(Condition::Above, 1.0, 2, &[Some(5.0), Some(2.0)]).holds);
        // below: the last complete bucket, whatever the current one holds.
        let below = v(Condition::Below, 10.0, 1, &[Some(0.0), Some(20.0)]);
        assert_eq!(
            below,
            Verdict {
                holds: false,
                value: Some(20.0)
            }
        );
        assert!(v(Condition::Below, 10.0, 1, &[Some(50.0), Some(3.0)]).holds);
        // change in % against the bucket before; no change from zero.
        let up = v(
            Condition::ChangePctAbove,
            50.0,
            1,
            &[Some(16.0), Some(10.0)],
        );
        assert_eq!(
            up,
            Verdict {
                holds: true,
                value: Some(60.0)
            }
        );
        assert!(!v(Condition::ChangePctAbove, 50.0, 1, &[Some(16.0), Some(0.0)]).holds);
        let down = v(
            Condition::ChangePctBelow,
            -50.0,
            1,
            &[Some(99.0), Some(4.0), Some(10.0)],
        );
        assert_eq!(
            down,
            Verdict {
                holds: true,
                value: Some(-60.0)
            }
        );
        assert!(
            !v(
                Condition::ChangePctBelow,
                -50.0,
                1,
                &[Some(0.0), Some(6.0), Some(10.0)]
            )
            .holds
        );
    }
}
