//! Crash test: `tally ingest` is killed with SIGKILL at random points, again and again (100
//! times per backend; `TALLY_CRASH_KILLS` for longer runs), and the same file is sent again each
//! time (as a client retries until it gets an acknowledgement). Afterwards every view must equal
//! the recomputation over the file's events: nothing lost, nothing counted twice.
//!
//! The same under HTTP load is in `crash_http.rs`.
//!
//! Each killed run sends a window of the file that overlaps the previous one (half re-sent, half
//! new), so every kill interrupts fresh work; kills land anywhere: while the process opens and
//! replays, between commits, inside a commit, during the final flush. Small batches
//! (`--batch-size`) make for many commit points. At the end the whole file is sent once more,
//! to completion. The schedule comes from a seed printed on failure (`TALLY_CRASH_SEED` replays
//! it). It runs on SQLite and on PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally::app::{Config, Location, Tally};
use tally_store::testing::PgScratch;
use tally_views::QueryRequest;
use tally_views::reference::{compare, recompute};

mod common;
use common::Rng;

const EVENTS: usize = 30_000;

/// How many times `tally ingest` is killed per backend.
fn kills() -> usize {
    std::env::var("TALLY_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, shop TEXT NOT NULL, amount DECIMAL(12,2) NOT NULL, items BIGINT,
                      customer TEXT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW shop_daily AS
SELECT time_bucket('1 day', at) AS day, shop, count(*) AS orders, sum(amount) AS revenue, sum(items) AS items,
       count(DISTINCT customer) AS customers, max(amount) AS largest, last(customer, at) AS last_customer,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS median
FROM orders GROUP BY 1, 2;
CREATE MATERIALIZED VIEW customers AS
SELECT customer, count(*) AS orders, sum(amount) AS spent, first(shop, at) AS first_shop
FROM orders GROUP BY customer;
";

/// Where a run keeps its data.
enum Target {
    Directory(PathBuf),
    Postgres(PgScratch),
}

impl Target {
    fn location(&self) -> Location {
        match self {
            Target::Directory(dir) => Location::Directory(dir.clone()),
            Target::Postgres(pg) => Location::Postgres(pg.config()),
        }
    }
}

fn tally(target: &Target) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    match target {
        Target::Directory(dir) => cmd.arg("--data").arg(dir),
        Target::Postgres(pg) => cmd
            .args(["--database-url", pg.url()])
            .args(["--database-schema", pg.schema()]),
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn events_file(dir: &Path, rng: &mut Rng) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for i in 0..EVENTS {
        // Some events are sent twice within the file, as a client retrying a batch would.
        if i > 0 && rng.below(20) == 0 {
            let again = lines[rng.below(i as u64) as usize].clone();
            lines.push(again);
            continue;
        }
        let shop = ["berlin", "paris", "rome", "oslo"][rng.below(4) as usize];
        let items = if rng.below(10) == 0 {
            "null".to_owned()
        } else {
            rng.below(9).to_string()
        };
        let minute = rng.below(60 * 24 * 20);
        lines.push(format!(
            r#"{{"id":"o{i}","shop":"{shop}","amount":"{}.{:02}","items":{items},"customer":"c{}","at":"2026-05-{:02}T{:02}:{:02}:00Z"}}"#,
            rng.below(500),
            rng.below(100),
            rng.below(700),
            1 + minute / (60 * 24),
            (minute / 60) % 24,
            minute % 60,
        ));
    }
    let _ = dir;
    lines
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn killed_ingests_lose_nothing_and_count_nothing_twice_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = Target::Directory(dir.path().join("data"));
    let scratch = Target::Directory(dir.path().join("scratch"));
    killed_ingests(dir.path(), &data, &scratch);
}

#[test]
fn killed_ingests_lose_nothing_and_count_nothing_twice_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let data = Target::Postgres(PgScratch::new());
    let scratch = Target::Postgres(PgScratch::new());
    killed_ingests(dir.path(), &data, &scratch);
}

fn killed_ingests(dir: &Path, data: &Target, scratch: &Target) {
    let seed = std::env::var("TALLY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let kills_wanted = kills();
    let schema = dir.join("schema.sql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let status = tally(data).arg("apply").arg(&schema).status().unwrap();
    assert!(status.success());
    let lines = events_file(dir, &mut rng);
    let input = dir.join("orders.ndjson");
    write_lines(&input, &lines);
    // Window k covers two chunks: the chunk the killed run k-1 was sending, and a new one.
    let chunk = lines.len() / (kills_wanted + 1);
    let window = |k: usize| &lines[k.saturating_sub(1) * chunk..((k + 1) * chunk).min(lines.len())];

    // How long an uninterrupted window takes (on a scratch copy) bounds the kill delays.
    assert!(
        tally(scratch)
            .arg("apply")
            .arg(&schema)
            .status()
            .unwrap()
            .success()
    );
    let part = dir.join("window.ndjson");
    write_lines(&part, window(1));
    let started = Instant::now();
    let timed = tally(scratch)
        .args(["ingest", "--stream", "orders", "--batch-size", "200"])
        .arg(&part)
        .status()
        .unwrap();
    assert!(timed.success());
    let longest = started.elapsed();

    let mut kills = 0;
    let mut k = 0;
    while kills < kills_wanted {
        k += 1;
        assert!(
            k < kills_wanted * 5,
            "seed {seed}: runs keep finishing before the kill"
        );
        write_lines(&part, window(k.min(kills_wanted)));
        let mut child = tally(data)
            .args(["ingest", "--stream", "orders", "--batch-size", "200"])
            .arg(&part)
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(longest.as_millis() as u64 + 1));
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            Some(status) => {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(
                    status.success(),
                    "seed {seed}: ingest failed without a kill: {err}"
                );
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }

    // The retry that finally goes through.
    let output = tally(data)
        .args(["ingest", "--stream", "orders", "--output", "json"])
        .arg(&input)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "seed {seed}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["rejected"], 0, "seed {seed}");

    // The oracle: every distinct event of the file, exactly once, with its content intact. The
    // order events were committed in depends on where the kills fell, so the sequence numbers
    // (which break first/last ties) are the store's.
    let tally = Tally::open(&data.location(), Config::default()).unwrap();
    let runtime = tally.open_tenant("default").unwrap();
    let stream = tally.stream("orders").unwrap();
    let engine = runtime.engine().clone();
    let decoder = tally::decode::RowDecoder::new(&stream, tally.now(), tally.config().max_future);
    let mut sent = std::collections::HashMap::new();
    for line in &lines {
        let row = decoder.json(line).unwrap();
        sent.insert(row[0].to_string(), row);
    }
    let stored = runtime.store().read_events(&stream, 0, usize::MAX).unwrap();
    assert_eq!(
        stored.len(),
        sent.len(),
        "seed {seed}: raw events lost or doubled"
    );
    for event in &stored {
        let id = event.row[0].to_string();
        assert_eq!(
            sent.get(&id),
            Some(&event.row),
            "seed {seed}: event {id} stored wrong"
        );
    }
    let expected_events = stored;
    for plan in tally.catalog().views() {
        let expected = recompute(plan, &expected_events, engine.tz());
        let actual = runtime.query(&plan.name, &QueryRequest::default()).unwrap();
        if let Err(e) = compare(plan, &expected, &actual) {
            panic!("seed {seed} after {kills} kills: {e}");
        }
    }
}
