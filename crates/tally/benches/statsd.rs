//! StatsD end to end, against a running `tally serve` (the binary of this build, or
//! `TALLY_BIN`; measure with a release binary, `TALLY_BIN=target/release/tally`):
//!
//! 1. **StatsD over TCP** (lossless): N lines (default 2,000,000; `cargo test --benches` runs
//!    20,000) in one connection, two workloads — counters and gauges (1,000 series, tags), and
//!    the same with 20 % timers (one row per sample) — into two views (a per-minute rollup by
//!    name and type, an hourly p99 of timers). Lines per second from the first byte sent until
//!    the views hold every line; the baseline is the same bytes into a socket that only reads
//!    them, in the same run.
//! 2. **StatsD over UDP**: the same lines in 1,400-byte datagrams, as fast as one thread sends
//!    them; lines per second received and the share the kernel dropped.
//!
//! The Rust client's cost is measured by `cargo bench -p tally-client --bench overhead`.
//!
//! `cargo bench -p tally --bench statsd` (`TALLY_BENCH_EVENTS` for another N).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

const ADMIN: &str = "bench-admin";

const SCHEMA: &str = "
CREATE MATERIALIZED VIEW metrics_minute AS
SELECT time_bucket('1 minute', timestamp) AS minute, name, metric_type,
       sum(value) AS total, count(*) AS n, last(value, timestamp) AS last_value
FROM metrics GROUP BY 1, 2, 3;
CREATE MATERIALIZED VIEW timers_hourly AS
SELECT time_bucket('1 hour', timestamp) AS hour, name,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99, count(*) AS n
FROM metrics WHERE metric_type = 'timer' GROUP BY 1, 2;
";

fn binary() -> PathBuf {
    std::env::var_os("TALLY_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tally")), PathBuf::from)
}

/// The workload's lines (each ends with a line break), the counter lines' total and the
/// number of timer lines.
fn lines(n: usize, timer_share: usize, tag: &str) -> (Vec<u8>, u64, u64) {
    let mut out = Vec::with_capacity(n * 48);
    let (mut counters, mut timers) = (0, 0);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = (x % 100) as usize;
        if r < timer_share {
            timers += 1;
            writeln!(
                out,
                "{tag}.latency.{}:{}|ms|#route:/r{}",
                x % 100,
                x % 997,
                i % 20
            )
            .unwrap();
        } else if r < timer_share + 10 {
            writeln!(out, "{tag}.queue.{}:{}|g", x % 100, x % 500).unwrap();
        } else {
            counters += 1;
            writeln!(out, "{tag}.requests.{}:1|c|#route:/r{}", x % 800, i % 20).unwrap();
        }
    }
    (out, counters, timers)
}

/// The counter total and timer count the views hold for metrics named `tag.…`.
async fn held(http: &reqwest::Client, base: &str, key: &str, tag: &str) -> (u64, u64) {
    let minute = common::get_json(
        http,
        &format!("{base}/v1/views/metrics_minute?limit=100000"),
        key,
    )
    .await;
    let counters: f64 = minute["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r[1].as_str().is_some_and(|n| n.starts_with(tag)) && r[2] == "counter")
                .map(|r| r[3].as_f64().unwrap_or(0.0))
                .sum()
        })
        .unwrap_or(0.0);
    let hourly = common::get_json(
        http,
        &format!("{base}/v1/views/timers_hourly?limit=100000"),
        key,
    )
    .await;
    let timers: i64 = hourly["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r[1].as_str().is_some_and(|n| n.starts_with(tag)))
                .map(|r| r[3].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    (counters as u64, timers as u64)
}

/// Seconds to write `bytes` into a socket that only reads them (the sender's ceiling).
fn sink_seconds(bytes: &[u8]) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while s.read(&mut buf).unwrap_or(0) > 0 {}
    });
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    drop(s);
    reader.join().unwrap();
    started.elapsed().as_secs_f64()
}

async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    tag: &str,
    want: (u64, u64),
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if held(http, base, key, tag).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn statsd_lines_received(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"tally_statsd_lines_total{outcome="accepted"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let n: usize = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 2_000_000 });
    let dir = tempfile::tempdir().unwrap();
    let served = common::serve(
        &binary(),
        dir.path(),
        "127.0.0.1:0",
        &[
            "--statsd",
            "127.0.0.1:0",
            "--statsd-tenant",
            "bench",
            "--rate-limit",
            "1000000",
        ],
        ADMIN,
    );
    let (base, statsd) = (served.base.clone(), served.statsd.clone().unwrap());
    let http = reqwest::Client::new();
    let keys = common::schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"bench"}"#).await;

    println!(
        "StatsD into views, {n} lines per workload, binary {}",
        binary().display()
    );
    println!("| workload | lines/s into views | baseline: bytes into a reading socket | ratio |");
    println!("|---|---|---|---|");
    for (name, timer_share, tag) in [
        ("counters and gauges, TCP", 0, "a"),
        ("20 % timers, TCP", 20, "b"),
    ] {
        let (bytes, counters, timers) = lines(n, timer_share, tag);
        let baseline = n as f64 / sink_seconds(&bytes);
        let started = Instant::now();
        let mut s = TcpStream::connect(&statsd).unwrap();
        s.write_all(&bytes).unwrap();
        drop(s);
        assert!(
            wait_for(&http, &base, &keys.read, tag, (counters, timers)).await,
            "the views never held all {n} lines of {name}"
        );
        let rate = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {name} | {rate:.0} | {baseline:.0} | {:.2} |",
            rate / baseline
        );
    }

    // UDP: as fast as one thread sends; what arrives, and how fast.
    let (bytes, _, _) = lines(n, 0, "c");
    let before = statsd_lines_received(&common::metrics(&http, &base).await);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let mut packet = Vec::with_capacity(1500);
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if packet.len() + line.len() > 1400 {
            let _ = udp.send_to(&packet, &statsd);
            packet.clear();
        }
        packet.extend_from_slice(line);
    }
    let _ = udp.send_to(&packet, &statsd);
    let sent_in = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = statsd_lines_received(&common::metrics(&http, &base).await) - before;
    println!(
        "UDP: {n} lines sent in {sent_in:.2} s ({:.0} lines/s offered); {received} received ({:.1} % dropped by the kernel)",
        n as f64 / sent_in,
        100.0 * (n as u64 - received) as f64 / n as f64
    );
}
