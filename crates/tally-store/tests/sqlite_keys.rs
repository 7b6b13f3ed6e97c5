//! The SQLite dedupe index (hashed keys, recent ones in memory and older ones in blocks,
//! `src/sqlite_keys.rs`): what only this backend has. Stores of every earlier layout are
//! converted on their first append; a hash that matches a different key does not make a
//! duplicate; keys move into the blocks in bulk, when as many are recent as they hold, and are
//! still found there; a process that appends after another one sees the other's keys.

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use tally_store::{Store, TenantStore};
use tally_views::{Catalog, StreamDef, Timestamp, Value};

mod common;
use common::{count, db, to_row_layout};

const SCHEMA: &str = "
CREATE STREAM pay (id TEXT, amount BIGINT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
";

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn row(id: Option<&str>, amount: i64) -> Vec<Value> {
    vec![
        id.map(Value::text).unwrap_or(Value::Null),
        Value::Int(amount),
        Value::Timestamp(ts("2026-03-01T00:00:00Z")),
    ]
}

fn setup() -> (tempfile::TempDir, Store, Catalog) {
    common::setup(SCHEMA)
}

/// What `sqlite_keys::key_hash` computes for a text key.
fn hash(key: &str) -> i64 {
    i64::from_le_bytes(Sha256::digest(key.as_bytes())[..8].try_into().unwrap())
}

/// The `(h, _seq)` pairs in the stream's key blocks, in block order.
fn stored(conn: &Connection) -> Vec<(i64, i64)> {
    let int = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap());
    let mut stmt = conn
        .prepare("SELECT keys FROM tally_keyblocks__pay ORDER BY hi")
        .unwrap();
    let blocks: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    blocks
        .iter()
        .flat_map(|b| b.chunks_exact(16).map(|e| (int(&e[..8]), int(&e[8..]))))
        .collect()
}

/// The number of keys in the stream's blocks.
fn large(conn: &Connection) -> i64 {
    stored(conn).len() as i64
}

/// Makes the stream look as in the previous layout: its stored keys in a `WITHOUT ROWID` table
/// of `(h, _seq)`, no blocks.
fn to_previous_layout(conn: &Connection) {
    let pairs = stored(conn);
    conn.execute_batch(
        "BEGIN; DROP TABLE tally_keyblocks__pay;
         CREATE TABLE tally_keys__pay (h INTEGER NOT NULL, _seq INTEGER NOT NULL,
             PRIMARY KEY (h, _seq)) WITHOUT ROWID;",
    )
    .unwrap();
    let mut insert = conn
        .prepare("INSERT INTO tally_keys__pay (h, _seq) VALUES (?, ?)")
        .unwrap();
    for (h, seq) in pairs {
        insert.execute([h, seq]).unwrap();
    }
    drop(insert);
    conn.execute_batch("COMMIT").unwrap();
}

fn accepted(seqs: &[Option<u64>]) -> Vec<bool> {
    seqs.iter().map(Option::is_some).collect()
}

/// Appends one row per key; which of them were accepted (not duplicates).
fn append(t: &mut TenantStore, stream: &StreamDef, keys: &[&str]) -> Vec<bool> {
    let rows: Vec<Vec<Value>> = keys.iter().map(|k| row(Some(k), 1)).collect();
    accepted(&t.append(stream, &rows).unwrap())
}

#[test]
fn a_store_with_the_old_unique_index_is_converted_on_its_first_append() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(stream).unwrap();
        t.append(
            stream,
            &[row(Some("a"), 1), row(Some("b"), 2), row(None, 3)],
        )
        .unwrap();
    }
    // Make it look as the first layout: a row per event, no key table, a unique index on the
    // column.
    to_row_layout(&dir);
    db(&dir)
        .execute_batch(
            "DROP TABLE tally_keyblocks__pay; UPDATE tally_streams SET keys_merged = 0;
             CREATE UNIQUE INDEX pay__dedupe ON pay (id);",
        )
        .unwrap();
    drop(store);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let mut t = store.tenant("acme").unwrap();
    let seqs = t
        .append(
            stream,
            &[
                row(Some("a"), 9),
                row(Some("c"), 4),
                row(None, 5),
                row(Some("b"), 9),
            ],
        )
        .unwrap();
    assert_eq!(seqs, [None, Some(4), Some(5), None]);
    let conn = db(&dir);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'pay__dedupe'"
        ),
        0,
        "the old index went with the row table"
    );
    // a and b were hashed into the blocks, c is recent (its row is after keys_merged); NULLs
    // are not keys.
    assert_eq!(large(&conn), 2);
    assert_eq!(
        count(
            &conn,
            "SELECT keys_merged FROM tally_streams WHERE name = 'pay'"
        ),
        3
    );
    assert!(stored(&conn).contains(&(hash("b"), 2)));
}

#[test]
fn a_hash_that_matches_another_key_is_not_a_duplicate() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.append(stream, &[row(Some("a"), 1)]).unwrap();
    // Pretend that "b" hashes like "a": its hash now points at a's row, in a block of its own.
    let block: Vec<u8> = [hash("b").to_le_bytes(), 1i64.to_le_bytes()].concat();
    db(&dir)
        .execute(
            "INSERT INTO tally_keyblocks__pay (hi, keys) VALUES (?, ?)",
            rusqlite::params![hash("b"), block],
        )
        .unwrap();
    // Another process (a second store over the directory) builds its filter from the blocks,
    // so the hash of "b" is looked up there and found.
    drop(t);
    let other = Store::open_sqlite(dir.path()).unwrap();
    let mut t = other.tenant("acme").unwrap();
    assert_eq!(
        append(&mut t, stream, &["b", "a", "b"]),
        [true, false, false]
    );
    // Both rows of that hash are candidates now; each key still finds only itself.
    assert_eq!(
        append(&mut t, stream, &["b", "a", "d"]),
        [false, false, true]
    );
}

#[test]
fn keys_move_into_the_blocks_in_bulk_and_are_found_there() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let n = 75_000;
    let ids: Vec<String> = (0..n).map(|i| format!("evt-{i:05}")).collect();
    for chunk in ids.chunks(10_000) {
        let rows: Vec<Vec<Value>> = chunk.iter().map(|id| row(Some(id), 1)).collect();
        assert!(t.append(stream, &rows).unwrap().iter().all(Option::is_some));
    }
    let conn = db(&dir);
    let large = large(&conn);
    let merged = count(
        &conn,
        "SELECT keys_merged FROM tally_streams WHERE name = 'pay'",
    );
    assert!(
        large >= 65_536,
        "one merge happened: {large} keys in the blocks"
    );
    assert_eq!(large, merged, "the blocks hold the keys up to keys_merged");
    let pairs = stored(&conn);
    assert!(pairs.is_sorted(), "blocks in key order");
    assert!(merged < n as i64, "the last keys are recent");
    // Every merged key of a whole batch is a duplicate for a process that opens the stream now
    // (its filter built from the blocks; the batch's hashes looked up block by block).
    {
        let other = Store::open_sqlite(dir.path()).unwrap();
        let mut t = other.tenant("acme").unwrap();
        let again: Vec<Vec<Value>> = ids[..10_000].iter().map(|id| row(Some(id), 1)).collect();
        assert!(
            t.append(stream, &again)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
    }
    // The first key (merged) and the last (recent) are both duplicates; a new one is not.
    assert_eq!(
        append(&mut t, stream, &["evt-00000", "evt-74999", "evt-75000"]),
        [false, false, true]
    );
    // Retention takes the keys of the rows it deletes: a deleted key, merged or recent, may
    // come again.
    let deleted = t
        .delete_events_before(stream, ts("2026-04-01T00:00:00Z"), 75_000)
        .unwrap();
    assert_eq!(deleted, 75_000);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM tally_keyblocks__pay"),
        0,
        "blocks left empty are deleted"
    );
    assert_eq!(
        append(&mut t, stream, &["evt-00000", "evt-74999", "evt-75000"]),
        [true, true, false]
    );
    // A process opening the stream now reads the same recent keys back from the raw events.
    drop(t);
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(
        append(&mut t, stream, &["evt-00000", "evt-75001"]),
        [false, true]
    );
}

#[test]
fn the_next_merge_waits_for_as_many_recent_keys_as_the_blocks_hold() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let large = |dir: &tempfile::TempDir| large(&db(dir));
    let mut next = 0;
    let mut add = |t: &mut TenantStore, n: usize| {
        let rows: Vec<Vec<Value>> = (next..next + n)
            .map(|i| row(Some(&format!("evt-{i:06}")), 1))
            .collect();
        next += n;
        assert!(t.append(stream, &rows).unwrap().iter().all(Option::is_some));
    };
    // Batches of 10,000: the seventh makes 70,000 recent keys, past 65,536, and merges them.
    for _ in 0..7 {
        add(&mut t, 10_000);
    }
    assert_eq!(large(&dir), 70_000);
    // 67,000 more are past 65,536 but fewer than the 70,000 stored: no merge yet.
    for _ in 0..67 {
        add(&mut t, 1_000);
    }
    assert_eq!(
        large(&dir),
        70_000,
        "merged before the recent keys were 70,000"
    );
    // Those 67,000 keys, more than a merge used to wait for, are found in memory, and by a
    // process opening the stream, which reads them back from the raw events. Duplicates add no
    // rows, so the counts stay.
    let probe = ["evt-000000", "evt-070000", "evt-136999"];
    assert_eq!(append(&mut t, stream, &probe), [false, false, false]);
    drop(t);
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(append(&mut t, stream, &probe), [false, false, false]);
    assert_eq!(large(&dir), 70_000);
    // The batch that makes 70,000 recent keys merges them.
    for _ in 0..3 {
        add(&mut t, 1_000);
    }
    assert_eq!(large(&dir), 140_000);
    // Every key is still a duplicate, also for a process opening the stream.
    assert_eq!(
        append(
            &mut t,
            stream,
            &["evt-000000", "evt-069999", "evt-139999", "evt-140000"]
        ),
        [false, false, false, true]
    );
    drop(t);
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(
        append(&mut t, stream, &["evt-070000", "evt-140000", "evt-140001"]),
        [false, false, true]
    );
}

#[test]
fn a_store_with_a_recent_key_table_is_converted_on_its_first_append() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(stream).unwrap();
        t.append(stream, &[row(Some("a"), 1), row(Some("b"), 2)])
            .unwrap();
    }
    // The second layout: "a" in the large key table, "b" in a table of recent keys, no
    // keys_merged (the column's default).
    let conn = db(&dir);
    to_previous_layout(&conn);
    conn.execute_batch(&format!(
        "UPDATE tally_streams SET keys_merged = 0;
             DELETE FROM tally_keys__pay;
             INSERT INTO tally_keys__pay (h, _seq) VALUES ({}, 1);
             CREATE TABLE tally_recent__pay (h INTEGER NOT NULL, _seq INTEGER NOT NULL,
                 PRIMARY KEY (h, _seq)) WITHOUT ROWID;
             INSERT INTO tally_recent__pay (h, _seq) VALUES ({}, 2);",
        hash("a"),
        hash("b")
    ))
    .unwrap();
    drop(store);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(
        append(&mut t, stream, &["a", "b", "c"]),
        [false, false, true]
    );
    let conn = db(&dir);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'tally_recent__pay'"
        ),
        0,
        "the recent table is gone"
    );
    assert_eq!(large(&conn), 2);
    assert_eq!(
        count(
            &conn,
            "SELECT keys_merged FROM tally_streams WHERE name = 'pay'"
        ),
        2
    );
}

#[test]
fn a_process_sees_the_keys_another_process_appended() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut one = store.tenant("acme").unwrap();
    one.create_stream(stream).unwrap();
    assert_eq!(append(&mut one, stream, &["a"]), [true]);
    // A second store over the same directory stands for another process.
    let other = Store::open_sqlite(dir.path()).unwrap();
    let mut two = other.tenant("acme").unwrap();
    assert_eq!(append(&mut two, stream, &["a", "b"]), [false, true]);
    // The first process's keys in memory are out of step now: it reads them again.
    assert_eq!(append(&mut one, stream, &["b", "c"]), [false, true]);
    assert_eq!(append(&mut two, stream, &["c"]), [false]);
}

#[test]
fn a_failed_append_leaves_no_key_behind() {
    let (_dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.append(stream, &[row(Some("a"), 1)]).unwrap();
    // The second row breaks NOT NULL: the append fails after "b" was written, and rolls back.
    let mut broken = row(Some("c"), 3);
    broken[1] = Value::Null;
    assert!(t.append(stream, &[row(Some("b"), 2), broken]).is_err());
    // "b" was never stored, so it is new; "a" still is a duplicate.
    assert_eq!(append(&mut t, stream, &["b", "a"]), [true, false]);
}

#[test]
fn a_stream_created_again_by_another_process_is_read_again() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut one = store.tenant("acme").unwrap();
    one.create_stream(stream).unwrap();
    assert_eq!(append(&mut one, stream, &["a"]), [true]);
    // Another process creates the stream again and appends as many rows: `last_seq` and
    // `keys_merged` are what the first process last wrote, the keys are not.
    let other = Store::open_sqlite(dir.path()).unwrap();
    let mut two = other.tenant("acme").unwrap();
    two.create_stream(stream).unwrap();
    assert_eq!(append(&mut two, stream, &["b"]), [true]);
    assert_eq!(append(&mut one, stream, &["b", "a"]), [false, true]);
}

#[test]
fn retention_by_another_process_makes_the_keys_read_again() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut one = store.tenant("acme").unwrap();
    one.create_stream(stream).unwrap();
    one.append(stream, &[row(Some("a"), 1), row(Some("b"), 2)])
        .unwrap();
    let epoch = |conn: &Connection| count(conn, "SELECT keys_epoch FROM tally_streams");
    let before = epoch(&db(&dir));
    let other = Store::open_sqlite(dir.path()).unwrap();
    let mut two = other.tenant("acme").unwrap();
    assert_eq!(
        two.delete_events_before(stream, ts("2026-04-01T00:00:00Z"), 1)
            .unwrap(),
        1
    );
    assert_ne!(epoch(&db(&dir)), before, "retention moved the epoch");
    // The first process reads its keys again: "a" is gone and may come again, "b" is kept.
    assert_eq!(append(&mut one, stream, &["a", "b"]), [true, false]);
}

#[test]
fn the_seq_index_of_the_third_layout_is_dropped_and_retention_still_forgets_merged_keys() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(stream).unwrap();
        t.append(stream, &[row(Some("a"), 1), row(Some("b"), 2)])
            .unwrap();
    }
    // The third layout: both keys merged into the large key table, with an index on `_seq`.
    let conn = db(&dir);
    to_previous_layout(&conn);
    conn.execute_batch(&format!(
        "UPDATE tally_streams SET keys_merged = 2;
             INSERT INTO tally_keys__pay (h, _seq) VALUES ({}, 1), ({}, 2);
             CREATE INDEX tally_keys__pay__seq ON tally_keys__pay (_seq);",
        hash("a"),
        hash("b")
    ))
    .unwrap();
    drop(store);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(append(&mut t, stream, &["a", "c"]), [false, true]);
    let conn = db(&dir);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'tally_keys__pay__seq'"
        ),
        0,
        "the index is dropped"
    );
    // Retention of row 1 takes its merged key out of the blocks, by (h, _seq).
    assert_eq!(
        t.delete_events_before(stream, ts("2026-04-01T00:00:00Z"), 1)
            .unwrap(),
        1
    );
    assert_eq!(stored(&conn), [(hash("b"), 2)], "only b's key is left");
    assert_eq!(append(&mut t, stream, &["a", "b"]), [true, false]);
}

/// Appends `ids` in batches of 10,000, all new.
fn append_all(t: &mut TenantStore, stream: &StreamDef, ids: &[String]) {
    for chunk in ids.chunks(10_000) {
        let rows: Vec<Vec<Value>> = chunk.iter().map(|id| row(Some(id), 1)).collect();
        assert!(t.append(stream, &rows).unwrap().iter().all(Option::is_some));
    }
}

#[test]
fn a_process_filter_catches_up_with_keys_another_process_merged() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut one = store.tenant("acme").unwrap();
    one.create_stream(stream).unwrap();
    // The first process merges once, so its filter holds keys.
    let first: Vec<String> = (0..70_000).map(|i| format!("one-{i}")).collect();
    append_all(&mut one, stream, &first);
    // Another process appends enough to merge again: the first one's filter does not have
    // those keys until it reads the rows the other process merged.
    let other = Store::open_sqlite(dir.path()).unwrap();
    let mut two = other.tenant("acme").unwrap();
    // 80,000: past the 70,000 the blocks hold, which the next merge waits for.
    let second: Vec<String> = (0..80_000).map(|i| format!("two-{i}")).collect();
    append_all(&mut two, stream, &second);
    assert!(
        count(&db(&dir), "SELECT keys_merged FROM tally_streams") > 70_000,
        "the second process merged"
    );
    assert_eq!(
        append(&mut one, stream, &["two-0", "two-79999", "one-0", "new"]),
        [false, false, false, true]
    );
}

#[test]
fn a_filter_is_not_kept_across_a_stream_created_again_by_another_process() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    let mut one = store.tenant("acme").unwrap();
    one.create_stream(stream).unwrap();
    // Both processes merge at the same `keys_merged` (70,000): only the epoch tells the first
    // one that its filter is of another table.
    let old: Vec<String> = (0..70_000).map(|i| format!("old-{i}")).collect();
    append_all(&mut one, stream, &old);
    // Another process creates the stream again and merges keys into the new table.
    let other = Store::open_sqlite(dir.path()).unwrap();
    let mut two = other.tenant("acme").unwrap();
    two.create_stream(stream).unwrap();
    let ids: Vec<String> = (0..70_000).map(|i| format!("k{i}")).collect();
    append_all(&mut two, stream, &ids);
    // The first process's retention moves the epoch; its filter (of the old table) must not
    // pass for the new one's.
    assert_eq!(
        one.delete_events_before(stream, ts("2026-04-01T00:00:00Z"), 10)
            .unwrap(),
        10
    );
    assert_eq!(
        append(&mut one, stream, &["k100", "k69999", "k5"]),
        [false, false, true]
    );
}

#[test]
fn the_previous_layout_is_converted_and_its_recent_keys_stay_recent() {
    let (dir, store, catalog) = setup();
    let stream = catalog.stream("pay").unwrap();
    {
        let mut t = store.tenant("acme").unwrap();
        t.create_stream(stream).unwrap();
        // 70,000 keys merge once; 5 more stay recent.
        let ids: Vec<String> = (0..70_005).map(|i| format!("evt-{i:05}")).collect();
        append_all(&mut t, stream, &ids[..70_000]);
        append_all(&mut t, stream, &ids[70_000..]);
    }
    let conn = db(&dir);
    let merged = || count(&db(&dir), "SELECT keys_merged FROM tally_streams");
    assert_eq!(merged(), 70_000);
    let before = stored(&conn);
    to_previous_layout(&conn);
    drop(store);
    let store = Store::open_sqlite(dir.path()).unwrap();
    let mut t = store.tenant("acme").unwrap();
    assert_eq!(
        append(&mut t, stream, &["evt-00000", "evt-70004", "evt-70005"]),
        [false, false, true]
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'tally_keys__pay'"
        ),
        0,
        "the previous layout's table is gone"
    );
    assert_eq!(stored(&conn), before, "the same keys, now in blocks");
    assert_eq!(merged(), 70_000, "the recent keys stay recent");
}
