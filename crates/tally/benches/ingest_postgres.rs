//! End-to-end durable ingest on PostgreSQL (the server on the same machine), against a plain
//! multi-row `INSERT` of the same rows measured in the same run.
//!
//! `cargo bench -p tally --bench ingest_postgres` (set `TALLY_BENCH_EVENTS`, default 200,000;
//! the server is `TALLY_TEST_DATABASE_URL`, an administrator's URL, by default
//! `postgres://postgres@127.0.0.1:5432/test`; Tally itself runs as the ordinary role
//! `tally_test` in a scratch schema).
//!
//! - baseline: the decoded rows inserted with multi-row `INSERT … VALUES (…), (…)` statements of
//!   1,000 rows, 10,000 rows per transaction, into a table of the same columns with no index,
//!   as the same role (`synchronous_commit` as the server has it: on by default);
//! - the same with the indexes a deduplicating ingest needs (a unique `(tenant_id, id)` with
//!   `ON CONFLICT DO NOTHING`, and `(tenant_id, seq)` to read events in order): what a
//!   hand-written ingest of the same guarantees costs;
//! - tally: the NDJSON file through `tally ingest`'s code path on PostgreSQL (decode, validate,
//!   binary COPY into staging, dedupe, the partitioned raw table, the five views of the
//!   workload applied and flushed at the end).
//!
//! Both are timed wall-clock, best of three; the ratio is what to compare across machines.

use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls};
use tally::app::{Config, Location, Tally};
use tally::ingest::{Format, ingest};
use tally_store::testing::PgScratch;
use tally_views::{Timestamp, Value};
use workload::Workload;

#[path = "workload.rs"]
mod workload;

/// The rows as the baseline table stores them: text, doubles and microseconds.
enum Cell {
    Text(Option<String>),
    Double(f64),
    Micros(i64),
}

fn baseline(pg: &PgScratch, rows: &[Vec<Value>], indexed: bool) -> Duration {
    let mut client = Client::connect(pg.url(), NoTls).unwrap();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\";
             DROP TABLE IF EXISTS baseline;
             CREATE TABLE baseline (tenant_id text NOT NULL, seq bigint NOT NULL, id text NOT NULL,
               event text NOT NULL, user_id text NOT NULL, country text NOT NULL, path text,
               duration_ms double precision NOT NULL, revenue numeric, at bigint NOT NULL)",
            s = pg.schema()
        ))
        .unwrap();
    if indexed {
        client
            .batch_execute(
                "CREATE UNIQUE INDEX ON baseline (tenant_id, id); CREATE INDEX ON baseline (tenant_id, seq);",
            )
            .unwrap();
    }
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    Value::Null => Cell::Text(None),
                    Value::Double(d) => Cell::Double(*d),
                    Value::Timestamp(t) => Cell::Micros(t.0),
                    other => Cell::Text(Some(other.to_string())),
                })
                .collect()
        })
        .collect();
    let tenant = "default".to_owned();
    let started = Instant::now();
    for (chunk_no, chunk) in cells.chunks(10_000).enumerate() {
        let mut tx = client.transaction().unwrap();
        for (part_no, part) in chunk.chunks(1_000).enumerate() {
            let mut sql = String::from(
                "INSERT INTO baseline (tenant_id, seq, id, event, user_id, country, path, duration_ms, revenue, at) VALUES ",
            );
            let seqs: Vec<i64> = (0..part.len())
                .map(|i| (chunk_no * 10_000 + part_no * 1_000 + i) as i64)
                .collect();
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(part.len() * 10);
            for (i, row) in part.iter().enumerate() {
                let at = params.len();
                params.push(&tenant);
                params.push(&seqs[i]);
                for cell in row {
                    params.push(match cell {
                        Cell::Text(t) => t,
                        Cell::Double(d) => d,
                        Cell::Micros(m) => m,
                    });
                }
                let marks: Vec<String> = (at + 1..=params.len())
                    .map(|n| {
                        if n == at + 9 {
                            format!("${n}::text::numeric")
                        } else {
                            format!("${n}")
                        }
                    })
                    .collect();
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("({})", marks.join(", ")));
            }
            if indexed {
                sql.push_str(" ON CONFLICT DO NOTHING");
            }
            tx.execute(&sql, &params).unwrap();
        }
        tx.commit().unwrap();
    }
    started.elapsed()
}

fn tally_ingest(schema: &str, input: &std::path::Path) -> Duration {
    let pg = PgScratch::new();
    let mut tally = Tally::open(&Location::Postgres(pg.config()), Config::default()).unwrap();
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
fn commit_only(schema: &str, rows: &[Vec<Value>]) -> Duration {
    let pg = PgScratch::new();
    let mut tally = Tally::open(&Location::Postgres(pg.config()), Config::default()).unwrap();
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
        .unwrap_or(if quick { 2_000 } else { 200_000 });
    let runs = if quick { 1 } else { 3 };
    println!("events: {n}, best of {runs}, wall clock, PostgreSQL on this machine");
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

    let catalog = tally_views::sql::apply(&tally_views::Catalog::new(), &schema)
        .unwrap()
        .catalog;
    let engine = tally_views::Engine::new(&catalog, tally_views::TimeZone::UTC);
    let stream = catalog.stream("hits").unwrap();
    let now = Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let decoder =
        tally::decode::RowDecoder::new(stream, &engine, now, tally_views::Interval::Days(3650));
    let rows: Vec<Vec<Value>> = lines.iter().map(|l| decoder.json(l).unwrap()).collect();

    let scratch = PgScratch::new();
    let best = |f: &dyn Fn() -> Duration| (0..runs).map(|_| f()).min().unwrap();
    let base = best(&|| baseline(&scratch, &rows, false));
    let indexed = best(&|| baseline(&scratch, &rows, true));
    let append = best(&|| commit_only(workload::stream_only(), &rows));
    let commit = best(&|| commit_only(&schema, &rows));
    let ours = best(&|| tally_ingest(&schema, &input));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let row = |what: &str, d: Duration| {
        println!("| {what} | {:.0} | {:.2} |", rate(d), rate(d) / rate(base))
    };
    println!();
    println!("workload: {}", format!("{workload:?}").to_lowercase());
    println!("| path | events/s | ratio to baseline |");
    println!("|---|---:|---:|");
    row(
        "multi-row INSERT, 1,000 rows per statement, no index (baseline)",
        base,
    );
    row(
        "multi-row INSERT … ON CONFLICT DO NOTHING, unique (tenant_id, id) and (tenant_id, seq) indexes",
        indexed,
    );
    row(
        "tally append only (decoded rows, COPY, dedupe, partitions, no views)",
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
