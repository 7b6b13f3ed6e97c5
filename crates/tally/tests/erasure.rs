//! Differential test of GDPR erasure: random events of many persons (user ids, anonymous ids
//! linked to them by `identify` or not, a custom stream with a person column, duplicates) are
//! ingested in batches with flushes and restarts, and random persons — by user id or by an
//! anonymous id — are erased in between. Afterwards the events left are exactly those of a
//! model that deletes, at each erasure, the events of the person's ids as the analyses resolve
//! them; every view equals `reference::recompute` over the events left; and the counts each
//! erasure answered equal the model's. On the in-memory store, SQLite and PostgreSQL.
//!
//! Views past a stream's retention are reported as not correctable (a test of its own).

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use tally::app::{Clock, Config, Tally};
use tally::runtime::TenantRuntime;
use tally_store::Store;
use tally_views::reference::{compare, recompute};
use tally_views::{Event, QueryRequest, Timestamp, Value};

const SCHEMA: &str = "
CREATE STREAM pay (id TEXT NOT NULL, who TEXT, amount DECIMAL(12,2) NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id', person = 'who');

CREATE MATERIALIZED VIEW hourly_events AS
SELECT time_bucket('1 hour', timestamp) AS hour, event_name, count(*) AS n,
       count(DISTINCT user_id) AS users, approx_count_distinct(anonymous_id) AS anons,
       first(user_id, timestamp) AS first_user, last(anonymous_id, timestamp) AS last_anon
FROM events GROUP BY 1, 2;

CREATE MATERIALIZED VIEW per_person AS
SELECT coalesce(user_id, anonymous_id) AS who, count(*) AS n, min(timestamp) AS first_seen,
       max(timestamp) AS last_seen
FROM events GROUP BY 1;

CREATE MATERIALIZED VIEW by_type AS SELECT event_type, count(*) AS n FROM events GROUP BY 1;

CREATE MATERIALIZED VIEW pay_daily AS
SELECT time_bucket('1 day', at) AS day, sum(amount) AS total, count(DISTINCT who) AS payers,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS median, max(amount) AS top
FROM pay GROUP BY 1;

CREATE MATERIALIZED VIEW pay_by_who AS SELECT who, sum(amount) AS total, count(*) AS n FROM pay GROUP BY 1;
";

const USERS: u8 = 10;

/// One generated event of `events` or `pay`.
#[derive(Clone, Debug)]
struct Spec {
    /// Its id, from a small range so that some are sent twice.
    id: u16,
    pay: bool,
    identify: bool,
    user: Option<u8>,
    /// The anonymous id `a{user}_{k}`: each belongs to one user, so a link never changes.
    anon: Option<(u8, u8)>,
    name: u8,
    slot: u32,
}

fn user(u: u8) -> String {
    format!("u{u}")
}

fn anon((u, k): (u8, u8)) -> String {
    format!("a{u}_{k}")
}

impl Spec {
    fn at(&self) -> String {
        let start = Timestamp::parse("2026-03-02T00:00:00Z").unwrap().0;
        Timestamp(start + i64::from(self.slot) * 900_000_000).to_string()
    }

    fn user_id(&self) -> Option<String> {
        self.user.map(user)
    }

    fn anonymous_id(&self) -> Option<String> {
        // An identify event carries both ids: the anonymous id is one of the user's.
        match (self.identify, self.user, self.anon) {
            (true, Some(u), Some((_, k))) => Some(anon((u, k))),
            (_, _, a) => a.map(anon),
        }
    }

    fn json(&self) -> String {
        let text = |v: Option<String>| v.map_or("null".into(), |s| format!("\"{s}\""));
        if self.pay {
            // The payer is a user id or an anonymous id.
            let who = self.user_id().or_else(|| self.anonymous_id());
            format!(
                r#"{{"id":"p{}","who":{},"amount":"{}.{:02}","at":"{}"}}"#,
                self.id,
                text(who),
                self.slot % 50,
                self.name,
                self.at()
            )
        } else {
            format!(
                r#"{{"id":"e{}","event_type":"{}","event_name":"n{}","user_id":{},"anonymous_id":{},"timestamp":"{}"}}"#,
                self.id,
                if self.identify { "identify" } else { "track" },
                self.name,
                text(self.user_id()),
                text(self.anonymous_id()),
                self.at()
            )
        }
    }

    fn key(&self) -> String {
        format!("{}{}", if self.pay { "p" } else { "e" }, self.id)
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u16..300,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.6, 0..USERS),
        prop::option::weighted(0.7, (0..USERS, 0u8..3)),
        0u8..4,
        0u32..(4 * 96),
    )
        .prop_map(|(id, pay, identify, user, anon, name, slot)| Spec {
            id,
            pay,
            identify: identify && !pay && user.is_some() && anon.is_some(),
            user,
            anon,
            name,
            slot,
        })
}

/// A person to erase: a user id, or an anonymous id.
#[derive(Clone, Debug)]
enum Person {
    User(u8),
    Anonymous((u8, u8)),
}

impl Person {
    fn id(&self) -> String {
        match self {
            Person::User(u) => user(*u),
            Person::Anonymous(a) => anon(*a),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Nothing,
    Flush,
    Restart,
}

#[derive(Clone, Debug)]
enum Op {
    Ingest(usize, Step),
    Erase(Person),
}

fn op() -> impl Strategy<Value = Op> {
    let step =
        prop_oneof![3 => Just(Step::Nothing), 1 => Just(Step::Flush), 1 => Just(Step::Restart)];
    let person = prop_oneof![
        (0..USERS).prop_map(Person::User),
        (0..USERS, 0u8..3).prop_map(Person::Anonymous),
    ];
    prop_oneof![3 => (1usize..60, step).prop_map(|(n, s)| Op::Ingest(n, s)), 1 => person.prop_map(Op::Erase)]
}

#[derive(Clone, Debug)]
struct Case {
    events: Vec<Spec>,
    ops: Vec<Op>,
}

fn case(max_events: usize) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(spec(), 1..max_events),
        prop::collection::vec(op(), 2..14),
    )
        .prop_map(|(events, ops)| Case { events, ops })
}

/// The model: the events stored, in arrival order.
#[derive(Default)]
struct Model {
    stored: Vec<Spec>,
    seen: HashSet<String>,
}

impl Model {
    fn ingest(&mut self, batch: &[Spec]) {
        for s in batch {
            if self.seen.insert(s.key()) {
                self.stored.push(s.clone());
            }
        }
    }

    /// Deletes the person's events; returns how many per stream.
    fn erase(&mut self, person: &Person) -> BTreeMap<String, u64> {
        // Links as the analyses make them: identify events with both ids.
        let linked: HashSet<(u8, u8)> = self
            .stored
            .iter()
            .filter(|s| s.identify)
            .filter_map(|s| Some((s.user?, s.anon?.1)))
            .collect();
        let persons: Vec<String> = match person {
            Person::User(u) => vec![user(*u)],
            Person::Anonymous(a) if linked.contains(a) => vec![anon(*a), user(a.0)],
            Person::Anonymous(a) => vec![anon(*a)],
        };
        let mut ids: HashSet<String> = persons.iter().cloned().collect();
        for &(u, k) in &linked {
            if persons.contains(&user(u)) {
                ids.insert(anon((u, k)));
            }
        }
        let hit = |s: &Spec| {
            let mine = |v: Option<String>| v.is_some_and(|v| ids.contains(&v));
            if s.pay {
                mine(s.user_id().or_else(|| s.anonymous_id()))
            } else {
                mine(s.user_id()) || mine(s.anonymous_id())
            }
        };
        let mut counts = BTreeMap::from([("events".to_owned(), 0), ("pay".to_owned(), 0)]);
        let (gone, kept): (Vec<Spec>, Vec<Spec>) = self.stored.drain(..).partition(|s| hit(s));
        self.stored = kept;
        for s in gone {
            self.seen.remove(&s.key());
            *counts
                .get_mut(if s.pay { "pay" } else { "events" })
                .unwrap() += 1;
        }
        counts
    }
}

fn now() -> Timestamp {
    Timestamp::parse("2026-03-10T00:00:00Z").unwrap()
}

fn open(store: &Store) -> (Tally, TenantRuntime) {
    let config = Config {
        clock: Clock::fixed(now()),
        ..Config::default()
    };
    let tally = Tally::with_store(store.reopen().unwrap(), config).unwrap();
    let runtime = tally.open_tenant("acme").unwrap();
    (tally, runtime)
}

fn ingest(tally: &Tally, runtime: &mut TenantRuntime, stream: &str, batch: &[&Spec]) {
    if batch.is_empty() {
        return;
    }
    let text: String = batch.iter().map(|s| s.json() + "\n").collect();
    let stream = tally.stream(stream).unwrap();
    let report = tally::ingest::ingest(
        runtime,
        &stream,
        &tally.config().clone(),
        tally::ingest::Format::Ndjson,
        text.as_bytes(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.rejected, 0, "{:?}", report.errors);
}

fn run_case(store: Store, case: &Case) -> Result<(), TestCaseError> {
    {
        let mut tally = Tally::with_store(store.reopen().unwrap(), Config::default()).unwrap();
        tally.apply_schema(SCHEMA).unwrap();
        tally.create_tenant("acme", "Europe/Berlin").unwrap();
    }
    let (mut tally, mut runtime) = open(&store);
    let mut model = Model::default();
    let mut rest = &case.events[..];
    for op in case.ops.iter().cycle().take(case.ops.len().max(1) * 4) {
        match op {
            Op::Ingest(size, step) => {
                let (batch, tail) = rest.split_at((*size).min(rest.len()));
                rest = tail;
                let events: Vec<&Spec> = batch.iter().filter(|s| !s.pay).collect();
                let pays: Vec<&Spec> = batch.iter().filter(|s| s.pay).collect();
                ingest(&tally, &mut runtime, "events", &events);
                ingest(&tally, &mut runtime, "pay", &pays);
                // Both streams' events in the model, in the order the batch sent them per stream.
                model.ingest(&events.into_iter().cloned().collect::<Vec<_>>());
                model.ingest(&pays.into_iter().cloned().collect::<Vec<_>>());
                match step {
                    Step::Nothing => {}
                    Step::Flush => runtime.flush().unwrap(),
                    Step::Restart => {
                        drop(runtime);
                        (tally, runtime) = open(&store);
                    }
                }
            }
            Op::Erase(person) => {
                let expected = model.erase(person);
                let erased = runtime.erase_person(&person.id(), now()).unwrap();
                prop_assert_eq!(&erased.events_deleted, &expected, "erasing {:?}", person);
                prop_assert!(erased.not_correctable.is_empty());
                // Erasing again finds nothing.
                let again = runtime.erase_person(&person.id(), now()).unwrap();
                prop_assert!(again.events_deleted.values().all(|&n| n == 0));
                prop_assert!(again.groups_recomputed.values().all(|&n| n == 0));
            }
        }
    }
    check(&tally, &runtime, &model)?;
    runtime.flush().unwrap();
    drop(runtime);
    let (tally, runtime) = open(&store);
    check(&tally, &runtime, &model)?;
    let log = runtime.erasures(10_000).unwrap();
    let erasures = case
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Erase(_)))
        .count()
        * 4
        * 2;
    prop_assert_eq!(log.len(), erasures);
    Ok(())
}

/// The events left equal the model's; every view equals the recomputation over them.
fn check(tally: &Tally, runtime: &TenantRuntime, model: &Model) -> Result<(), TestCaseError> {
    let mut left: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for name in ["events", "pay"] {
        let stream = tally.stream(name).unwrap();
        left.insert(
            name.to_owned(),
            runtime.store().read_events(&stream, 0, usize::MAX).unwrap(),
        );
    }
    let mut stored_ids: Vec<String> = left
        .values()
        .flatten()
        .map(|e| match &e.row[0] {
            Value::Text(t) => t.to_string(),
            other => panic!("an id is text: {other:?}"),
        })
        .collect();
    stored_ids.sort();
    let mut expected: Vec<String> = model.stored.iter().map(Spec::key).collect();
    expected.sort();
    prop_assert_eq!(stored_ids, expected);
    for plan in tally.catalog().views() {
        let expected = recompute(plan, &left[&plan.stream], runtime.engine().tz());
        let actual = runtime.query(&plan.name, &QueryRequest::default()).unwrap();
        if let Err(e) = compare(plan, &expected, &actual) {
            return Err(TestCaseError::fail(format!("view {}: {e}", plan.name)));
        }
    }
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn memory_views_equal_recomputation_after_erasures(case in case(300)) {
        run_case(Store::memory(), &case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32) / 4 + 1, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_views_equal_recomputation_after_erasures(case in case(250)) {
        let dir = tempfile::tempdir().unwrap();
        run_case(Store::open_sqlite(dir.path()).unwrap(), &case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32) / 6 + 1, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn postgres_views_equal_recomputation_after_erasures(case in case(250)) {
        let pg = tally_store::testing::PgScratch::new();
        run_case(Store::open_postgres(pg.config()).unwrap(), &case)?;
    }
}

/// Groups whose raw events may be past the stream's retention are left and named; groups
/// inside it are still recomputed.
#[test]
fn views_past_the_raw_retention_are_not_correctable() {
    let store = Store::memory();
    {
        let mut tally = Tally::with_store(store.reopen().unwrap(), Config::default()).unwrap();
        tally
            .apply_schema(
                "CREATE STREAM visits (who TEXT, at TIMESTAMP NOT NULL)
                   WITH (event_time = 'at', retention = '7 days', person = 'who');
                 CREATE MATERIALIZED VIEW daily AS
                   SELECT time_bucket('1 day', at) AS day, count(*) AS n FROM visits GROUP BY 1;
                 CREATE MATERIALIZED VIEW ever AS SELECT who, count(*) AS n FROM visits GROUP BY 1;",
            )
            .unwrap();
        tally.create_tenant("acme", "UTC").unwrap();
    }
    // Sent on 2026-03-06, when none was past the retention; erased on 2026-03-10.
    let config = Config {
        clock: Clock::fixed(Timestamp::parse("2026-03-06T00:00:00Z").unwrap()),
        ..Config::default()
    };
    let tally = Tally::with_store(store.reopen().unwrap(), config).unwrap();
    let mut runtime = tally.open_tenant("acme").unwrap();
    let stream = tally.stream("visits").unwrap();
    let rows = [
        ("ann", "2026-03-01T10:00:00Z"),
        ("ann", "2026-03-05T10:00:00Z"),
        ("bob", "2026-03-05T11:00:00Z"),
    ];
    let text: String = rows
        .iter()
        .map(|(w, at)| format!("{{\"who\":\"{w}\",\"at\":\"{at}\"}}\n"))
        .collect();
    tally::ingest::ingest(
        &mut runtime,
        &stream,
        &tally.config().clone(),
        tally::ingest::Format::Ndjson,
        text.as_bytes(),
        &|_| {},
    )
    .unwrap();
    let erased = runtime.erase_person("ann", now()).unwrap();
    assert_eq!(erased.events_deleted["visits"], 2);
    // `daily`: 2026-03-05 recomputed (bob's visit left); 2026-03-01 is past the 7 days.
    assert_eq!(erased.groups_recomputed["daily"], 1);
    // `ever` has no time bucket: any of its groups may hold events retention removed.
    assert_eq!(erased.groups_recomputed["ever"], 0);
    assert_eq!(erased.not_correctable, ["daily", "ever"]);
    let daily = runtime.query("daily", &QueryRequest::default()).unwrap();
    assert_eq!(
        daily.rows,
        [
            vec![
                Value::Timestamp(Timestamp::parse("2026-03-01T00:00:00Z").unwrap()),
                Value::Int(1)
            ],
            vec![
                Value::Timestamp(Timestamp::parse("2026-03-05T00:00:00Z").unwrap()),
                Value::Int(1)
            ],
        ]
    );
    let log = runtime.erasures(10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].person_sha256, tally::erase::person_hash("ann"));
    assert_eq!(log[0].person_sha256.len(), 64);
    assert!(!serde_json::to_string(&log[0]).unwrap().contains("ann"));
}

/// On several PostgreSQL nodes only the tenant's leader erases; a follower answers busy, and
/// its answers show the erasure as soon as the leader committed it.
#[test]
fn on_postgres_the_leader_erases_and_followers_see_it() {
    let pg = tally_store::testing::PgScratch::new();
    let store = Store::open_postgres(pg.config()).unwrap();
    {
        let mut tally = Tally::with_store(store.reopen().unwrap(), Config::default()).unwrap();
        tally.apply_schema(SCHEMA).unwrap();
        tally.create_tenant("acme", "Europe/Berlin").unwrap();
    }
    let (tally, mut leader) = open(&store);
    let (_other, mut follower) = open(&store);
    assert!(leader.leads() && !follower.leads());
    let pays: Vec<Spec> = (0..6)
        .map(|i| Spec {
            id: i,
            pay: true,
            identify: false,
            user: Some((i % 2) as u8),
            anon: None,
            name: 1,
            slot: u32::from(i) * 7,
        })
        .collect();
    ingest(&tally, &mut leader, "pay", &pays.iter().collect::<Vec<_>>());
    let error = follower.erase_person("u0", now()).unwrap_err();
    assert!(error.to_string().contains("another node leads"), "{error}");
    let erased = leader.erase_person("u0", now()).unwrap();
    assert_eq!(erased.events_deleted["pay"], 3);
    let by_who = follower
        .query("pay_by_who", &QueryRequest::default())
        .unwrap();
    assert_eq!(by_who.rows.len(), 1, "{:?}", by_who.rows);
    assert_eq!(by_who.rows[0][0], Value::text("u1"));
}
