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
//! - a binary `COPY` of the same rows into a table with no index, 10,000 rows per transaction
//!   (the revenue as text, which a `numeric` column would parse): the ceiling of PostgreSQL's
//!   bulk load, goal 5 of the performance issue; and the same into a table with a unique index
//!   on the dedupe key `(tenant_id, id)`, each id's first row only (`COPY` cannot skip
//!   duplicates): the least PostgreSQL itself pays to keep the key unique;
//! - the same with the indexes a deduplicating ingest needs (a unique `(tenant_id, id)` with
//!   `ON CONFLICT DO NOTHING`, and `(tenant_id, seq)` to read events in order): what a
//!   hand-written ingest of the same guarantees costs;
//! - tally: the NDJSON file through `tally ingest`'s code path on PostgreSQL (decode, validate,
//!   dedupe, the events as blocks of arrays in the partitioned blocks table, their keys, the
//!   five views of the workload applied and flushed at the end); and the same with the
//!   stream's dedupe key left out, which stores and looks up no keys (what the dedupe costs).
//!
//! Both are timed wall-clock, best of three; the ratio is what to compare across machines.

use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls};
use tally::app::Location;
use tally_store::testing::PgScratch;
use tally_views::Value;
use workload::Workload;

#[path = "workload.rs"]
mod workload;

/// The rows as the baseline table stores them: text, doubles and microseconds.
enum Cell {
    Text(Option<String>),
    Double(f64),
    Micros(i64),
}

/// A connection to the scratch schema with a fresh baseline table `name` of the workload's
/// columns (no index), its revenue column of type `revenue`.
fn baseline_table(pg: &PgScratch, name: &str, revenue: &str) -> Client {
    let mut client = Client::connect(pg.url(), NoTls).unwrap();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\";
             DROP TABLE IF EXISTS {name};
             CREATE TABLE {name} (tenant_id text NOT NULL, seq bigint NOT NULL, id text NOT NULL,
               event text NOT NULL, user_id text NOT NULL, country text NOT NULL, path text,
               duration_ms double precision NOT NULL, revenue {revenue}, at bigint NOT NULL)",
            s = pg.schema()
        ))
        .unwrap();
    client
}

fn baseline(pg: &PgScratch, rows: &[Vec<Value>], indexed: bool) -> Duration {
    let mut client = baseline_table(pg, "baseline", "numeric");
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

/// The rows copied with binary `COPY` into a table of the same columns, 10,000 rows per
/// transaction: with no index, or (`unique`) with a unique index on the dedupe key
/// `(tenant_id, id)` and only the first row of each id copied (`COPY` has no `ON CONFLICT`; the
/// duplicates are dropped before the clock starts), the least a load that keeps the key unique
/// in PostgreSQL pays.
fn copy_baseline(pg: &PgScratch, rows: &[Vec<Value>], unique: bool) -> Duration {
    use postgres::binary_copy::BinaryCopyInWriter;
    use postgres::types::Type;
    let mut client = baseline_table(pg, "copied", "text");
    let firsts: Vec<Vec<Value>>;
    let rows = match unique {
        false => rows,
        true => {
            client
                .batch_execute("CREATE UNIQUE INDEX ON copied (tenant_id, id)")
                .unwrap();
            let mut seen = std::collections::HashSet::new();
            firsts = rows
                .iter()
                .filter(|row| seen.insert(row[0].clone()))
                .cloned()
                .collect();
            &firsts
        }
    };
    let types = [
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::INT8,
    ];
    let text = |v: &Value| match v {
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let tenant = "default".to_owned();
    let started = Instant::now();
    for (chunk_no, chunk) in rows.chunks(10_000).enumerate() {
        let mut tx = client.transaction().unwrap();
        let sink = tx
            .copy_in("COPY copied FROM STDIN (FORMAT binary)")
            .unwrap();
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        for (i, row) in chunk.iter().enumerate() {
            let seq = (chunk_no * 10_000 + i) as i64;
            let duration = match &row[5] {
                Value::Double(d) => *d,
                other => panic!("duration_ms is a double, not {other:?}"),
            };
            let at = match &row[7] {
                Value::Timestamp(t) => t.0,
                other => panic!("at is a timestamp, not {other:?}"),
            };
            let (id, event, user, country, path, revenue) = (
                text(&row[0]),
                text(&row[1]),
                text(&row[2]),
                text(&row[3]),
                text(&row[4]),
                text(&row[6]),
            );
            writer
                .write(&[
                    &tenant, &seq, &id, &event, &user, &country, &path, &duration, &revenue, &at,
                ])
                .unwrap();
        }
        writer.finish().unwrap();
        tx.commit().unwrap();
    }
    started.elapsed()
}

fn main() {
    let (n, runs) = workload::events_and_runs(200_000);
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
    let rows = workload::decode(&schema, &lines);

    let scratch = PgScratch::new();
    // Each Tally run in a fresh scratch schema, dropped afterwards.
    let on_fresh = |f: &dyn Fn(&Location) -> Duration| {
        let pg = PgScratch::new();
        f(&Location::Postgres(pg.config()))
    };
    let best = |f: &dyn Fn() -> Duration| (0..runs).map(|_| f()).min().unwrap();
    let copy = best(&|| copy_baseline(&scratch, &rows, false));
    let copy_unique = best(&|| copy_baseline(&scratch, &rows, true));
    let base = best(&|| baseline(&scratch, &rows, false));
    let indexed = best(&|| baseline(&scratch, &rows, true));
    let append =
        best(&|| on_fresh(&|at| workload::commit_only(at, workload::stream_only(), &rows)));
    let commit = best(&|| on_fresh(&|at| workload::commit_only(at, &schema, &rows)));
    let ours = best(&|| on_fresh(&|at| workload::tally_ingest(at, &schema, &input)));
    // The same stream without its dedupe key: what the exact dedupe costs end to end.
    let keyless = schema.replace(", dedupe_key = 'id'", "");
    assert_ne!(keyless, schema, "the workload's stream has a dedupe key");
    let no_keys = best(&|| on_fresh(&|at| workload::tally_ingest(at, &keyless, &input)));
    workload::print_table(
        workload,
        n,
        &[
            (
                "multi-row INSERT, 1,000 rows per statement, no index (baseline)",
                base,
            ),
            ("binary COPY, no index", copy),
            (
                "binary COPY, unique (tenant_id, id) index (each id's first row only)",
                copy_unique,
            ),
            (
                "multi-row INSERT … ON CONFLICT DO NOTHING, unique (tenant_id, id) and (tenant_id, seq) indexes",
                indexed,
            ),
            (
                "tally append only (decoded rows, dedupe, blocks, keys, no views)",
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
            (
                "tally ingest, 5 views, the stream without its dedupe key (no keys stored or looked up)",
                no_keys,
            ),
        ],
    );
    println!(
        "tally ingest against the binary COPY: {:.2}× (goal ≥ 0.5×); without the dedupe key {:.2}×; \
         against the binary COPY into the unique index on the dedupe key {:.2}×",
        copy.as_secs_f64() / ours.as_secs_f64(),
        copy.as_secs_f64() / no_keys.as_secs_f64(),
        copy_unique.as_secs_f64() / ours.as_secs_f64()
    );
}
