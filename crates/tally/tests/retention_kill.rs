//! Retention passes killed with `SIGKILL` at random points (25 times; `TALLY_RETENTION_KILLS`
//! for more): a pass deletes one tenant's raw events older than the stream's retention and its
//! view rows older than the view's, and being killed anywhere in it must leave nothing of
//! another tenant touched, nothing kept that should go once a pass completes, and nothing gone
//! that should stay (raw events inside the retention, view rows inside theirs — the views keep
//! counting the events raw retention removed).
//!
//! The pass is the one `tally ingest` runs after its input (here, an empty file) with the clock
//! fixed by `--now`, on SQLite: each killed pass an hour later than the one before (so each has
//! work of its own), killed after a random part of a whole pass's time; then one at the end,
//! run to completion. The schedule comes from a seed printed on failure (`TALLY_CRASH_SEED`
//! replays it).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tally::app::{Config, Location, Tally};
use tally_views::{QueryRequest, Timestamp, Value};

mod common;
use common::Rng;

const SCHEMA: &str = "
CREATE STREAM s (id TEXT NOT NULL, k TEXT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id', retention = '3 days');
CREATE MATERIALIZED VIEW v WITH (retention = '5 days') AS
SELECT time_bucket('1 hour', at) AS h, k, count(*) AS n FROM s GROUP BY 1, 2;
";
const EVENTS: i64 = 120_000;
/// The events span the 10 days before this instant.
const END: i64 = 1_781_049_600; // 2026-06-10T00:00:00Z
const SPAN: i64 = 10 * 86_400;
const HOUR: i64 = 3_600;

fn kills() -> usize {
    std::env::var("TALLY_RETENTION_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
}

fn tally(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.arg("--data").arg(data).args(args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn run(data: &Path, args: &[&str]) {
    let out = tally(data, args).output().unwrap();
    assert!(
        out.status.success(),
        "tally {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn iso(seconds: i64) -> String {
    Timestamp(seconds * 1_000_000).to_string()
}

/// Each tenant's events: (id, key, time in seconds), spread over the span.
fn events(tenant: &str) -> Vec<(String, String, i64)> {
    (0..EVENTS)
        .map(|i| {
            let at = END - SPAN + i * SPAN / EVENTS;
            (format!("{tenant}-{i}"), format!("k{}", i % 7), at)
        })
        .collect()
}

/// Events per (hour, key) of a tenant, as view `v` counts them.
fn hourly(events: &[(String, String, i64)]) -> BTreeMap<(i64, String), i64> {
    let mut out = BTreeMap::new();
    for (_, k, at) in events {
        *out.entry((at - at.rem_euclid(HOUR), k.clone()))
            .or_default() += 1;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn killed_retention_passes_keep_exactly_what_they_should() {
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
    eprintln!("TALLY_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, SCHEMA).unwrap();
    run(&data, &["apply", schema.to_str().unwrap()]);
    // Loaded as of a day after the first event, so that none is past the retention yet.
    let loaded_at = iso(END - SPAN + 86_400);
    let mut all = BTreeMap::new();
    for tenant in ["a", "b"] {
        run(&data, &["tenant", "create", tenant]);
        let events = events(tenant);
        let text: String = events
            .iter()
            .map(|(id, k, at)| {
                format!(
                    "{{\"id\":\"{id}\",\"k\":\"{k}\",\"at\":\"{}\"}}\n",
                    iso(*at)
                )
            })
            .collect();
        let file = dir.path().join(format!("{tenant}.ndjson"));
        std::fs::write(&file, text).unwrap();
        run(
            &data,
            &[
                "--tenant",
                tenant,
                "--now",
                &loaded_at,
                "--max-future",
                "30 days",
                "ingest",
                "--stream",
                "s",
                file.to_str().unwrap(),
            ],
        );
        all.insert(tenant, events);
    }
    // Retention as of the end of the span: raw events before END - 3 days go, view rows
    // before END - 5 days go. Killed again and again, then run to completion.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let now = iso(END);
    let args = [
        "--tenant",
        "a",
        "--now",
        &now,
        "ingest",
        "--stream",
        "s",
        empty.to_str().unwrap(),
    ];
    // How long a whole pass takes, on a copy: kills are spread over that time, so that most
    // land inside the pass (a pass killed inside its transaction leaves the whole work to the
    // next one).
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    let started = std::time::Instant::now();
    run(&copy, &args);
    let pass = started.elapsed().as_micros() as u64;
    // Each killed pass runs an hour later than the one before, so that it has work of its own
    // even when the one before completed. A pass that finishes before its kill narrows the
    // window later kills are drawn from to how long it took: passes after the first have an
    // hour of work, and the measured pass can be slowed by a busy machine, so a fixed window
    // could let every pass finish (it did, once in CI).
    let mut finished = 0;
    let mut window = pass;
    for i in 0..kills() {
        let earlier = iso(END - (kills() - i) as i64 * HOUR);
        let mut pass_args = args;
        pass_args[3] = &earlier;
        let started = std::time::Instant::now();
        let mut child = tally(&data, &pass_args).spawn().unwrap();
        let kill_at = Duration::from_micros(rng.below(window + 1));
        loop {
            if child.try_wait().unwrap().is_some() {
                finished += 1;
                window = window.min(started.elapsed().as_micros() as u64);
                break;
            }
            if started.elapsed() >= kill_at {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    eprintln!(
        "{finished} of {} passes finished before their kill (a whole pass takes {} ms; kills \
         drawn from {} ms at the end)",
        kills(),
        pass / 1000,
        window / 1000
    );
    assert!(
        finished < kills(),
        "every pass finished before its kill: nothing was interrupted"
    );
    run(&data, &args);

    let tally = Tally::open(&Location::Directory(data.clone()), Config::default()).unwrap();
    let stream = tally.stream("s").unwrap();
    for (tenant, events) in &all {
        let runtime = tally.open_tenant(tenant).unwrap();
        // Raw events: tenant a keeps those inside the retention, tenant b all of them.
        let raw_cut = if *tenant == "a" {
            END - 3 * 86_400
        } else {
            i64::MIN
        };
        let mut kept: Vec<String> = Vec::new();
        let mut after = 0;
        loop {
            let batch = runtime.store().read_events(&stream, after, 10_000).unwrap();
            let Some(last) = batch.last() else { break };
            after = last.seq;
            kept.extend(batch.iter().map(|e| match &e.row[0] {
                Value::Text(t) => t.to_string(),
                other => panic!("{other:?}"),
            }));
        }
        kept.sort();
        let mut expected: Vec<String> = events
            .iter()
            .filter(|(_, _, at)| *at >= raw_cut)
            .map(|(id, _, _)| id.clone())
            .collect();
        expected.sort();
        assert_eq!(kept.len(), expected.len(), "raw events of tenant {tenant}");
        assert!(kept == expected, "raw events of tenant {tenant} differ");
        // View rows: counts of every event (raw retention does not change views), for the
        // buckets inside the view's retention (tenant a) or all (tenant b).
        let view_cut = if *tenant == "a" {
            END - 5 * 86_400
        } else {
            i64::MIN
        };
        let answer = runtime.query("v", &QueryRequest::default()).unwrap();
        let got: BTreeMap<(i64, String), i64> = answer
            .rows
            .iter()
            .map(|r| match (&r[0], &r[1], &r[2]) {
                (Value::Timestamp(h), Value::Text(k), Value::Int(n)) => {
                    ((h.0 / 1_000_000, k.to_string()), *n)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let want: BTreeMap<(i64, String), i64> = hourly(events)
            .into_iter()
            .filter(|((h, _), _)| *h >= view_cut)
            .collect();
        assert_eq!(got.len(), want.len(), "view rows of tenant {tenant}");
        assert!(got == want, "view rows of tenant {tenant} differ");
    }
}
