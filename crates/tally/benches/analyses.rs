//! Behavioural analyses beside DuckDB on the same raw events, in the same run (issue 13's
//! figures in docs/performance.md):
//!
//! 2,000,000 `events` of 100,000 persons over 60 days with 20 event names (a third of the
//! persons browse anonymously first and are linked later by an `identify`; a tenth never are),
//! ingested into SQLite as `tally ingest` does. Then, in process:
//!
//! 1. ingest throughput in parts of 100,000 events, plain and with an analysis after every
//!    part (a dashboard polling while the data arrives): the analyses' state is caught up from
//!    the log, never on the ingest path;
//! 2. the first analysis after the tenant opens (the state built from the log);
//! 3. each analysis over the whole range, p50 of 10: active users by day, weekly retention (8
//!    periods), a 3-step funnel (1 day window), sessions by day, daily lifecycle;
//!
//! against DuckDB (PyPI, in process, default threads) computing the same answers with SQL over
//! the same raw events loaded as a table (the SQL is below: persons resolved from the
//! `identify` links, then each analysis), p50 of 5. The answers are compared (totals of every
//! column) so both sides compute the same thing.
//!
//! `cargo bench -p tally --bench analyses` (`TALLY_BENCH_EVENTS`, default 2,000,000). `cargo test
//! --benches` runs Tally's side once on 20,000 events and skips DuckDB.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tally::app::{Config, Location, Tally};
use tally_views::{ResultSet, Timestamp, Value};

#[path = "workload.rs"]
mod workload;

/// The first day of the data (a Monday) and the range analysed: 60 days.
const FROM: &str = "2026-01-05";
const TO: &str = "2026-03-06";
const DAYS: u64 = 60;

/// The analyses measured, with their parameters besides the range.
const ANALYSES: [(&str, &[(&str, &str)]); 5] = [
    ("active_users", &[]),
    ("retention", &[("period", "week"), ("periods", "8")]),
    ("funnel", &[("steps", "e00,e01,e02"), ("window", "1 day")]),
    ("sessions", &[]),
    ("lifecycle", &[]),
];

/// The DuckDB side: loads the CSV, resolves persons, runs each analysis `n` times; prints the
/// p50 seconds and the totals each answer's columns add up to.
const DUCKDB: &str = r#"
import json, sys, time, duckdb
d, n, frm, to = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE TABLE events AS SELECT * FROM read_csv('{d}/events.csv', header = true, columns = {{'id': 'VARCHAR', 'event_type': 'VARCHAR', 'event_name': 'VARCHAR', 'ts': 'TIMESTAMPTZ', 'user_id': 'VARCHAR', 'anonymous_id': 'VARCHAR', 'page_url': 'VARCHAR'}})")
P = """WITH links AS (
  SELECT anonymous_id AS anon, arg_min(user_id, ts) AS uid FROM events
  WHERE event_type = 'identify' AND user_id IS NOT NULL AND anonymous_id IS NOT NULL GROUP BY 1),
p AS (
  SELECT e.ts, e.event_name, e.event_type IN ('track', 'page', 'screen') AS activity,
         coalesce(e.user_id, l.uid, e.anonymous_id) AS person
  FROM events e LEFT JOIN links l ON e.user_id IS NULL AND l.anon = e.anonymous_id
  WHERE coalesce(e.user_id, e.anonymous_id) IS NOT NULL)"""
Q = {
"active_users": f"""{P},
pd AS (SELECT DISTINCT person, CAST(ts AS DATE) AS d FROM p WHERE activity),
days AS (SELECT CAST(range AS DATE) AS d FROM range(DATE '{frm}', DATE '{to}', INTERVAL 1 DAY))
SELECT days.d, count(DISTINCT person) FILTER (WHERE pd.d = days.d) AS dau,
       count(DISTINCT person) FILTER (WHERE pd.d > days.d - 7) AS wau, count(DISTINCT person) AS mau
FROM days JOIN pd ON pd.d BETWEEN days.d - 29 AND days.d GROUP BY 1 ORDER BY 1""",
"retention": f"""{P},
pw AS (SELECT DISTINCT person, date_trunc('week', ts) AS w FROM p WHERE activity),
f AS (SELECT person, min(w) AS cohort FROM pw GROUP BY 1)
SELECT f.cohort, date_diff('week', f.cohort, pw.w) AS k, count(*) AS persons
FROM f JOIN pw USING (person)
WHERE f.cohort >= TIMESTAMPTZ '{frm}' AND f.cohort < TIMESTAMPTZ '{to}' AND pw.w <= f.cohort + INTERVAL 8 WEEK
GROUP BY 1, 2 ORDER BY 1, 2""",
"funnel": f"""{P},
s1 AS (SELECT DISTINCT person, ts AS t1 FROM p WHERE event_name = 'e00' AND ts >= TIMESTAMPTZ '{frm}' AND ts < TIMESTAMPTZ '{to}'),
s2 AS (SELECT s1.person, s1.t1, min(e.ts) AS t2 FROM s1 JOIN p e ON e.person = s1.person AND e.event_name = 'e01'
       AND e.ts >= s1.t1 AND e.ts <= s1.t1 + INTERVAL 1 DAY GROUP BY 1, 2),
s3 AS (SELECT s2.person, s2.t1, min(e.ts) AS t3 FROM s2 JOIN p e ON e.person = s2.person AND e.event_name = 'e02'
       AND e.ts >= s2.t2 AND e.ts <= s2.t1 + INTERVAL 1 DAY GROUP BY 1, 2),
best AS (SELECT s1.person, max(CASE WHEN s3.t1 IS NOT NULL THEN 3 WHEN s2.t1 IS NOT NULL THEN 2 ELSE 1 END) AS reached
         FROM s1 LEFT JOIN s2 ON s2.person = s1.person AND s2.t1 = s1.t1
                 LEFT JOIN s3 ON s3.person = s1.person AND s3.t1 = s1.t1 GROUP BY 1)
SELECT count(*), count(*) FILTER (WHERE reached >= 2), count(*) FILTER (WHERE reached >= 3) FROM best""",
"sessions": f"""{P},
a AS (SELECT person, ts, coalesce(ts - lag(ts) OVER w > INTERVAL 30 MINUTE, true) AS new
      FROM p WHERE activity WINDOW w AS (PARTITION BY person ORDER BY ts)),
s AS (SELECT person, ts, sum(CAST(new AS INTEGER)) OVER (PARTITION BY person ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM a),
ss AS (SELECT person, sid, min(ts) AS first, max(ts) AS last, count(*) AS n FROM s GROUP BY 1, 2)
SELECT CAST(first AS DATE) AS d, count(*) AS sessions, count(DISTINCT person) AS persons,
       avg(epoch(last) - epoch(first)) AS avg_s, median(epoch(last) - epoch(first)) AS median_s,
       avg(CAST(n = 1 AS DOUBLE)) AS bounce_rate, avg(n) AS events_per_session
FROM ss WHERE first >= TIMESTAMPTZ '{frm}' AND first < TIMESTAMPTZ '{to}' GROUP BY 1 ORDER BY 1""",
"lifecycle": f"""{P},
pd AS (SELECT DISTINCT person, CAST(ts AS DATE) AS d FROM p WHERE activity),
f AS (SELECT person, d, min(d) OVER (PARTITION BY person) AS first, lag(d) OVER w AS prev, lead(d) OVER w AS next
      FROM pd WINDOW w AS (PARTITION BY person ORDER BY d)),
counts AS (
  SELECT d, count(*) FILTER (WHERE d = first) AS new, count(*) FILTER (WHERE prev = d - 1) AS "returning",
         count(*) FILTER (WHERE d <> first AND prev <> d - 1) AS resurrecting, 0 AS dormant FROM f GROUP BY d
  UNION ALL
  SELECT d + 1, 0, 0, 0, -count(*) FROM f WHERE next IS NULL OR next <> d + 1 GROUP BY 1)
SELECT d, sum(new), sum("returning"), sum(resurrecting), sum(dormant) FROM counts
WHERE d >= DATE '{frm}' AND d < DATE '{to}' GROUP BY d ORDER BY d""",
}
out = {"version": duckdb.__version__}
for name, sql in Q.items():
    times = []
    for i in range(n + 1):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        if i >= 1:
            times.append(time.perf_counter() - started)
    times.sort()
    out[name] = times[len(times) // 2]
    if name == "retention":
        totals = [sum(r[2] for r in rows if r[1] == 0), sum(r[2] for r in rows)]
    elif name == "funnel":
        totals = list(rows[0])
    elif name == "sessions":
        totals = [sum(r[1] for r in rows)]
    else:
        totals = [sum(r[c] for r in rows) for c in range(1, len(rows[0]))]
    out[name + "_totals"] = [int(t) for t in totals]
print(json.dumps(out))
"#;

fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let events: usize = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 2_000_000 });
    let persons = (events / 20).max(10);
    let dir = tempfile::tempdir().unwrap();
    let ndjson = dir.path().join("events.ndjson");
    write_events(dir.path(), events, persons);

    // 1. Ingest, plain and with an analysis after every 100,000 events.
    let chunk = (events / 20).max(1);
    let plain = ingest(&dir.path().join("plain"), &ndjson, chunk, false);
    let polled = ingest(&dir.path().join("polled"), &ndjson, chunk, true);
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "events: {events}, persons: {persons}, days: {DAYS}, event names: 20 (SQLite, one tenant, UTC)"
    );
    println!();
    println!("| ingest | events/s | ratio |");
    println!("|---|---:|---:|");
    println!(
        "| `tally ingest` in {chunk}-event parts (no analyses) | {:.0} | 1.00 |",
        rate(plain.0)
    );
    println!(
        "| the same, an analysis after every {chunk} events (ingest time only; the analyses took {:.2} s in all) | {:.0} | {:.2} |",
        polled.1.as_secs_f64(),
        rate(polled.0),
        rate(polled.0) / rate(plain.0)
    );

    // 2. and 3. Analyses on the plainly loaded data.
    let tally = Tally::open(
        &Location::Directory(dir.path().join("plain")),
        Config::default(),
    )
    .unwrap();
    let mut runtime = tally.open_tenant("default").unwrap();
    let now = Timestamp::parse("2026-03-10T00:00:00Z").unwrap();
    let params = |extra: &[(&str, &str)]| {
        let mut p = vec![
            ("from".to_owned(), FROM.to_owned()),
            ("to".to_owned(), TO.to_owned()),
        ];
        p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p
    };
    let started = Instant::now();
    runtime.analyze("active_users", &params(&[]), now).unwrap();
    let build = started.elapsed();
    let n = if quick { 2 } else { 10 };
    let mut tally_side = Vec::new();
    for (kind, extra) in ANALYSES {
        let mut times = Vec::new();
        let mut answer = None;
        for _ in 0..n {
            let started = Instant::now();
            answer = Some(runtime.analyze(kind, &params(extra), now).unwrap());
            times.push(started.elapsed());
        }
        times.sort();
        tally_side.push((kind, times[n / 2], totals(kind, &answer.unwrap())));
    }
    println!();
    println!(
        "first analysis after the tenant opens (state built from the log): {:.2} s ({:.0} events/s)",
        build.as_secs_f64(),
        rate(build)
    );
    if quick {
        for (kind, p50, totals) in &tally_side {
            println!(
                "tally only (quick run): {kind} p50 {:.2} ms, totals {totals:?}",
                ms(*p50)
            );
        }
        return;
    }
    let peer = match duckdb(dir.path()) {
        Ok(peer) => peer,
        Err(e) => {
            println!("DuckDB could not be measured: {e}");
            return;
        }
    };
    println!(
        "DuckDB {} (PyPI), in process, default threads; Tally in process, one thread",
        peer["version"]
    );
    println!();
    println!("| analysis (60 days) | Tally p50 | DuckDB p50 | DuckDB / Tally | target |");
    println!("|---|---:|---:|---:|---:|");
    for (kind, p50, totals) in &tally_side {
        let theirs: Vec<i64> = peer[format!("{kind}_totals")]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(
            *totals, theirs,
            "{kind}: Tally and DuckDB disagree (totals of the answer's columns)"
        );
        let duck = Duration::from_secs_f64(peer[*kind].as_f64().unwrap());
        println!(
            "| {kind} | {:.1} ms | {:.1} ms | {:.1}× | ≤ 300 ms, faster than DuckDB |",
            ms(*p50),
            ms(duck),
            duck.as_secs_f64() / p50.as_secs_f64()
        );
    }
}

/// The totals the DuckDB side prints for the same analysis: per column, the sum over rows
/// (retention: cohort sizes and all returns; funnel: persons per step; sessions: sessions).
fn totals(kind: &str, answer: &ResultSet) -> Vec<i64> {
    let int = |v: &Value| match v {
        Value::Int(n) => *n,
        other => panic!("{kind}: {other:?}"),
    };
    let column = |c: usize| answer.rows.iter().map(|r| int(&r[c])).sum::<i64>();
    match kind {
        "retention" => {
            let mut all = 0;
            for r in &answer.rows {
                let Value::Json(returned) = &r[2] else {
                    panic!("returned")
                };
                let counts: Vec<i64> = serde_json::from_str(returned).unwrap();
                all += counts.iter().sum::<i64>();
            }
            vec![column(1), all]
        }
        "funnel" => answer.rows.iter().map(|r| int(&r[2])).collect(),
        "sessions" => vec![column(1)],
        "active_users" => vec![column(1), column(2), column(3)],
        _ => vec![column(1), column(2), column(3), column(4)],
    }
}

/// Deterministic events: `persons` persons, 60 days, 20 names (the lower ones more frequent);
/// a third of the persons start anonymous and are identified on a later day, a tenth never.
/// Written as NDJSON (for Tally) and CSV (for DuckDB).
fn write_events(dir: &Path, events: usize, persons: usize) {
    let mut rng = workload_rng(0x5eed_0013);
    let start = (Timestamp::parse(&format!("{FROM}T00:00:00Z")).unwrap().0 / 1_000_000) as u64;
    let mut ndjson =
        std::io::BufWriter::new(std::fs::File::create(dir.join("events.ndjson")).unwrap());
    let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.join("events.csv")).unwrap());
    writeln!(
        csv,
        "id,event_type,event_name,ts,user_id,anonymous_id,page_url"
    )
    .unwrap();
    let link_day = |p: usize| (p * 7919 % DAYS as usize) as u64;
    let mut write = |id: String,
                     kind: &str,
                     name: &str,
                     at: u64,
                     user: Option<String>,
                     anon: Option<String>,
                     page: Option<String>| {
        let ts = jiff::Timestamp::from_second(at as i64).unwrap().to_string();
        let mut row =
            serde_json::json!({"id": id, "event_type": kind, "event_name": name, "timestamp": ts});
        if let Some(u) = &user {
            row["user_id"] = u.as_str().into();
        }
        if let Some(a) = &anon {
            row["anonymous_id"] = a.as_str().into();
        }
        if let Some(p) = &page {
            row["page_url"] = p.as_str().into();
        }
        writeln!(ndjson, "{row}").unwrap();
        writeln!(
            csv,
            "{id},{kind},{name},{ts},{},{},{}",
            user.unwrap_or_default(),
            anon.unwrap_or_default(),
            page.unwrap_or_default()
        )
        .unwrap();
    };
    for p in 0..persons {
        if p.is_multiple_of(3) && p % 10 != 1 {
            let at = start + link_day(p) * 86_400 + 43_200 + (p as u64 % 3_600);
            write(
                format!("l{p}"),
                "identify",
                "identify",
                at,
                Some(format!("u{p}")),
                Some(format!("a{p}")),
                None,
            );
        }
    }
    for i in 0..events {
        // Persons drawn with a skew: some are far busier than others.
        let r = rng() % persons as u64;
        let p = (r * r / persons as u64) as usize;
        let day = rng() % DAYS;
        // Most of a person's events of a day fall in one or two hours, so sessions form.
        let hour = (p as u64 * 13 + day * 5 + rng() % 2) % 24;
        let at = start + day * 86_400 + hour * 3_600 + rng() % 3_600;
        let mut name_index = 0;
        while name_index < 19 && !rng().is_multiple_of(3) {
            name_index += 1;
        }
        let kind = match rng() % 20 {
            0..=6 => "page",
            7 => "screen",
            _ => "track",
        };
        let name = format!("e{name_index:02}");
        let page = (kind == "page").then(|| format!("/p{}", rng() % 50));
        let anonymous = p % 10 == 1 || (p.is_multiple_of(3) && day < link_day(p));
        let (user, anon) = if anonymous {
            (None, Some(format!("a{p}")))
        } else {
            (Some(format!("u{p}")), None)
        };
        write(format!("e{i}"), kind, &name, at, user, anon, page);
    }
}

/// xorshift64, as a closure.
fn workload_rng(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Ingests the file into a fresh data directory in parts of `chunk` events; with `poll`, runs
/// an analysis after each part. Returns the ingest time and the analyses' time.
fn ingest(data: &Path, input: &Path, chunk: usize, poll: bool) -> (Duration, Duration) {
    let tally = Tally::open(&Location::Directory(data.to_owned()), Config::default()).unwrap();
    let stream = tally.stream("events").unwrap();
    let mut runtime = tally.open_tenant("default").unwrap();
    let text = std::fs::read_to_string(input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (mut ingesting, mut analysing) = (Duration::ZERO, Duration::ZERO);
    let now = Timestamp::parse("2026-03-10T00:00:00Z").unwrap();
    let params = vec![
        ("from".to_owned(), FROM.to_owned()),
        ("to".to_owned(), TO.to_owned()),
    ];
    for part in lines.chunks(chunk) {
        let body = part.join("\n");
        let started = Instant::now();
        let report = tally::ingest::ingest(
            &mut runtime,
            &stream,
            tally.config(),
            tally::ingest::Format::Ndjson,
            body.as_bytes(),
            &|_| {},
        )
        .unwrap();
        assert_eq!(report.rejected, 0, "{:?}", report.errors);
        ingesting += started.elapsed();
        if poll {
            let started = Instant::now();
            runtime.analyze("active_users", &params, now).unwrap();
            analysing += started.elapsed();
        }
    }
    runtime.flush().unwrap();
    (ingesting, analysing)
}

fn duckdb(dir: &Path) -> Result<Json, String> {
    let args = [dir.as_os_str(), "5".as_ref(), FROM.as_ref(), TO.as_ref()];
    workload::run_duckdb(dir, "duckdb_analyses.py", DUCKDB, &args)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
