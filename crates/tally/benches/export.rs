//! Stream exports in constant memory: a stream of N events (default 10,000,000; `cargo test
//! --benches` runs 100,000) in a SQLite data directory, exported by the `tally` binary (`tally
//! export stream … --output /dev/null`) as NDJSON and as Parquet. Printed per format: events
//! per second and the process's peak RSS (`getrusage` of the child), beside the baseline
//! measured in the same run: the peak RSS of exporting a stream of one event (what the binary
//! needs to start). The goal (issue: exports) is under 100 MB for 10 million events.
//!
//! `cargo bench -p tally --bench export` (`TALLY_BENCH_EVENTS` for another N).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally::app::{Config, Location, Tally};
use tally_views::{Timestamp, Value, decimal::Decimal};

const SCHEMA: &str = "
CREATE STREAM ev (id TEXT NOT NULL, user_id TEXT, amount DECIMAL(12,2) NOT NULL,
                  kind TEXT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at');
";

/// Appends `n` events to tenant `t` of the data directory `dir`.
fn fill(dir: &std::path::Path, n: usize) {
    let mut tally = Tally::open(&Location::Directory(dir.to_owned()), Config::default()).unwrap();
    tally.apply_schema(SCHEMA).unwrap();
    tally.create_tenant("t", "UTC").unwrap();
    let mut runtime = tally.open_tenant("t").unwrap();
    let stream = tally.stream("ev").unwrap();
    let start = Timestamp::parse("2026-01-01T00:00:00Z").unwrap().0;
    let kinds = ["deposit", "withdrawal", "fee"];
    let mut i = 0;
    while i < n {
        let batch: Vec<Vec<Value>> = (i..(i + 50_000).min(n))
            .map(|k| {
                vec![
                    Value::text(&format!("e{k}")),
                    Value::text(&format!("user-{}", k % 100_003)),
                    Value::Decimal(Decimal::new((k % 1_000_000) as i128, 2)),
                    Value::text(kinds[k % 3]),
                    Value::Timestamp(Timestamp(start + k as i64 * 1_000_000)),
                ]
            })
            .collect();
        i += batch.len();
        runtime.append(&stream, batch).unwrap();
    }
    runtime.flush().unwrap();
}

/// Runs one export in a child process: its wall time and its peak RSS in bytes (`VmHWM`,
/// read every 5 ms while it runs; the last reading is within 5 ms of its end).
fn export(dir: &std::path::Path, format: &str) -> (f64, u64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("--data")
        .arg(dir)
        .args([
            "--tenant", "t", "export", "stream", "ev", "--format", format,
        ])
        .args(["--output", "/dev/null"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let outcome = loop {
        if let Some(kb) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(kb * 1024);
        }
        if let Some(outcome) = child.try_wait().unwrap() {
            break outcome;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(outcome.success(), "the export of {format} failed");
    (started.elapsed().as_secs_f64(), peak)
}

fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let n: usize = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100_000 } else { 10_000_000 });
    let base_dir = tempfile::tempdir().unwrap();
    fill(base_dir.path(), 1);
    let (_, baseline) = export(base_dir.path(), "parquet");
    let dir = tempfile::tempdir().unwrap();
    let filled = Instant::now();
    fill(dir.path(), n);
    println!(
        "stream of {n} events written in {:.1} s; baseline (a stream of 1 event) peak RSS {:.1} MB",
        filled.elapsed().as_secs_f64(),
        baseline as f64 / 1e6
    );
    println!("| format | events/s | peak RSS | over the baseline |");
    println!("|---|---|---|---|");
    let mut worst = 0;
    for format in ["ndjson", "csv", "parquet"] {
        let (seconds, peak) = export(dir.path(), format);
        worst = worst.max(peak);
        println!(
            "| {format} | {:.0} | {:.1} MB | {:.1} MB |",
            n as f64 / seconds,
            peak as f64 / 1e6,
            peak.saturating_sub(baseline) as f64 / 1e6
        );
    }
    assert!(
        worst < 100_000_000,
        "an export of {n} events peaked at {:.1} MB (goal: under 100 MB)",
        worst as f64 / 1e6
    );
}
