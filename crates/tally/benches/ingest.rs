//! End-to-end durable ingest on SQLite, against the bare SQLite insert of the same rows measured
//! in the same run.
//!
//! `cargo bench -p tally --bench ingest` (set `TALLY_BENCH_EVENTS`, default 1,000,000).
//!
//! - baseline: the rows, already decoded, inserted with one prepared statement into a table of
//!   the same columns and no index, 10,000 rows per transaction, WAL with `synchronous=FULL`:
//!   the ceiling of durable SQLite inserts on this machine;
//! - the same with 64 rows a statement (what the number of statements costs; SQLite copies the
//!   bound text here as in the baseline);
//! - tally: the NDJSON file through `tally ingest`'s code path (decode and validate every event,
//!   durable append with the dedupe keys and time spans, the five views of the workload applied,
//!   and flushed at the end).
//!
//! All are timed wall-clock, best of three; the ratio is what to compare across machines.
//! `TALLY_BENCH_ONCE=ingest` runs only `tally ingest` of the rollups workload, once (profiles;
//! `TALLY_BENCH_WORKLOAD=entities` for the other workload).

use std::time::Duration;

use tally::app::Location;
use workload::Workload;

#[path = "workload.rs"]
mod workload;

fn main() {
    let (n, runs) = workload::events_and_runs(1_000_000);
    if std::env::var("TALLY_BENCH_ONCE").as_deref() == Ok("ingest") {
        // For profiles: `tally ingest` of one workload once (`TALLY_BENCH_WORKLOAD`: `rollups`,
        // the default, or `entities`), nothing else.
        let workload = match std::env::var("TALLY_BENCH_WORKLOAD").as_deref() {
            Ok("entities") => Workload::Entities,
            _ => Workload::Rollups,
        };
        let dir = tempfile::tempdir().unwrap();
        let (_, input) = input_file(dir.path(), workload, n);
        let location = Location::Directory(dir.path().join("tally-data"));
        let took = workload::tally_ingest(&location, &workload::schema(workload), &input);
        println!("tally ingest of {n} events: {took:?}");
        return;
    }
    println!("events: {n}, best of {runs}, wall clock");
    for workload in [Workload::Rollups, Workload::Entities] {
        run(workload, n, runs);
    }
}

/// The workload's `n` events as NDJSON lines, and written to `hits.ndjson` in `dir`.
fn input_file(
    dir: &std::path::Path,
    workload: Workload,
    n: usize,
) -> (Vec<String>, std::path::PathBuf) {
    let lines = workload::ndjson(workload, n, 11);
    let input = dir.join("hits.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    (lines, input)
}

fn run(workload: Workload, n: usize, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (lines, input) = input_file(dir.path(), workload, n);
    let schema = workload::schema(workload);
    let rows = workload::decode(&schema, &lines);

    // Each run on a fresh data directory.
    let fresh = || {
        let data = dir.path().join("tally-data");
        let _ = std::fs::remove_dir_all(&data);
        Location::Directory(data)
    };
    let best = |f: &dyn Fn() -> Duration| (0..runs).map(|_| f()).min().unwrap();
    let base = best(&|| workload::baseline(dir.path(), &rows));
    let multi = best(&|| workload::baseline_multi_row(dir.path(), &rows));
    let append = best(&|| workload::commit_only(&fresh(), workload::stream_only(), &rows));
    let commit = best(&|| workload::commit_only(&fresh(), &schema, &rows));
    let ours = best(&|| workload::tally_ingest(&fresh(), &schema, &input));
    workload::print_table(
        workload,
        n,
        &[
            ("bare SQLite insert (baseline)", base),
            ("bare SQLite insert, 64 rows a statement", multi),
            (
                "tally append only (decoded rows, dedupe keys, time spans, no views)",
                append,
            ),
            (
                "tally append + apply + flush, 5 views (decoded rows)",
                commit,
            ),
            (
                "tally ingest, 5 views (decode, validate, append, apply, flush)",
                ours,
            ),
        ],
    );
}
