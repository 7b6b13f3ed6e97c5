//! The engine: applies batches of events to the views of their stream.
//!
//! `Engine::apply` is the hot loop. For each view of the batch's stream and each event past the
//! view's position it evaluates the `WHERE`, the group key and the aggregate arguments, looks the
//! group up in the view's pending delta and updates each aggregate state. The plan made every
//! choice beforehand, so the loop is straight-line code over precomputed indexes and kinds.
//!
//! `apply` is synchronous and infallible. A view's row-level expressions are compiled lenient
//! ([`Expr::lenient`](crate::expr::Expr::lenient)): an operation that fails on an event (a cast
//! of text that is not a number, a division by zero) yields NULL, the event is applied with it,
//! and the view counts the event in [`ViewDelta::failed`]. An event is never rejected or
//! dropped because of a view.
//!
//! A [`Delta`] is what the engine has applied but the store has not yet flushed: per view, the
//! position of the last applied event and the states of the groups touched since the last flush.
//! The flusher merges those into the stored rows and stores the position in one transaction;
//! after a crash, replaying the events after the stored position rebuilds the same delta.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use jiff::tz::TimeZone;
use smallvec::SmallVec;

use crate::agg::AggState;
use crate::expr::{EvalCtx, EvalError};
use crate::plan::{Catalog, ViewPlan};
use crate::value::Value;

/// A stored event: its position in its stream and its row, in the stream's column order.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub row: Vec<Value>,
}

/// Applies events to views. One engine serves one tenant: buckets use its time zone.
#[derive(Clone, Debug)]
pub struct Engine {
    tz: TimeZone,
    views: Vec<Arc<ViewPlan>>,
    /// For each stream, the indexes of its views.
    by_stream: HashMap<String, Vec<usize>>,
}

/// The values of a group's key, in the order of the view's group columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKey(Box<[Value]>);

impl GroupKey {
    pub fn new(values: Vec<Value>) -> GroupKey {
        GroupKey(values.into_boxed_slice())
    }

    pub fn into_vec(self) -> Vec<Value> {
        self.0.into_vec()
    }
}

impl std::ops::Deref for GroupKey {
    type Target = [Value];

    fn deref(&self) -> &[Value] {
        &self.0
    }
}

impl Hash for GroupKey {
    /// The values only, without a length: every key of one map has the same length, and
    /// [`KeyRef`] must hash the same way.
    fn hash<H: Hasher>(&self, state: &mut H) {
        for v in self.0.iter() {
            v.hash(state);
        }
    }
}

/// A key being looked up, made of values borrowed from the event where possible: a group that
/// exists is found without copying anything.
struct KeyRef<'k, 'v>(&'k [Cow<'v, Value>]);

impl Hash for KeyRef<'_, '_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for v in self.0 {
            v.as_ref().hash(state);
        }
    }
}

impl hashbrown::Equivalent<GroupKey> for KeyRef<'_, '_> {
    fn equivalent(&self, key: &GroupKey) -> bool {
        self.0.len() == key.0.len()
            && self
                .0
                .iter()
                .zip(key.0.iter())
                .all(|(a, b)| a.as_ref() == b)
    }
}

/// Groups by key. foldhash: fast, and seeded per process, so keys from events cannot be chosen
/// to collide.
pub type GroupMap = hashbrown::HashMap<GroupKey, Vec<AggState>, foldhash::fast::RandomState>;

/// The evaluated key of one event.
type KeyValues<'r> = SmallVec<[Cow<'r, Value>; 6]>;
/// Per aggregate: `None` when its FILTER rejected the event, else (argument, time).
type ArgValues<'r> = SmallVec<[Option<(Cow<'r, Value>, Cow<'r, Value>)>; 8]>;

/// What a view has applied and not yet flushed.
#[derive(Debug, Default)]
pub struct ViewDelta {
    /// The sequence number of the last event applied.
    pub position: u64,
    pub groups: GroupMap,
    /// Events that could not be evaluated and were left out of this view.
    pub skipped: u64,
    /// Events for which an expression of the view failed (a cast of text that is not a number,
    /// a division by zero) and gave NULL instead; the events were applied with those NULLs.
    pub failed: u64,
}

/// The unflushed work of every view of an engine, in the engine's view order.
#[derive(Debug, Default)]
pub struct Delta {
    pub views: Vec<ViewDelta>,
}

impl Delta {
    /// Whether no view has unflushed groups.
    pub fn is_empty(&self) -> bool {
        self.views.iter().all(|v| v.groups.is_empty())
    }

    /// Number of unflushed groups.
    pub fn group_count(&self) -> usize {
        self.views.iter().map(|v| v.groups.len()).sum()
    }
}

impl Engine {
    /// An engine for the views of `catalog`, with buckets in `tz`.
    pub fn new(catalog: &Catalog, tz: TimeZone) -> Engine {
        let views: Vec<Arc<ViewPlan>> = catalog.views().cloned().collect();
        let mut by_stream: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, v) in views.iter().enumerate() {
            by_stream.entry(v.stream.clone()).or_default().push(i);
        }
        Engine {
            tz,
            views,
            by_stream,
        }
    }

    /// The time zone buckets are aligned in.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The views, in the order of [`Delta::views`].
    pub fn views(&self) -> &[Arc<ViewPlan>] {
        &self.views
    }

    /// The index of the view called `name`.
    pub fn view_index(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }

    /// An empty delta with each view at the position `position(view name)`.
    pub fn delta(&self, position: impl Fn(&str) -> u64) -> Delta {
        Delta {
            views: self
                .views
                .iter()
                .map(|v| ViewDelta {
                    position: position(&v.name),
                    ..ViewDelta::default()
                })
                .collect(),
        }
    }

    /// The lowest position among the views of `stream`: replay starts after it.
    pub fn min_position(&self, stream: &str, delta: &Delta) -> Option<u64> {
        self.by_stream
            .get(stream)
            .and_then(|idx| idx.iter().map(|&i| delta.views[i].position).min())
    }

    /// Applies events of `stream`, in sequence order, to every view of the stream that has not
    /// applied them yet.
    pub fn apply(&self, stream: &str, events: &[Event], delta: &mut Delta) {
        let Some(indexes) = self.by_stream.get(stream) else {
            return;
        };
        for &vi in indexes {
            let plan = &self.views[vi];
            let view = &mut delta.views[vi];
            let buckets = vec![Cell::new((0, 0)); plan.bucket_slots];
            let failures = Cell::new(0u32);
            for event in events {
                if event.seq <= view.position {
                    continue;
                }
                view.position = event.seq;
                let ctx = EvalCtx {
                    buckets: &buckets,
                    failures: plan.can_fail.then_some(&failures),
                    ..EvalCtx::row(&event.row, &self.tz)
                };
                let mut key = KeyValues::new();
                let mut args = ArgValues::new();
                let outcome = evaluate(plan, &ctx, &mut key, &mut args);
                if failures.get() > 0 {
                    failures.set(0);
                    view.failed += 1;
                }
                match outcome {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => {
                        view.skipped += 1;
                        continue;
                    }
                }
                let states = match view.groups.get_mut(&KeyRef(&key)) {
                    Some(states) => states,
                    None => {
                        let owned = GroupKey(key.iter().map(|v| v.as_ref().clone()).collect());
                        let fresh = plan.aggs.iter().map(|a| a.kind.new_state()).collect();
                        view.groups.entry(owned).or_insert(fresh)
                    }
                };
                for ((state, agg), arg) in states.iter_mut().zip(&plan.aggs).zip(&args) {
                    if let Some((value, time)) = arg {
                        state.update(agg.kind, value, time, event.seq);
                    }
                }
            }
        }
    }
}

/// Evaluates the filter, key and aggregate inputs of one event. Returns whether the event
/// passes the view's `WHERE`. Everything is evaluated before any state changes, so an event that
/// fails changes nothing.
fn evaluate<'r>(
    plan: &'r ViewPlan,
    ctx: &EvalCtx<'r>,
    key: &mut KeyValues<'r>,
    args: &mut ArgValues<'r>,
) -> Result<bool, EvalError> {
    if let Some(filter) = &plan.filter
        && filter.eval_cow(ctx)?.as_bool() != Some(true)
    {
        return Ok(false);
    }
    for k in &plan.keys {
        key.push(k.expr.eval_cow(ctx)?);
    }
    for a in &plan.aggs {
        if let Some(f) = &a.filter
            && f.eval_cow(ctx)?.as_bool() != Some(true)
        {
            args.push(None);
            continue;
        }
        let value = match &a.arg {
            Some(e) => e.eval_cow(ctx)?,
            None => Cow::Owned(Value::Null),
        };
        let time = match &a.time {
            Some(e) => e.eval_cow(ctx)?,
            None => Cow::Owned(Value::Null),
        };
        args.push(Some((value, time)));
    }
    Ok(true)
}
