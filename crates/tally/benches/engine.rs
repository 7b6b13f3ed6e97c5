//! Criterion benchmark of the engine: `Engine::apply` on decoded rows, and decoding + applying
//! from NDJSON (the in-memory half of ingest), over the five views of each workload.
//!
//! `cargo bench -p tally --bench engine`. Throughput is in events per second.
//!
//! `query/regroup_latency_by_hour` runs a view query over the groups of one batch: the
//! `latency` view (5-minute buckets, a percentile and an HLL per group) re-grouped by hour, so
//! every answer group merges twelve buckets' states (what a computed HTTP query does after
//! reading its rows).
//!
//! `flush_states/*` times what a flush does with one exact distinct count's state (a stored set
//! of 50,000 user ids and a delta of 1,000 values, half of them new): the merge of the stored
//! set into the delta's as a borrowed state against [`AggState::merge_owned`], and its encoding
//! sorting the values themselves against `encode_states`, whose sort is keyed by prefixes
//! (docs/performance.md, twenty-first round); and a flush's whole work on the row, from the
//! stored bytes to the bytes written, with the stored set decoded (`flush_row_decoded`) or
//! merged in its encoding (`flush_row_encoded`, twenty-third round).
//!
//! With `TALLY_BENCH_ONCE=apply` (or `decode`, or `query`: the query 1,000 times) the binary instead runs that step once over the
//! batch of the rollups workload (`TALLY_BENCH_WORKLOAD=entities` for the other) and exits, for
//! instruction counts that do not depend on machine noise:
//! `TALLY_BENCH_ONCE=apply valgrind --tool=callgrind target/release/deps/engine-…`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use tally::decode::RowDecoder;
use tally_views::{
    AggKind, AggState, Catalog, Delta, Engine, Event, Interval, QueryPlan, QueryRequest, TimeZone,
    Timestamp, Value,
};

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
    bench_flush_states(c);
}

/// A distinct count's state holding `users`.
fn distinct(users: impl Iterator<Item = usize>) -> AggState {
    let kind = AggKind::CountDistinct;
    let mut state = kind.new_state();
    for u in users {
        let v = Value::text(&format!("user-{u}"));
        state.update(kind, &v, &Value::Null, 0);
    }
    state
}

fn bench_flush_states(c: &mut Criterion) {
    let kind = AggKind::CountDistinct;
    let stored = distinct(0..50_000);
    let delta = distinct(49_500..50_500);
    let mut group = c.benchmark_group("flush_states");
    group.throughput(Throughput::Elements(50_000));
    // What a flush did before the twenty-first round: the stored set merged into the delta's.
    group.bench_function("merge_stored_into_delta_borrowed", |b| {
        b.iter_batched(
            || delta.clone(),
            |mut d| {
                d.merge(kind, &stored);
                d
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("merge_stored_into_delta_owned", |b| {
        b.iter_batched(
            || (delta.clone(), stored.clone()),
            |(mut d, s)| {
                d.merge_owned(kind, s);
                d
            },
            BatchSize::LargeInput,
        )
    });
    let AggState::Distinct(set) = &stored else {
        unreachable!()
    };
    // The encoding before the twenty-first round: the values themselves sorted, then written
    // as `encode_states` writes them (the same bytes).
    group.bench_function("encode_states_sorting_values", |b| {
        b.iter(|| {
            let mut sorted: Vec<&Value> = set.iter().collect();
            sorted.sort_unstable();
            let mut w = tally_views::codec::Writer::new();
            w.u8(1);
            w.varint(sorted.len() as u64);
            for v in sorted {
                w.value(v);
            }
            w.finish().len()
        })
    });
    // Now: `encode_states`, whose sort is keyed by the texts' first 16 bytes.
    group.bench_function("encode_states", |b| {
        b.iter(|| tally_views::agg::encode_states(std::slice::from_ref(&stored)).len())
    });
    // A flush's whole work on the row, from the stored bytes to the bytes written: decoding
    // the stored set, merging it into the delta's and encoding the union (before the
    // twenty-third round), against merging the delta into the stored encoding.
    let stored_bytes = tally_views::agg::encode_states(std::slice::from_ref(&stored));
    group.bench_function("flush_row_decoded", |b| {
        b.iter_batched(
            || vec![delta.clone()],
            |mut states| {
                let old = tally_views::agg::decode_states([kind], &stored_bytes).unwrap();
                for (s, o) in states.iter_mut().zip(old) {
                    s.merge_owned(kind, o);
                }
                tally_views::agg::encode_states(&states).len()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("flush_row_encoded", |b| {
        b.iter_batched(
            || vec![delta.clone()],
            |mut states| {
                tally_views::agg::merge_encoded_states([kind], &mut states, &stored_bytes).unwrap();
                tally_views::agg::encode_states(&states).len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_workload(c: &mut Criterion, workload: Workload) {
    let (catalog, engine, lines) = setup(workload);
    let stream = catalog.stream("hits").unwrap().clone();
    let now = Timestamp::parse("2026-06-03T00:00:00Z").unwrap();
    let decoder = RowDecoder::new(&stream, now, Interval::Days(1));
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
    if matches!(workload, Workload::Rollups) {
        bench_query(c, &catalog, &engine, &events);
    }
}

/// The `latency` view re-grouped by hour over the groups of one applied batch.
fn bench_query(c: &mut Criterion, catalog: &Catalog, engine: &Engine, events: &[Event]) {
    let delta = applied(engine, events);
    let mut group = c.benchmark_group("query");
    group.bench_function("regroup_latency_by_hour", |b| {
        b.iter(|| regroup_latency_by_hour(catalog, engine, &delta))
    });
    group.finish();
}

fn applied(engine: &Engine, events: &[Event]) -> Delta {
    let mut delta = engine.delta(|_| 0);
    engine.apply("hits", events, &mut delta);
    delta
}

/// Rows of the answer.
fn regroup_latency_by_hour(catalog: &Catalog, engine: &Engine, delta: &Delta) -> usize {
    let view = catalog.view("latency").unwrap();
    let groups = &delta.views[engine.view_index("latency").unwrap()].groups;
    let request = QueryRequest {
        grain: Some(Interval::parse("1 hour").unwrap()),
        ..QueryRequest::default()
    };
    let plan = QueryPlan::new(view, &request).unwrap();
    let rows = groups.iter().map(|(k, s)| (&k[..], &s[..]));
    plan.run(rows, engine.tz()).unwrap().rows.len()
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
    let decoder = RowDecoder::new(&stream, now, Interval::Days(1));
    let decode = || decode_all(&decoder, &lines);
    let events = decode();
    match step {
        "apply" => {
            let mut delta = engine.delta(|_| 0);
            engine.apply("hits", &events, &mut delta);
            println!("{} groups", delta.group_count());
        }
        "decode" => println!("{} rows", decode().len()),
        "query" => {
            let delta = applied(&engine, &events);
            let rows: usize = (0..1_000)
                .map(|_| regroup_latency_by_hour(&catalog, &engine, &delta))
                .sum();
            println!("{rows} rows");
        }
        other => panic!("unknown step {other}"),
    }
}
