//! End-to-end HTTP benchmark of `tally serve` on SQLite, on loopback: durable ingest
//! throughput, batched and one event per request, and view-query latency, with the bare SQLite
//! insert of the same rows measured in the same run as the baseline.
//!
//! `cargo bench -p tally --bench http` (`TALLY_BENCH_EVENTS`, default 300,000 batched events;
//! `TALLY_BENCH_SINGLES`, default 20,000 single-event requests).
//!
//! - batched: 4 clients (`TALLY_BENCH_CLIENTS`) send NDJSON batches of 1,000 events
//!   (`TALLY_BENCH_BATCH`; a body must stay within the 512 KB limit, about 3,500 of these
//!   events) of the rollups workload (5 views); the group-commit histograms and `/proc/stat`
//!   tell how busy the worker and the machine's cores were, and the worker thread's
//!   `schedstat` how much of the phase it was on a core, waiting for one, or off the CPU (its
//!   `fsync`s, waits for the next request or for the thread that applies). It alternates with `tally ingest`
//!   of the same events (the CLI), 3 rounds of each (`TALLY_BENCH_ROUNDS`; 1 in the quick run),
//!   each into a fresh directory and a fresh tenant, after an unmeasured warm-up and with a
//!   pause and a `sync` before each phase (the CLI's directory deleted after its phase), so
//!   that each ratio compares two adjacent phases on a machine whose speed drifts, and neither
//!   runs beside the kernel's writeback of an earlier phase's files; the round of the median
//!   ratio is reported, and every round's figures;
//! - single: 32 keep-alive connections send one event per request (group commit gathers them),
//!   from a minimal HTTP/1.1 client as `wrk` is (requests prepared before the clock starts),
//!   so that the clients take little of the two cores; the server's group-commit histograms and
//!   the process's CPU time tell how the requests were grouped and what each one cost (after
//!   the same pause and `sync` as the other phases);
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
    let n =
        workload::env_number("TALLY_BENCH_EVENTS").unwrap_or(if quick { 2_000 } else { 300_000 });
    let singles =
        workload::env_number("TALLY_BENCH_SINGLES").unwrap_or(if quick { 200 } else { 20_000 });
    let queries = if quick { 50 } else { 2_000 };
    let rounds = workload::env_number("TALLY_BENCH_ROUNDS")
        .filter(|&r| r > 0)
        .unwrap_or(if quick { 1 } else { 3 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(n, singles, queries, rounds));
}

/// Sums of the server's group-commit histograms (`tally_ingest_group_*` in `/metrics`).
struct GroupStats {
    groups: f64,
    requests: f64,
    seconds: f64,
}

impl GroupStats {
    async fn read(http: &reqwest::Client, base_url: &str) -> GroupStats {
        let text = common::metrics(http, base_url).await;
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
        };
        GroupStats {
            groups: value("tally_ingest_group_requests_count"),
            requests: value("tally_ingest_group_requests_sum"),
            seconds: value("tally_ingest_group_duration_seconds_sum"),
        }
    }

    fn since(&self, before: &GroupStats) -> GroupStats {
        GroupStats {
            groups: self.groups - before.groups,
            requests: self.requests - before.requests,
            seconds: self.seconds - before.seconds,
        }
    }
}

/// Sends each event as one request from `clients` keep-alive connections, as `wrk` would: the
/// requests are written out before the clock starts and each answer is only read up to its
/// status and length, so the clients cost little CPU beside the server they share the cores with.
/// The wall-clock time.
async fn send_raw(
    base_url: &str,
    path: &str,
    key: &str,
    events: &[String],
    clients: usize,
) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://").to_owned();
    let requests: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{e}",
                e.len()
            )
            .into_bytes()
        })
        .collect();
    let requests = Arc::new(requests);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, requests) = (addr.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
            socket.set_nodelay(true).unwrap();
            let mut buffer = Vec::with_capacity(4096);
            for request in requests.iter().skip(c).step_by(clients) {
                socket.write_all(request).await.unwrap();
                buffer.clear();
                // Read until the head and the body its content-length announces are in.
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the server closed the connection");
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = std::str::from_utf8(&buffer[..end])
                        .unwrap()
                        .to_ascii_lowercase();
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buffer.len() >= end + 4 + length {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

/// Writes every dirty page of the machine to the disk (`sync`), so that a phase does not run
/// beside the kernel's writeback of an earlier phase's files: the kernel writes a page back
/// 30 s after it was dirtied (`vm.dirty_expire_centisecs`), which without this fell into the
/// later rounds' phases and slowed them. Without a `sync` command it says so and goes on.
fn settle_disk() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        other => eprintln!("sync failed ({other:?}); phases may run beside earlier writeback"),
    }
}

/// CPU time from `/proc`: this process's (user + system) and the whole machine's busy share.
struct Cpu {
    /// Seconds of CPU this process used.
    process: f64,
    /// Busy and total clock ticks of all cores; after `since`, `busy` is the busy fraction.
    busy: f64,
    total: f64,
}

impl Cpu {
    fn read() -> Cpu {
        // Clock ticks are 1/100 s on Linux (USER_HZ).
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<f64> = after_name
            .split(' ')
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let process = (fields[11] + fields[12]) / 100.0;
        let all = std::fs::read_to_string("/proc/stat").unwrap();
        let ticks: Vec<f64> = all
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let total: f64 = ticks.iter().take(8).sum();
        Cpu {
            process,
            busy: total - ticks[3] - ticks[4],
            total,
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            process: self.process - before.process,
            busy: (self.busy - before.busy) / (self.total - before.total).max(1.0),
            total: self.total - before.total,
        }
    }
}

/// One round of the CLI and batched HTTP ingest of the same events.
struct Round {
    cli: Duration,
    /// The process's CPU over the CLI's phase.
    cli_cpu: Cpu,
    batched: Duration,
    groups: GroupStats,
    cpu: Cpu,
    /// The tenant worker's thread during the phase (`None` if it could not be read).
    worker: Option<ThreadTimes>,
}

/// Seconds a thread of this process spent on a core and runnable waiting for one
/// (`/proc/self/task/*/schedstat`); the rest of a phase it was off the CPU (its `fsync`s, joins,
/// an empty queue).
#[derive(Clone, Copy, Default)]
struct ThreadTimes {
    on_core: f64,
    waiting: f64,
}

impl ThreadTimes {
    /// The times of the thread named `name`, `None` if there is none (a tenant's worker starts
    /// with its first request).
    fn read(name: &str) -> Option<ThreadTimes> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let mut ns = (stat.split_whitespace()).map(|f| f.parse::<f64>().ok().map(|n| n / 1e9));
            return Some(ThreadTimes {
                on_core: ns.next()??,
                waiting: ns.next()??,
            });
        }
        None
    }

    /// The times between `before` (`None`: the thread started since) and `after`; `None` if
    /// the thread is gone or is another one (its times went back).
    fn between(before: Option<ThreadTimes>, after: Option<ThreadTimes>) -> Option<ThreadTimes> {
        let (before, after) = (before.unwrap_or_default(), after?);
        let times = ThreadTimes {
            on_core: after.on_core - before.on_core,
            waiting: after.waiting - before.waiting,
        };
        (times.on_core >= 0.0 && times.waiting >= 0.0).then_some(times)
    }
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

async fn run(n: usize, singles: usize, queries: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let schema = workload::schema(Workload::Rollups);
    let lines = workload::ndjson(Workload::Rollups, n + singles, 5);

    // Baseline: the same rows, decoded, inserted bare.
    let rows = workload::decode(&schema, &lines[..n]);
    let base = workload::baseline(dir.path(), &rows);
    let input = dir.path().join("hits.ndjson");
    std::fs::write(&input, lines[..n].join("\n") + "\n").unwrap();
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
    // Batched: NDJSON bodies of 1,000 events (`TALLY_BENCH_BATCH`), 4 clients
    // (`TALLY_BENCH_CLIENTS`).
    let batch_size = workload::env_number("TALLY_BENCH_BATCH")
        .filter(|&b| b > 0)
        .unwrap_or(1_000);
    let batches: Vec<String> = lines[..n]
        .chunks(batch_size)
        .map(|c| c.join("\n"))
        .collect();
    let clients = workload::env_number("TALLY_BENCH_CLIENTS")
        .filter(|&c| c > 0)
        .unwrap_or(4);
    // The CLI and batched HTTP alternate, `rounds` times, each round into a fresh directory
    // and a fresh tenant: the machine's speed drifts between phases, so a ratio of two
    // adjacent phases says more than one of distant ones. A warm-up first (a tenant of its own,
    // not measured), so that the first round's HTTP phase does not meet a server that has not
    // served yet; before each phase (the single events' too), with several rounds, a pause
    // longer than the flush interval, so that none runs beside the previous one's last flush
    // and checkpoint, then a `sync` ([`settle_disk`]).
    let warm_up = common::create_tenant(&http, &base_url, ADMIN, r#"{"name":"warmup"}"#).await;
    let warm_up_batches = batches.iter().take(20).cloned().collect();
    send_all(&http, &url, &warm_up.write, warm_up_batches, clients).await;
    let pause = || async {
        tokio::time::sleep(Duration::from_secs(if rounds > 1 { 2 } else { 0 })).await;
        settle_disk();
    };
    let mut measured = Vec::new();
    for round in 0..rounds {
        pause().await;
        let cli_data = dir.path().join(format!("cli-data-{round}"));
        let cli_cpu_before = Cpu::read();
        let cli = workload::tally_ingest(&Location::Directory(cli_data.clone()), &schema, &input);
        let cli_cpu = Cpu::read().since(&cli_cpu_before);
        // Its pages need not reach the disk: deleted, they are dropped.
        std::fs::remove_dir_all(&cli_data).unwrap();
        let (key, tenant) = if round == 0 {
            (write.clone(), "bench".to_owned())
        } else {
            let tenant = format!("bench{round}");
            let body = format!(r#"{{"name":"{tenant}"}}"#);
            let key = common::create_tenant(&http, &base_url, ADMIN, &body).await;
            (key.write, tenant)
        };
        // The worker's thread is named after its tenant (at most 15 bytes show in `comm`; the
        // names here are ASCII).
        let mut worker_thread = format!("tenant-{tenant}");
        worker_thread.truncate(15);
        pause().await;
        let groups_before = GroupStats::read(&http, &base_url).await;
        let cpu_before = Cpu::read();
        let worker_before = ThreadTimes::read(&worker_thread);
        let batched = send_all(&http, &url, &key, batches.clone(), clients).await;
        let worker = ThreadTimes::between(worker_before, ThreadTimes::read(&worker_thread));
        let cpu = Cpu::read().since(&cpu_before);
        let groups = GroupStats::read(&http, &base_url)
            .await
            .since(&groups_before);
        measured.push(Round {
            cli,
            cli_cpu,
            batched,
            groups,
            cpu,
            worker,
        });
    }
    // Single events, 32 clients; the server's group-commit histograms tell how they were grouped.
    pause().await;
    let before = GroupStats::read(&http, &base_url).await;
    let cpu_before = Cpu::read();
    let single = send_raw(
        &base_url,
        "/v1/streams/hits/events",
        &write,
        &lines[n..],
        32,
    )
    .await;
    let cpu = Cpu::read().since(&cpu_before);
    let groups = GroupStats::read(&http, &base_url).await.since(&before);

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
    // Each round's batched rate against its CLI's; the table shows the round of the median
    // ratio (the lower of the two middle ones for an even number of rounds).
    let ratios: Vec<f64> = (measured.iter())
        .map(|r| r.cli.as_secs_f64() / r.batched.as_secs_f64())
        .collect();
    let mut order: Vec<usize> = (0..measured.len()).collect();
    order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
    let middle = order[(order.len() - 1) / 2];
    let (cli, batched) = (
        rate(n, measured[middle].cli),
        rate(n, measured[middle].batched),
    );
    println!("events: {n} batched, {singles} single; {queries} queries");
    println!("| path | events/s | ratio to baseline |");
    println!("|---|---:|---:|");
    println!(
        "| bare SQLite insert (baseline) | {:.0} | 1.00 |",
        base_rate
    );
    println!(
        "| `tally ingest` of the same events from a file (the CLI; round {} of {rounds}) | {:.0} | {:.2} |",
        middle + 1,
        cli,
        cli / base_rate
    );
    println!(
        "| HTTP ingest, NDJSON batches of {batch_size}, {clients} clients (round {} of {rounds}) | {:.0} | {:.2} |",
        middle + 1,
        batched,
        batched / base_rate
    );
    println!(
        "| HTTP ingest, 1 event per request, 32 clients | {:.0} | {:.3} |",
        rate(singles, single),
        rate(singles, single) / base_rate
    );
    println!();
    println!(
        "batched HTTP against the CLI: {:.2}× (goal ≥ 0.8×; round {}, the median of {rounds} rounds, each the CLI then batched HTTP: {})",
        ratios[middle],
        middle + 1,
        (ratios.iter())
            .map(|r| format!("{r:.2}×"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if ratios.len() > 1 {
        // A round's ratio has a standard deviation of about 0.11 on the reference machine
        // (docs/performance.md, thirty-seventh round): the mean's standard error says what a
        // run can show.
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let variance =
            (ratios.iter()).map(|r| (r - mean).powi(2)).sum::<f64>() / (ratios.len() - 1) as f64;
        println!(
            "batched HTTP against the CLI, the mean of the {rounds} rounds: {mean:.3}× (standard error {:.3})",
            (variance / ratios.len() as f64).sqrt()
        );
    }
    println!(
        "one-row durable commit on this disk: {:.2} ms (median of 200), so 32 waiting clients get at most {:.0} events/s (goal ≥ 50,000)",
        commit.as_secs_f64() * 1e3,
        32.0 / commit.as_secs_f64()
    );
    for (i, r) in measured.iter().enumerate() {
        let phase = r.batched.as_secs_f64();
        let thread = match r.worker {
            Some(t) => format!(
                "on a core {:.0} %, waiting for one {:.0} %, off the CPU {:.0} %",
                t.on_core / phase * 100.0,
                t.waiting / phase * 100.0,
                (phase - t.on_core - t.waiting).max(0.0) / phase * 100.0
            ),
            None => "its thread's times could not be read".to_owned(),
        };
        println!(
            "round {}: the CLI {:.0} events/s, batched HTTP ({clients} clients) {:.0} events/s: {:.1} requests per group commit on average, {:.2} ms per group (the worker's: commit, and apply unless a second thread applies; decoded on the request threads), the worker busy {:.0} % of the phase; the worker's thread over the phase: {thread}; the machine's cores were {:.0} % busy; CPU an event (this process): the CLI {:.2} µs, batched HTTP (server and clients) {:.2} µs",
            i + 1,
            rate(n, r.cli),
            rate(n, r.batched),
            r.groups.requests / r.groups.groups,
            r.groups.seconds / r.groups.groups * 1e3,
            r.groups.seconds / phase * 100.0,
            r.cpu.busy * 100.0,
            r.cli_cpu.process / n as f64 * 1e6,
            r.cpu.process / n as f64 * 1e6
        );
    }
    println!(
        "single events: {:.1} requests per group commit on average, {:.2} ms per group (decode, commit, apply), the worker busy {:.0} % of the phase",
        groups.requests / groups.groups,
        groups.seconds / groups.groups * 1e3,
        groups.seconds / single.as_secs_f64() * 100.0
    );
    println!(
        "single events: this process (server and clients) used {:.0} µs of CPU per request; the machine's cores were {:.0} % busy",
        cpu.process / singles as f64 * 1e6,
        cpu.busy * 100.0
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
