//! Differential test: incremental views == recomputation from raw events.
//!
//! Random event streams (duplicates, late and out-of-order events, NULLs, times across the DST
//! change of the tenant's time zone) are ingested in random batches, with random flushes and
//! random restarts (a restart drops everything unflushed, as `kill -9` would). Afterwards every
//! view must equal `reference::recompute` over the accepted events: exact aggregates exactly,
//! floating-point ones to 1e-9, sketches within their stated error. And re-grouping the hourly
//! view to days must give the daily view's answer.
//!
//! Runs on the in-memory store, on SQLite and on PostgreSQL. `PROPTEST_CASES` scales the number of cases.

use proptest::prelude::*;
use tally::app::{Clock, Config, Tally};
use tally::runtime::TenantRuntime;
use tally_store::Store;
use tally_views::decimal::Decimal;
use tally_views::reference::{compare, recompute};
use tally_views::{Event, Interval, QueryRequest, Timestamp, Value};

const SCHEMA: &str = "
CREATE STREAM ev (id TEXT NOT NULL, k TEXT, n BIGINT, x DOUBLE, amt DECIMAL(20,6) NOT NULL, flag BOOLEAN, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');

CREATE MATERIALIZED VIEW hourly AS
SELECT time_bucket('1 hour', at) AS hour, k,
       count(*) AS c, count(n) AS cn, sum(n) AS sn, sum(amt) AS sa, avg(amt) AS aa,
       min(x) AS mnx, max(x) AS mxx, avg(x) AS ax, sum(x) AS sx, stddev_samp(x) AS sdx, var_pop(x) AS vx,
       count(DISTINCT n) AS dn, min(at) AS first_at, max(k) AS mk,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS p90x,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY amt) AS p50a,
       first(k, at) AS fk, last(n, at) AS ln, bool_and(flag) AS all_f, bool_or(flag) AS any_f,
       count(*) FILTER (WHERE flag) AS cf, sum(amt) FILTER (WHERE n > 5) AS big_sa
FROM ev GROUP BY 1, 2;

CREATE MATERIALIZED VIEW daily AS
SELECT time_bucket('1 day', at) AS day, k,
       count(*) AS c, count(n) AS cn, sum(n) AS sn, sum(amt) AS sa, avg(amt) AS aa,
       min(x) AS mnx, max(x) AS mxx, avg(x) AS ax, sum(x) AS sx, stddev_samp(x) AS sdx, var_pop(x) AS vx,
       count(DISTINCT n) AS dn, min(at) AS first_at, max(k) AS mk,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS p90x,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY amt) AS p50a,
       first(k, at) AS fk, last(n, at) AS ln, bool_and(flag) AS all_f, bool_or(flag) AS any_f,
       count(*) FILTER (WHERE flag) AS cf, sum(amt) FILTER (WHERE n > 5) AS big_sa
FROM ev GROUP BY 1, 2;

CREATE MATERIALIZED VIEW sketches AS
SELECT date_trunc('week', at) AS week,
       approx_count_distinct(id) AS ids, count(DISTINCT id) AS ids_exact,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY x) AS p99x,
       percentile_disc(0.1) WITHIN GROUP (ORDER BY amt) AS p10a
FROM ev GROUP BY 1;

CREATE MATERIALIZED VIEW per_k AS
SELECT coalesce(k, 'none') AS key, sum(n) AS sn, max(at) AS last_at,
       sum(amt) / nullif(count(*), 0) AS avg_amt, count(*) * 2 + 1 AS odd
FROM ev WHERE n IS NOT NULL OR flag GROUP BY 1;

CREATE MATERIALIZED VIEW total AS SELECT count(*) AS c, sum(amt) AS sa FROM ev;
";

/// A view created in the middle of the stream: it backfills from the raw events while the other
/// views are further along, so views sit at different positions.
const LATE_VIEW: &str = "
CREATE MATERIALIZED VIEW late AS
SELECT time_bucket('15 minutes', at) AS slot, count(*) AS c, sum(amt) AS sa, first(id, at) AS fid, last(id, at) AS lid,
       min(x) AS mnx, count(DISTINCT k) AS dk
FROM ev GROUP BY 1;
";

/// One generated event.
#[derive(Clone, Debug)]
struct Spec {
    id: u16,
    k: Option<u8>,
    n: Option<i64>,
    x: Option<i32>,
    amt_micros: i64,
    flag: Option<bool>,
    /// Ten-minute steps after 2026-03-27T00:00:00Z: the window spans Berlin's DST change, and
    /// equal times are common, so first/last must break ties the same way every time.
    slot: u32,
}

impl Spec {
    fn json(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let at = Timestamp(
            Timestamp::parse("2026-03-27T00:00:00Z").unwrap().0
                + i64::from(self.slot) * 600_000_000,
        );
        format!(
            r#"{{"id":"e{}","k":{},"n":{},"x":{},"amt":"{}","flag":{},"at":"{}"}}"#,
            self.id,
            opt(self.k.map(|k| format!("\"{}\"", (b'a' + k) as char))),
            opt(self.n.map(|n| n.to_string())),
            // Multiples of 0.25 add up exactly in any order, so sums are comparable exactly.
            opt(self.x.map(|x| format!("{}", f64::from(x) * 0.25))),
            Decimal::new(i128::from(self.amt_micros), 6),
            opt(self.flag.map(|f| f.to_string())),
            at
        )
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u16..400,
        prop::option::weighted(0.85, 0u8..4),
        prop::option::weighted(0.8, -3i64..12),
        prop::option::weighted(0.9, prop_oneof![-4000i32..4000, 1i32..4_000_000]),
        -10_000_000_000i64..10_000_000_000,
        prop::option::weighted(0.8, any::<bool>()),
        0u32..(7 * 144),
    )
        .prop_map(|(id, k, n, x, amt_micros, flag, slot)| Spec {
            id,
            k,
            n,
            x,
            amt_micros,
            flag,
            slot,
        })
}

/// What to do after a batch.
#[derive(Clone, Copy, Debug)]
enum Step {
    Nothing,
    Flush,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![3 => Just(Step::Nothing), 1 => Just(Step::Flush), 1 => Just(Step::Restart)]
}

#[derive(Clone, Debug)]
struct Case {
    events: Vec<Spec>,
    /// Batch sizes and what follows each batch.
    batches: Vec<(usize, Step)>,
    /// After how many batches the late view is created.
    late_view_after: usize,
}

fn case(max_events: usize) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(spec(), 1..max_events),
        prop::collection::vec((1usize..80, step()), 1..12),
        0usize..8,
    )
        .prop_map(|(events, batches, late_view_after)| Case {
            events,
            batches,
            late_view_after,
        })
}

fn open(store: &Store) -> (Tally, TenantRuntime) {
    let config = Config {
        clock: Clock::fixed(Timestamp::parse("2026-04-05T00:00:00Z").unwrap()),
        ..Config::default()
    };
    let tally = Tally::with_store(store.reopen().unwrap(), config).unwrap();
    let runtime = tally.open_tenant("berlin").unwrap();
    (tally, runtime)
}

fn run_case(store: Store, case: &Case) -> Result<(), TestCaseError> {
    {
        let mut tally = Tally::with_store(store.reopen().unwrap(), Config::default()).unwrap();
        tally.apply_schema(SCHEMA).unwrap();
        tally.create_tenant("berlin", "Europe/Berlin").unwrap();
    }
    let (mut tally, mut runtime) = open(&store);
    let mut accepted: Vec<Event> = Vec::new();
    let mut seen_ids = std::collections::HashSet::new();
    let mut rest = &case.events[..];
    let mut batches = case.batches.iter().cycle();
    let mut done = 0;
    while !rest.is_empty() {
        if done == case.late_view_after {
            drop(runtime);
            tally.apply_schema(LATE_VIEW).unwrap();
            runtime = tally.open_tenant("berlin").unwrap();
        }
        done += 1;
        let &(size, step) = batches.next().unwrap();
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let text: String = batch.iter().map(|s| s.json() + "\n").collect();
        let stream = tally.stream("ev").unwrap();
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
        let fresh = batch.iter().filter(|s| seen_ids.insert(s.id)).count() as u64;
        prop_assert_eq!(report.accepted, fresh);
        match step {
            Step::Nothing => {}
            Step::Flush => runtime.flush().unwrap(),
            Step::Restart => {
                drop(runtime);
                (tally, runtime) = open(&store);
            }
        }
    }
    if done <= case.late_view_after {
        drop(runtime);
        tally.apply_schema(LATE_VIEW).unwrap();
        runtime = tally.open_tenant("berlin").unwrap();
    }
    // The oracle's input: the accepted events as stored, with their sequence numbers.
    let stream = tally.stream("ev").unwrap();
    accepted.extend(runtime.store().read_events(&stream, 0, usize::MAX).unwrap());
    prop_assert_eq!(accepted.len(), seen_ids.len());
    check_views(&tally, &runtime, &accepted)?;
    // And once more after a restart, from the store alone.
    runtime.flush().unwrap();
    drop(runtime);
    let (tally, runtime) = open(&store);
    check_views(&tally, &runtime, &accepted)
}

fn check_views(
    tally: &Tally,
    runtime: &TenantRuntime,
    accepted: &[Event],
) -> Result<(), TestCaseError> {
    for plan in tally.catalog().views() {
        let expected = recompute(plan, accepted, runtime.engine().tz());
        let actual = runtime.query(&plan.name, &QueryRequest::default()).unwrap();
        if let Err(e) = compare(plan, &expected, &actual) {
            return Err(TestCaseError::fail(e));
        }
    }
    // Re-grouping hours to days equals the daily view.
    let regrouped = runtime
        .query(
            "hourly",
            &QueryRequest {
                grain: Some(Interval::Days(1)),
                ..QueryRequest::default()
            },
        )
        .unwrap();
    let daily = runtime.query("daily", &QueryRequest::default()).unwrap();
    prop_assert_eq!(regrouped.rows.len(), daily.rows.len());
    for (a, b) in regrouped.rows.iter().zip(&daily.rows) {
        for (i, (va, vb)) in a.iter().zip(b).enumerate() {
            let same = match (va, vb) {
                (Value::Double(x), Value::Double(y)) => {
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-9
                }
                _ => va == vb,
            };
            prop_assert!(
                same,
                "column {} differs: {:?} vs {:?}",
                regrouped.columns[i].0,
                va,
                vb
            );
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
    #![proptest_config(ProptestConfig { cases: cases(48), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn memory_views_equal_recomputation(case in case(400)) {
        run_case(Store::memory(), &case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48) / 4 + 1, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_views_equal_recomputation(case in case(300)) {
        let dir = tempfile::tempdir().unwrap();
        run_case(Store::open_sqlite(dir.path()).unwrap(), &case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48) / 6 + 1, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn postgres_views_equal_recomputation(case in case(300)) {
        let pg = tally_store::testing::PgScratch::new();
        run_case(Store::open_postgres(pg.config()).unwrap(), &case)?;
    }
}
