//! The engine: applies batches of events to the views of their stream.
//!
//! `Engine::apply` is the hot loop. For each view of the batch's stream and each event past the
//! view's position it evaluates the `WHERE`, the group key and the aggregate arguments, looks the
//! group up in the view's pending delta and updates each aggregate state. The plan made every
//! choice beforehand, so the loop is straight-line code over precomputed indexes and kinds.
//! [`Engine::new`] turns the plan's row-level expressions into `Fast` forms once: the shapes
//! nearly every view uses (a column, a text column compared with a literal, the time bucket of
//! a column: `Simple`) read the row without the expression interpreter. A view whose expressions
//! are all simple and cannot fail (nearly every view) is applied by `apply_simple`, whose keys
//! and inputs are `Part`s — a reference into the row or a bucket's start, nothing to drop — and
//! which changes the delta exactly as the general loop would (a unit test holds the two equal).
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
use crate::expr::{CmpOp, EvalCtx, EvalError, Expr};
use crate::plan::{Catalog, ViewPlan};
use crate::time::Interval;
use crate::value::{SmolStr, Timestamp, Value};

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
    /// Per view, its row-level expressions in the form the hot loop evaluates.
    fast: Vec<FastView>,
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

/// The states of the group `$lookup` (a [`KeyRef`] or [`PartsRef`]) in `$view`, created empty
/// with the key `$owned` (evaluated only then) if the group is new. A group that exists is found
/// without copying the key. (A macro: as a function returning the reference, the lookup and the
/// insert would need two probes to satisfy the borrow checker.)
macro_rules! group {
    ($view:expr, $plan:expr, $lookup:expr, $owned:expr) => {
        match $view.groups.get_mut(&$lookup) {
            Some(states) => states,
            None => {
                let fresh = $plan.aggs.iter().map(|a| a.kind.new_state()).collect();
                $view.groups.entry($owned).or_insert(fresh)
            }
        }
    };
}

impl Engine {
    /// An engine for the views of `catalog`, with buckets in `tz`.
    pub fn new(catalog: &Catalog, tz: TimeZone) -> Engine {
        let views: Vec<Arc<ViewPlan>> = catalog.views().cloned().collect();
        let mut by_stream: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, v) in views.iter().enumerate() {
            by_stream.entry(v.stream.clone()).or_default().push(i);
        }
        let fast = views.iter().map(|v| FastView::new(v)).collect();
        Engine {
            tz,
            views,
            fast,
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
            let fast = &self.fast[vi];
            let view = &mut delta.views[vi];
            let buckets = vec![Cell::new((0, 0)); plan.bucket_slots];
            let failures = Cell::new(0u32);
            // Made once per view; each event only points it at its row.
            let mut ctx = EvalCtx {
                buckets: &buckets,
                failures: plan.can_fail.then_some(&failures),
                ..EvalCtx::row(&[], &self.tz)
            };
            if let Some(simple) = &fast.simple {
                apply_simple(plan, simple, &mut ctx, events, view);
                continue;
            }
            for event in events {
                if event.seq <= view.position {
                    continue;
                }
                view.position = event.seq;
                ctx.row = &event.row;
                let mut key = KeyValues::new();
                if !plan.can_fail {
                    // Nothing can fail: find the group, then update each state as its input is
                    // evaluated, without holding the inputs of every aggregate first.
                    if !evaluate_key(fast, &ctx, &mut key) {
                        continue;
                    }
                    let states = group!(view, plan, KeyRef(&key), owned_key(&key));
                    for ((state, agg), inputs) in states.iter_mut().zip(&plan.aggs).zip(&fast.aggs)
                    {
                        if let Some(f) = &inputs.filter
                            && f.eval(&ctx).ok().and_then(|v| v.as_bool()) != Some(true)
                        {
                            continue;
                        }
                        // An input that fails (it cannot here, but the type says it could)
                        // leaves the state as it is.
                        let value = match &inputs.arg {
                            Some(e) => match e.eval(&ctx) {
                                Ok(v) => v,
                                Err(_) => continue,
                            },
                            None => Cow::Borrowed(&NULL),
                        };
                        let time = match &inputs.time {
                            Some(e) => match e.eval(&ctx) {
                                Ok(v) => v,
                                Err(_) => continue,
                            },
                            None => Cow::Borrowed(&NULL),
                        };
                        state.update(agg.kind, &value, &time, event.seq);
                    }
                    continue;
                }
                let mut args = ArgValues::new();
                let outcome = evaluate(fast, &ctx, &mut key, &mut args);
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
                let states = group!(view, plan, KeyRef(&key), owned_key(&key));
                for ((state, agg), arg) in states.iter_mut().zip(&plan.aggs).zip(&args) {
                    if let Some((value, time)) = arg {
                        state.update(agg.kind, value, time, event.seq);
                    }
                }
            }
        }
    }
}

/// The NULL an aggregate without an argument (`count(*)`) or a time reads.
static NULL: Value = Value::Null;

/// The owned key of a new group.
fn owned_key(key: &[Cow<'_, Value>]) -> GroupKey {
    GroupKey(key.iter().map(|v| v.as_ref().clone()).collect())
}

/// [`Engine::apply`] for one view whose row-level expressions are all [`Simple`] and cannot fail
/// (nearly every view): each event's key is a few [`Part`]s, which cost nothing to drop, and
/// each aggregate reads its inputs as parts too. It changes the delta exactly as the general
/// loop would.
#[inline(always)]
fn apply_simple<'r>(
    plan: &ViewPlan,
    simple: &'r SimpleView,
    ctx: &mut EvalCtx<'r>,
    events: &'r [Event],
    view: &mut ViewDelta,
) {
    let mut key: SmallVec<[Part<'r>; 6]> = SmallVec::new();
    for event in events {
        if event.seq <= view.position {
            continue;
        }
        view.position = event.seq;
        ctx.row = &event.row;
        if let Some(filter) = &simple.filter
            && !filter.part(ctx).is_true()
        {
            continue;
        }
        key.clear();
        for k in &simple.keys {
            key.push(k.part(ctx));
        }
        let states = group!(
            view,
            plan,
            PartsRef(&key),
            GroupKey(key.iter().map(|p| p.to_value()).collect())
        );
        for ((state, agg), inputs) in states.iter_mut().zip(&plan.aggs).zip(&simple.aggs) {
            if let Some(f) = &inputs.filter
                && !f.part(ctx).is_true()
            {
                continue;
            }
            let value = inputs
                .arg
                .as_ref()
                .map_or(Part::Value(&NULL), |e| e.part(ctx));
            let time = inputs
                .time
                .as_ref()
                .map_or(Part::Value(&NULL), |e| e.part(ctx));
            value.with(|value| time.with(|time| state.update(agg.kind, value, time, event.seq)));
        }
    }
}

/// One value a [`Simple`] expression gives for an event: a value of the event's row (or a
/// constant), or the start of a time bucket, which the row does not hold. `Copy`: an event's key
/// costs nothing to drop.
#[derive(Clone, Copy, Debug)]
enum Part<'r> {
    Value(&'r Value),
    Time(Timestamp),
}

impl<'r> Part<'r> {
    /// Whether this is `TRUE` (a filter passes), as `as_bool() == Some(true)` says of the value.
    #[inline(always)]
    fn is_true(self) -> bool {
        matches!(self, Part::Value(Value::Bool(true)))
    }

    /// Calls `f` with the part as a value.
    #[inline(always)]
    fn with<R>(self, f: impl FnOnce(&Value) -> R) -> R {
        match self {
            Part::Value(v) => f(v),
            Part::Time(t) => f(&Value::Timestamp(t)),
        }
    }

    fn to_value(self) -> Value {
        match self {
            Part::Value(v) => v.clone(),
            Part::Time(t) => Value::Timestamp(t),
        }
    }

    fn into_cow(self) -> Cow<'r, Value> {
        match self {
            Part::Value(v) => Cow::Borrowed(v),
            Part::Time(t) => Cow::Owned(Value::Timestamp(t)),
        }
    }
}

impl Hash for Part<'_> {
    /// Exactly as the value it stands for hashes ([`Value`]'s `Hash` is always inlined, so the
    /// time's temporary value folds away).
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Part::Value(v) => v.hash(state),
            Part::Time(t) => Value::Timestamp(*t).hash(state),
        }
    }
}

/// A key being looked up, as the parts of one event: hashes and compares as the [`GroupKey`] of
/// the same values.
struct PartsRef<'k, 'r>(&'k [Part<'r>]);

impl Hash for PartsRef<'_, '_> {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        for p in self.0 {
            p.hash(state);
        }
    }
}

impl hashbrown::Equivalent<GroupKey> for PartsRef<'_, '_> {
    #[inline(always)]
    fn equivalent(&self, key: &GroupKey) -> bool {
        self.0.len() == key.0.len()
            && self.0.iter().zip(key.0.iter()).all(|(p, v)| match p {
                Part::Value(p) => *p == v,
                Part::Time(t) => matches!(v, Value::Timestamp(s) if s == t),
            })
    }
}

/// Evaluates the filter and key of one event for a plan that cannot fail. Returns whether the
/// event passes the view's `WHERE`.
fn evaluate_key<'r>(fast: &'r FastView, ctx: &EvalCtx<'r>, key: &mut KeyValues<'r>) -> bool {
    if let Some(filter) = &fast.filter
        && filter.eval(ctx).ok().and_then(|v| v.as_bool()) != Some(true)
    {
        return false;
    }
    for k in &fast.keys {
        key.push(k.eval(ctx).unwrap_or(Cow::Borrowed(&NULL)));
    }
    true
}

/// Evaluates the filter, key and aggregate inputs of one event. Returns whether the event
/// passes the view's `WHERE`. Everything is evaluated before any state changes, so an event that
/// fails changes nothing.
fn evaluate<'r>(
    fast: &'r FastView,
    ctx: &EvalCtx<'r>,
    key: &mut KeyValues<'r>,
    args: &mut ArgValues<'r>,
) -> Result<bool, EvalError> {
    if let Some(filter) = &fast.filter
        && filter.eval(ctx)?.as_bool() != Some(true)
    {
        return Ok(false);
    }
    for k in &fast.keys {
        key.push(k.eval(ctx)?);
    }
    for a in &fast.aggs {
        if let Some(f) = &a.filter
            && f.eval(ctx)?.as_bool() != Some(true)
        {
            args.push(None);
            continue;
        }
        let value = match &a.arg {
            Some(e) => e.eval(ctx)?,
            None => Cow::Borrowed(&NULL),
        };
        let time = match &a.time {
            Some(e) => e.eval(ctx)?,
            None => Cow::Borrowed(&NULL),
        };
        args.push(Some((value, time)));
    }
    Ok(true)
}

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// The row-level expressions of one view ([`ViewPlan::filter`], its keys, and each aggregate's
/// filter, argument and time) as [`Fast`] expressions.
#[derive(Clone, Debug)]
struct FastView {
    filter: Option<Fast>,
    keys: Vec<Fast>,
    aggs: Vec<FastInputs>,
    /// The same expressions as [`Simple`] ones, when every one is simple and the view cannot
    /// fail: then [`apply_simple`] applies the view.
    simple: Option<SimpleView>,
}

#[derive(Clone, Debug)]
struct FastInputs {
    filter: Option<Fast>,
    arg: Option<Fast>,
    time: Option<Fast>,
}

/// A [`FastView`] of simple expressions only.
#[derive(Clone, Debug)]
struct SimpleView {
    filter: Option<Simple>,
    keys: Vec<Simple>,
    aggs: Vec<SimpleInputs>,
}

#[derive(Clone, Debug)]
struct SimpleInputs {
    filter: Option<Simple>,
    arg: Option<Simple>,
    time: Option<Simple>,
}

impl FastView {
    fn new(plan: &ViewPlan) -> FastView {
        let fast = |e: &Option<Expr>| e.as_ref().map(Fast::new);
        let mut view = FastView {
            filter: fast(&plan.filter),
            keys: plan.keys.iter().map(|k| Fast::new(&k.expr)).collect(),
            aggs: plan
                .aggs
                .iter()
                .map(|a| FastInputs {
                    filter: fast(&a.filter),
                    arg: fast(&a.arg),
                    time: fast(&a.time),
                })
                .collect(),
            simple: None,
        };
        if !plan.can_fail {
            view.simple = view.simple();
        }
        view
    }

    /// The view's expressions as simple ones, if they all are.
    fn simple(&self) -> Option<SimpleView> {
        let one = |f: &Fast| match f {
            Fast::Simple(s) => Some(s.clone()),
            Fast::Expr(_) => None,
        };
        // `Some(None)` for no expression, `None` for one that is not simple.
        let optional = |f: &Option<Fast>| match f {
            None => Some(None),
            Some(f) => one(f).map(Some),
        };
        Some(SimpleView {
            filter: optional(&self.filter)?,
            keys: self.keys.iter().map(one).collect::<Option<_>>()?,
            aggs: (self.aggs.iter())
                .map(|a| {
                    Some(SimpleInputs {
                        filter: optional(&a.filter)?,
                        arg: optional(&a.arg)?,
                        time: optional(&a.time)?,
                    })
                })
                .collect::<Option<_>>()?,
        })
    }
}

/// A row-level expression as the hot loop evaluates it: a [`Simple`] shape read directly from
/// the row, or anything else, evaluated by [`Expr::eval_cow`].
#[derive(Clone, Debug)]
enum Fast {
    Simple(Simple),
    Expr(Expr),
}

/// The shapes nearly every view uses — a column, a text column compared with a text literal, the
/// time bucket of a column — which read the row without the expression interpreter and cannot
/// fail. Each gives exactly what `eval_cow` gives for it (the engine tests compare the two on
/// every expression).
#[derive(Clone, Debug)]
enum Simple {
    Column(usize),
    /// `column = 'text'` (`equal`) or `column <> 'text'`.
    TextEq {
        column: usize,
        text: SmolStr,
        equal: bool,
    },
    /// `time_bucket(interval, column)` / `date_trunc`, cached in bucket slot `slot`.
    Bucket {
        column: usize,
        interval: Interval,
        slot: usize,
    },
}

impl Fast {
    fn new(expr: &Expr) -> Fast {
        let simple = match expr {
            Expr::Column { index, .. } => Simple::Column(*index),
            Expr::Compare {
                op: op @ (CmpOp::Eq | CmpOp::NotEq),
                left,
                right,
            } => match (&**left, &**right) {
                (Expr::Column { index, .. }, Expr::Literal(Value::Text(text)))
                | (Expr::Literal(Value::Text(text)), Expr::Column { index, .. }) => {
                    Simple::TextEq {
                        column: *index,
                        text: text.clone(),
                        equal: *op == CmpOp::Eq,
                    }
                }
                _ => return Fast::Expr(expr.clone()),
            },
            Expr::Bucket {
                interval,
                expr: inner,
                slot,
                ..
            } => match &**inner {
                Expr::Column { index, .. } => Simple::Bucket {
                    column: *index,
                    interval: *interval,
                    slot: *slot,
                },
                _ => return Fast::Expr(expr.clone()),
            },
            _ => return Fast::Expr(expr.clone()),
        };
        Fast::Simple(simple)
    }

    #[inline(always)]
    fn eval<'r>(&'r self, ctx: &EvalCtx<'r>) -> Result<Cow<'r, Value>, EvalError> {
        match self {
            Fast::Simple(simple) => Ok(simple.part(ctx).into_cow()),
            Fast::Expr(expr) => expr.eval_cow(ctx),
        }
    }
}

impl Simple {
    #[inline(always)]
    fn part<'r>(&'r self, ctx: &EvalCtx<'r>) -> Part<'r> {
        match self {
            Simple::Column(index) => Part::Value(&ctx.row[*index]),
            Simple::TextEq {
                column,
                text,
                equal,
            } => Part::Value(match &ctx.row[*column] {
                Value::Null => &NULL,
                Value::Text(t) if (t == text) == *equal => &TRUE,
                // A value of another type is never equal to text.
                Value::Text(_) => &FALSE,
                _ if *equal => &FALSE,
                _ => &TRUE,
            }),
            Simple::Bucket {
                column,
                interval,
                slot,
            } => match &ctx.row[*column] {
                Value::Timestamp(ts) => Part::Time(match ctx.buckets.get(*slot) {
                    Some(cache) => {
                        let (start, end) = cache.get();
                        if start <= ts.0 && ts.0 < end {
                            Timestamp(start)
                        } else {
                            let (start, end) = interval.bucket(*ts, ctx.tz);
                            cache.set((start.0, end.0));
                            start
                        }
                    }
                    None => interval.floor(*ts, ctx.tz),
                }),
                _ => Part::Value(&NULL),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Catalog;
    use crate::value::Timestamp;

    /// The text literal of a filter `column = 'text'`, as the plan holds it.
    fn filter_literal(filter: &Option<Expr>) -> SmolStr {
        match filter {
            Some(Expr::Compare { right, .. }) => match &**right {
                Expr::Literal(Value::Text(t)) => t.clone(),
                other => panic!("unexpected literal {other:?}"),
            },
            other => panic!("unexpected filter {other:?}"),
        }
    }

    /// Every row-level expression of these views, as [`Fast`], gives what `eval_cow` gives, on
    /// rows with NULLs, text equal to a literal (the plan's copy and another), other text short
    /// and long (held in the value and on the heap), and times around a DST change (the bucket
    /// caches of both sides are separate and filled in the same order).
    #[test]
    fn fast_expressions_evaluate_as_eval_cow() {
        let schema = "
            CREATE STREAM s (kind TEXT, tag TEXT NOT NULL, n BIGINT, at TIMESTAMP NOT NULL)
              WITH (event_time = 'at');
            CREATE MATERIALIZED VIEW a AS
              SELECT time_bucket('15 minutes', at) AS q, date_trunc('day', at) AS d, kind,
                     count(*) FILTER (WHERE kind = 'buy') AS buys,
                     count(*) FILTER (WHERE 'sell' = kind) AS sells,
                     count(*) FILTER (WHERE kind <> 'buy') AS others,
                     count(*) FILTER (WHERE tag != 'x') AS not_x,
                     sum(n) FILTER (WHERE n > 2 AND kind = 'buy') AS big,
                     last(kind, at) AS last_kind
              FROM s WHERE tag = 'x' OR n IS NULL GROUP BY 1, 2, 3;
            CREATE MATERIALIZED VIEW b AS
              SELECT time_bucket('1 hour', coalesce(at, at)) AS h, count(*) AS n
              FROM s WHERE kind = 'buy' GROUP BY 1;
        ";
        let catalog = crate::sql::apply(&Catalog::new(), schema).unwrap().catalog;
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let engine = Engine::new(&catalog, tz.clone());
        let buy = filter_literal(&engine.views[0].aggs[0].filter);
        let kinds = [
            Value::Null,
            Value::Text(buy.clone()),
            Value::text("buy"),
            Value::text("sell"),
            Value::text("bu"),
            Value::text("buy, and longer than twenty-three bytes"),
        ];
        let tags = [Value::text("x"), Value::text("y")];
        let ns = [Value::Null, Value::Int(1), Value::Int(5)];
        // 2026-03-29 01:00 UTC is the spring-forward change in Berlin.
        let start = Timestamp::parse("2026-03-28T22:00:00Z").unwrap().0;
        let mut rows = Vec::new();
        let mut x = 7u64;
        for i in 0..2_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rows.push(vec![
                kinds[(x % 6) as usize].clone(),
                tags[((x >> 8) % 2) as usize].clone(),
                ns[((x >> 16) % 3) as usize].clone(),
                Value::Timestamp(Timestamp(start + i * 7_000_000 + (x % 1_000_000) as i64)),
            ]);
        }
        let mut shortcuts = 0;
        for (plan, fast) in engine.views.iter().zip(&engine.fast) {
            let mut pairs: Vec<(&Expr, &Fast)> = Vec::new();
            pairs.extend(plan.filter.iter().zip(&fast.filter));
            pairs.extend(plan.keys.iter().map(|k| &k.expr).zip(&fast.keys));
            for (agg, inputs) in plan.aggs.iter().zip(&fast.aggs) {
                pairs.extend(agg.filter.iter().zip(&inputs.filter));
                pairs.extend(agg.arg.iter().zip(&inputs.arg));
                pairs.extend(agg.time.iter().zip(&inputs.time));
            }
            shortcuts += pairs
                .iter()
                .filter(|(_, f)| !matches!(f, Fast::Expr(_)))
                .count();
            let slow_buckets = vec![Cell::new((0, 0)); plan.bucket_slots];
            let fast_buckets = vec![Cell::new((0, 0)); plan.bucket_slots];
            for row in &rows {
                for (expr, f) in &pairs {
                    let slow = EvalCtx {
                        buckets: &slow_buckets,
                        ..EvalCtx::row(row, &tz)
                    };
                    let quick = EvalCtx {
                        buckets: &fast_buckets,
                        ..EvalCtx::row(row, &tz)
                    };
                    assert_eq!(
                        f.eval(&quick).unwrap().as_ref(),
                        expr.eval_cow(&slow).unwrap().as_ref(),
                        "{expr} on {row:?}"
                    );
                }
            }
        }
        // View a: the buckets of `q` and `d`, the column `kind`, the four text comparisons
        // (both sides, = and <>), `sum`'s and `last`'s columns; view b: its WHERE. The OR, the
        // AND and the bucket of `coalesce` are evaluated by `eval_cow`.
        assert_eq!(shortcuts, 11);
    }

    /// Views whose expressions are all simple take [`apply_simple`]; it leaves the delta the
    /// general loop leaves (same groups, same states, same positions), on rows with NULLs,
    /// short and long text (held in the value and shared), and times around a DST change,
    /// applied in two batches of which the second repeats part of the first.
    #[test]
    fn simple_views_apply_as_the_general_loop() {
        let schema = "
            CREATE STREAM s (kind TEXT, tag TEXT NOT NULL, n BIGINT, at TIMESTAMP NOT NULL)
              WITH (event_time = 'at');
            CREATE MATERIALIZED VIEW a AS
              SELECT time_bucket('15 minutes', at) AS q, kind, n,
                     count(*) AS events,
                     count(*) FILTER (WHERE kind = 'buy') AS buys,
                     sum(n) FILTER (WHERE tag <> 'x') AS not_x,
                     min(kind) AS least, max(at) AS newest,
                     last(kind, at) AS last_kind, first(n, at) AS first_n,
                     count(DISTINCT tag) AS tags, approx_count_distinct(kind) AS kinds,
                     percentile_cont(0.5) WITHIN GROUP (ORDER BY n) AS median
              FROM s WHERE tag = 'x' GROUP BY 1, 2, 3;
            CREATE MATERIALIZED VIEW b AS
              SELECT date_trunc('day', at) AS d, count(*) AS n FROM s GROUP BY 1;
            CREATE MATERIALIZED VIEW c AS
              SELECT kind, count(*) AS n FROM s WHERE kind <> 'sell' GROUP BY 1;
        ";
        let catalog = crate::sql::apply(&Catalog::new(), schema).unwrap().catalog;
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let engine = Engine::new(&catalog, tz);
        assert!(engine.fast.iter().all(|f| f.simple.is_some()));
        let mut general = engine.clone();
        for f in &mut general.fast {
            f.simple = None;
        }
        // `count(*) FILTER (WHERE kind = 'buy')`'s literal.
        let buy = filter_literal(&engine.views[0].aggs[1].filter);
        let kinds = [
            Value::Null,
            Value::Text(buy),
            Value::text("sell"),
            Value::text("bu"),
            Value::text("sell, and longer than twenty-three bytes"),
        ];
        let tags = [Value::text("x"), Value::text("y")];
        let ns = [Value::Null, Value::Int(1), Value::Int(5), Value::Int(-3)];
        // Every other event's text built afresh (long text in an allocation of its own): equal
        // to a group's key text, but not the same copy.
        let fresh = |v: &Value, own: bool| match v {
            Value::Text(t) if own => Value::text(t),
            v => v.clone(),
        };
        // 2026-03-29 01:00 UTC is the spring-forward change in Berlin.
        let start = Timestamp::parse("2026-03-28T22:00:00Z").unwrap().0;
        let mut x = 11u64;
        let events: Vec<Event> = (0..3_000i64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Event {
                    seq: i as u64 + 1,
                    row: vec![
                        fresh(&kinds[(x % 5) as usize], i % 2 == 1),
                        fresh(&tags[((x >> 8) % 2) as usize], i % 2 == 1),
                        ns[((x >> 16) % 4) as usize].clone(),
                        Value::Timestamp(Timestamp(start + i * 9_000_000 + (x % 1_000_000) as i64)),
                    ],
                }
            })
            .collect();
        let run = |engine: &Engine| {
            let mut delta = engine.delta(|_| 0);
            engine.apply("s", &events[..2_000], &mut delta);
            engine.apply("s", &events[1_500..], &mut delta);
            delta
                .views
                .iter()
                .map(|v| {
                    let mut groups: Vec<String> =
                        v.groups.iter().map(|g| format!("{g:?}")).collect();
                    groups.sort();
                    (v.position, v.skipped, v.failed, groups)
                })
                .collect::<Vec<_>>()
        };
        let simple = run(&engine);
        let sizes: Vec<usize> = simple
            .iter()
            .map(|(_, _, _, groups)| groups.len())
            .collect();
        assert!(
            sizes[0] > 100 && sizes[1] == 2 && sizes[2] == 3,
            "{sizes:?}"
        );
        assert!(simple.iter().all(|(position, ..)| *position == 3_000));
        assert_eq!(simple, run(&general));
    }

    /// A key looked up as parts hashes and compares as the stored key of the same values, short
    /// and long text, the same copy or another (else lookups would miss, and each event would
    /// copy its key to find the group by it: the delta would be right, only slower, so the test
    /// above cannot tell).
    #[test]
    fn parts_hash_as_group_keys() {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::RandomState::default();
        let values = [
            Value::Null,
            Value::text("de"),
            Value::text("a text longer than twenty-three bytes"),
            Value::Int(7),
            Value::Bool(true),
            Value::Timestamp(Timestamp(1_700_000_000_000_000)),
        ];
        let parts: Vec<Part<'_>> = values
            .iter()
            .map(|v| match v {
                Value::Timestamp(t) => Part::Time(*t),
                v => Part::Value(v),
            })
            .collect();
        let key = GroupKey::new(values.to_vec());
        assert_eq!(hasher.hash_one(PartsRef(&parts)), hasher.hash_one(&key));
        assert!(hashbrown::Equivalent::equivalent(&PartsRef(&parts), &key));
        // Equal text built afresh (the long one in another allocation) is the same key.
        let copied = GroupKey::new(
            values
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Value::text(t),
                    v => v.clone(),
                })
                .collect(),
        );
        assert!(hashbrown::Equivalent::equivalent(
            &PartsRef(&parts),
            &copied
        ));
        assert_eq!(hasher.hash_one(PartsRef(&parts)), hasher.hash_one(&copied));
        let other = GroupKey::new(vec![Value::Null; 6]);
        assert!(!hashbrown::Equivalent::equivalent(
            &PartsRef(&parts),
            &other
        ));
    }
}
