//! What the SQLite-only store tests share: a store with the tenant `acme` and a schema, and
//! direct access to the tenant's database file.

use rusqlite::Connection;
use tally_store::Store;
use tally_views::sql::apply;
use tally_views::{Catalog, Timestamp};

/// A migrated SQLite store in a temporary directory with the tenant `acme` (UTC), and the
/// catalog of `schema`.
pub(crate) fn setup(schema: &str) -> (tempfile::TempDir, Store, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).unwrap();
    store.migrations().up().unwrap();
    store
        .create_tenant(
            "acme",
            "UTC",
            Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
        )
        .unwrap();
    let catalog = apply(&Catalog::new(), schema).unwrap().catalog;
    (dir, store, catalog)
}

/// The tenant's database, opened beside the store.
pub(crate) fn db(dir: &tempfile::TempDir) -> Connection {
    Connection::open(dir.path().join("tenants").join("acme.db")).unwrap()
}

/// The one integer `sql` selects.
pub(crate) fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Turns the tenant's database back into the layout before the event blocks (a row table per
/// stream), which the next open converts again: earlier layouts are built on top of it.
pub(crate) fn to_row_layout(dir: &tempfile::TempDir) {
    tally_store::testing::sqlite_row_layout(&dir.path().join("tenants").join("acme.db")).unwrap();
}
