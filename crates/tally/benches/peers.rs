//! Tally beside DuckDB on the same work, in the same run (the goals of docs/performance.md):
//!
//! 1. engine: decode + validate + apply the rollups workload's five views in memory, one
//!    thread — against DuckDB `read_json` of the same file plus the same five GROUP BYs into
//!    tables (`SET threads = 1`);
//! 2. durable ingest: `tally ingest`'s code path into a fresh SQLite data directory (committed,
//!    applied, flushed) — against DuckDB loading the file into a table of a database file and
//!    running the five GROUP BYs into tables, then `CHECKPOINT` (one thread); and the bare
//!    SQLite insert of the decoded rows, the ceiling of durable inserts here;
//! 3. view query: `GET /v1/views/latency?grain=hour` over HTTP on loopback (the five-minute
//!    view re-grouped to hours, its percentile and HLL states merged), p50 and p99 of 200 —
//!    against DuckDB computing the same answer from the raw events (p50 of 20, its default
//!    threads).
//!
//! 4. memory: the RSS of a `tally serve` process with 100 active tenants, each holding the
//!    rollups views over 10,000 events.
//!
//! Each of 1–3 also against chDB (ClickHouse's engine in process, the same SQL in its dialect:
//! `file(…, JSONEachRow)` into `Memory` tables with `max_threads = 1` and without its parallel
//! parsing, which runs threads of its own; `MergeTree` tables of a
//! session directory with `fsync_after_insert` and `fsync_part_directory`; the query with its
//! default threads). DESIGN.md's engine budget is ≥ 2× chDB.
//!
//! `cargo bench -p tally --bench peers` (`TALLY_BENCH_EVENTS`, default 500,000). DuckDB and
//! chDB come from PyPI (pinned, [`workload::DUCKDB`] and [`workload::CHDB`]) into a virtual
//! environment under `target/peers-venv` on the first run (it needs `python3` with `venv`; chDB's
//! wheels, about 900 MB installed with pandas and pyarrow, carry its engine). Without DuckDB only
//! Tally's figures are printed; without chDB the run says so and prints the rest of the table.
//! `cargo test --benches` runs Tally's side once on 2,000 events and skips the peers. For
//! profiles, the binary runs one part alone: `TALLY_BENCH_ONCE=engine` the engine's part five
//! times (each rate printed; `TALLY_BENCH_VIEWS=a,b` keeps only those views),
//! `TALLY_BENCH_ONCE=query` one view query (for instruction counts).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, serve};
use tally_views::{Catalog, Engine, Event, Interval, TimeZone, Timestamp};
use workload::Workload;

#[path = "workload.rs"]
mod workload;

#[path = "../tests/common/mod.rs"]
mod common;

const ADMIN: &str = "peers";

/// The DuckDB side: prints one JSON object of timings in seconds.
const DUCKDB: &str = r#"
import json, sys, time, duckdb
path, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
columns = {"id": "VARCHAR", "event": "VARCHAR", "user_id": "VARCHAR", "country": "VARCHAR",
           "path": "VARCHAR", "duration_ms": "DOUBLE", "revenue": "DECIMAL(12,2)", "at": "TIMESTAMPTZ"}
read = f"read_json('{path}', format = 'newline_delimited', columns = {columns})"
views = [
  """SELECT time_bucket(INTERVAL '1 minute', "at") AS t_minute, country, event, count(*) AS n, sum(duration_ms) AS total_ms, min(duration_ms) AS min_ms, max(duration_ms) AS max_ms FROM hits GROUP BY ALL""",
  """SELECT time_bucket(INTERVAL '5 minutes', "at") AS slot, event, quantile_cont(duration_ms, 0.99) AS p99_ms, approx_count_distinct(user_id) AS users FROM hits GROUP BY ALL""",
  """SELECT time_bucket(INTERVAL '15 minutes', "at") AS slot, country, count(DISTINCT user_id) AS users FROM hits GROUP BY ALL""",
  """SELECT time_bucket(INTERVAL '1 minute', "at") AS t_minute, count(*) FILTER (WHERE event = 'signup') AS signups, sum(revenue) FILTER (WHERE event = 'purchase') AS revenue FROM hits GROUP BY ALL""",
  """SELECT date_trunc('hour', "at") AS t_hour, country, count(*) AS views FROM hits WHERE event = 'page_view' GROUP BY ALL""",
]
def load_and_aggregate(con):
    con.execute("SET threads = 1")
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    con.execute(f"CREATE TABLE hits AS SELECT * FROM {read}")
    for i, v in enumerate(views):
        con.execute(f"CREATE TABLE view_{i} AS {v}")
    return started
out = {}
con = duckdb.connect()
started = load_and_aggregate(con)
out["engine"] = time.perf_counter() - started
assert con.execute("SELECT count(*) FROM hits").fetchone()[0] == n
con.close()
con = duckdb.connect(db)
started = load_and_aggregate(con)
con.execute("CHECKPOINT")
out["durable"] = time.perf_counter() - started
con.execute("RESET threads")
query = """SELECT time_bucket(INTERVAL '1 hour', "at") AS t_hour, event, quantile_cont(duration_ms, 0.99) AS p99_ms, approx_count_distinct(user_id) AS users FROM hits GROUP BY ALL"""
times = []
for _ in range(20):
    started = time.perf_counter()
    con.execute(query).fetchall()
    times.append(time.perf_counter() - started)
times.sort()
out["query_p50"] = times[len(times) // 2]
out["version"] = duckdb.__version__
print(json.dumps(out))
"#;

/// The chDB side: the same work in ClickHouse's dialect; prints one JSON object of timings in
/// seconds. `quantileExactInclusive` interpolates as `percentile_cont` does; `uniq` is
/// ClickHouse's approximate distinct count, `uniqExact` its exact one.
const CHDB: &str = r#"
import json, shutil, sys, time
from chdb import session
path, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
columns = ("id String, event String, user_id String, country String, path Nullable(String), "
           "duration_ms Float64, revenue Nullable(Decimal(12, 2)), at DateTime64(6, 'UTC')")
quoted = columns.replace("'", "\\'")
read = f"file('{path}', JSONEachRow, '{quoted}')"
views = [
  "SELECT toStartOfMinute(at) AS t_minute, country, event, count() AS n, sum(duration_ms) AS total_ms, min(duration_ms) AS min_ms, max(duration_ms) AS max_ms FROM hits GROUP BY t_minute, country, event",
  "SELECT toStartOfFiveMinutes(at) AS slot, event, quantileExactInclusive(0.99)(duration_ms) AS p99_ms, uniq(user_id) AS users FROM hits GROUP BY slot, event",
  "SELECT toStartOfFifteenMinutes(at) AS slot, country, uniqExact(user_id) AS users FROM hits GROUP BY slot, country",
  "SELECT toStartOfMinute(at) AS t_minute, countIf(event = 'signup') AS signups, sumIf(revenue, event = 'purchase') AS revenue FROM hits GROUP BY t_minute",
  "SELECT toStartOfHour(at) AS t_hour, country, count() AS views FROM hits WHERE event = 'page_view' GROUP BY t_hour, country",
]
one_thread = "SETTINGS max_threads = 1, input_format_parallel_parsing = 0, date_time_input_format = 'best_effort'"
def load_and_aggregate(s, engine):
    started = time.perf_counter()
    s.query(f"CREATE TABLE hits ({columns}) ENGINE = {engine}")
    s.query(f"INSERT INTO hits SELECT * FROM {read} {one_thread}")
    for i, v in enumerate(views):
        s.query(f"CREATE TABLE view_{i} ENGINE = {engine} AS {v} {one_thread}")
    return started
def count(s, table):
    return int(s.query(f"SELECT count() FROM {table}", "CSV").data().strip())
out = {}
s = session.Session()
started = load_and_aggregate(s, "Memory")
out["engine"] = time.perf_counter() - started
assert count(s, "hits") == n
s.close()
shutil.rmtree(db, ignore_errors=True)
s = session.Session(db)
s.query("CREATE DATABASE peers")
s.query("USE peers")
started = load_and_aggregate(s, "MergeTree ORDER BY tuple() SETTINGS fsync_after_insert = 1, fsync_part_directory = 1")
out["durable"] = time.perf_counter() - started
assert count(s, "hits") == n and count(s, "view_0") > 0
query = "SELECT toStartOfHour(at) AS t_hour, event, quantileExactInclusive(0.99)(duration_ms) AS p99_ms, uniq(user_id) AS users FROM hits GROUP BY t_hour, event"
times = []
for _ in range(20):
    started = time.perf_counter()
    s.query(query, "CSV")
    times.append(time.perf_counter() - started)
times.sort()
out["query_p50"] = times[len(times) // 2]
out["version"] = s.query("SELECT version()", "CSV").data().strip().strip('"')
s.close()
print(json.dumps(out))
"#;

fn main() {
    if std::env::var("TALLY_BENCH_ONCE").as_deref() == Ok("query") {
        return query_once();
    }
    if std::env::var("TALLY_BENCH_ONCE").as_deref() == Ok("engine") {
        return engine_once();
    }
    let quick = std::env::args().all(|a| a != "--bench");
    let n =
        workload::env_number("TALLY_BENCH_EVENTS").unwrap_or(if quick { 2_000 } else { 500_000 });
    let dir = tempfile::tempdir().unwrap();
    let lines = workload::ndjson(Workload::Rollups, n, 7);
    let input = dir.path().join("hits.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let schema = workload::schema(Workload::Rollups);
    let runs = if quick { 1 } else { 3 };
    let best = |f: &dyn Fn() -> Duration| (0..runs).map(|_| f()).min().unwrap();

    // 1. The engine in memory, one thread: decode, validate, apply.
    let engine = best(&|| engine_run(&schema, &lines));
    // 2. Durable: `tally ingest` and the bare insert.
    let fresh = || {
        let data = dir.path().join("tally-data");
        let _ = std::fs::remove_dir_all(&data);
        Location::Directory(data)
    };
    let ingest = best(&|| workload::tally_ingest(&fresh(), &schema, &input));
    let rows = workload::decode(&schema, &lines);
    let bare = best(&|| workload::baseline(dir.path(), &rows));
    drop(rows);
    // 3. The view query over HTTP, on the data the last ingest left.
    let ((p50, p99), (cold50, cold99)) =
        query_latency(&dir.path().join("tally-data"), if quick { 20 } else { 200 });

    let rss = if quick {
        None
    } else {
        Some(serve_memory(dir.path(), &schema, 100, 10_000))
    };
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("events: {n}, rollups workload (5 views), best of {runs}");
    if quick {
        println!(
            "tally only (quick run; the peers run under cargo bench): engine {:.0}/s, ingest {:.0}/s, query p50 {p50:?}",
            rate(engine),
            rate(ingest)
        );
        return;
    }
    let duck = match peer(workload::DUCKDB, DUCKDB, dir.path(), &input, n) {
        Ok(duck) => duck,
        Err(e) => {
            println!("DuckDB could not be measured: {e}");
            println!(
                "tally only: engine {:.0}/s, ingest {:.0}/s, bare insert {:.0}/s, query p50 {p50:?} (p99 {p99:?}), computed p50 {cold50:?}, RSS of 100 tenants {} MB",
                rate(engine),
                rate(ingest),
                rate(bare),
                rss.unwrap_or(0) / 1024
            );
            return;
        }
    };
    let chdb = peer(workload::CHDB, CHDB, dir.path(), &input, n)
        .inspect_err(|e| println!("chDB could not be measured: {e}"))
        .ok();
    let secs = |key: &str| Duration::from_secs_f64(duck[key].as_f64().unwrap());
    println!("DuckDB {} (PyPI), one thread unless said", duck["version"]);
    if let Some(chdb) = &chdb {
        println!(
            "chDB with ClickHouse {} (PyPI), one thread unless said",
            chdb["version"]
        );
    }
    // A row of events/s: Tally's time, the peer's, and the ratio of their rates.
    let rate_row = |goal: &str, ours: Duration, peer: &str, theirs: Duration, target: &str| {
        println!(
            "| {goal} | {:.0} | {peer}: {:.0} | {:.2}× | {target} |",
            rate(ours),
            rate(theirs),
            rate(ours) / rate(theirs)
        );
    };
    println!();
    println!("| goal | Tally | peer | ratio | target |");
    println!("|---|---:|---:|---:|---:|");
    rate_row(
        "engine: decode + validate + apply, in memory, events/s",
        engine,
        "DuckDB `read_json` + 5 GROUP BYs",
        secs("engine"),
        "≥ 1.5×",
    );
    rate_row(
        "durable ingest (`tally ingest`), events/s",
        ingest,
        "DuckDB load into a file + 5 GROUP BYs + CHECKPOINT",
        secs("durable"),
        "≥ 1.0×",
    );
    rate_row(
        "durable ingest against the bare SQLite insert, events/s",
        ingest,
        "bare insert",
        bare,
        "≥ 0.55×",
    );
    println!(
        "| view query `latency?grain=hour` over HTTP, repeated, p50 (p99) | {:.2} ms ({:.2} ms) | DuckDB from the raw events, default threads: {:.2} ms | {:.0}× faster | ≥ 100× |",
        ms(p50),
        ms(p99),
        ms(secs("query_p50")),
        secs("query_p50").as_secs_f64() / p50.as_secs_f64()
    );
    if let Some(rss) = rss {
        println!(
            "| memory: RSS of `tally serve` with 100 active tenants (10,000 events each) | {:.0} MB | | | < 1 GB |",
            rss as f64 / 1024.0
        );
    }
    println!(
        "| the same, each request different (computed), p50 (p99) | {:.2} ms ({:.2} ms) | {:.2} ms | {:.0}× faster | ≥ 100× |",
        ms(cold50),
        ms(cold99),
        ms(secs("query_p50")),
        secs("query_p50").as_secs_f64() / cold50.as_secs_f64()
    );
    if let Some(chdb) = &chdb {
        let secs = |key: &str| Duration::from_secs_f64(chdb[key].as_f64().unwrap());
        rate_row(
            "engine beside chDB, events/s",
            engine,
            "chDB `file(…, JSONEachRow)` + 5 GROUP BYs into `Memory` tables",
            secs("engine"),
            "≥ 2× (DESIGN.md)",
        );
        rate_row(
            "durable ingest beside chDB, events/s",
            ingest,
            "chDB load into `MergeTree` (parts synced) + 5 GROUP BYs",
            secs("durable"),
            "",
        );
        println!(
            "| view query beside chDB, repeated, p50 | {:.2} ms | chDB from the raw `MergeTree` table, default threads: {:.2} ms | {:.0}× faster | |",
            ms(p50),
            ms(secs("query_p50")),
            secs("query_p50").as_secs_f64() / p50.as_secs_f64()
        );
    }
}

/// For instruction counts (`TALLY_BENCH_ONCE=query valgrind --tool=callgrind …`): the view
/// query of goal 3, 100 times, in process (no HTTP), on 200,000 ingested events.
fn query_once() {
    let dir = tempfile::tempdir().unwrap();
    let lines = workload::ndjson(Workload::Rollups, 200_000, 7);
    let input = dir.path().join("hits.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let location = Location::Directory(dir.path().join("data"));
    workload::tally_ingest(&location, &workload::schema(Workload::Rollups), &input);
    let tally = Tally::open(&location, Config::default()).unwrap();
    let runtime = tally.open_tenant("default").unwrap();
    let request = tally_views::QueryRequest {
        grain: Interval::of_unit("hour"),
        ..Default::default()
    };
    let mut rows = 0;
    for _ in 0..100 {
        rows += runtime.query("latency", &request).unwrap().rows.len();
    }
    println!("{rows} rows");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `TALLY_BENCH_ONCE=engine`: only the engine's part, five times, each run's rate printed (to
/// profile it alone). `TALLY_BENCH_VIEWS=a,b` keeps only those of the five views (what each
/// view costs: its rate alone against the others').
fn engine_once() {
    let n = workload::env_number("TALLY_BENCH_EVENTS")
        .filter(|&n| n > 0)
        .unwrap_or(500_000);
    let lines = workload::ndjson(Workload::Rollups, n, 7);
    let mut schema = workload::schema(Workload::Rollups);
    if let Ok(keep) = std::env::var("TALLY_BENCH_VIEWS") {
        const VIEW: &str = "CREATE MATERIALIZED VIEW ";
        let mut parts = schema.split(VIEW);
        let mut kept = parts.next().unwrap_or_default().to_owned();
        for view in parts {
            let name = view.split_whitespace().next().unwrap_or_default();
            if keep.split(',').any(|k| k.trim() == name) {
                kept.push_str(VIEW);
                kept.push_str(view);
            }
        }
        assert!(
            kept.contains(VIEW),
            "TALLY_BENCH_VIEWS={keep} names none of the views"
        );
        schema = kept;
    }
    for _ in 0..5 {
        let took = engine_run(&schema, &lines);
        println!("engine: {:.0} events/s", n as f64 / took.as_secs_f64());
    }
}

/// Decodes, validates and applies every line, one thread, as the ingest's engine side does.
fn engine_run(schema: &str, lines: &[String]) -> Duration {
    let catalog = tally_views::sql::apply(&Catalog::new(), schema)
        .unwrap()
        .catalog;
    let engine = Engine::new(&catalog, TimeZone::UTC);
    let stream = catalog.stream("hits").unwrap();
    let now = Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let started = Instant::now();
    let decoder = tally::decode::RowDecoder::new(stream, now, Interval::Days(3650));
    let mut delta = engine.delta(|_| 0);
    for (batch_no, batch) in lines.chunks(10_000).enumerate() {
        let events: Vec<Event> = batch
            .iter()
            .enumerate()
            .map(|(i, l)| Event {
                seq: (batch_no * 10_000 + i + 1) as u64,
                row: decoder.json(l).unwrap(),
            })
            .collect();
        engine.apply("hits", &events, &mut delta);
    }
    let elapsed = started.elapsed();
    assert!(delta.group_count() > 0);
    elapsed
}

/// p50 and p99 of `n` view queries over HTTP against a server on `data`: the same query again
/// and again (its answer kept between them), and `n` different ones (each computed).
fn query_latency(data: &Path, n: usize) -> ((Duration, Duration), (Duration, Duration)) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tally = Tally::open(&Location::Directory(data.to_owned()), Config::default()).unwrap();
    runtime.block_on(async move {
        let hub = Arc::new(Hub::new(
            tally,
            ServerConfig {
                admin_token: Some(ADMIN.into()),
                rate_limit: 1e9,
                rate_burst: 1e9,
                ..ServerConfig::default()
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(hub, listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let r: Json = http
            .post(format!("{base}/v1/tenants/default/keys"))
            .bearer_auth(ADMIN)
            .body(r#"{"kind":"read"}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = r["key"].as_str().unwrap().to_owned();
        let url = format!("{base}/v1/views/latency?grain=hour");
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let started = Instant::now();
            let answer = common::get_json(&http, &url, &key).await;
            if i >= 20 {
                times.push(started.elapsed());
            }
            assert!(
                answer["rows"].as_array().is_some_and(|r| !r.is_empty()),
                "{answer}"
            );
        }
        // Each request different (a `from` a microsecond apart), so none is a kept answer.
        let mut cold = Vec::with_capacity(n);
        for i in 0..n {
            let url = format!("{url}&from=2026-05-31T00:00:00.{i:06}Z");
            let started = Instant::now();
            let answer = common::get_json(&http, &url, &key).await;
            cold.push(started.elapsed());
            assert!(
                answer["rows"].as_array().is_some_and(|r| !r.is_empty()),
                "{answer}"
            );
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        times.sort();
        cold.sort();
        (
            (times[n / 2], times[n * 99 / 100]),
            (cold[n / 2], cold[n * 99 / 100]),
        )
    })
}

/// The RSS (KiB) of a `tally serve` process whose `tenants` tenants each received `events`
/// events and answered a query (so every one is open, holding its views).
fn serve_memory(dir: &Path, schema: &str, tenants: usize, events: usize) -> u64 {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("--data")
        .arg(dir.join("memory-data"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("TALLY_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let mut keys = Vec::new();
        for t in 0..tenants {
            let tenant = format!(r#"{{"name":"t{t}"}}"#);
            keys.push(if t == 0 {
                common::schema_and_tenant(&http, &base, ADMIN, schema, &tenant).await
            } else {
                common::create_tenant(&http, &base, ADMIN, &tenant).await
            });
        }
        for (t, k) in keys.iter().enumerate() {
            let lines = workload::ndjson(Workload::Rollups, events, t as u64 + 1);
            for chunk in lines.chunks(1_000) {
                let r = http
                    .post(format!("{base}/v1/streams/hits/events"))
                    .bearer_auth(&k.write)
                    .header("content-type", "application/x-ndjson")
                    .body(chunk.join("\n"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            common::get_json(&http, &format!("{base}/v1/views/latency"), &k.read).await;
        }
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    rss
}

/// Runs a peer's side (`script`) in the virtual environment, installing the peer there first if
/// needed, on the NDJSON file `input` of `n` events; its durable part writes under
/// `dir/<module>-store`.
fn peer(
    peer: workload::Peer,
    script: &str,
    dir: &Path,
    input: &Path,
    n: usize,
) -> Result<Json, String> {
    let store = dir.join(format!("{}-store", peer.module));
    let n = n.to_string();
    workload::run_peer(
        peer,
        dir,
        &format!("{}_side.py", peer.module),
        script,
        &[input.as_os_str(), store.as_os_str(), n.as_ref()],
    )
}
