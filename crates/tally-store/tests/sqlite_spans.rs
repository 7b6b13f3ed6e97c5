//! The time spans of SQLite raw events (`src/sqlite_spans.rs`), which stand in for an index on
//! the event time: retention deletes exactly the rows before its cutoff and up to its sequence
//! number, late events included, and their keys with them; every row's time stays inside its
//! span's bounds; a store of the earlier layout (a time index, no spans) is converted when
//! opened. A randomized run checks the rows and the dedupe decisions
//! against a model after every append and retention.

use std::collections::BTreeMap;

use rusqlite::Connection;
use tally_store::{Erasure, Store, TenantStore};
use tally_views::{Catalog, StreamDef, Timestamp, Value};

mod common;
use common::{count, db, to_row_layout};

const SCHEMA: &str = "
CREATE STREAM pay (id TEXT, amount BIGINT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE STREAM plain (amount BIGINT NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at');
";

/// Microseconds of 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200_000_000;
const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;

fn setup() -> (tempfile::TempDir, Store, Catalog) {
    common::setup(SCHEMA)
}

/// Event `i` of the test: a minute apart in order, except every 97th, which is late by a day.
fn time_of(i: i64) -> i64 {
    let t = T0 + i * MINUTE;
    if i % 97 == 0 { t - 1_440 * MINUTE } else { t }
}

/// Appends events `from..to` in batches of 1,000 and notes what was accepted in `kept`
/// (sequence number → (key, time)).
fn append_range(
    t: &mut TenantStore,
    stream: &StreamDef,
    from: i64,
    to: i64,
    kept: &mut BTreeMap<u64, (String, i64)>,
) {
    let all: Vec<i64> = (from..to).collect();
    for chunk in all.chunks(1_000) {
        let rows: Vec<Vec<Value>> = chunk
            .iter()
            .map(|&i| {
                vec![
                    Value::text(&format!("k{i}")),
                    Value::Int(i),
                    Value::Timestamp(Timestamp(time_of(i))),
                ]
            })
            .collect();
        for (&i, seq) in chunk.iter().zip(t.append(stream, &rows).unwrap()) {
            kept.insert(seq.expect("a new key"), (format!("k{i}"), time_of(i)));
        }
    }
}

/// The stream's rows as (sequence number, key, time).
fn stored(t: &TenantStore, stream: &StreamDef) -> BTreeMap<u64, (String, i64)> {
    t.read_events(stream, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| {
            let (Value::Text(key), Value::Timestamp(Timestamp(at))) = (&e.row[0], &e.row[2]) else {
                panic!("a key and a time")
            };
            (e.seq, (key.to_string(), *at))
        })
        .collect()
}

/// Every row's time lies within the bounds of its span, and every span has rows.
fn assert_spans_hold(conn: &Connection, t: &TenantStore, stream: &StreamDef) {
    let mut spans: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT span, lo, hi FROM tally_spans__{}",
            stream.name
        ))
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
    {
        let (span, bounds) = row.unwrap();
        spans.insert(span, bounds);
    }
    let mut used = std::collections::BTreeSet::new();
    for e in t.read_events(stream, 0, usize::MAX).unwrap() {
        let Value::Timestamp(Timestamp(at)) = e.row[stream.event_time] else {
            panic!("a time")
        };
        let span = (e.seq >> 12) as i64;
        let (lo, hi) = spans.get(&span).copied().expect("a row outside every span");
        assert!(lo <= at && at <= hi, "row {} outside its span", e.seq);
        used.insert(span);
    }
    assert_eq!(
        spans
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        used,
        "a span without rows"
    );
}

#[test]
fn retention_deletes_exactly_the_rows_before_the_cutoff_late_ones_included() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let mut kept = BTreeMap::new();
    // About five spans of 4,096 rows.
    append_range(&mut t, stream, 0, 20_000, &mut kept);
    assert_spans_hold(&db(&dir), &t, stream);

    // Cutoffs inside the first span, across spans, and a sequence bound that cuts a span.
    for (minutes, max_seq) in [
        (100, 20_000),
        (5_000, 20_000),
        (12_000, 9_000),
        (19_000, 20_000),
    ] {
        let before = T0 + minutes * MINUTE;
        let expected: Vec<u64> = kept
            .iter()
            .filter(|&(&seq, &(_, at))| at < before && seq <= max_seq)
            .map(|(&seq, _)| seq)
            .collect();
        let deleted = t
            .delete_events_before(stream, Timestamp(before), max_seq)
            .unwrap();
        assert_eq!(
            deleted,
            expected.len() as u64,
            "cutoff {minutes} min, max_seq {max_seq}"
        );
        for seq in &expected {
            kept.remove(seq);
        }
        assert_eq!(
            stored(&t, stream),
            kept,
            "cutoff {minutes} min, max_seq {max_seq}"
        );
        assert_spans_hold(&db(&dir), &t, stream);
        if max_seq < 20_000 {
            assert!(
                kept.iter()
                    .any(|(&seq, &(_, at))| at < before && seq > max_seq),
                "the sequence bound kept some old rows"
            );
        }
    }

    // The keys of deleted rows went with them; the kept ones are still duplicates.
    let gone = (0..20_000)
        .find(|i| !kept.values().any(|(k, _)| *k == format!("k{i}")))
        .unwrap();
    let (kept_key, _) = kept.values().next().unwrap().clone();
    let rows: Vec<Vec<Value>> = [format!("k{gone}"), kept_key]
        .iter()
        .map(|k| {
            vec![
                Value::text(k),
                Value::Int(0),
                Value::Timestamp(Timestamp(T0)),
            ]
        })
        .collect();
    let seqs = t.append(stream, &rows).unwrap();
    assert!(seqs[0].is_some(), "a deleted row's key is free again");
    assert!(seqs[1].is_none(), "a kept row's key is still a duplicate");
    assert_spans_hold(&db(&dir), &t, stream);
}

#[test]
fn an_erasure_leaves_a_span_wider_than_its_rows_and_retention_narrows_it() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let mut kept = BTreeMap::new();
    append_range(&mut t, stream, 1, 97, &mut kept);
    let lo = |conn: &Connection| count(conn, "SELECT lo FROM tally_spans__pay");
    assert_eq!(lo(&db(&dir)), time_of(1));
    // Rows deleted behind the spans' back, as an erasure does: the span keeps its old bounds.
    let erased: Vec<u64> = kept
        .iter()
        .filter(|(_, (key, _))| key[1..].parse::<i64>().unwrap() < 50)
        .map(|(&seq, _)| seq)
        .collect();
    t.erase(&Erasure {
        events: vec![(stream, erased)],
        views: Vec::new(),
        records: Vec::new(),
    })
    .unwrap();
    assert_eq!(
        lo(&db(&dir)),
        time_of(1),
        "the erased rows still bound the span"
    );
    // Nothing is left before the cutoff, but the visit narrows the span.
    assert_eq!(
        t.delete_events_before(stream, Timestamp(T0 + 40 * MINUTE), u64::MAX)
            .unwrap(),
        0
    );
    assert_eq!(lo(&db(&dir)), time_of(50), "retention narrowed the span");
    assert_spans_hold(&db(&dir), &t, stream);
}

#[test]
fn a_store_with_a_time_index_is_converted_when_opened() {
    let (dir, store, catalog) = setup();
    let pay = catalog.stream("pay").unwrap();
    let plain = catalog.stream("plain").unwrap();
    let mut kept = BTreeMap::new();
    {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(pay).unwrap();
        t.create_stream(plain).unwrap();
        append_range(&mut t, pay, 0, 10_000, &mut kept);
        let rows: Vec<Vec<Value>> = (0..10)
            .map(|i| vec![Value::Int(i), Value::Timestamp(Timestamp(time_of(i * 50)))])
            .collect();
        t.append(plain, &rows).unwrap();
    }
    // Make both look as the earlier layout: a row per event, an index on the time, no span
    // table.
    to_row_layout(&dir);
    db(&dir)
        .execute_batch(
            "DROP TABLE tally_spans__pay; CREATE INDEX pay__time ON pay (at);
             DROP TABLE tally_spans__plain; CREATE INDEX plain__time ON plain (at);",
        )
        .unwrap();
    drop(store);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let mut t = store.tenant("acme").unwrap();

    // Opening converted both; retention deletes what the index would have found.
    let before = T0 + 3_000 * MINUTE;
    let expected = kept.values().filter(|&&(_, at)| at < before).count() as u64;
    assert_eq!(
        t.delete_events_before(pay, Timestamp(before), u64::MAX)
            .unwrap(),
        expected
    );
    kept.retain(|_, &mut (_, at)| at >= before);
    assert_eq!(stored(&t, pay), kept);
    let conn = db(&dir);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'pay__time'"
        ),
        0,
        "the time index is dropped"
    );
    assert_spans_hold(&conn, &t, pay);

    // `plain` was converted too.
    t.append(
        plain,
        &[vec![Value::Int(10), Value::Timestamp(Timestamp(T0))]],
    )
    .unwrap();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'plain__time'"
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT lo FROM tally_spans__plain"),
        time_of(0),
        "the spans cover the rows from before the conversion"
    );
    assert_eq!(
        t.delete_events_before(plain, Timestamp(T0), u64::MAX)
            .unwrap(),
        1,
        "event 0 is late by a day"
    );
}

#[test]
fn dropping_a_stream_drops_its_spans() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("plain").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.append(
        stream,
        &[vec![Value::Int(1), Value::Timestamp(Timestamp(T0))]],
    )
    .unwrap();
    t.drop_stream("plain").unwrap();
    assert_eq!(
        count(
            &db(&dir),
            "SELECT count(*) FROM sqlite_master WHERE name = 'tally_spans__plain'"
        ),
        0
    );
}

#[test]
fn random_appends_and_retentions_keep_exactly_what_a_scan_of_every_row_would() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |below: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    };
    let mut kept: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    let mut clock = 0i64;
    let mut id = 0u64;
    for round in 0..40 {
        // A batch of up to 6,000 events moving forward in time, one in twenty late by up to
        // two days, a few with keys seen before (duplicates, which take no sequence number).
        let size = 1 + next(6_000) as usize;
        let mut rows = Vec::with_capacity(size);
        for _ in 0..size {
            clock += next(3) as i64 * SECOND;
            let at = if next(20) == 0 {
                clock - next(2_880) as i64 * MINUTE
            } else {
                clock
            };
            let key = if id > 0 && next(50) == 0 {
                format!("e{}", next(id))
            } else {
                id += 1;
                format!("e{id}")
            };
            rows.push((key, T0 + at));
        }
        let values: Vec<Vec<Value>> = rows
            .iter()
            .map(|(k, at)| {
                vec![
                    Value::text(k),
                    Value::Int(0),
                    Value::Timestamp(Timestamp(*at)),
                ]
            })
            .collect();
        // A key is a duplicate while a kept row holds it (retention frees it).
        let mut held: std::collections::HashSet<String> =
            kept.values().map(|(k, _)| k.clone()).collect();
        for ((key, at), seq) in rows.into_iter().zip(t.append(stream, &values).unwrap()) {
            assert_eq!(
                seq.is_none(),
                held.contains(&key),
                "round {round}: key {key}"
            );
            if let Some(seq) = seq {
                held.insert(key.clone());
                kept.insert(seq, (key, at));
            }
        }
        // Retention every fourth round once a merge may have happened (about 65,536 keys): a
        // cutoff up to two days back, a sequence bound
        // somewhere in the stream.
        if round >= 24 && round % 4 == 3 {
            let before = T0 + clock - next(2_880) as i64 * MINUTE;
            let last = *kept.keys().next_back().unwrap_or(&0);
            let max_seq = last - next(last / 2 + 1);
            let expected: Vec<u64> = kept
                .iter()
                .filter(|&(&seq, &(_, at))| at < before && seq <= max_seq)
                .map(|(&seq, _)| seq)
                .collect();
            let deleted = t
                .delete_events_before(stream, Timestamp(before), max_seq)
                .unwrap();
            assert_eq!(deleted, expected.len() as u64, "round {round}");
            for seq in expected {
                kept.remove(&seq);
            }
        }
        assert_eq!(stored(&t, stream), kept, "round {round}");
        assert_spans_hold(&db(&dir), &t, stream);
    }
    assert!(
        count(
            &db(&dir),
            "SELECT keys_merged FROM tally_streams WHERE name = 'pay'"
        ) > 0,
        "keys were merged into the key blocks (and their filter used)"
    );
}

#[test]
fn a_tenant_gets_the_layout_version_and_a_newer_tenant_is_refused() {
    let (dir, store, _catalog) = setup();
    drop(store.tenant("acme").unwrap());
    let conn = db(&dir);
    assert_eq!(
        count(&conn, "SELECT max(version) FROM tally_migrations"),
        9,
        "the spans layout is version 7, the key blocks' 8, the event blocks' 9"
    );
    // What a binary from before the spans or the blocks sees in a tenant of this layout: a
    // version it does not know. Here a version newer than this binary stands for it.
    conn.execute_batch(
        "INSERT INTO tally_migrations (version, name, applied_at) VALUES (10, 'later', 'now')",
    )
    .unwrap();
    let Err(error) = store.tenant("acme") else {
        panic!("a tenant of a newer layout was opened")
    };
    assert!(error.to_string().contains("10"), "{error}");
}
