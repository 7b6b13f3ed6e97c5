//! The SQLite raw events in blocks (`src/sqlite_events.rs`): every type and NULL read back as
//! written, across block boundaries and at any limit; erasure and retention rewrite blocks and
//! keep the rest; a stream that gained a column reads NULL for it in older events; a store of
//! the row layout is converted when opened, to the same events and dedupe decisions (the
//! built-in streams too), and a conversion applied again keeps the blocks; a stream whose stored
//! definition this version cannot read is converted cell by cell and can be dropped; a damaged
//! block is an error, not a panic.

use std::collections::BTreeMap;

use tally_store::{Erasure, Store, TenantStore};
use tally_views::decimal::Decimal;
use tally_views::sql::apply;
use tally_views::{Catalog, StreamDef, Timestamp, Value};

mod common;
use common::{count, db, to_row_layout};

const SCHEMA: &str = "
CREATE STREAM ev (id TEXT, n BIGINT, x DOUBLE, d DECIMAL(10,2), j JSON, b BOOLEAN,
  at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'id');
";

/// Microseconds of 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200_000_000;
const MINUTE: i64 = 60_000_000;

/// Event `i`: every type, with NULLs in a pattern, a minute apart.
fn event(i: i64) -> Vec<Value> {
    let null_if = |k: i64, v: Value| if i % k == 0 { Value::Null } else { v };
    vec![
        null_if(
            101,
            Value::text(&format!("id-{i}-{}", "é".repeat((i % 40) as usize))),
        ),
        null_if(7, Value::Int(i * 1_000_003 - 500_000_000)),
        null_if(11, Value::Double(i as f64 / 3.0)),
        null_if(
            13,
            Value::Decimal(Decimal::parse(&format!("{}.{:02}", i - 50, i % 100)).unwrap()),
        ),
        null_if(17, Value::Json(format!("{{\"i\":{i}}}").into())),
        null_if(19, Value::Bool(i % 2 == 0)),
        Value::Timestamp(Timestamp(T0 + i * MINUTE)),
    ]
}

fn all(t: &TenantStore, stream: &StreamDef) -> BTreeMap<u64, Vec<Value>> {
    t.read_events(stream, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.row))
        .collect()
}

#[test]
fn events_read_back_as_written_across_blocks_and_limits() {
    let (_dir, store, catalog) = common::setup(SCHEMA);
    let ev = catalog.stream("ev").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(ev).unwrap();
    let mut model = BTreeMap::new();
    // One append larger than a block, then small ones.
    for (from, to) in [(0, 2_500), (2_500, 2_501), (2_501, 2_600)] {
        let rows: Vec<Vec<Value>> = (from..to).map(event).collect();
        for (row, seq) in rows.iter().zip(t.append(ev, &rows).unwrap()) {
            model.insert(seq.expect("new"), row.clone());
        }
    }
    assert_eq!(all(&t, ev), model);
    for (after, limit) in [
        (0, 1),
        (1_023, 2),
        (1_024, 1_000),
        (2_047, 3),
        (2_599, 5),
        (2_600, 5),
    ] {
        let got: Vec<(u64, Vec<Value>)> = t
            .read_events(ev, after, limit)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.row))
            .collect();
        let want: Vec<(u64, Vec<Value>)> = model
            .range(after + 1..)
            .take(limit)
            .map(|(&s, r)| (s, r.clone()))
            .collect();
        assert_eq!(got, want, "after {after}, limit {limit}");
    }
    // Every key is a duplicate now, in whichever block its event is.
    let again: Vec<Vec<Value>> = (0..2_600).step_by(37).map(event).collect();
    let seqs = t.append(ev, &again).unwrap();
    for (row, seq) in again.iter().zip(seqs) {
        assert_eq!(seq.is_none(), !row[0].is_null(), "{:?}", row[0]);
    }
}

#[test]
fn erasure_and_retention_rewrite_blocks_and_keep_the_rest() {
    let (dir, store, catalog) = common::setup(SCHEMA);
    let ev = catalog.stream("ev").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(ev).unwrap();
    let rows: Vec<Vec<Value>> = (1..=3_000).map(event).collect();
    let mut model: BTreeMap<u64, Vec<Value>> = rows
        .iter()
        .zip(t.append(ev, &rows).unwrap())
        .map(|(r, s)| (s.unwrap(), r.clone()))
        .collect();
    // Erase every third event of the first block, all of the second, one of the third.
    let mut erased: Vec<u64> = (1..=1_024).filter(|s| s % 3 == 0).collect();
    erased.extend(1_025..=2_048);
    erased.push(2_500);
    t.erase(&Erasure {
        events: vec![(ev, erased.clone())],
        views: Vec::new(),
        records: Vec::new(),
    })
    .unwrap();
    for s in &erased {
        model.remove(s);
    }
    assert_eq!(all(&t, ev), model);
    assert_eq!(
        count(&db(&dir), "SELECT count(*) FROM tally_events__ev"),
        2,
        "the emptied block is gone"
    );
    // Erased keys are free again; kept ones are still duplicates.
    let seqs = t.append(ev, &[event(3), event(4), event(2_500)]).unwrap();
    assert!(seqs[0].is_some() && seqs[1].is_none() && seqs[2].is_some());
    for (row, seq) in [event(3), event(2_500)].into_iter().zip([seqs[0], seqs[2]]) {
        model.insert(seq.unwrap(), row);
    }
    // Retention: the events before minute 2,700 (and up to sequence number 2,900) go.
    let cutoff = T0 + 2_700 * MINUTE;
    let deleted = t
        .delete_events_before(ev, Timestamp(cutoff), 2_900)
        .unwrap();
    let before = model.len();
    model.retain(|&seq, row| seq > 2_900 || row[6] >= Value::Timestamp(Timestamp(cutoff)));
    assert_eq!(deleted as usize, before - model.len());
    assert_eq!(all(&t, ev), model);
}

#[test]
fn a_column_added_later_reads_null_in_older_events() {
    let (_dir, store, catalog) = common::setup(
        "CREATE STREAM s (n BIGINT, at TIMESTAMP NOT NULL) WITH (event_time = 'at');",
    );
    let old = catalog.stream("s").unwrap();
    let wider = apply(
        &Catalog::new(),
        "CREATE STREAM s (n BIGINT, at TIMESTAMP NOT NULL, tag TEXT) WITH (event_time = 'at');",
    )
    .unwrap()
    .catalog;
    let new = wider.stream("s").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(old).unwrap();
    let at = Value::Timestamp(Timestamp(T0));
    t.append(old, &[vec![Value::Int(1), at.clone()]]).unwrap();
    t.alter_stream(old, new).unwrap();
    t.append(new, &[vec![Value::Int(2), at.clone(), Value::text("x")]])
        .unwrap();
    let rows: Vec<Vec<Value>> = all(&t, new).into_values().collect();
    assert_eq!(
        rows,
        [
            vec![Value::Int(1), at.clone(), Value::Null],
            vec![Value::Int(2), at, Value::text("x")]
        ]
    );
}

#[test]
fn a_store_of_the_row_layout_is_converted_when_opened() {
    let (dir, store, catalog) = common::setup(SCHEMA);
    let ev = catalog.stream("ev").unwrap();
    let model = {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(ev).unwrap();
        let rows: Vec<Vec<Value>> = (0..2_100).map(event).collect();
        t.append(ev, &rows).unwrap();
        all(&t, ev)
    };
    drop(store);
    to_row_layout(&dir);
    let conn = db(&dir);
    assert_eq!(count(&conn, "SELECT count(*) FROM ev"), 2_100);
    assert_eq!(count(&conn, "SELECT max(version) FROM tally_migrations"), 8);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(all(&t, ev), model);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'ev'"
        ),
        0,
        "the row table is gone"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM tally_events__ev"), 3);
    let seqs = t.append(ev, &[event(5), event(2_100)]).unwrap();
    assert_eq!(seqs, [None, Some(2_101)]);
}

#[test]
fn a_damaged_block_is_an_error() {
    let (dir, store, catalog) = common::setup(SCHEMA);
    let ev = catalog.stream("ev").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(ev).unwrap();
    t.append(ev, &[event(1), event(2)]).unwrap();
    let conn = db(&dir);
    let blob: Vec<u8> = conn
        .query_row("SELECT events FROM tally_events__ev", [], |r| r.get(0))
        .unwrap();
    for cut in [1, 3, blob.len() / 2, blob.len() - 1] {
        conn.execute("UPDATE tally_events__ev SET events = ?", [&blob[..cut]])
            .unwrap();
        assert!(t.read_events(ev, 0, 10).is_err(), "cut at {cut}");
    }
    let mut bad = blob.clone();
    bad[0] = 99;
    conn.execute("UPDATE tally_events__ev SET events = ?", [&bad])
        .unwrap();
    assert!(t.read_events(ev, 0, 10).is_err(), "unknown format");
}

#[test]
fn the_built_in_streams_are_converted_too() {
    let (dir, store, _catalog) = common::setup(SCHEMA);
    let streams = tally_views::builtin::streams();
    let model: Vec<BTreeMap<u64, Vec<Value>>> = {
        let mut t = store.tenant("acme").unwrap();
        for s in &streams {
            t.create_stream(s).unwrap();
            let row: Vec<Value> = s
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| match c.ty {
                    tally_views::Type::Timestamp => Value::Timestamp(Timestamp(T0)),
                    tally_views::Type::Double => Value::Double(1.5),
                    tally_views::Type::Json => Value::Json("{}".into()),
                    tally_views::Type::BigInt => Value::Int(i as i64),
                    tally_views::Type::Boolean => Value::Bool(true),
                    _ => Value::text(&format!("{}-{i}", c.name)),
                })
                .collect();
            t.append(s, &[row]).unwrap();
        }
        streams.iter().map(|s| all(&t, s)).collect()
    };
    drop(store);
    to_row_layout(&dir);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let t = store.tenant("acme").unwrap();
    for (s, m) in streams.iter().zip(model) {
        assert_eq!(all(&t, s), m, "{}", s.name);
        assert_eq!(m.len(), 1);
    }
}

#[test]
fn the_conversion_applied_again_keeps_the_blocks() {
    let (dir, store, catalog) = common::setup(SCHEMA);
    let ev = catalog.stream("ev").unwrap();
    let model = {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(ev).unwrap();
        let rows: Vec<Vec<Value>> = (0..50).map(event).collect();
        t.append(ev, &rows).unwrap();
        all(&t, ev)
    };
    // As if the migration's row were lost (a partial restore): it runs again on the next open,
    // and finds a table named like the stream that is not its rows (a view's, created before
    // the stream was dropped).
    db(&dir)
        .execute_batch(
            "DELETE FROM tally_migrations WHERE version = 9;
             CREATE TABLE ev (_key BLOB PRIMARY KEY, _state BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
    let t = store.tenant("acme").unwrap();
    assert_eq!(all(&t, ev), model);
}

#[test]
fn a_stream_whose_definition_no_longer_parses_is_converted_cell_by_cell() {
    let (dir, store, catalog) = common::setup(SCHEMA);
    let ev = catalog.stream("ev").unwrap();
    {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(ev).unwrap();
        let rows: Vec<Vec<Value>> = (0..1_500).map(event).collect();
        t.append(ev, &rows).unwrap();
    }
    to_row_layout(&dir);
    // A definition this version refuses (as one with a name reserved since would be).
    db(&dir)
        .execute(
            "UPDATE tally_streams SET definition = 'CREATE STREAM tenants (x TEXT)'",
            [],
        )
        .unwrap();
    let mut t = store.tenant("acme").unwrap();
    let conn = db(&dir);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'ev'"
        ),
        0,
        "the row table is converted"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM tally_events__ev"), 2);
    // Reconciling drops such a stream, blocks and all.
    t.drop_stream("ev").unwrap();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'tally_%__ev'"
        ),
        0
    );
}
