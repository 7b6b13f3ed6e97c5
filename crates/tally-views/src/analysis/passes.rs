//! The analyses themselves: each is one pass over persons (their events merged in time order)
//! that counts into per-period arrays, then the rows.

use std::sync::Arc;

use crate::value::SmolStr;

use super::request::{Analysis, Kind, PageBy};
use super::{Activity, Ev, HashMap, Period};
use crate::query::ResultSet;
use crate::value::{Timestamp, Type, Value};

pub(super) fn run(activity: &Activity, a: &Analysis) -> ResultSet {
    match a.kind {
        Kind::ActiveUsers if a.period == Period::Day => daily_active(activity, a),
        Kind::ActiveUsers => period_active(activity, a),
        Kind::Retention => retention(activity, a),
        Kind::Funnel => funnel(activity, a),
        Kind::Sessions => match a.by {
            None => sessions(activity, a),
            Some(by) => pages(activity, a, by),
        },
        Kind::Lifecycle => lifecycle(activity, a),
    }
}

fn columns(names: &[(&str, Type)]) -> Vec<(String, Type)> {
    names.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
}

fn int(n: u64) -> Value {
    Value::Int(n as i64)
}

/// Texts ascending, `None` (NULL) last.
fn nulls_last(x: Option<&SmolStr>, y: Option<&SmolStr>) -> std::cmp::Ordering {
    (x.is_none(), x).cmp(&(y.is_none(), y))
}

/// `a / b`, NULL when `b` is 0.
fn ratio(a: f64, b: f64) -> Value {
    if b == 0.0 {
        Value::Null
    } else {
        Value::Double(a / b)
    }
}

/// The median of microsecond durations, in seconds (the mean of the two middle values for an
/// even count); NULL for none.
fn median_seconds(durations: &mut [i64]) -> Value {
    if durations.is_empty() {
        return Value::Null;
    }
    durations.sort_unstable();
    let n = durations.len();
    let micros = if n % 2 == 1 {
        durations[n / 2] as f64
    } else {
        (durations[n / 2 - 1] as f64 + durations[n / 2] as f64) / 2.0
    };
    Value::Double(micros / 1e6)
}

/// The distinct periods of `events` that pass `keep`, ascending.
fn periods_of(events: &[Ev], period: Period, keep: impl Fn(&Ev) -> bool, out: &mut Vec<i32>) {
    out.clear();
    let mut last_day = None;
    for e in events.iter().filter(|e| keep(e)) {
        if last_day == Some(e.day) {
            continue;
        }
        last_day = Some(e.day);
        let p = period.of_day(e.day);
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    // Local days only go back at an offset change across midnight: rare, but sort then.
    if out.windows(2).any(|w| w[0] > w[1]) {
        out.sort_unstable();
        out.dedup();
    }
}

fn bucket_rows(a: &Analysis, activity: &Activity) -> Vec<Value> {
    (0..a.count)
        .map(|i| Value::Timestamp(a.period.start(a.first + i as i32, activity.tz())))
        .collect()
}

/// `dau`, `wau`, `mau` and `stickiness` per day: a person counts for day `d`'s WAU when active
/// in `[d - 6, d]`, so each active day `a` covers days `a ..= a + 6` (merged per person, then
/// counted with a difference array).
fn daily_active(activity: &Activity, a: &Analysis) -> ResultSet {
    let n = a.count;
    let d0 = a.first;
    let mut dau = vec![0i64; n];
    let mut wau = vec![0i64; n + 1];
    let mut mau = vec![0i64; n + 1];
    let mut days = Vec::new();
    let cover = |days: &[i32], width: i32, diff: &mut [i64]| {
        let mut current: Option<(i32, i32)> = None;
        let mut emit = |(s, e): (i32, i32)| {
            let s = s.max(d0);
            let e = e.min(d0 + n as i32 - 1);
            if s <= e {
                diff[(s - d0) as usize] += 1;
                diff[(e - d0 + 1) as usize] -= 1;
            }
        };
        for &day in days {
            current = match current {
                Some((s, e)) if day <= e + 1 => Some((s, e.max(day + width - 1))),
                Some(done) => {
                    emit(done);
                    Some((day, day + width - 1))
                }
                None => Some((day, day + width - 1)),
            };
        }
        if let Some(done) = current {
            emit(done);
        }
    };
    activity.for_each_person(|events| {
        periods_of(events, Period::Day, |e| e.activity, &mut days);
        for &day in &days {
            if day >= d0 && day < d0 + n as i32 {
                dau[(day - d0) as usize] += 1;
            }
        }
        cover(&days, 7, &mut wau);
        cover(&days, 30, &mut mau);
    });
    let buckets = bucket_rows(a, activity);
    let (mut w, mut m) = (0, 0);
    let rows = (0..n)
        .map(|i| {
            w += wau[i];
            m += mau[i];
            vec![
                buckets[i].clone(),
                Value::Int(dau[i]),
                Value::Int(w),
                Value::Int(m),
                ratio(dau[i] as f64, m as f64),
            ]
        })
        .collect();
    ResultSet {
        columns: columns(&[
            ("bucket", Type::Timestamp),
            ("dau", Type::BigInt),
            ("wau", Type::BigInt),
            ("mau", Type::BigInt),
            ("stickiness", Type::Double),
        ]),
        rows,
    }
}

/// Persons active per week or month.
fn period_active(activity: &Activity, a: &Analysis) -> ResultSet {
    let mut active = vec![0u64; a.count];
    let mut periods = Vec::new();
    activity.for_each_person(|events| {
        periods_of(events, a.period, |e| e.activity, &mut periods);
        for &p in &periods {
            let i = p - a.first;
            if i >= 0 && (i as usize) < a.count {
                active[i as usize] += 1;
            }
        }
    });
    let rows = bucket_rows(a, activity)
        .into_iter()
        .zip(active)
        .map(|(b, n)| vec![b, int(n)])
        .collect();
    ResultSet {
        columns: columns(&[("bucket", Type::Timestamp), ("active", Type::BigInt)]),
        rows,
    }
}

/// Cohorts by the period of a person's first activity (or first `start_event`), and how many
/// of each came back (were active, or sent `return_event`) in each following period.
fn retention(activity: &Activity, a: &Analysis) -> ResultSet {
    let width = a.periods as usize + 1;
    let mut size = vec![0u64; a.count];
    let mut returned = vec![0u64; a.count * width];
    // An event name no event has: nobody starts or returns.
    let named = |name: &Option<String>| name.as_deref().map(|n| activity.name(n));
    let start = named(&a.start_event);
    let back = named(&a.return_event);
    let mut periods = Vec::new();
    activity.for_each_person(|events| {
        let first_day = match start {
            None => events.iter().find(|e| e.activity).map(|e| e.day),
            Some(None) => None,
            Some(Some(name)) => events.iter().find(|e| e.name == name).map(|e| e.day),
        };
        let Some(first_day) = first_day else { return };
        let cohort = a.period.of_day(first_day);
        let c = cohort - a.first;
        if c < 0 || c as usize >= a.count {
            return;
        }
        let c = c as usize;
        size[c] += 1;
        match back {
            None => periods_of(events, a.period, |e| e.activity, &mut periods),
            Some(None) => periods.clear(),
            Some(Some(name)) => periods_of(events, a.period, |e| e.name == name, &mut periods),
        }
        for &p in &periods {
            let k = p - cohort;
            if k >= 1 && (k as usize) < width {
                returned[c * width + k as usize] += 1;
            }
        }
    });
    let rows = bucket_rows(a, activity)
        .into_iter()
        .enumerate()
        .map(|(c, bucket)| {
            let counts = &mut returned[c * width..(c + 1) * width];
            counts[0] = size[c];
            let json = format!(
                "[{}]",
                counts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            vec![bucket, int(size[c]), Value::Json(Arc::from(json))]
        })
        .collect();
    ResultSet {
        columns: columns(&[
            ("cohort", Type::Timestamp),
            ("size", Type::BigInt),
            ("returned", Type::Json),
        ]),
        rows,
    }
}

/// Per breakdown value: how many persons reached each step, and their times from step 1.
#[derive(Default)]
struct FunnelCounts {
    persons: Vec<u64>,
    durations: Vec<Vec<i64>>,
}

/// Each person's best attempt: among their first-step events in the range (earliest first),
/// the one that reaches the most steps, each step taking the earliest event of its name at or
/// after the previous step's (an event serves one step) and within `window` of the first.
fn funnel(activity: &Activity, a: &Analysis) -> ResultSet {
    let k = a.steps.len();
    // Distinct step names, and each step's index among them.
    let mut distinct: Vec<Option<u32>> = Vec::new();
    let mut slot = Vec::with_capacity(k);
    for step in &a.steps {
        let id = activity.name(step);
        let i = match distinct.iter().position(|d| *d == id && id.is_some()) {
            Some(i) => i,
            None => {
                distinct.push(id);
                distinct.len() - 1
            }
        };
        slot.push(i);
    }
    let mut lists: Vec<Vec<(i64, u64)>> = vec![Vec::new(); distinct.len()];
    let mut groups: HashMap<Option<SmolStr>, FunnelCounts> = HashMap::default();
    let mut times = vec![0i64; k];
    let mut best_times = vec![0i64; k];
    let mut used = vec![0usize; distinct.len()];
    let (from, to) = (a.from.0, a.to.0);
    activity.for_each_person(|events| {
        for l in &mut lists {
            l.clear();
        }
        for e in events {
            for (i, d) in distinct.iter().enumerate() {
                if *d == Some(e.name) {
                    lists[i].push((e.ts, e.seq));
                }
            }
        }
        let mut best = (0usize, 0u64);
        let firsts = &lists[slot[0]];
        for (si, &(t0, seq0)) in firsts.iter().enumerate() {
            if t0 < from || t0 >= to {
                continue;
            }
            let deadline = a.window.after(Timestamp(t0)).0;
            used.iter_mut().for_each(|u| *u = 0);
            used[slot[0]] = si + 1;
            times[0] = t0;
            let mut reached = 1;
            let mut previous = t0;
            for j in 1..k {
                let list = &lists[slot[j]];
                let at = list
                    .partition_point(|&(t, _)| t < previous)
                    .max(used[slot[j]]);
                match list.get(at) {
                    Some(&(t, _)) if t <= deadline => {
                        times[j] = t;
                        used[slot[j]] = at + 1;
                        previous = t;
                        reached += 1;
                    }
                    _ => break,
                }
            }
            if reached > best.0 {
                best = (reached, seq0);
                best_times[..reached].copy_from_slice(&times[..reached]);
                if reached == k {
                    break;
                }
            }
        }
        if best.0 == 0 {
            return;
        }
        let key = a
            .property_column()
            .and_then(|(p, n)| activity.property(p, n, best.1).cloned());
        let counts = groups.entry(key).or_insert_with(|| FunnelCounts {
            persons: vec![0; k],
            durations: vec![Vec::new(); k],
        });
        for j in 0..best.0 {
            counts.persons[j] += 1;
            counts.durations[j].push(best_times[j] - best_times[0]);
        }
    });
    let mut keys: Vec<Option<SmolStr>> = groups.keys().cloned().collect();
    // Values ascending, NULL last.
    keys.sort_by(|x, y| nulls_last(x.as_ref(), y.as_ref()));
    if a.breakdown.is_none() && keys.is_empty() {
        keys.push(None);
    }
    let mut rows = Vec::new();
    for key in keys {
        let mut counts = groups.remove(&key).unwrap_or_else(|| FunnelCounts {
            persons: vec![0; k],
            durations: vec![Vec::new(); k],
        });
        for j in 0..k {
            let mut row = Vec::with_capacity(7);
            if a.breakdown.is_some() {
                row.push(key.as_ref().map_or(Value::Null, |v| Value::Text(v.clone())));
            }
            let persons = counts.persons[j];
            row.extend([
                Value::Int(j as i64 + 1),
                Value::text(&a.steps[j]),
                int(persons),
                ratio(persons as f64, counts.persons[0] as f64),
                ratio(persons as f64, counts.persons[j.saturating_sub(1)] as f64),
                median_seconds(&mut counts.durations[j]),
            ]);
            rows.push(row);
        }
    }
    let mut names = Vec::new();
    if a.breakdown.is_some() {
        names.push(("breakdown", Type::Text));
    }
    names.extend([
        ("step", Type::BigInt),
        ("event", Type::Text),
        ("persons", Type::BigInt),
        ("conversion", Type::Double),
        ("step_conversion", Type::Double),
        ("median_seconds", Type::Double),
    ]);
    ResultSet {
        columns: columns(&names),
        rows,
    }
}

/// One session: its first and last activity event and how many it has.
struct Session<'e> {
    first: &'e Ev,
    last: &'e Ev,
    events: u64,
}

/// Calls `f` with each session of a person's activity: a gap over `gap` starts a new one.
fn each_session<'e>(events: &'e [Ev], gap: i64, mut f: impl FnMut(Session<'e>)) {
    let mut current: Option<Session<'e>> = None;
    for e in events.iter().filter(|e| e.activity) {
        match &mut current {
            Some(s) if e.ts - s.last.ts <= gap => {
                s.last = e;
                s.events += 1;
            }
            _ => {
                if let Some(done) = current.take() {
                    f(done);
                }
                current = Some(Session {
                    first: e,
                    last: e,
                    events: 1,
                });
            }
        }
    }
    if let Some(done) = current {
        f(done);
    }
}

/// Sessions per day of their first event: how many, by how many persons, their durations
/// (last − first event), bounces (one event) and events.
fn sessions(activity: &Activity, a: &Analysis) -> ResultSet {
    let n = a.count;
    let mut count = vec![0u64; n];
    let mut persons = vec![0u64; n];
    let mut last_person = vec![usize::MAX; n];
    let mut durations: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut bounces = vec![0u64; n];
    let mut events = vec![0u64; n];
    let mut person = 0usize;
    activity.for_each_person(|evs| {
        each_session(evs, a.gap, |s| {
            let d = s.first.day - a.first;
            if d < 0 || d as usize >= n {
                return;
            }
            let d = d as usize;
            count[d] += 1;
            if last_person[d] != person {
                last_person[d] = person;
                persons[d] += 1;
            }
            durations[d].push(s.last.ts - s.first.ts);
            bounces[d] += u64::from(s.events == 1);
            events[d] += s.events;
        });
        person += 1;
    });
    let rows = bucket_rows(a, activity)
        .into_iter()
        .enumerate()
        .take(a.limit.unwrap_or(usize::MAX))
        .map(|(d, bucket)| {
            let c = count[d] as f64;
            let total: i128 = durations[d].iter().map(|&x| i128::from(x)).sum();
            vec![
                bucket,
                int(count[d]),
                int(persons[d]),
                ratio(total as f64 / 1e6, c),
                median_seconds(&mut durations[d]),
                ratio(bounces[d] as f64, c),
                ratio(events[d] as f64, c),
            ]
        })
        .collect();
    ResultSet {
        columns: columns(&[
            ("bucket", Type::Timestamp),
            ("sessions", Type::BigInt),
            ("persons", Type::BigInt),
            ("avg_duration_s", Type::Double),
            ("median_duration_s", Type::Double),
            ("bounce_rate", Type::Double),
            ("events_per_session", Type::Double),
        ]),
        rows,
    }
}

/// Sessions starting in the range by their landing page (the first event's `page_url`) or
/// exit page (the last event's), most sessions first.
fn pages(activity: &Activity, a: &Analysis, by: PageBy) -> ResultSet {
    let mut counts: HashMap<u32, (u64, u64)> = HashMap::default();
    activity.for_each_person(|evs| {
        each_session(evs, a.gap, |s| {
            if s.first.ts < a.from.0 || s.first.ts >= a.to.0 {
                return;
            }
            let page = match by {
                PageBy::Landing => s.first.page,
                PageBy::Exit => s.last.page,
            };
            let c = counts.entry(page).or_default();
            c.0 += 1;
            c.1 += u64::from(s.events == 1);
        });
    });
    let mut pages: Vec<(Option<&SmolStr>, u64, u64)> = counts
        .into_iter()
        .map(|(p, (s, b))| (activity.page(p), s, b))
        .collect();
    pages.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| nulls_last(x.0, y.0)));
    if let Some(limit) = a.limit {
        pages.truncate(limit);
    }
    let rows = pages
        .into_iter()
        .map(|(page, sessions, bounces)| {
            vec![
                page.map_or(Value::Null, |p| Value::Text(p.clone())),
                int(sessions),
                ratio(bounces as f64, sessions as f64),
            ]
        })
        .collect();
    ResultSet {
        columns: columns(&[
            ("page", Type::Text),
            ("sessions", Type::BigInt),
            ("bounce_rate", Type::Double),
        ]),
        rows,
    }
}

/// Per period: active persons that are new, returning or resurrecting, and (negative) those
/// active in the previous period but not in this one.
fn lifecycle(activity: &Activity, a: &Analysis) -> ResultSet {
    let n = a.count;
    let mut new = vec![0i64; n];
    let mut returning = vec![0i64; n];
    let mut resurrecting = vec![0i64; n];
    let mut dormant = vec![0i64; n];
    let mut periods = Vec::new();
    let slot = |p: i32| {
        let i = p - a.first;
        (i >= 0 && (i as usize) < n).then_some(i as usize)
    };
    activity.for_each_person(|events| {
        periods_of(events, a.period, |e| e.activity, &mut periods);
        for (i, &p) in periods.iter().enumerate() {
            if let Some(s) = slot(p) {
                if i == 0 {
                    new[s] += 1;
                } else if periods[i - 1] == p - 1 {
                    returning[s] += 1;
                } else {
                    resurrecting[s] += 1;
                }
            }
            if periods.get(i + 1) != Some(&(p + 1))
                && let Some(s) = slot(p + 1)
            {
                dormant[s] -= 1;
            }
        }
    });
    let rows = bucket_rows(a, activity)
        .into_iter()
        .enumerate()
        .map(|(i, bucket)| {
            vec![
                bucket,
                Value::Int(new[i]),
                Value::Int(returning[i]),
                Value::Int(resurrecting[i]),
                Value::Int(dormant[i]),
            ]
        })
        .collect();
    ResultSet {
        columns: columns(&[
            ("bucket", Type::Timestamp),
            ("new", Type::BigInt),
            ("returning", Type::BigInt),
            ("resurrecting", Type::BigInt),
            ("dormant", Type::BigInt),
        ]),
        rows,
    }
}
