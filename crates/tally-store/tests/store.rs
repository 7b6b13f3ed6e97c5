//! The store suite: every backend must pass every test here.
//!
//! Each test is written once against `Store` and run by `backends!` on the in-memory store, on
//! SQLite in a temporary directory and on PostgreSQL in a scratch schema (see
//! `tally_store::testing`).

use tally_store::testing::PgScratch;
use tally_store::{
    Correction, Erasure, KeyHashes, KeyKind, KeyRecord, RecordWrite, Rejected, RowWrite, Store,
    StoreError, ViewFlush,
};
use tally_views::sql::apply;
use tally_views::{Catalog, Timestamp, Value, ViewPlan};

const SCHEMA: &str = "
CREATE STREAM pay (id TEXT NOT NULL, who TEXT, amount DECIMAL(10,2) NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE TABLE payers (who TEXT PRIMARY KEY, name TEXT NOT NULL, limit_amount DECIMAL(10,2),
  joined TIMESTAMP);
CREATE MATERIALIZED VIEW daily AS
  SELECT time_bucket('1 day', at) AS day, who, sum(amount) AS total, count(*) AS n FROM pay GROUP BY 1, 2;
";

struct Fixture {
    store: Store,
    catalog: Catalog,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgScratch>,
}

fn memory() -> Fixture {
    fixture(Store::memory(), None)
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).unwrap();
    fixture(store, Some(dir))
}

fn postgres() -> Fixture {
    let pg = PgScratch::new();
    let store = Store::open_postgres(pg.config()).unwrap();
    let mut f = fixture(store, None);
    f._pg = Some(pg);
    f
}

fn fixture(store: Store, dir: Option<tempfile::TempDir>) -> Fixture {
    store.migrations().up().unwrap();
    let catalog = apply(&Catalog::new(), SCHEMA).unwrap().catalog;
    store
        .create_tenant("acme", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    Fixture {
        store,
        catalog,
        _dir: dir,
        _pg: None,
    }
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn dec(s: &str) -> Value {
    Value::Decimal(tally_views::decimal::Decimal::parse(s).unwrap())
}

fn row(id: &str, who: Option<&str>, amount: &str, at: &str) -> Vec<Value> {
    vec![
        Value::text(id),
        who.map(Value::text).unwrap_or(Value::Null),
        dec(amount),
        Value::Timestamp(ts(at)),
    ]
}

macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod on_memory { $( #[test] fn $name() { super::$name(super::memory()); } )* }
        mod on_sqlite { $( #[test] fn $name() { super::$name(super::sqlite()); } )* }
        mod on_postgres { $( #[test] fn $name() { super::$name(super::postgres()); } )* }
    };
}

backends!(
    catalog_round_trips,
    tenants_and_keys,
    append_deduplicates_and_reads_in_order,
    appends_of_every_size_store_each_row_once,
    flush_commits_rows_with_position,
    scan_filters_by_bucket_range,
    retention_deletes_only_applied_old_events,
    reset_and_drop,
    sequence_numbers_are_never_reused,
    migrations_go_down_and_up,
    snapshot_holds_rows_position_fingerprint_and_tail,
    a_schema_replaced_meanwhile_is_not_overwritten,
    the_rejection_log_pages_trims_and_stays_per_tenant,
    a_forgotten_tenant_can_be_created_again,
    table_rows_upsert_delete_and_stay_per_tenant,
    records_write_range_delete_and_stay_per_tenant,
    manage_keys_and_scheduled_tenants,
    erasure_deletes_events_keys_and_rows_in_one_transaction,
    keys_hashed_beforehand_deduplicate_as_the_store_would,
    a_large_flush_stores_every_state_in_order,
    events_read_back_in_order_by_any_page,
    erasure_in_an_append_and_a_column_added_later,
);

fn catalog_round_trips(f: Fixture) {
    let defs = f.catalog.definitions();
    f.store.save_schema(&defs).unwrap();
    assert_eq!(f.store.schema().unwrap(), defs);
    // Re-applying the stored definitions rebuilds the same catalog.
    let sql: Vec<String> = defs.iter().map(|(_, s)| format!("{s};")).collect();
    let again = apply(&Catalog::new(), &sql.join("\n")).unwrap().catalog;
    assert_eq!(
        again.view("daily").unwrap().fingerprint(),
        f.catalog.view("daily").unwrap().fingerprint()
    );
}

fn tenants_and_keys(f: Fixture) {
    assert!(matches!(
        f.store
            .create_tenant("acme", "UTC", ts("2026-01-01T00:00:00Z")),
        Err(StoreError::TenantExists(_))
    ));
    f.store
        .create_tenant("beta", "Europe/Berlin", ts("2026-01-02T00:00:00Z"))
        .unwrap();
    let names: Vec<String> = f
        .store
        .tenants()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    assert_eq!(
        f.store.tenant_info("beta").unwrap().unwrap().time_zone,
        "Europe/Berlin"
    );
    assert!(matches!(
        f.store.tenant("nobody"),
        Err(StoreError::NoTenant(_))
    ));

    let record = KeyRecord {
        tenant: "beta".into(),
        kind: KeyKind::Write,
        prefix: "tly_w_abcd".into(),
        created_at: ts("2026-01-02T00:00:00Z"),
        revoked: false,
    };
    f.store.create_key(&[1, 2, 3], &record).unwrap();
    assert_eq!(f.store.find_key(&[1, 2, 3]).unwrap(), Some(record));
    assert_eq!(f.store.find_key(&[9]).unwrap(), None);
    assert_eq!(f.store.revoke_key("acme", "tly_w_abcd").unwrap(), 0);
    assert_eq!(f.store.revoke_key("beta", "tly_w_abcd").unwrap(), 1);
    assert!(f.store.find_key(&[1, 2, 3]).unwrap().unwrap().revoked);
}

/// Appends of 0 to 40 rows, with repeated keys inside a batch and across batches and NULLs
/// among the values, store exactly the new rows, in order, with their values (SQLite writes
/// several rows per statement, in statements of more than one size).
fn appends_of_every_size_store_each_row_once(f: Fixture) {
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let mut expected: Vec<Vec<Value>> = Vec::new();
    let mut expected_seqs: Vec<u64> = Vec::new();
    let mut next = 0;
    for size in 0..=40 {
        let mut rows = Vec::new();
        let mut new = Vec::new();
        for i in 0..size {
            let row = if i % 7 == 3 && next > 0 {
                // A key stored by an earlier batch, or earlier in this one.
                let id = if i % 2 == 0 { next - 1 } else { 0 };
                row(&format!("k{id}"), Some("dup"), "0", "2026-03-01T00:00:00Z")
            } else {
                let who = (i % 3 != 0).then(|| format!("who {i} of {size}"));
                let at = format!("2026-03-{:02}T{:02}:00:00Z", 1 + size % 28, i % 24);
                let r = row(&format!("k{next}"), who.as_deref(), &format!("{i}.25"), &at);
                next += 1;
                new.push(r.clone());
                r
            };
            rows.push(row);
        }
        let seqs = t.append(stream, &rows).unwrap();
        assert_eq!(seqs.len(), size);
        assert_eq!(seqs.iter().flatten().count(), new.len(), "batch of {size}");
        expected.extend(new);
        expected_seqs.extend(seqs.into_iter().flatten());
    }
    let events = t.read_events(stream, 0, 10_000).unwrap();
    let stored: Vec<Vec<Value>> = events.iter().map(|e| e.row.clone()).collect();
    assert_eq!(stored, expected);
    // Each row is stored under the sequence number its append answered.
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        expected_seqs
    );
    assert!(expected_seqs.windows(2).all(|w| w[0] < w[1]));
}

fn append_deduplicates_and_reads_in_order(f: Fixture) {
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let seqs = t
        .append(
            stream,
            &[
                row("a", Some("x"), "1.50", "2026-03-01T10:00:00Z"),
                row("b", None, "2.00", "2026-03-01T11:00:00Z"),
                row("a", Some("y"), "9.99", "2026-03-01T12:00:00Z"),
            ],
        )
        .unwrap();
    // Sequence numbers increase; a backend may leave gaps.
    let (a, b) = (seqs[0].unwrap(), seqs[1].unwrap());
    assert!(a < b);
    assert_eq!(seqs[2], None);
    let again = t
        .append(
            stream,
            &[
                row("b", None, "2.00", "2026-03-01T11:00:00Z"),
                row("c", None, "3", "2026-03-02T00:00:00Z"),
            ],
        )
        .unwrap();
    assert_eq!(again[0], None);
    let c = again[1].unwrap();
    assert!(c > b);
    let events = t.read_events(stream, 0, 10).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [a, b, c]);
    assert_eq!(
        events[0].row,
        row("a", Some("x"), "1.50", "2026-03-01T10:00:00Z")
    );
    assert_eq!(
        events[2].row[2].to_string(),
        "3",
        "decimals come back with their text scale"
    );
    assert_eq!(t.read_events(stream, a, 1).unwrap()[0].seq, b);
    assert!(t.read_events(stream, c, 10).unwrap().is_empty());

    // Dedupe is per tenant: another tenant stores the same key.
    f.store
        .create_tenant("beta", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let mut other = f.store.tenant("beta").unwrap();
    other.create_stream(stream).unwrap();
    assert!(
        other
            .append(stream, &[row("a", None, "1", "2026-03-01T00:00:00Z")])
            .unwrap()[0]
            .is_some()
    );
}

fn daily(f: &Fixture) -> &ViewPlan {
    f.catalog.view("daily").unwrap()
}

fn group_write(plan: &ViewPlan, day: &str, who: &str, total: &str, n: i64) -> RowWrite {
    use tally_views::AggState;
    let key = vec![Value::Timestamp(ts(day)), Value::text(who)];
    let mut states: Vec<AggState> = plan.aggs.iter().map(|a| a.kind.new_state()).collect();
    for _ in 0..n {
        states[1].update(plan.aggs[1].kind, &Value::Null, &Value::Null, 0);
    }
    states[0].update(plan.aggs[0].kind, &dec(total), &Value::Null, 0);
    RowWrite {
        cells: vec![key[0].clone(), key[1].clone(), dec(total), Value::Int(n)],
        key,
        states,
    }
}

fn flush_commits_rows_with_position(f: Fixture) {
    let plan = daily(&f);
    let mut t = f.store.tenant("acme").unwrap();
    t.reset_view(plan).unwrap();
    let m = t.materialized().unwrap();
    assert_eq!(m.views[0].position, 0);
    assert_eq!(m.views[0].fingerprint, plan.fingerprint());

    t.flush(&[ViewFlush {
        failed: 0,
        plan,
        rows: vec![group_write(plan, "2026-03-01T00:00:00Z", "x", "1.50", 2)],
        position: 7,
    }])
    .unwrap();
    assert_eq!(t.materialized().unwrap().views[0].position, 7);
    let key = [
        Value::Timestamp(ts("2026-03-01T00:00:00Z")),
        Value::text("x"),
    ];
    let missing = [
        Value::Timestamp(ts("2026-03-01T00:00:00Z")),
        Value::text("nobody"),
    ];
    let loaded = t.load_states(plan, &[&key, &missing]).unwrap();
    assert_eq!(
        loaded[0].as_ref().unwrap()[1]
            .finalize(plan.aggs[1].kind)
            .unwrap(),
        Value::Int(2)
    );
    assert!(loaded[1].is_none());

    // An upsert replaces the row.
    t.flush(&[ViewFlush {
        failed: 2,
        plan,
        rows: vec![group_write(plan, "2026-03-01T00:00:00Z", "x", "4.00", 5)],
        position: 9,
    }])
    .unwrap();
    let rows = t.scan_view(plan, None, None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].1[0]
            .finalize(plan.aggs[0].kind)
            .unwrap()
            .to_string(),
        "4.00"
    );
    assert_eq!(t.materialized().unwrap().views[0].position, 9);

    // Failed-expression counts add up with the positions; a rebuild starts them again.
    t.flush(&[ViewFlush {
        failed: 3,
        plan,
        rows: vec![],
        position: 10,
    }])
    .unwrap();
    assert_eq!(t.materialized().unwrap().views[0].failed, 5);

    // A new handle sees the committed state.
    let reopened = f.store.tenant("acme").unwrap();
    assert_eq!(reopened.materialized().unwrap().views[0].position, 10);
    drop(reopened);
    t.reset_view(plan).unwrap();
    assert_eq!(t.materialized().unwrap().views[0].failed, 0);
}

fn scan_filters_by_bucket_range(f: Fixture) {
    let plan = daily(&f);
    let mut t = f.store.tenant("acme").unwrap();
    t.reset_view(plan).unwrap();
    let rows = [
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
        "2026-03-03T00:00:00Z",
    ]
    .iter()
    .map(|d| group_write(plan, d, "x", "1", 1))
    .collect();
    t.flush(&[ViewFlush {
        failed: 0,
        plan,
        rows,
        position: 3,
    }])
    .unwrap();
    let days = |from: Option<&str>, to: Option<&str>| -> Vec<String> {
        // The store may return extra rows at the edges (a conservative push-down); the query
        // filters exactly. It must never miss a row inside the range.
        let mut got: Vec<String> = t
            .scan_view(plan, from.map(ts), to.map(ts))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k[0].to_string())
            .collect();
        got.sort();
        got
    };
    assert_eq!(days(None, None).len(), 3);
    let inner = days(Some("2026-03-02T00:00:00Z"), Some("2026-03-03T00:00:00Z"));
    assert!(inner.contains(&"2026-03-02T00:00:00Z".to_owned()));
    assert!(!inner.contains(&"2026-03-01T00:00:00Z".to_owned()));
    assert!(days(Some("2026-03-04T00:00:00Z"), None).is_empty());
}

fn retention_deletes_only_applied_old_events(f: Fixture) {
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.append(
        stream,
        &[
            row("old1", None, "1", "2026-01-01T00:00:00Z"),
            row("new", None, "1", "2026-03-01T00:00:00Z"),
            row("old2", None, "1", "2026-01-02T00:00:00Z"),
        ],
    )
    .unwrap();
    // Only events up to seq 2 are applied: the late old2 (seq 3) must stay.
    let deleted = t
        .delete_events_before(stream, ts("2026-02-01T00:00:00Z"), 2)
        .unwrap();
    assert_eq!(deleted, 1);
    let left: Vec<u64> = t
        .read_events(stream, 0, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, [2, 3]);
    // A deleted event's dedupe key is free again (dedupe holds for the raw retention).
    assert!(
        t.append(stream, &[row("old1", None, "1", "2026-03-05T00:00:00Z")])
            .unwrap()[0]
            .is_some()
    );

    let plan = daily(&f);
    t.reset_view(plan).unwrap();
    let rows = vec![
        group_write(plan, "2026-01-01T00:00:00Z", "x", "1", 1),
        group_write(plan, "2026-03-01T00:00:00Z", "x", "1", 1),
    ];
    t.flush(&[ViewFlush {
        failed: 0,
        plan,
        rows,
        position: 4,
    }])
    .unwrap();
    assert_eq!(
        t.delete_view_rows_before(plan, ts("2026-02-01T00:00:00Z"))
            .unwrap(),
        1
    );
    assert_eq!(t.scan_view(plan, None, None).unwrap().len(), 1);
}

fn reset_and_drop(f: Fixture) {
    let plan = daily(&f);
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.reset_view(plan).unwrap();
    t.flush(&[ViewFlush {
        failed: 0,
        plan,
        rows: vec![group_write(plan, "2026-03-01T00:00:00Z", "x", "1", 1)],
        position: 5,
    }])
    .unwrap();
    t.reset_view(plan).unwrap();
    assert!(t.scan_view(plan, None, None).unwrap().is_empty());
    assert_eq!(t.materialized().unwrap().views[0].position, 0);
    t.drop_view("daily").unwrap();
    t.drop_stream("pay").unwrap();
    let m = t.materialized().unwrap();
    assert!(m.views.is_empty() && m.streams.is_empty());
}

fn sequence_numbers_are_never_reused(f: Fixture) {
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.append(
        stream,
        &[
            row("a", None, "1", "2026-01-01T00:00:00Z"),
            row("b", None, "1", "2026-01-01T00:00:00Z"),
        ],
    )
    .unwrap();
    // Retention deletes every event, the newest included.
    t.delete_events_before(stream, ts("2026-02-01T00:00:00Z"), 2)
        .unwrap();
    assert!(
        t.append(stream, &[row("c", None, "1", "2026-03-01T00:00:00Z")])
            .unwrap()[0]
            .unwrap()
            > 2
    );
}

fn migrations_go_down_and_up(f: Fixture) {
    let m = f.store.migrations();
    assert!(m.is_current().unwrap());
    let reverted = m.down().unwrap().unwrap();
    // The newest migration of the backend (the catalog's, or PostgreSQL's one database's).
    assert!(reverted.version >= 2, "{}", reverted.version);
    assert!(!m.is_current().unwrap());
    let applied = m.up().unwrap();
    assert_eq!(applied.len(), 1);
    assert!(m.is_current().unwrap());
}

fn snapshot_holds_rows_position_fingerprint_and_tail(f: Fixture) {
    let plan = daily(&f);
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.reset_view(plan).unwrap();
    let seqs = t
        .append(
            stream,
            &[
                row("a", Some("x"), "1", "2026-03-01T10:00:00Z"),
                row("b", Some("x"), "2", "2026-03-01T11:00:00Z"),
                row("c", Some("y"), "3", "2026-03-02T11:00:00Z"),
            ],
        )
        .unwrap();
    let first = seqs[0].unwrap();
    t.flush(&[ViewFlush {
        failed: 0,
        plan,
        rows: vec![group_write(plan, "2026-03-01T00:00:00Z", "x", "1", 1)],
        position: first,
    }])
    .unwrap();
    let snap = t.snapshot_view(plan, None, None, Some(stream)).unwrap();
    assert_eq!(snap.position, first);
    assert_eq!(snap.fingerprint, plan.fingerprint());
    assert_eq!(snap.groups.len(), 1);
    let tail: Vec<u64> = snap.tail.iter().map(|e| e.seq).collect();
    assert_eq!(tail, [seqs[1].unwrap(), seqs[2].unwrap()]);
    assert_eq!(
        snap.tail[1].row,
        row("c", Some("y"), "3", "2026-03-02T11:00:00Z")
    );
    // Without a stream, no tail is read.
    assert!(
        t.snapshot_view(plan, None, None, None)
            .unwrap()
            .tail
            .is_empty()
    );
}

fn a_schema_replaced_meanwhile_is_not_overwritten(f: Fixture) {
    let defs = f.catalog.definitions();
    f.store.replace_schema(&[], &defs).unwrap();
    // Another process changed it: a change prepared against the old schema is refused.
    let stale: Vec<(String, String)> = Vec::new();
    assert!(matches!(
        f.store.replace_schema(&stale, &[]),
        Err(StoreError::SchemaChanged)
    ));
    assert_eq!(f.store.schema().unwrap(), defs);
    f.store.replace_schema(&defs, &[]).unwrap();
    assert!(f.store.schema().unwrap().is_empty());
}

fn rejected(at: &str, n: usize) -> Rejected {
    Rejected {
        at: ts(at),
        stream: "pay".into(),
        route: "streams".into(),
        reason: "invalid_value".into(),
        message: format!("field 'amount': bad {n}"),
        payload: format!("{{\"n\":{n}, \"text\":\"ünïcode\"}}"),
    }
}

fn the_rejection_log_pages_trims_and_stays_per_tenant(f: Fixture) {
    f.store
        .create_tenant("beta", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let mut acme = f.store.tenant("acme").unwrap();
    let mut beta = f.store.tenant("beta").unwrap();
    let entries: Vec<Rejected> = (0..5)
        .map(|n| rejected(&format!("2026-03-0{}T10:00:00.123456Z", n + 1), n))
        .collect();
    acme.log_rejections(&entries).unwrap();
    beta.log_rejections(&[rejected("2026-03-09T00:00:00Z", 99)])
        .unwrap();
    let all = acme.rejections(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.rejected.clone()).collect::<Vec<_>>(),
        entries
    );
    // Pages continue after the last id seen.
    let first = acme.rejections(0, 2).unwrap();
    assert_eq!(first.len(), 2);
    let rest = acme.rejections(first[1].id, 100).unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].rejected, entries[2]);
    // Another tenant sees only its own.
    let theirs = beta.rejections(0, 100).unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].rejected.message, "field 'amount': bad 99");
    // Trimming by time, then by count, keeps the newest.
    assert_eq!(
        acme.trim_rejections(ts("2026-03-02T00:00:00Z"), 100)
            .unwrap(),
        1
    );
    assert_eq!(
        acme.trim_rejections(ts("2026-01-01T00:00:00Z"), 2).unwrap(),
        2
    );
    let left = acme.rejections(0, 100).unwrap();
    assert_eq!(
        left.iter().map(|r| r.rejected.clone()).collect::<Vec<_>>(),
        entries[3..]
    );
    assert_eq!(beta.rejections(0, 100).unwrap().len(), 1);
}

fn a_forgotten_tenant_can_be_created_again(f: Fixture) {
    let mut t = f.store.tenant("acme").unwrap();
    let stream = f.catalog.stream("pay").unwrap();
    t.create_stream(stream).unwrap();
    t.log_rejections(&[rejected("2026-03-01T00:00:00Z", 1)])
        .unwrap();
    let payers = f.catalog.table("payers").unwrap();
    t.upsert_rows(payers, &[payer("p1", "Ann", Some("1.50"))])
        .unwrap();
    drop(t);
    let record = KeyRecord {
        tenant: "acme".into(),
        kind: KeyKind::Read,
        prefix: "tly_r_forget".into(),
        created_at: ts("2026-01-01T00:00:00Z"),
        revoked: false,
    };
    f.store.create_key(b"forget-me", &record).unwrap();
    f.store.forget_tenant("acme").unwrap();
    assert!(f.store.tenant_info("acme").unwrap().is_none());
    assert!(f.store.find_key(b"forget-me").unwrap().is_none());
    f.store
        .create_tenant("acme", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let t = f.store.tenant("acme").unwrap();
    assert!(t.rejections(0, 10).unwrap().is_empty());
    assert!(t.tables_with_rows().unwrap().is_empty());
    assert!(t.materialized().unwrap().streams.is_empty());
}

fn payer(who: &str, name: &str, limit: Option<&str>) -> Vec<Value> {
    vec![
        Value::text(who),
        Value::text(name),
        limit.map(dec).unwrap_or(Value::Null),
        Value::Timestamp(ts("2026-02-01T08:30:00.000001Z")),
    ]
}

fn table_rows_upsert_delete_and_stay_per_tenant(f: Fixture) {
    f.store
        .create_tenant("beta", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let payers = f.catalog.table("payers").unwrap();
    let mut acme = f.store.tenant("acme").unwrap();
    let mut beta = f.store.tenant("beta").unwrap();
    assert!(acme.table_rows(payers).unwrap().is_empty());
    acme.upsert_rows(
        payers,
        &[
            payer("p2", "Bob", None),
            payer("p1", "Ann", Some("1.50")),
            payer("p2", "Bobby", Some("2.00")),
        ],
    )
    .unwrap();
    beta.upsert_rows(payers, &[payer("p1", "Other", None)])
        .unwrap();
    // The last write of a key wins; rows come back in key order with every type intact.
    assert_eq!(
        acme.table_rows(payers).unwrap(),
        vec![
            payer("p1", "Ann", Some("1.50")),
            payer("p2", "Bobby", Some("2.00"))
        ]
    );
    assert_eq!(acme.tables_with_rows().unwrap(), vec!["payers".to_owned()]);
    assert!(acme.delete_row(payers, &Value::text("p1")).unwrap());
    assert!(!acme.delete_row(payers, &Value::text("p1")).unwrap());
    assert_eq!(
        acme.table_rows(payers).unwrap(),
        vec![payer("p2", "Bobby", Some("2.00"))]
    );
    // Another tenant's rows are its own.
    assert_eq!(
        beta.table_rows(payers).unwrap(),
        vec![payer("p1", "Other", None)]
    );
    // Rows written before the table gained a column read it as NULL.
    let wider = apply(
        &f.catalog,
        "CREATE TABLE payers (who TEXT PRIMARY KEY, name TEXT NOT NULL, limit_amount DECIMAL(10,2),
           joined TIMESTAMP, note TEXT)",
    )
    .unwrap()
    .catalog;
    let mut expected = payer("p2", "Bobby", Some("2.00"));
    expected.push(Value::Null);
    assert_eq!(
        acme.table_rows(wider.table("payers").unwrap()).unwrap(),
        vec![expected]
    );
    acme.drop_table_rows("payers").unwrap();
    assert!(acme.table_rows(payers).unwrap().is_empty());
    assert!(acme.tables_with_rows().unwrap().is_empty());
    assert_eq!(beta.table_rows(payers).unwrap().len(), 1);
}

fn put(kind: &str, key: &str, body: &str) -> RecordWrite {
    RecordWrite::Put {
        kind: kind.into(),
        key: key.into(),
        body: body.into(),
    }
}

fn records_write_range_delete_and_stay_per_tenant(f: Fixture) {
    f.store
        .create_tenant("beta", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.write_records(&[
        put("history", "a1/002", "{\"n\":2}"),
        put("history", "a1/001", "{\"n\":1}"),
        put("history", "a2/001", "{\"n\":3}"),
        put("alert", "a1", "{}"),
        put("history", "a1/003", "{\"n\":4}"),
        RecordWrite::Delete {
            kind: "history".into(),
            key: "a1/003".into(),
        },
    ])
    .unwrap();
    // A range of keys, in key order, limited; the other kind is apart.
    let keys = |t: &tally_store::TenantStore, kind: &str, from: &str, to: &str, limit: usize| {
        t.records(kind, from, to, limit)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&t, "history", "a1/", "a1/~", 10), ["a1/001", "a1/002"]);
    assert_eq!(keys(&t, "history", "a1/", "a1/~", 1), ["a1/001"]);
    assert_eq!(
        keys(&t, "history", "", "~", 10),
        ["a1/001", "a1/002", "a2/001"]
    );
    assert_eq!(keys(&t, "alert", "", "~", 10), ["a1"]);
    assert_eq!(
        t.records("history", "a1/002", "a1/003", 10).unwrap(),
        [("a1/002".to_owned(), "{\"n\":2}".to_owned())]
    );
    // A put replaces.
    t.write_records(&[put("alert", "a1", "{\"v\":2}")]).unwrap();
    assert_eq!(t.records("alert", "a1", "a2", 1).unwrap()[0].1, "{\"v\":2}");
    // Another tenant sees none of it.
    let mut b = f.store.tenant("beta").unwrap();
    assert!(b.records("history", "", "~", 10).unwrap().is_empty());
    b.write_records(&[put("history", "a1/001", "beta")])
        .unwrap();
    assert_eq!(b.delete_records("history", "", "~").unwrap(), 1);
    // A range delete.
    assert_eq!(t.delete_records("history", "a1/", "a1/002").unwrap(), 1);
    assert_eq!(keys(&t, "history", "", "~", 10), ["a1/002", "a2/001"]);
    assert_eq!(t.delete_records("history", "b", "a").unwrap(), 0);
}

fn manage_keys_and_scheduled_tenants(f: Fixture) {
    let record = KeyRecord {
        tenant: "acme".into(),
        kind: KeyKind::Manage,
        prefix: "tly_m_abcd".into(),
        created_at: ts("2026-01-02T00:00:00Z"),
        revoked: false,
    };
    f.store.create_key(&[7, 7], &record).unwrap();
    assert_eq!(f.store.find_key(&[7, 7]).unwrap(), Some(record));
    assert!(f.store.scheduled_tenants().unwrap().is_empty());
    f.store.set_scheduled("acme", true).unwrap();
    f.store.set_scheduled("acme", true).unwrap();
    assert_eq!(f.store.scheduled_tenants().unwrap(), ["acme"]);
    f.store.set_scheduled("acme", false).unwrap();
    assert!(f.store.scheduled_tenants().unwrap().is_empty());
    f.store.set_scheduled("acme", true).unwrap();
    f.store.forget_tenant("acme").unwrap();
    assert!(f.store.scheduled_tenants().unwrap().is_empty());
}

fn erasure_deletes_events_keys_and_rows_in_one_transaction(f: Fixture) {
    let stream = f.catalog.stream("pay").unwrap();
    let plan = daily(&f);
    f.store
        .create_tenant("other", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let mut other = f.store.tenant("other").unwrap();
    other.create_stream(stream).unwrap();
    other
        .append(
            stream,
            &[row("o1", Some("ann"), "1", "2026-03-01T00:00:00Z")],
        )
        .unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    t.reset_view(plan).unwrap();
    t.append(
        stream,
        &[
            row("p1", Some("ann"), "1", "2026-03-01T00:00:00Z"),
            row("p2", Some("bob"), "2", "2026-03-01T00:00:00Z"),
            row("p3", Some("ann"), "3", "2026-03-02T00:00:00Z"),
            row("p4", None, "4", "2026-03-02T00:00:00Z"),
            row("p5", Some("cy"), "5", "2026-03-02T00:00:00Z"),
        ],
    )
    .unwrap();
    t.flush(&[ViewFlush {
        failed: 0,
        plan,
        rows: vec![
            group_write(plan, "2026-03-01T00:00:00Z", "x", "3", 2),
            group_write(plan, "2026-03-02T00:00:00Z", "x", "12", 3),
        ],
        position: 5,
    }])
    .unwrap();

    let seqs = |events: Vec<tally_views::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(t.events_of(stream, &[1], &["ann"]).unwrap()), [1, 3]);
    assert_eq!(
        seqs(t.events_of(stream, &[1, 0], &["cy", "p2"]).unwrap()),
        [2, 5]
    );
    assert!(t.events_of(stream, &[1], &["nobody"]).unwrap().is_empty());

    let fixed = group_write(plan, "2026-03-01T00:00:00Z", "x", "2", 1);
    let gone = vec![
        Value::Timestamp(ts("2026-03-02T00:00:00Z")),
        Value::text("x"),
    ];
    t.erase(&Erasure {
        events: vec![(stream, vec![1, 3])],
        views: vec![Correction {
            plan,
            rows: vec![fixed],
            removed: vec![gone],
        }],
        records: vec![put("erasure", "k1", "{}")],
    })
    .unwrap();

    assert_eq!(seqs(t.read_events(stream, 0, 10).unwrap()), [2, 4, 5]);
    // The last sequence number stays: numbers are never reused.
    assert_eq!(t.last_seq(stream).unwrap(), 5);
    let rows = t.scan_view(plan, None, None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].1[0]
            .finalize(plan.aggs[0].kind)
            .unwrap()
            .to_string(),
        "2.00"
    );
    assert_eq!(t.materialized().unwrap().views[0].position, 5);
    assert_eq!(t.records("erasure", "", "~", 10).unwrap().len(), 1);
    // The erased events' keys are free again; the others' still deduplicate, here and in a
    // handle opened afterwards.
    let again = t
        .append(
            stream,
            &[
                row("p1", Some("ann"), "1", "2026-03-03T00:00:00Z"),
                row("p2", Some("bob"), "2", "2026-03-03T00:00:00Z"),
            ],
        )
        .unwrap();
    assert_eq!(again, [Some(6), None]);
    drop(t);
    let mut reopened = f.store.tenant("acme").unwrap();
    let later = reopened
        .append(
            stream,
            &[
                row("p3", Some("ann"), "3", "2026-03-03T00:00:00Z"),
                row("p5", Some("cy"), "5", "2026-03-03T00:00:00Z"),
            ],
        )
        .unwrap();
    assert_eq!(later, [Some(7), None]);
    // The other tenant's event of the same person id is untouched.
    assert_eq!(seqs(other.events_of(stream, &[1], &["ann"]).unwrap()), [1]);
}

/// `append_hashed` with the keys hashed beforehand finds the same duplicates as `append`;
/// hashes of another number of rows are not used.
fn keys_hashed_beforehand_deduplicate_as_the_store_would(f: Fixture) {
    let stream = f.catalog.stream("pay").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    // SQLite indexes keys by these hashes (the fixture with a directory), PostgreSQL filters
    // them (its text keys); the memory store does neither.
    assert_eq!(t.hashes_keys(stream), f._dir.is_some() || f._pg.is_some());
    let first = [
        row("a", Some("x"), "1", "2026-03-01T10:00:00Z"),
        row("b", None, "2", "2026-03-01T11:00:00Z"),
        row("a", Some("y"), "3", "2026-03-01T12:00:00Z"),
    ];
    let hashed = KeyHashes::new(stream, &first);
    assert_eq!(hashed.len(), 3);
    let seqs = t.append_hashed(stream, &first, Some(hashed)).unwrap();
    assert!(seqs[0].is_some() && seqs[1].is_some());
    assert_eq!(seqs[2], None, "a key repeated within the batch");
    let second = [
        row("b", None, "2", "2026-03-01T11:00:00Z"),
        row("c", None, "4", "2026-03-02T00:00:00Z"),
    ];
    let seqs = t
        .append_hashed(stream, &second, Some(KeyHashes::new(stream, &second)))
        .unwrap();
    assert_eq!(seqs[0], None, "a key stored by the first append");
    assert!(seqs[1].is_some());
    // Hashes of one row for two rows: the store hashes the rows itself.
    let third = [
        row("c", None, "4", "2026-03-02T00:00:00Z"),
        row("d", None, "5", "2026-03-02T00:00:00Z"),
    ];
    let wrong = KeyHashes::new(stream, &third[1..]);
    let seqs = t.append_hashed(stream, &third, Some(wrong)).unwrap();
    assert_eq!(seqs[0], None);
    assert!(seqs[1].is_some());
    let ids: Vec<String> = t
        .read_events(stream, 0, 10)
        .unwrap()
        .iter()
        .map(|e| e.row[0].to_string())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
}

/// A flush with enough exact distinct members that its states are encoded on two threads
/// stores every row's own states (none swapped, lost or repeated across the split).
fn a_large_flush_stores_every_state_in_order(f: Fixture) {
    use tally_views::AggState;
    let catalog = apply(
        &f.catalog,
        "CREATE MATERIALIZED VIEW visitors AS
           SELECT time_bucket('1 day', at) AS day, count(DISTINCT who) AS who_n, count(*) AS n
           FROM pay GROUP BY 1;",
    )
    .unwrap()
    .catalog;
    let plan = catalog.view("visitors").unwrap();
    let daily = daily(&f);
    let mut t = f.store.tenant("acme").unwrap();
    t.reset_view(plan).unwrap();
    t.reset_view(daily).unwrap();
    // 40 days, day d with 1,000 + d distinct visitors: 41,780 members, past the split.
    let start = ts("2026-03-01T00:00:00Z");
    let rows: Vec<RowWrite> = (0..40i64)
        .map(|d| {
            let day = Timestamp(start.0 + d * 86_400_000_000);
            let mut states: Vec<AggState> = plan.aggs.iter().map(|a| a.kind.new_state()).collect();
            for v in 0..1_000 + d {
                let who = Value::text(&format!("visitor-{d}-{v}"));
                states[0].update(plan.aggs[0].kind, &who, &Value::Null, 0);
                states[1].update(plan.aggs[1].kind, &Value::Null, &Value::Null, 0);
            }
            RowWrite {
                key: vec![Value::Timestamp(day)],
                cells: vec![
                    Value::Timestamp(day),
                    Value::Int(1_000 + d),
                    Value::Int(1_000 + d),
                ],
                states,
            }
        })
        .collect();
    // Two views in one flush: each is split on its own, the small one too.
    let days: Vec<RowWrite> = (1..=9)
        .map(|d| group_write(daily, &format!("2026-03-0{d}T00:00:00Z"), "x", "1.00", d))
        .collect();
    t.flush(&[
        ViewFlush {
            failed: 0,
            plan: daily,
            rows: days,
            position: 2,
        },
        ViewFlush {
            failed: 0,
            plan,
            rows,
            position: 1,
        },
    ])
    .unwrap();
    let daily_rows = t.scan_view(daily, None, None).unwrap();
    // Day d of March holds d events, whatever order the rows are scanned in.
    let mut counts: Vec<(String, String)> = daily_rows
        .iter()
        .map(|(key, states)| {
            let n = states[1].finalize(daily.aggs[1].kind).unwrap().to_string();
            (key[0].to_string(), n)
        })
        .collect();
    counts.sort();
    let expected: Vec<(String, String)> = (1..=9)
        .map(|d| {
            let day = Value::Timestamp(ts(&format!("2026-03-0{d}T00:00:00Z")));
            (day.to_string(), d.to_string())
        })
        .collect();
    assert_eq!(counts, expected);
    let m = t.materialized().unwrap();
    let position = |name: &str| m.views.iter().find(|v| v.name == name).unwrap().position;
    assert_eq!((position("daily"), position("visitors")), (2, 1));
    let keys: Vec<Vec<Value>> = (0..40i64)
        .map(|d| vec![Value::Timestamp(Timestamp(start.0 + d * 86_400_000_000))])
        .collect();
    let refs: Vec<&[Value]> = keys.iter().map(|k| &k[..]).collect();
    let loaded = t.load_states(plan, &refs).unwrap();
    for (d, states) in loaded.into_iter().enumerate() {
        let states = states.unwrap_or_else(|| panic!("day {d} was not stored"));
        let AggState::Distinct(set) = &states[0] else {
            panic!("day {d}: not a distinct set")
        };
        assert_eq!(set.len(), 1_000 + d, "day {d}");
        assert!(
            set.contains(&Value::text(&format!("visitor-{d}-0"))),
            "day {d}"
        );
        assert_eq!(
            states[1].finalize(plan.aggs[1].kind).unwrap(),
            Value::Int(1_000 + d as i64),
            "day {d}"
        );
    }
    assert_eq!(t.scan_view(plan, None, None).unwrap().len(), 40);
}

/// The sequence numbers of `events`, in order.
fn seqs_of(events: &[tally_views::Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn visits(columns: &str) -> Catalog {
    apply(
        &Catalog::new(),
        &format!("CREATE STREAM visit (id BIGINT, at TIMESTAMP NOT NULL{columns}) WITH (event_time = 'at');"),
    )
    .unwrap()
    .catalog
}

fn visit(id: i64, at: &str) -> Vec<Value> {
    vec![Value::Int(id), Value::Timestamp(ts(at))]
}

/// Events of one append spanning weeks, and of many appends of one
/// event (more than PostgreSQL reads blocks of in one round), are read back in order, by pages
/// of any size from any position.
fn events_read_back_in_order_by_any_page(f: Fixture) {
    let catalog = visits("");
    let stream = catalog.stream("visit").unwrap();
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let weeks = [
        "2026-03-01T10:00:00Z",
        "2026-03-02T10:00:00Z",
        "2026-02-20T10:00:00Z",
        "2026-03-20T10:00:00Z",
    ];
    let spread = |ids: std::ops::Range<i64>| -> Vec<Vec<Value>> {
        ids.map(|i| visit(i, weeks[(i as usize * 7 / 3) % 4]))
            .collect()
    };
    let mut seqs = t.append(stream, &spread(0..40)).unwrap();
    for i in 40..340 {
        seqs.extend(t.append(stream, &spread(i..i + 1)).unwrap());
    }
    seqs.extend(t.append(stream, &spread(340..400)).unwrap());
    assert_eq!(seqs, (1..=400).map(Some).collect::<Vec<_>>());
    let ids = |events: Vec<tally_views::Event>| -> Vec<(u64, i64)> {
        events
            .iter()
            .map(|e| match e.row[0] {
                Value::Int(id) => (e.seq, id),
                ref other => panic!("{other:?}"),
            })
            .collect()
    };
    let all = ids(t.read_events(stream, 0, usize::MAX).unwrap());
    assert_eq!(all, (0..400).map(|i| (i as u64 + 1, i)).collect::<Vec<_>>());
    for after in [0, 1, 7, 39, 40, 41, 200, 339, 340, 399, 400, 450] {
        for limit in [1, 3, 10, 100, 1000] {
            let page = ids(t.read_events(stream, after, limit).unwrap());
            let expected: Vec<(u64, i64)> = all
                .iter()
                .filter(|(seq, _)| *seq > after)
                .take(limit)
                .copied()
                .collect();
            assert_eq!(page, expected, "after {after}, limit {limit}");
        }
    }
    let times = t.read_events(stream, 0, 5).unwrap();
    assert_eq!(
        times[2].row[1],
        Value::Timestamp(ts(weeks[(2 * 7 / 3) % 4]))
    );
}

/// Erasing events from the middle of an append, and a column added after events were stored:
/// the others stay in order, the earlier ones read NULL in the new column, and later appends go
/// on numbering.
fn erasure_in_an_append_and_a_column_added_later(f: Fixture) {
    let before = visits("");
    let after = apply(
        &before,
        "CREATE STREAM visit (id BIGINT, at TIMESTAMP NOT NULL, page TEXT) WITH (event_time = 'at');",
    )
    .unwrap()
    .catalog;
    let (old, new) = (
        before.stream("visit").unwrap(),
        after.stream("visit").unwrap(),
    );
    let mut t = f.store.tenant("acme").unwrap();
    t.create_stream(old).unwrap();
    let rows: Vec<Vec<Value>> = (1..=10).map(|i| visit(i, "2026-03-03T10:00:00Z")).collect();
    t.append(old, &rows).unwrap();
    t.alter_stream(old, new).unwrap();
    let rows: Vec<Vec<Value>> = (11..=13)
        .map(|i| {
            let mut row = visit(i, "2026-03-04T10:00:00Z");
            row.push(Value::text(&format!("/p{i}")));
            row
        })
        .collect();
    t.append(new, &rows).unwrap();
    t.erase(&Erasure {
        events: vec![(new, vec![7, 3, 12])],
        views: vec![],
        records: vec![],
    })
    .unwrap();
    let events = t.read_events(new, 0, 100).unwrap();
    assert_eq!(seqs_of(&events), [1, 2, 4, 5, 6, 8, 9, 10, 11, 13]);
    for e in &events {
        assert_eq!(e.row[0], Value::Int(e.seq as i64));
        let page = if e.seq > 10 {
            Value::text(&format!("/p{}", e.seq))
        } else {
            Value::Null
        };
        assert_eq!(e.row[2], page, "{}", e.seq);
    }
    assert_eq!(seqs_of(&t.read_events(new, 3, 2).unwrap()), [4, 5]);
    // The rest of the later append: nothing of it is left.
    t.erase(&Erasure {
        events: vec![(new, vec![11, 13])],
        views: vec![],
        records: vec![],
    })
    .unwrap();
    assert_eq!(
        seqs_of(&t.read_events(new, 0, 100).unwrap()),
        [1, 2, 4, 5, 6, 8, 9, 10]
    );
    assert!(t.read_events(new, 10, 100).unwrap().is_empty());
    let mut row = visit(14, "2026-03-03T11:00:00Z");
    row.push(Value::Null);
    let next = t.append(new, &[row]).unwrap();
    assert_eq!(next, [Some(14)]);
}
