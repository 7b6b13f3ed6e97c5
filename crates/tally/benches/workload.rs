//! The benchmark workloads, shared by the engine and the end-to-end benchmarks: web analytics
//! events of about 300 bytes, and two sets of five views over them.
//!
//! - `ROLLUPS`: time-bucketed rollups with a few thousand groups, among them a percentile, an
//!   approximate and an exact distinct count: the workload of `performance_anchors.md` §8 that
//!   DESIGN.md's budgets come from. Its events span one hour.
//! - `ENTITIES`: heavier views over two days of events: per-minute rollups (~90k groups), a
//!   summary per user (50k groups) and exact distinct users per day (sets of 50k values).

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use tally::app::{Config, Location, Tally};
use tally_views::Value;

const STREAM: &str = "
CREATE STREAM hits (id TEXT NOT NULL, event TEXT NOT NULL, user_id TEXT NOT NULL, country TEXT NOT NULL,
                    path TEXT, duration_ms DOUBLE NOT NULL, revenue DECIMAL(12,2), at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
";

pub fn schema(workload: Workload) -> String {
    match workload {
        Workload::Rollups => format!("{STREAM}{ROLLUPS}"),
        Workload::Entities => format!("{STREAM}{ENTITIES}"),
    }
}

pub fn stream_only() -> &'static str {
    STREAM
}

#[derive(Clone, Copy, Debug)]
pub enum Workload {
    Rollups,
    Entities,
}

impl Workload {
    /// Seconds the events span.
    fn span(self) -> u64 {
        match self {
            Workload::Rollups => 3_600,
            Workload::Entities => 172_800,
        }
    }
}

const ROLLUPS: &str = "
CREATE MATERIALIZED VIEW per_minute AS
SELECT time_bucket('1 minute', at) AS minute, country, event,
       count(*) AS n, sum(duration_ms) AS total_ms, min(duration_ms) AS min_ms, max(duration_ms) AS max_ms
FROM hits GROUP BY 1, 2, 3;

CREATE MATERIALIZED VIEW latency AS
SELECT time_bucket('5 minutes', at) AS slot, event,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
       approx_count_distinct(user_id) AS users
FROM hits GROUP BY 1, 2;

CREATE MATERIALIZED VIEW country_users AS
SELECT time_bucket('15 minutes', at) AS slot, country, count(DISTINCT user_id) AS users
FROM hits GROUP BY 1, 2;

CREATE MATERIALIZED VIEW funnel AS
SELECT time_bucket('1 minute', at) AS minute,
       count(*) FILTER (WHERE event = 'signup') AS signups,
       sum(revenue) FILTER (WHERE event = 'purchase') AS revenue
FROM hits GROUP BY 1;

CREATE MATERIALIZED VIEW pages AS
SELECT date_trunc('hour', at) AS hour, country, count(*) AS views
FROM hits WHERE event = 'page_view' GROUP BY 1, 2;
";

const ENTITIES: &str = "

CREATE MATERIALIZED VIEW per_minute AS
SELECT time_bucket('1 minute', at) AS minute, country, event,
       count(*) AS n, sum(duration_ms) AS total_ms, min(duration_ms) AS min_ms, max(duration_ms) AS max_ms
FROM hits GROUP BY 1, 2, 3;

CREATE MATERIALIZED VIEW latency_hourly AS
SELECT time_bucket('1 hour', at) AS hour, event,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
       approx_count_distinct(user_id) AS users
FROM hits GROUP BY 1, 2;

CREATE MATERIALIZED VIEW daily_users AS
SELECT time_bucket('1 day', at) AS day, country, count(DISTINCT user_id) AS users
FROM hits GROUP BY 1, 2;

CREATE MATERIALIZED VIEW user_summary AS
SELECT user_id, count(*) AS events, last(event, at) AS last_event, max(at) AS last_seen
FROM hits GROUP BY user_id;

CREATE MATERIALIZED VIEW revenue_daily AS
SELECT time_bucket('1 day', at) AS day, sum(revenue) FILTER (WHERE event = 'purchase') AS revenue
FROM hits GROUP BY 1;
";

const EVENTS: [&str; 6] = [
    "page_view",
    "page_view",
    "page_view",
    "click",
    "signup",
    "purchase",
];
const COUNTRIES: [&str; 8] = ["DE", "FR", "US", "GB", "BR", "IN", "JP", "NL"];

/// SplitMix64: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The id of event `i` of a run: random-looking and UUID-shaped, as Segment's `messageId` is
/// (a sequential id would put every dedupe-index insert at the end of the index, which real
/// traffic never does).
fn event_id(seed: u64, i: usize) -> String {
    let (a, b) = (mix(seed << 40 ^ i as u64), mix(!(seed << 40 ^ i as u64)));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// `n` NDJSON lines, deterministic, spread over the workload's span from 2026-06-01, in time
/// order, with random UUID-shaped ids.
pub fn ndjson(workload: Workload, n: usize, seed: u64) -> Vec<String> {
    let span = workload.span();
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let event = EVENTS[(r % 6) as usize];
            let country = COUNTRIES[((r >> 8) % 8) as usize];
            let user = (r >> 16) % 50_000;
            let secs = (i as u64 * span) / n as u64;
            let duration = ((r >> 32) % 100_000) as f64 / 37.0;
            let revenue = if event == "purchase" {
                format!("\"{}.{:02}\"", (r >> 40) % 500, (r >> 50) % 100)
            } else {
                "null".into()
            };
            format!(
                r#"{{"id":"{}","event":"{event}","user_id":"user-{user}","country":"{country}","path":"/products/item-{}/details","duration_ms":{duration},"revenue":{revenue},"at":"2026-06-{:02}T{:02}:{:02}:{:02}Z"}}"#,
                event_id(seed, i),
                r % 2000,
                1 + secs / 86_400,
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60
            )
        })
        .collect()
}

/// A fresh database at `path` (WAL, `synchronous=FULL`) with the bare baselines' table: the
/// stream's columns and no index.
fn bare_table(path: &std::path::Path) -> rusqlite::Connection {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("PRAGMA synchronous=FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE hits (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, event TEXT NOT NULL, user_id TEXT NOT NULL,
           country TEXT NOT NULL, path TEXT, duration_ms REAL NOT NULL, revenue TEXT, at INTEGER NOT NULL)",
    )
    .unwrap();
    conn
}

/// The baseline of the end-to-end benchmarks: the rows, already decoded, inserted with one
/// prepared statement into a table of the same columns and no index, 10,000 rows per
/// transaction, WAL with `synchronous=FULL`: the ceiling of durable SQLite inserts here.
pub fn baseline(dir: &std::path::Path, rows: &[Vec<Value>]) -> Duration {
    let mut conn = bare_table(&dir.join("baseline.db"));
    let started = Instant::now();
    for (chunk_no, chunk) in rows.chunks(10_000).enumerate() {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO hits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .unwrap();
            for (i, row) in chunk.iter().enumerate() {
                let mut values: Vec<rusqlite::types::Value> =
                    vec![((chunk_no * 10_000 + i) as i64).into()];
                for v in row {
                    values.push(match v {
                        Value::Null => rusqlite::types::Value::Null,
                        Value::Double(d) => (*d).into(),
                        Value::Timestamp(t) => t.0.into(),
                        other => other.to_string().into(),
                    });
                }
                stmt.execute(rusqlite::params_from_iter(values.iter()))
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    started.elapsed()
}

/// The bare insert of [`baseline`] with 64 rows a statement (`INSERT … VALUES (…), (…), …`),
/// text bound as borrowed slices and decimals as owned strings (SQLite copies both: rusqlite
/// binds text with `SQLITE_TRANSIENT`): a second ceiling, to see what the statement count costs.
pub fn baseline_multi_row(dir: &std::path::Path, rows: &[Vec<Value>]) -> Duration {
    const PER: usize = 64;
    let mut conn = bare_table(&dir.join("baseline-multi.db"));
    let sql = |n: usize| {
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
        format!("INSERT INTO hits VALUES {}", vec![row; n].join(", "))
    };
    let started = Instant::now();
    let mut seq = 0i64;
    for chunk in rows.chunks(10_000) {
        let tx = conn.transaction().unwrap();
        for group in chunk.chunks(PER) {
            let mut stmt = tx.prepare_cached(&sql(group.len())).unwrap();
            let mut values: Vec<rusqlite::types::ToSqlOutput<'_>> = Vec::new();
            for row in group {
                values.push(seq.into());
                seq += 1;
                for v in row {
                    values.push(match v {
                        Value::Null => {
                            rusqlite::types::ToSqlOutput::Owned(rusqlite::types::Value::Null)
                        }
                        Value::Double(d) => (*d).into(),
                        Value::Timestamp(t) => t.0.into(),
                        Value::Text(s) => (&**s).into(),
                        other => other.to_string().into(),
                    });
                }
            }
            stmt.execute(rusqlite::params_from_iter(values.iter()))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    started.elapsed()
}

/// The median time of a one-row durable commit on this disk (WAL, `synchronous=FULL`), over
/// `n` commits: what one group commit costs at least, whatever it holds.
pub fn commit_latency(dir: &std::path::Path, n: usize) -> Duration {
    let path = dir.join("latency.db");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t (x INTEGER)")
        .unwrap();
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let started = Instant::now();
            conn.execute("INSERT INTO t VALUES (?)", [i as i64])
                .unwrap();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// `lines` decoded as `tally ingest` decodes them (for the baselines, which insert decoded rows).
pub fn decode(schema: &str, lines: &[String]) -> Vec<Vec<Value>> {
    let catalog = tally_views::sql::apply(&tally_views::Catalog::new(), schema)
        .unwrap()
        .catalog;
    let stream = catalog.stream("hits").unwrap();
    let now = tally_views::Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let decoder = tally::decode::RowDecoder::new(stream, now, tally_views::Interval::Days(3650));
    lines.iter().map(|l| decoder.json(l).unwrap()).collect()
}

/// A fresh Tally at `location` with `schema` applied.
fn fresh(location: &Location, schema: &str) -> Tally {
    let mut tally = Tally::open(location, Config::default()).unwrap();
    tally.apply_schema(schema).unwrap();
    tally
}

/// The NDJSON file through `tally ingest`'s code path (decode, validate, append, apply, flush)
/// into a fresh Tally at `location`.
pub fn tally_ingest(location: &Location, schema: &str, input: &std::path::Path) -> Duration {
    let tally = fresh(location, schema);
    let stream = tally.stream("hits").unwrap();
    let started = Instant::now();
    let mut runtime = tally.open_tenant("default").unwrap();
    let file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(input).unwrap());
    let report = tally::ingest::ingest(
        &mut runtime,
        &stream,
        tally.config(),
        tally::ingest::Format::Ndjson,
        file,
        &|_| {},
    )
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.rejected, 0, "{:?}", report.errors.first());
    elapsed
}

/// The commit side alone, into a fresh Tally at `location`: decoded rows appended (and applied
/// to the views of `schema`) in batches of 10,000, then flushed.
pub fn commit_only(location: &Location, schema: &str, rows: &[Vec<Value>]) -> Duration {
    let tally = fresh(location, schema);
    let stream = tally.stream("hits").unwrap();
    let started = Instant::now();
    let mut runtime = tally.open_tenant("default").unwrap();
    for chunk in rows.chunks(10_000) {
        runtime.append(&stream, chunk.to_vec()).unwrap();
    }
    runtime.flush().unwrap();
    started.elapsed()
}

/// The number an environment variable of a benchmark gives (`TALLY_BENCH_EVENTS=…`), if it is
/// set to one.
pub fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The events and runs of an end-to-end benchmark: `TALLY_BENCH_EVENTS` or `full` events, best
/// of three, under `cargo bench`; 2,000 events once under `cargo test --benches`.
pub fn events_and_runs(full: usize) -> (usize, usize) {
    // `cargo bench` passes --bench; `cargo test --benches` runs the binary too: stay quick there.
    let quick = std::env::args().all(|a| a != "--bench");
    let n = env_number("TALLY_BENCH_EVENTS").unwrap_or(if quick { 2_000 } else { full });
    (n, if quick { 1 } else { 3 })
}

/// Prints one workload's results as a Markdown table: events/s and the ratio to the first row,
/// the baseline.
pub fn print_table(workload: Workload, n: usize, rows: &[(&str, Duration)]) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let base = rate(rows[0].1);
    println!();
    println!("workload: {}", format!("{workload:?}").to_lowercase());
    println!("| path | events/s | ratio to baseline |");
    println!("|---|---:|---:|");
    for (what, d) in rows {
        println!("| {what} | {:.0} | {:.2} |", rate(*d), rate(*d) / base);
    }
}

/// DuckDB from PyPI, the version every peer figure of docs/performance.md was measured with.
pub const DUCKDB: Peer = Peer {
    module: "duckdb",
    requirements: &["duckdb==2.0.1"],
};

/// chDB (ClickHouse's engine as a Python module) from PyPI: the `chdb` package and the engine
/// it depends on, `chdb-core` (ClickHouse 26.9.2.1), which its wheels carry (nothing is fetched
/// at run time).
pub const CHDB: Peer = Peer {
    module: "chdb",
    requirements: &["chdb==4.4.0", "chdb-core==26.9.0"],
};

/// A peer system installed from PyPI into the benchmarks' virtual environment.
#[derive(Clone, Copy)]
pub struct Peer {
    /// The Python module to import.
    pub module: &'static str,
    /// The pinned requirements `pip` installs when the module is missing.
    pub requirements: &'static [&'static str],
}

/// A Python with `peer` (from PyPI, pinned) in a virtual environment under the target
/// directory (`target/peers-venv`), made on the first run; it needs `python3` with `venv`.
pub fn peer_python(peer: Peer) -> Result<std::path::PathBuf, String> {
    use std::process::Command;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("peers-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("python3: {e}"))?;
        if !made.success() {
            return Err("python3 -m venv failed".into());
        }
    }
    // Quietly: on a first run the import fails, and that is no error.
    let has = Command::new(&python)
        .args(["-c", &format!("import {}", peer.module)])
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !has.success() {
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(peer.requirements)
            .status()
            .map_err(|e| e.to_string())?;
        if !installed.success() {
            return Err(format!(
                "pip install {} failed",
                peer.requirements.join(" ")
            ));
        }
    }
    Ok(python)
}

/// Runs a Python `script` with DuckDB (written to `dir/name`) with `args`; its standard output
/// is one JSON object.
pub fn run_duckdb(
    dir: &std::path::Path,
    name: &str,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Result<serde_json::Value, String> {
    run_peer(DUCKDB, dir, name, script, args)
}

/// Runs a Python `script` with `peer` (written to `dir/name`) with `args`; its standard output
/// is one JSON object.
pub fn run_peer(
    peer: Peer,
    dir: &std::path::Path,
    name: &str,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Result<serde_json::Value, String> {
    let python = peer_python(peer)?;
    let path = dir.join(name);
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}
