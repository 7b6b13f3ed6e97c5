//! Differential test of the behavioural analyses: every analysis equals a straightforward
//! recomputation from the raw events (the reference below, written from docs/analyses.md with
//! jiff's calendar, not Tally's).
//!
//! Random persons whose anonymous ids are linked late (`identify` with both ids, `alias` with
//! `previousId`), events out of order and duplicated, random batch splits, analyses between
//! batches (the state is caught up, links applied retroactively) and restarts (the state is
//! rebuilt from the log), over the spring-forward day of `America/New_York`. On the in-memory
//! store, SQLite and PostgreSQL. `PROPTEST_CASES` scales the number of cases.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use tally::app::{Clock, Config, Tally};
use tally::runtime::TenantRuntime;
use tally_store::Store;
use tally_views::{ResultSet, Timestamp, Value};

const TZ: &str = "America/New_York";
/// 2026-03-01T00:00:00-05:00; events fall in the 12 days after it, across 2026-03-08 (DST).
const START: &str = "2026-03-01T05:00:00Z";

/// One generated message.
#[derive(Clone, Debug)]
struct Spec {
    id: u16,
    kind: u8,
    name: u8,
    user: Option<u8>,
    anon: u8,
    /// Five-minute steps after START, so that gaps and windows (30 minutes, 1 hour, 3 hours,
    /// 1 day) are hit exactly.
    slot: u32,
    plan: Option<u8>,
}

const NAMES: [&str; 4] = ["Signed Up", "Viewed", "Purchased", "Shared"];
const PAGES: [&str; 3] = ["/", "/pricing", "/docs"];

impl Spec {
    fn ts(&self) -> Timestamp {
        Timestamp(Timestamp::parse(START).unwrap().0 + i64::from(self.slot) * 5 * 60_000_000)
    }

    /// The event as the `events` stream takes it.
    fn json(&self) -> String {
        let mut row = serde_json::json!({
            "id": format!("m{}", self.id),
            "timestamp": self.ts().to_string(),
            "anonymous_id": format!("a{}", self.anon),
        });
        let user = self.user.map(|u| format!("u{u}"));
        let (kind, name) = match self.kind {
            0..=4 => ("track", NAMES[self.name as usize % 4].to_owned()),
            5 | 6 => ("page", "Page".to_owned()),
            7 => ("screen", "Screen".to_owned()),
            8 => ("identify", "identify".to_owned()),
            9 => ("alias", "alias".to_owned()),
            _ => ("group", "group".to_owned()),
        };
        row["event_type"] = kind.into();
        row["event_name"] = name.into();
        match kind {
            "identify" => {
                row["user_id"] = format!("u{}", self.user.unwrap_or(0)).into();
            }
            "alias" => {
                // An alias names the previous id; its anonymous id is left out.
                row["user_id"] = format!("u{}", self.user.unwrap_or(0)).into();
                row["properties"] = serde_json::json!({"previousId": format!("a{}", self.anon)});
                row.as_object_mut().unwrap().remove("anonymous_id");
            }
            _ => {
                if let Some(u) = user {
                    row["user_id"] = u.into();
                }
                if let Some(p) = self.plan {
                    let plan = ["free", "pro"][p as usize % 2];
                    row["properties"] = serde_json::json!({ "plan": plan });
                }
                if kind == "page" {
                    row["page_url"] = PAGES[self.name as usize % 3].into();
                }
            }
        }
        row.to_string()
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u16..600,
        0u8..11,
        0u8..4,
        prop::option::weighted(0.35, 0u8..6),
        0u8..14,
        0u32..(12 * 24 * 60 / 5),
        prop::option::weighted(0.6, 0u8..2),
    )
        .prop_map(|(id, kind, name, user, anon, slot, plan)| Spec {
            id,
            kind,
            name,
            user,
            anon,
            slot,
            plan,
        })
}

/// What to do after a batch.
#[derive(Clone, Copy, Debug)]
enum Step {
    Nothing,
    Analyse,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![2 => Just(Step::Nothing), 2 => Just(Step::Analyse), 1 => Just(Step::Restart)]
}

#[derive(Clone, Debug)]
struct Case {
    events: Vec<Spec>,
    batches: Vec<(usize, Step)>,
}

fn case(max_events: usize) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(spec(), 1..max_events),
        prop::collection::vec((1usize..120, step()), 1..8),
    )
        .prop_map(|(events, batches)| Case { events, batches })
}

/// The analyses checked, with their parameters.
fn requests() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let range = [("from", "2026-03-02"), ("to", "2026-03-12")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut p = range.to_vec();
        p.extend_from_slice(extra);
        p
    };
    vec![
        ("active_users", with(&[])),
        ("active_users", with(&[("interval", "week")])),
        (
            "active_users",
            vec![
                ("from", "2026-02-01"),
                ("to", "2026-04-01"),
                ("interval", "month"),
            ],
        ),
        ("retention", with(&[("period", "day"), ("periods", "4")])),
        (
            "retention",
            vec![
                ("from", "2026-02-20"),
                ("to", "2026-03-20"),
                ("period", "week"),
                ("periods", "2"),
            ],
        ),
        (
            "retention",
            with(&[
                ("period", "day"),
                ("periods", "3"),
                ("start_event", "Signed Up"),
                ("return_event", "Purchased"),
            ]),
        ),
        (
            "funnel",
            with(&[
                ("steps", "Signed Up,Viewed,Purchased"),
                ("window", "3 hours"),
            ]),
        ),
        ("funnel", with(&[("steps", "Viewed,Viewed,Shared")])),
        (
            "funnel",
            with(&[("steps", "Signed Up,Purchased"), ("breakdown", "plan")]),
        ),
        ("sessions", with(&[])),
        ("sessions", with(&[("gap", "1 hour")])),
        ("sessions", with(&[("by", "landing_page")])),
        ("sessions", with(&[("by", "exit_page")])),
        ("lifecycle", with(&[])),
        // Ranges that do not start or end at midnight.
        (
            "sessions",
            vec![
                ("from", "2026-03-03T14:30:00Z"),
                ("to", "2026-03-09T03:00:00Z"),
                ("by", "exit_page"),
            ],
        ),
        (
            "active_users",
            vec![
                ("from", "2026-03-03T14:30:00Z"),
                ("to", "2026-03-09T03:00:00Z"),
            ],
        ),
        (
            "funnel",
            vec![
                ("from", "2026-03-03T14:30:00Z"),
                ("to", "2026-03-09T03:00:00Z"),
                ("steps", "Viewed,Purchased"),
                ("window", "3 hours"),
            ],
        ),
        (
            "lifecycle",
            vec![
                ("from", "2026-02-23"),
                ("to", "2026-03-16"),
                ("interval", "week"),
            ],
        ),
    ]
}

fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn open(store: &Store) -> (Tally, TenantRuntime) {
    let config = Config {
        clock: Clock::fixed(Timestamp::parse("2026-03-20T00:00:00Z").unwrap()),
        ..Config::default()
    };
    let tally = Tally::with_store(store.reopen().unwrap(), config).unwrap();
    let runtime = tally.open_tenant("ny").unwrap();
    (tally, runtime)
}

fn check(runtime: &mut TenantRuntime, accepted: &[Spec]) -> Result<(), TestCaseError> {
    let reference = Reference::new(accepted);
    for (kind, p) in requests() {
        let actual = runtime.analyze(
            kind,
            &params(&p),
            Timestamp::parse("2026-03-20T00:00:00Z").unwrap(),
        );
        let actual = match actual {
            Ok(a) => a,
            Err(e) => return Err(TestCaseError::fail(format!("{kind} {p:?}: {e}"))),
        };
        let expected = reference.run(kind, &p);
        same(&actual, &expected).map_err(|e| TestCaseError::fail(format!("{kind} {p:?}: {e}")))?;
    }
    Ok(())
}

fn same(actual: &ResultSet, expected: &[Vec<Value>]) -> Result<(), String> {
    if actual.rows.len() != expected.len() {
        return Err(format!(
            "{} rows, expected {}:\n{:?}\n{:?}",
            actual.rows.len(),
            expected.len(),
            actual.rows,
            expected
        ));
    }
    for (a, e) in actual.rows.iter().zip(expected) {
        let equal = a.len() == e.len()
            && a.iter().zip(e).all(|(x, y)| match (x, y) {
                (Value::Double(x), Value::Double(y)) => {
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-12
                }
                (Value::Json(x), Value::Json(y)) => x == y,
                _ => x == y,
            });
        if !equal {
            return Err(format!("row {a:?}, expected {e:?}"));
        }
    }
    Ok(())
}

fn run_case(store: Store, case: &Case) -> Result<(), TestCaseError> {
    {
        let tally = Tally::with_store(store.reopen().unwrap(), Config::default()).unwrap();
        tally.create_tenant("ny", TZ).unwrap();
    }
    let (mut tally, mut runtime) = open(&store);
    let mut seen = HashSet::new();
    let mut accepted: Vec<Spec> = Vec::new();
    let mut rest = &case.events[..];
    let mut batches = case.batches.iter().cycle();
    while !rest.is_empty() {
        let &(size, step) = batches.next().unwrap();
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let text: String = batch.iter().map(|s| s.json() + "\n").collect();
        let stream = tally.stream("events").unwrap();
        let config = tally.config().clone();
        let report = tally::ingest::ingest(
            &mut runtime,
            &stream,
            &config,
            tally::ingest::Format::Ndjson,
            text.as_bytes(),
            &|_| {},
        )
        .unwrap();
        prop_assert_eq!(report.rejected, 0, "{:?}", report.errors);
        // The first message of an id is kept; its duplicates are dropped.
        accepted.extend(batch.iter().filter(|s| seen.insert(s.id)).cloned());
        match step {
            Step::Nothing => {}
            Step::Analyse => check(&mut runtime, &accepted)?,
            Step::Restart => {
                drop(runtime);
                (tally, runtime) = open(&store);
            }
        }
    }
    check(&mut runtime, &accepted)?;
    drop(runtime);
    let (_tally, mut runtime) = open(&store);
    check(&mut runtime, &accepted)
}

/// An event as the reference sees it.
struct RefEvent {
    seq: usize,
    kind: &'static str,
    name: String,
    ts: Timestamp,
    page: Option<&'static str>,
    plan: Option<&'static str>,
}

/// The semantics of docs/analyses.md, computed the plain way.
struct Reference {
    tz: TimeZone,
    /// Per person, their events in time order.
    persons: BTreeMap<String, Vec<RefEvent>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Day,
    Week,
    Month,
}

impl Unit {
    fn parse(s: &str) -> Unit {
        match s {
            "day" => Unit::Day,
            "week" => Unit::Week,
            _ => Unit::Month,
        }
    }

    /// The first date of the period holding `d`.
    fn start(self, d: Date) -> Date {
        match self {
            Unit::Day => d,
            Unit::Week => d
                .checked_sub(jiff::Span::new().days(i64::from(d.weekday().to_monday_zero_offset())))
                .unwrap(),
            Unit::Month => d.first_of_month(),
        }
    }

    fn add(self, d: Date, n: i64) -> Date {
        match self {
            Unit::Day => d.checked_add(jiff::Span::new().days(n)).unwrap(),
            Unit::Week => d.checked_add(jiff::Span::new().weeks(n)).unwrap(),
            Unit::Month => d.checked_add(jiff::Span::new().months(n)).unwrap(),
        }
    }
}

impl Reference {
    fn new(specs: &[Spec]) -> Reference {
        let tz = TimeZone::get(TZ).unwrap();
        // Links: an anonymous id's earliest link (by time, then user id) wins.
        let mut links: HashMap<String, (Timestamp, String)> = HashMap::new();
        for s in specs {
            let json: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
            let kind = json["event_type"].as_str().unwrap();
            let anon = match kind {
                "identify" => json["anonymous_id"].as_str(),
                "alias" => json["properties"]["previousId"].as_str(),
                _ => None,
            };
            if let (Some(anon), Some(user)) = (anon, json["user_id"].as_str()) {
                let candidate = (s.ts(), user.to_owned());
                let entry = links.entry(anon.to_owned()).or_insert(candidate.clone());
                if candidate < *entry {
                    *entry = candidate;
                }
            }
        }
        let mut persons: BTreeMap<String, Vec<RefEvent>> = BTreeMap::new();
        for (seq, s) in specs.iter().enumerate() {
            let json: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
            let person = match (json["user_id"].as_str(), json["anonymous_id"].as_str()) {
                (Some(u), _) => u.to_owned(),
                (None, Some(a)) => links.get(a).map_or(a.to_owned(), |l| l.1.clone()),
                (None, None) => continue,
            };
            let kind = match json["event_type"].as_str().unwrap() {
                "track" => "track",
                "page" => "page",
                "screen" => "screen",
                _ => "other",
            };
            persons.entry(person.clone()).or_default().push(RefEvent {
                seq,
                kind,
                name: json["event_name"].as_str().unwrap().to_owned(),
                ts: s.ts(),

                page: json["page_url"]
                    .as_str()
                    .map(|p| *PAGES.iter().find(|x| **x == p).unwrap()),
                plan: json["properties"]["plan"]
                    .as_str()
                    .map(|p| if p == "free" { "free" } else { "pro" }),
            });
        }
        for events in persons.values_mut() {
            // Sequence numbers follow acceptance order, as the store's do.
            events.sort_by_key(|e| (e.ts, e.seq));
        }
        Reference { tz, persons }
    }

    fn date(&self, ts: Timestamp) -> Date {
        ts.to_jiff().to_zoned(self.tz.clone()).date()
    }

    fn instant(&self, d: Date) -> Timestamp {
        Timestamp::from_jiff(
            d.to_zoned(self.tz.clone())
                .unwrap()
                .start_of_day()
                .unwrap()
                .timestamp(),
        )
    }

    fn bound(&self, p: &[(&str, &str)], name: &str) -> Timestamp {
        let text = p.iter().find(|(k, _)| *k == name).unwrap().1;
        match text.parse::<Date>() {
            Ok(date) if text.len() == 10 => self.instant(date),
            _ => Timestamp::parse(text).unwrap(),
        }
    }

    /// The periods (first dates) whose start lies in [from, to).
    fn periods(&self, p: &[(&str, &str)], unit: Unit) -> Vec<Date> {
        let (from, to) = (self.bound(p, "from"), self.bound(p, "to"));
        let mut d = unit.start(self.date(from));
        let mut out = Vec::new();
        loop {
            let at = self.instant(d);
            if at >= to {
                return out;
            }
            if at >= from {
                out.push(d);
            }
            d = unit.add(d, 1);
        }
    }

    fn is_activity(e: &RefEvent) -> bool {
        e.kind != "other"
    }

    fn run(&self, kind: &str, p: &[(&str, &str)]) -> Vec<Vec<Value>> {
        let get = |n: &str| p.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let ts = |d: Date| Value::Timestamp(self.instant(d));
        let ratio = |a: f64, b: f64| {
            if b == 0.0 {
                Value::Null
            } else {
                Value::Double(a / b)
            }
        };
        let median = |mut v: Vec<i64>| {
            if v.is_empty() {
                return Value::Null;
            }
            v.sort();
            let n = v.len();
            let m = if n % 2 == 1 {
                v[n / 2] as f64
            } else {
                (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
            };
            Value::Double(m / 1e6)
        };
        // Per person, the set of local dates with activity.
        let active_dates = |filter: &dyn Fn(&RefEvent) -> bool| -> BTreeMap<&str, BTreeSet<Date>> {
            self.persons
                .iter()
                .map(|(p, evs)| {
                    (
                        p.as_str(),
                        evs.iter()
                            .filter(|e| filter(e))
                            .map(|e| self.date(e.ts))
                            .collect(),
                    )
                })
                .collect()
        };
        match kind {
            "active_users" => {
                let unit = Unit::parse(get("interval").unwrap_or("day"));
                let dates = active_dates(&Self::is_activity);
                let active_within = |from: Date, to_incl: Date| {
                    dates
                        .values()
                        .filter(|ds| ds.range(from..=to_incl).next().is_some())
                        .count() as i64
                };
                self.periods(p, unit)
                    .into_iter()
                    .map(|d| match unit {
                        Unit::Day => {
                            let dau = active_within(d, d);
                            let wau = active_within(Unit::Day.add(d, -6), d);
                            let mau = active_within(Unit::Day.add(d, -29), d);
                            vec![
                                ts(d),
                                Value::Int(dau),
                                Value::Int(wau),
                                Value::Int(mau),
                                ratio(dau as f64, mau as f64),
                            ]
                        }
                        _ => vec![
                            ts(d),
                            Value::Int(active_within(d, Unit::Day.add(unit.add(d, 1), -1))),
                        ],
                    })
                    .collect()
            }
            "retention" => {
                let unit = Unit::parse(get("period").unwrap_or("week"));
                let n: i64 = get("periods").unwrap_or("8").parse().unwrap();
                let starts = |e: &RefEvent| match get("start_event") {
                    Some(name) => e.name == name,
                    None => Self::is_activity(e),
                };
                let returns = |e: &RefEvent| match get("return_event") {
                    Some(name) => e.name == name,
                    None => Self::is_activity(e),
                };
                self.periods(p, unit)
                    .into_iter()
                    .map(|cohort| {
                        let members: Vec<&Vec<RefEvent>> = self
                            .persons
                            .values()
                            .filter(|evs| {
                                evs.iter()
                                    .find(|e| starts(e))
                                    .is_some_and(|e| unit.start(self.date(e.ts)) == cohort)
                            })
                            .collect();
                        let mut returned = vec![members.len() as i64];
                        for k in 1..=n {
                            let period = unit.add(cohort, k);
                            returned.push(
                                members
                                    .iter()
                                    .filter(|evs| {
                                        evs.iter().any(|e| {
                                            returns(e) && unit.start(self.date(e.ts)) == period
                                        })
                                    })
                                    .count() as i64,
                            );
                        }
                        let json = format!(
                            "[{}]",
                            returned
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                        vec![
                            ts(cohort),
                            Value::Int(members.len() as i64),
                            Value::Json(json.into()),
                        ]
                    })
                    .collect()
            }
            "funnel" => {
                let steps: Vec<&str> = get("steps").unwrap().split(',').collect();
                let window = match get("window").unwrap_or("1 day") {
                    "3 hours" => 3 * 3_600_000_000i64,
                    "1 day" => 86_400_000_000,
                    other => panic!("window {other}"),
                };
                let (from, to) = (self.bound(p, "from"), self.bound(p, "to"));
                let breakdown = get("breakdown").is_some();
                // Per breakdown value: per step, the durations of persons reaching it.
                let mut groups: BTreeMap<(bool, Option<&str>), Vec<Vec<i64>>> = BTreeMap::new();
                for evs in self.persons.values() {
                    let mut best: Option<(usize, Vec<i64>, Option<&str>)> = None;
                    for (i, first) in evs.iter().enumerate() {
                        if first.name != steps[0] || first.ts < from || first.ts >= to {
                            continue;
                        }
                        let mut used = vec![i];
                        let mut times = vec![first.ts.0];
                        for step in &steps[1..] {
                            let previous = *times.last().unwrap();
                            let next = evs.iter().enumerate().find(|(j, e)| {
                                e.name == *step
                                    && e.ts.0 >= previous
                                    && e.ts.0 <= first.ts.0 + window
                                    && !used.contains(j)
                            });
                            match next {
                                Some((j, e)) => {
                                    used.push(j);
                                    times.push(e.ts.0);
                                }
                                None => break,
                            }
                        }
                        if best.as_ref().is_none_or(|b| times.len() > b.0) {
                            best = Some((times.len(), times, first.plan));
                        }
                    }
                    if let Some((reached, times, plan)) = best {
                        let key = (
                            breakdown && plan.is_none(),
                            if breakdown { plan } else { None },
                        );
                        let g = groups
                            .entry(key)
                            .or_insert_with(|| vec![Vec::new(); steps.len()]);
                        for j in 0..reached {
                            g[j].push(times[j] - times[0]);
                        }
                    }
                }
                if !breakdown && groups.is_empty() {
                    groups.insert((false, None), vec![Vec::new(); steps.len()]);
                }
                let mut rows = Vec::new();
                for ((_, value), durations) in groups {
                    let counts: Vec<i64> = durations.iter().map(|d| d.len() as i64).collect();
                    for (j, d) in durations.into_iter().enumerate() {
                        let mut row = Vec::new();
                        if breakdown {
                            row.push(value.map_or(Value::Null, Value::text));
                        }
                        row.extend([
                            Value::Int(j as i64 + 1),
                            Value::text(steps[j]),
                            Value::Int(counts[j]),
                            ratio(counts[j] as f64, counts[0] as f64),
                            ratio(counts[j] as f64, counts[j.saturating_sub(1)] as f64),
                            median(d),
                        ]);
                        rows.push(row);
                    }
                }
                rows
            }
            "sessions" => {
                let gap = match get("gap").unwrap_or("30 minutes") {
                    "30 minutes" => 30 * 60_000_000i64,
                    "1 hour" => 3_600_000_000,
                    other => panic!("gap {other}"),
                };
                // Every session: (person, first, last, events).
                let mut sessions: Vec<(&str, &RefEvent, &RefEvent, i64)> = Vec::new();
                for (person, evs) in &self.persons {
                    let activity: Vec<&RefEvent> =
                        evs.iter().filter(|e| Self::is_activity(e)).collect();
                    let mut start = 0;
                    for i in 1..=activity.len() {
                        if i == activity.len() || activity[i].ts.0 - activity[i - 1].ts.0 > gap {
                            sessions.push((
                                person,
                                activity[start],
                                activity[i - 1],
                                (i - start) as i64,
                            ));
                            start = i;
                        }
                    }
                }
                let days = self.periods(p, Unit::Day);
                let (from, to) = (self.bound(p, "from"), self.bound(p, "to"));
                match get("by") {
                    None => days
                        .iter()
                        .map(|d| {
                            let of_day: Vec<_> = sessions
                                .iter()
                                .filter(|s| self.date(s.1.ts) == *d)
                                .collect();
                            let n = of_day.len() as f64;
                            let persons: BTreeSet<&str> = of_day.iter().map(|s| s.0).collect();
                            let durations: Vec<i64> =
                                of_day.iter().map(|s| s.2.ts.0 - s.1.ts.0).collect();
                            let total: i64 = durations.iter().sum();
                            vec![
                                ts(*d),
                                Value::Int(of_day.len() as i64),
                                Value::Int(persons.len() as i64),
                                ratio(total as f64 / 1e6, n),
                                median(durations),
                                ratio(of_day.iter().filter(|s| s.3 == 1).count() as f64, n),
                                ratio(of_day.iter().map(|s| s.3).sum::<i64>() as f64, n),
                            ]
                        })
                        .collect(),
                    Some(by) => {
                        let mut pages: BTreeMap<Option<&str>, (i64, i64)> = BTreeMap::new();
                        for s in sessions.iter().filter(|s| s.1.ts >= from && s.1.ts < to) {
                            let page = if by == "landing_page" {
                                s.1.page
                            } else {
                                s.2.page
                            };
                            let c = pages.entry(page).or_default();
                            c.0 += 1;
                            c.1 += i64::from(s.3 == 1);
                        }
                        let mut rows: Vec<(Option<&str>, i64, i64)> =
                            pages.into_iter().map(|(p, (s, b))| (p, s, b)).collect();
                        rows.sort_by(|x, y| {
                            y.1.cmp(&x.1)
                                .then((x.0.is_none(), x.0).cmp(&(y.0.is_none(), y.0)))
                        });
                        rows.into_iter()
                            .map(|(page, s, b)| {
                                vec![
                                    page.map_or(Value::Null, Value::text),
                                    Value::Int(s),
                                    ratio(b as f64, s as f64),
                                ]
                            })
                            .collect()
                    }
                }
            }
            "lifecycle" => {
                let unit = Unit::parse(get("interval").unwrap_or("day"));
                let periods: Vec<BTreeSet<Date>> = active_dates(&Self::is_activity)
                    .into_values()
                    .map(|ds| ds.into_iter().map(|d| unit.start(d)).collect())
                    .collect();
                self.periods(p, unit)
                    .into_iter()
                    .map(|d| {
                        let previous = unit.add(d, -1);
                        let (mut new, mut returning, mut resurrecting, mut dormant) = (0, 0, 0, 0);
                        for ps in &periods {
                            let now = ps.contains(&d);
                            let before = ps.contains(&previous);
                            if now && ps.first() == Some(&d) {
                                new += 1;
                            } else if now && before {
                                returning += 1;
                            } else if now {
                                resurrecting += 1;
                            } else if before {
                                dormant -= 1;
                            }
                        }
                        vec![
                            ts(d),
                            Value::Int(new),
                            Value::Int(returning),
                            Value::Int(resurrecting),
                            Value::Int(dormant),
                        ]
                    })
                    .collect()
            }
            other => panic!("{other}"),
        }
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn memory_analyses_equal_the_reference(case in case(500)) {
        run_case(Store::memory(), &case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48) / 4 + 1, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_analyses_equal_the_reference(case in case(400)) {
        let dir = tempfile::tempdir().unwrap();
        run_case(Store::open_sqlite(dir.path()).unwrap(), &case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48) / 6 + 1, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn postgres_analyses_equal_the_reference(case in case(400)) {
        let pg = tally_store::testing::PgScratch::new();
        run_case(Store::open_postgres(pg.config()).unwrap(), &case)?;
    }
}

/// Two processes on one PostgreSQL database (a leader and a follower of the tenant), each
/// committing some of the events: both answer every analysis as the reference does.
#[test]
fn two_postgres_nodes_give_the_same_answers() {
    let pg = tally_store::testing::PgScratch::new();
    let store = Store::open_postgres(pg.config()).unwrap();
    {
        let tally = Tally::with_store(store.reopen().unwrap(), Config::default()).unwrap();
        tally.create_tenant("ny", TZ).unwrap();
    }
    let (tally_a, mut a) = open(&store);
    let (tally_b, mut b) = open(&store);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let specs: Vec<Spec> = (0..600)
        .map(|i| Spec {
            id: (i % 520) as u16,
            kind: next(11) as u8,
            name: next(4) as u8,
            user: (next(3) == 0).then(|| next(6) as u8),
            anon: next(14) as u8,
            slot: next(12 * 24 * 60 / 5) as u32,
            plan: (next(5) < 3).then(|| next(2) as u8),
        })
        .collect();
    let mut seen = HashSet::new();
    let mut accepted = Vec::new();
    for (i, batch) in specs.chunks(75).enumerate() {
        let (tally, runtime) = if i % 2 == 0 {
            (&tally_a, &mut a)
        } else {
            (&tally_b, &mut b)
        };
        let text: String = batch.iter().map(|s| s.json() + "\n").collect();
        let stream = tally.stream("events").unwrap();
        let report = tally::ingest::ingest(
            runtime,
            &stream,
            tally.config(),
            tally::ingest::Format::Ndjson,
            text.as_bytes(),
            &|_| {},
        )
        .unwrap();
        assert_eq!(report.rejected, 0, "{:?}", report.errors);
        accepted.extend(batch.iter().filter(|s| seen.insert(s.id)).cloned());
        check(&mut a, &accepted).unwrap();
        check(&mut b, &accepted).unwrap();
    }
}
