//! End-to-end durable ingest on SQLite, against the bare SQLite insert of the same rows measured
//! in the same run.
//!
//! `cargo bench -p tally --bench ingest` (set `TALLY_BENCH_EVENTS`, default 1,000,000).
//!
//! - baseline: the rows, already decoded, inserted with one prepared statement into a table of
//!   the same columns and no index, 10,000 rows per transaction, WAL with `synchronous=FULL`:
//!   the ceiling of durable SQLite inserts on this machine;
//! - tally: the NDJSON file through `tally ingest`'s code path (decode and validate every event,
//!   durable append with the dedupe and time indexes, the five views of the workload applied,
//!   and flushed at the end).
//!
//! Both are timed wall-clock, best of three; the ratio is what to compare across machines.

use std::time::{Duration, Instant};

use tally::app::{Config, Location, Tally};
use tally::ingest::{Format, ingest};
use tally_views::{Timestamp, Value};
use workload::Workload;

#[path = "workload.rs"]
mod workload;

fn tally_ingest(dir: &std::path::Path, schema: &str, input: &std::path::Path) -> Duration {
    let data = dir.join("tally-data");
    let _ = std::fs::remove_dir_all(&data);
    let mut tally = Tally::open(&Location::Directory(data), Config::default()).unwrap();
    tally.apply_schema(schema).unwrap();
    let stream = tally.stream("hits").unwrap();
    let started = Instant::now();
    let mut runtime = tally.open_tenant("default").unwrap();
    let file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(input).unwrap());
    let report = ingest(
        &mut runtime,
        &stream,
        tally.config(),
        Format::Ndjson,
        file,
        &|_| {},
    )
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.rejected, 0, "{:?}", report.errors.first());
    elapsed
}

/// The commit side alone: decoded rows appended (and applied to the views of `schema`) in
/// batches of 10,000, then flushed.
fn commit_only(dir: &std::path::Path, schema: &str, rows: &[Vec<Value>]) -> Duration {
    let data = dir.join("tally-commit");
    let _ = std::fs::remove_dir_all(&data);
    let mut tally = Tally::open(&Location::Directory(data), Config::default()).unwrap();
    tally.apply_schema(schema).unwrap();
    let stream = tally.stream("hits").unwrap();
    let started = Instant::now();
    let mut runtime = tally.open_tenant("default").unwrap();
    for chunk in rows.chunks(10_000) {
        runtime.append(&stream, chunk).unwrap();
    }
    runtime.flush().unwrap();
    started.elapsed()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this too: stay quick there.
    let quick = std::env::args().all(|a| a != "--bench");
    let n: usize = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 1_000_000 });
    let runs = if quick { 1 } else { 3 };
    println!("events: {n}, best of {runs}, wall clock");
    for workload in [Workload::Rollups, Workload::Entities] {
        run(workload, n, runs);
    }
}

fn run(workload: Workload, n: usize, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let lines = workload::ndjson(workload, n, 11);
    let input = dir.path().join("hits.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let schema = workload::schema(workload);

    // Decode once for the baseline, with the same decoder tally uses.
    let catalog = tally_views::sql::apply(&tally_views::Catalog::new(), &schema)
        .unwrap()
        .catalog;
    let engine = tally_views::Engine::new(&catalog, tally_views::TimeZone::UTC);
    let stream = catalog.stream("hits").unwrap();
    let now = Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let decoder =
        tally::decode::RowDecoder::new(stream, &engine, now, tally_views::Interval::Days(3650));
    let rows: Vec<Vec<Value>> = lines.iter().map(|l| decoder.json(l).unwrap()).collect();

    let best = |f: &dyn Fn() -> Duration| (0..runs).map(|_| f()).min().unwrap();
    let base = best(&|| workload::baseline(dir.path(), &rows));
    let append = best(&|| commit_only(dir.path(), workload::stream_only(), &rows));
    let commit = best(&|| commit_only(dir.path(), &schema, &rows));
    let ours = best(&|| tally_ingest(dir.path(), &schema, &input));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let row = |what: &str, d: Duration| {
        println!("| {what} | {:.0} | {:.2} |", rate(d), rate(d) / rate(base))
    };
    println!();
    println!("workload: {}", format!("{workload:?}").to_lowercase());
    println!("| path | events/s | ratio to baseline |");
    println!("|---|---:|---:|");
    row("bare SQLite insert (baseline)", base);
    row(
        "tally append only (decoded rows, dedupe and time indexes, no views)",
        append,
    );
    row(
        "tally append + apply + flush, 5 views (decoded rows)",
        commit,
    );
    row(
        "tally ingest, 5 views (decode, validate, append, apply, flush)",
        ours,
    );
}
