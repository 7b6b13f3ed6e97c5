//! What the client costs the program that uses it, and how fast it delivers, against a
//! running `tally serve` (`TALLY_BIN`, default `target/release/tally`; build it first with
//! `cargo build --release -p tally`):
//!
//! - `track()` per event: building, checking and queueing a message with its id and timestamp,
//!   beside the baseline of building the same JSON with `serde_json` alone, in the same run;
//! - events per second from the first `track()` until `flush()` returns (every event committed
//!   by the server), batches of 500, gzip; the view then counts every event once.
//!
//! `cargo bench -p tally-client --bench overhead` (`TALLY_BENCH_EVENTS`, default 500,000;
//! `cargo test --benches` runs 5,000 and skips the server part without a `tally` binary).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tally_client::{Client, EventBuilder};

const SCHEMA: &str =
    "CREATE MATERIALIZED VIEW tracks AS SELECT event_name, count(*) AS n FROM events GROUP BY 1;";

/// Runs a `tally` command on the data directory; its output.
fn tally(bin: &Path, data: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tally {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let n: usize = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5_000 } else { 500_000 });
    let bin = std::env::var_os("TALLY_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/tally"),
        PathBuf::from,
    );
    // The baseline: the same message as JSON text, with serde_json alone.
    let started = Instant::now();
    let mut bytes = 0;
    for i in 0..n {
        bytes += serde_json::json!({
            "type": "track", "event": "Bench", "userId": format!("u{}", i % 1000),
            "properties": {"plan": "pro", "i": i},
            "messageId": format!("{i:032x}"), "timestamp": "2026-12-03T00:00:00.000000Z",
        })
        .to_string()
        .len();
    }
    let baseline_ns = started.elapsed().as_nanos() as f64 / n as f64;
    assert!(bytes > 0);
    if !bin.exists() {
        assert!(
            quick,
            "no tally binary at {}: build it (cargo build --release -p tally) or set TALLY_BIN",
            bin.display()
        );
        println!(
            "baseline {baseline_ns:.0} ns per message; no tally binary at {}: the rest skipped",
            bin.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let data = dir.path().join("data");
    tally(&bin, &data, &["apply", schema.to_str().unwrap()]);
    tally(&bin, &data, &["tenant", "create", "bench"]);
    let key = tally(
        &bin,
        &data,
        &["--tenant", "bench", "key", "create", "--kind", "write"],
    );
    let mut server = Command::new(&bin)
        .arg("--data")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "1000000",
        ])
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let client = Client::builder(&url, key.trim())
        .batch_size(500)
        .max_buffer(n + 1)
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..n {
        client
            .track(
                EventBuilder::new("Bench")
                    .user_id(format!("u{}", i % 1000))
                    .property("plan", "pro")
                    .property("i", i),
            )
            .unwrap();
    }
    let call_ns = started.elapsed().as_nanos() as f64 / n as f64;
    client.flush().await.unwrap();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let stats = client.stats();
    assert_eq!((stats.sent, stats.failed), (n as u64, 0), "{stats:?}");
    client.close().await.unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    server.wait().unwrap();
    let counted = tally(
        &bin,
        &data,
        &["--tenant", "bench", "query", "tracks", "--format", "csv"],
    );
    assert!(counted.contains(&format!("Bench,{n}")), "{counted}");
    println!("| measure | client | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| per event, in the calling thread | track(): {call_ns:.0} ns | the same JSON with serde_json: {baseline_ns:.0} ns | {:.2} |",
        call_ns / baseline_ns
    );
    println!(
        "| {n} events until flush() returns (committed, counted once) | {rate:.0} events/s | | |"
    );
}
