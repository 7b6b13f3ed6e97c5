//! End-to-end HTTP benchmark of `tally serve` on SQLite, on loopback: durable ingest
//! throughput, batched and one event per request, and view-query latency, with the bare SQLite
//! insert of the same rows measured in the same run as the baseline.
//!
//! `cargo bench -p tally --bench http` (`TALLY_BENCH_EVENTS`, default 300,000 batched events).
//!
//! - batched: 4 clients send NDJSON batches of 1,000 events (the rollups workload, 5 views);
//! - single: 32 clients send one event per request (group commit gathers them);
//! - query: 2,000 view queries (`per_minute` re-grouped by country; `latency` by event, with
//!   its percentile and HLL states merged), one client at a time; p50 and p99 wall clock.
//!
//! The same run measures the baselines: the bare SQLite insert of the same rows, `tally ingest`
//! of the same events from a file (the CLI's rate, which batched HTTP ingest should reach 0.8×
//! of), and the median one-row durable commit on this disk, which bounds single-event ingest:
//! 32 clients waiting for their acknowledgements can at most put 32 events in each group commit.
//!
//! Client and server share the machine's two cores, so these are lower bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, serve};
use workload::Workload;

#[path = "workload.rs"]
mod workload;

#[path = "../tests/common/mod.rs"]
mod common;

const ADMIN: &str = "bench";

fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let n: usize = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 300_000 });
    let singles = if quick { 200 } else { 20_000 };
    let queries = if quick { 50 } else { 2_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(n, singles, queries));
}

/// Sends every body to `url` from `clients` concurrent clients (NDJSON); the wall-clock time.
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    bodies: Vec<String>,
    clients: usize,
) -> Duration {
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, key, bodies) =
            (http.clone(), url.to_owned(), key.to_owned(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            for body in bodies.iter().skip(c).step_by(clients) {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

async fn run(n: usize, singles: usize, queries: usize) {
    let dir = tempfile::tempdir().unwrap();
    let schema = workload::schema(Workload::Rollups);
    let lines = workload::ndjson(Workload::Rollups, n + singles, 5);

    // Baseline: the same rows, decoded, inserted bare.
    let rows = workload::decode(&schema, &lines[..n]);
    let base = workload::baseline(dir.path(), &rows);
    let input = dir.path().join("hits.ndjson");
    std::fs::write(&input, lines[..n].join("\n") + "\n").unwrap();
    let cli = workload::tally_ingest(
        &Location::Directory(dir.path().join("cli-data")),
        &schema,
        &input,
    );
    let commit = workload::commit_latency(dir.path(), 200);

    let tally = Tally::open(
        &Location::Directory(dir.path().join("data")),
        Config::default(),
    )
    .unwrap();
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
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(hub, listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let common::Keys { write, read } =
        common::schema_and_tenant(&http, &base_url, ADMIN, &schema, r#"{"name":"bench"}"#).await;

    let url = format!("{base_url}/v1/streams/hits/events");
    // Batched: NDJSON bodies of 1,000 events, 4 clients.
    let batches: Vec<String> = lines[..n].chunks(1_000).map(|c| c.join("\n")).collect();
    let batched = send_all(&http, &url, &write, batches, 4).await;
    // Single events, 32 clients.
    let single = send_all(&http, &url, &write, lines[n..].to_vec(), 32).await;

    // Queries.
    let mut latencies = Vec::with_capacity(queries);
    let mut rows_seen = 0;
    for q in 0..queries {
        let path = if q % 2 == 0 {
            "per_minute?group_by=minute,country"
        } else {
            "latency?group_by=event&grain=hour"
        };
        let started = Instant::now();
        let r: Json = common::get_json(&http, &format!("{base_url}/v1/views/{path}"), &read).await;
        latencies.push(started.elapsed());
        rows_seen = rows_seen.max(r["rows"].as_array().map_or(0, Vec::len));
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    let rate = |events: usize, d: Duration| events as f64 / d.as_secs_f64();
    let base_rate = rate(n, base);
    println!("events: {n} batched, {singles} single; {queries} queries");
    println!("| path | events/s | ratio to baseline |");
    println!("|---|---:|---:|");
    println!(
        "| bare SQLite insert (baseline) | {:.0} | 1.00 |",
        base_rate
    );
    println!(
        "| `tally ingest` of the same events from a file (the CLI) | {:.0} | {:.2} |",
        rate(n, cli),
        rate(n, cli) / base_rate
    );
    println!(
        "| HTTP ingest, NDJSON batches of 1,000, 4 clients | {:.0} | {:.2} |",
        rate(n, batched),
        rate(n, batched) / base_rate
    );
    println!(
        "| HTTP ingest, 1 event per request, 32 clients | {:.0} | {:.3} |",
        rate(singles, single),
        rate(singles, single) / base_rate
    );
    println!();
    println!(
        "batched HTTP against the CLI: {:.2}× (goal ≥ 0.8×)",
        rate(n, batched) / rate(n, cli)
    );
    println!(
        "one-row durable commit on this disk: {:.2} ms (median of 200), so 32 waiting clients get at most {:.0} events/s (goal ≥ 50,000)",
        commit.as_secs_f64() * 1e3,
        32.0 / commit.as_secs_f64()
    );
    println!();
    println!("| view query (largest answer {rows_seen} rows) | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| HTTP round trip | {:.2} ms | {:.2} ms |",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}
