//! Criterion benchmark of the engine: `Engine::apply` on decoded rows, and decoding + applying
//! from NDJSON (the in-memory half of ingest), over the five views of each workload.
//!
//! `cargo bench -p tally --bench engine`. Throughput is in events per second.
//!
//! With `TALLY_BENCH_ONCE=apply` (or `decode`) the binary instead runs that step once over the
//! batch of the rollups workload (`TALLY_BENCH_WORKLOAD=entities` for the other) and exits, for
//! instruction counts that do not depend on machine noise:
//! `TALLY_BENCH_ONCE=apply valgrind --tool=callgrind target/release/deps/engine-…`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use tally::decode::RowDecoder;
use tally_views::{Catalog, Engine, Event, Interval, TimeZone, Timestamp};

#[path = "workload.rs"]
mod workload;

const BATCH: usize = 100_000;

use workload::Workload;

fn setup(workload: Workload) -> (Catalog, Engine, Vec<String>) {
    let catalog = tally_views::sql::apply(&Catalog::new(), &workload::schema(workload))
        .unwrap()
        .catalog;
    let engine = Engine::new(&catalog, TimeZone::get("Europe/Berlin").unwrap());
    (catalog, engine, workload::ndjson(workload, BATCH, 7))
}

/// The lines decoded into events with sequence numbers from 1.
fn decode_all(decoder: &RowDecoder<'_>, lines: &[String]) -> Vec<Event> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| Event {
            seq: i as u64 + 1,
            row: decoder.json(l).unwrap(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    bench_workload(c, Workload::Rollups);
    bench_workload(c, Workload::Entities);
}

fn bench_workload(c: &mut Criterion, workload: Workload) {
    let (catalog, engine, lines) = setup(workload);
    let stream = catalog.stream("hits").unwrap().clone();
    let now = Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let decoder = RowDecoder::new(&stream, &engine, now, Interval::Days(1));
    let events = decode_all(&decoder, &lines);

    let mut group = c.benchmark_group(format!("engine/{workload:?}").to_lowercase());
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("apply_5_views", |b| {
        b.iter_batched(
            || engine.delta(|_| 0),
            |mut delta| {
                engine.apply("hits", &events, &mut delta);
                delta
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode_and_apply_5_views", |b| {
        b.iter_batched(
            || engine.delta(|_| 0),
            |mut delta| {
                let rows = decode_all(&decoder, &lines);
                engine.apply("hits", &rows, &mut delta);
                delta
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| decoder.json(l).unwrap().len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var("TALLY_BENCH_ONCE").as_deref() {
        Ok(step) => once(step),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}

/// One pass of one step, for instruction counting.
fn once(step: &str) {
    let workload = match std::env::var("TALLY_BENCH_WORKLOAD").as_deref() {
        Ok("entities") => Workload::Entities,
        _ => Workload::Rollups,
    };
    let (catalog, engine, lines) = setup(workload);
    let stream = catalog.stream("hits").unwrap().clone();
    let now = Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let decoder = RowDecoder::new(&stream, &engine, now, Interval::Days(1));
    let decode = || decode_all(&decoder, &lines);
    let events = decode();
    match step {
        "apply" => {
            let mut delta = engine.delta(|_| 0);
            engine.apply("hits", &events, &mut delta);
            println!("{} groups", delta.group_count());
        }
        "decode" => println!("{} rows", decode().len()),
        other => panic!("unknown step {other}"),
    }
}
