//! `tally-store` is persistence: the only crate that speaks a database's SQL.
//!
//! A [`Store`] holds the catalog (tenants, keys, the applied schema, the migrations of its own
//! tables); a [`TenantStore`] holds one tenant's data: each stream's raw events and a view
//! table per view, plus the position each view has applied up to. Backends are a closed enum,
//! dispatched once per operation: SQLite (one database file per tenant plus `catalog.db`),
//! PostgreSQL (every tenant in shared tables under row-level security) and an in-memory store
//! for tests.
//!
//! The operations are narrow on purpose, so every backend can pass one test suite
//! (`tests/store.rs`): append events (deduplicated), read events after a position, load view
//! states by key, commit view rows together with the view's position in one transaction, scan a
//! view, delete expired rows, and the catalog.
//!
//! Invariant: a view's rows and its position change only together, in one transaction
//! ([`TenantStore::flush`]); so after a crash the rows hold exactly the events up to the
//! position, and replaying the events after it restores the rest.
//!
//! On a store several processes share (PostgreSQL), one of them leads a tenant: it alone
//! writes the tenant's view tables. Those operations are not part of the narrow surface above:
//! [`TenantStore::shared`] hands them out as a [`Lease`] (take, hold or give up the lead, read
//! the stored schema) on PostgreSQL only, and `None` on the other backends, where a process
//! always leads and no other process changes the schema.
//!
//! This file is the dispatch only: [`Store`] and [`TenantStore`] and the match over backends.
//! The types the operations take and return are in `types.rs` (but [`KeyHashes`], the key hashes
//! both stores use, in `sqlite_keys.rs`), [`StoreError`] in `error.rs`;
//! the backends (`sqlite.rs`, `memory.rs`, `postgres/`) import from those, never from here.

use std::path::Path;

use tally_views::codec::{decode_key, decode_values, encode_key};
use tally_views::{AggState, Event, StreamDef, TableDef, Timestamp, Value, ViewPlan};

mod bloom;
mod error;
mod memory;
mod migrations;
mod pg_tls;
mod postgres;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_events;
mod sqlite_keys;
mod sqlite_spans;
mod sqlite_sync;
pub mod testing;
mod types;

pub use error::{Result, StoreError};
pub use migrations::{MigrationStatus, Migrations};
pub use postgres::{Lease, PgConfig};
pub use sqlite_keys::KeyHashes;
pub use sqlite_sync::WalSync;
pub use types::{
    Correction, Erasure, KeyKind, KeyRecord, LoggedRejection, Materialized, MaterializedView,
    RecordWrite, Rejected, RowWrite, StoredGroup, TenantInfo, ViewFlush, ViewSnapshot,
};

use types::{EncodedCorrection, EncodedErasure, EncodedFlush, EncodedRow};

/// The catalog and the tenants' data.
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<postgres::PgStore>),
    Memory(memory::MemoryStore),
}

/// One tenant's data.
pub enum TenantStore {
    Sqlite(Box<sqlite::SqliteTenant>),
    Postgres(Box<postgres::PgTenant>),
    Memory(memory::MemoryTenant),
}

/// An append written but perhaps not committed yet ([`TenantStore::stage_hashed`]). On SQLite,
/// dropped without [`Staged::commit`], its rows are rolled back; on other stores they are
/// committed already ([`Staged::is_pending`] is false).
pub struct Staged<'a> {
    /// Each row's sequence number, `None` for a duplicate.
    pub seqs: Vec<Option<u64>>,
    pending: Option<sqlite::SqliteStaged<'a>>,
}

impl Staged<'_> {
    /// Whether the commit is still to come (the work [`Staged::commit`] does is worth
    /// overlapping).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Makes the rows durable (a no-op for a store that committed them already).
    pub fn commit(self) -> Result<()> {
        match self.pending {
            Some(pending) => pending.commit(),
            None => Ok(()),
        }
    }
}

impl Store {
    /// Opens (creating when missing) the SQLite store in `dir`.
    pub fn open_sqlite(dir: &Path) -> Result<Store> {
        Ok(Store::Sqlite(sqlite::SqliteStore::open(dir)?))
    }

    /// Connects to PostgreSQL, creating the schema when missing. Refuses superusers and roles
    /// with `BYPASSRLS`, which row-level security does not apply to.
    pub fn open_postgres(config: PgConfig) -> Result<Store> {
        Ok(Store::Postgres(Box::new(postgres::PgStore::open(config)?)))
    }

    /// Whether several processes may serve the same tenants at once (one database server).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Whether appends of `stream` take dedupe keys hashed by the caller ([`KeyHashes`]): the
    /// same answer as every tenant's [`TenantStore::hashes_keys`].
    pub fn hashes_keys(&self, stream: &StreamDef) -> bool {
        match self {
            Store::Sqlite(_) => stream.has_dedupe_key(),
            Store::Postgres(_) => postgres::filters_keys(stream),
            Store::Memory(_) => false,
        }
    }

    /// Checks, after migrating, that the tenant tables keep tenants apart (PostgreSQL: every
    /// tenant table has row-level security enabled and forced).
    pub fn check_isolation(&self) -> Result<()> {
        match self {
            Store::Postgres(p) => p.check_isolation(),
            Store::Sqlite(_) | Store::Memory(_) => Ok(()),
        }
    }

    /// A new, empty in-memory store.
    pub fn memory() -> Store {
        Store::Memory(memory::MemoryStore::default())
    }

    /// Another handle on the same data: a new connection on SQLite, shared maps in memory. What a
    /// restarted process would see.
    pub fn reopen(&self) -> Result<Store> {
        Ok(match self {
            Store::Sqlite(s) => Store::Sqlite(sqlite::SqliteStore::open(s.dir())?),
            Store::Postgres(p) => {
                Store::Postgres(Box::new(postgres::PgStore::open(p.config().clone())?))
            }
            Store::Memory(m) => Store::Memory(m.clone()),
        })
    }

    /// The catalog's migrations.
    pub fn migrations(&self) -> Migrations<'_> {
        Migrations { store: self }
    }

    /// The applied schema: `(name, definition)` in creation order.
    pub fn schema(&self) -> Result<Vec<(String, String)>> {
        match self {
            Store::Sqlite(s) => s.schema(),
            Store::Postgres(p) => p.schema(),
            Store::Memory(m) => Ok(m.schema()),
        }
    }

    /// Replaces the applied schema.
    pub fn save_schema(&self, definitions: &[(String, String)]) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.save_schema(definitions),
            Store::Postgres(p) => p.save_schema(definitions),
            Store::Memory(m) => {
                m.save_schema(definitions);
                Ok(())
            }
        }
    }

    /// Replaces the applied schema if it is still `expected`; otherwise
    /// [`StoreError::SchemaChanged`] (another process changed it meanwhile).
    pub fn replace_schema(
        &self,
        expected: &[(String, String)],
        definitions: &[(String, String)],
    ) -> Result<()> {
        match self {
            Store::Postgres(p) => p.replace_schema(expected, definitions),
            Store::Sqlite(_) | Store::Memory(_) => {
                if self.schema()? != expected {
                    return Err(StoreError::SchemaChanged);
                }
                self.save_schema(definitions)
            }
        }
    }

    pub fn create_tenant(&self, name: &str, time_zone: &str, now: Timestamp) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.create_tenant(name, time_zone, now),
            Store::Postgres(p) => p.create_tenant(name, time_zone, now),
            Store::Memory(m) => m.create_tenant(name, time_zone, now),
        }
    }

    /// Undoes a tenant's creation that did not complete (its tables or keys failed): the
    /// catalog row, its keys and whatever of its data exists go, so creating it again works.
    pub fn forget_tenant(&self, name: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.forget_tenant(name),
            Store::Postgres(p) => p.forget_tenant(name),
            Store::Memory(m) => {
                m.forget_tenant(name);
                Ok(())
            }
        }
    }

    pub fn tenants(&self) -> Result<Vec<TenantInfo>> {
        match self {
            Store::Sqlite(s) => s.tenants(),
            Store::Postgres(p) => p.tenants(),
            Store::Memory(m) => Ok(m.tenants()),
        }
    }

    pub fn tenant_info(&self, name: &str) -> Result<Option<TenantInfo>> {
        Ok(self.tenants()?.into_iter().find(|t| t.name == name))
    }

    /// Stores a key by its hash.
    pub fn create_key(&self, hash: &[u8], record: &KeyRecord) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.create_key(hash, record),
            Store::Postgres(p) => p.create_key(hash, record),
            Store::Memory(m) => m.create_key(hash, record),
        }
    }

    /// The key with this hash.
    pub fn find_key(&self, hash: &[u8]) -> Result<Option<KeyRecord>> {
        match self {
            Store::Sqlite(s) => s.find_key(hash),
            Store::Postgres(p) => p.find_key(hash),
            Store::Memory(m) => Ok(m.find_key(hash)),
        }
    }

    /// Marks the keys with this prefix of `tenant` revoked; returns how many were.
    pub fn revoke_key(&self, tenant: &str, prefix: &str) -> Result<usize> {
        match self {
            Store::Sqlite(s) => s.revoke_key(tenant, prefix),
            Store::Postgres(p) => p.revoke_key(tenant, prefix),
            Store::Memory(m) => Ok(m.revoke_key(tenant, prefix)),
        }
    }

    /// Marks a tenant as one the server's scheduler visits (it has alerts), or not.
    pub fn set_scheduled(&self, tenant: &str, scheduled: bool) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.set_scheduled(tenant, scheduled),
            Store::Postgres(p) => p.set_scheduled(tenant, scheduled),
            Store::Memory(m) => {
                m.set_scheduled(tenant, scheduled);
                Ok(())
            }
        }
    }

    /// The tenants the server's scheduler visits, by name.
    pub fn scheduled_tenants(&self) -> Result<Vec<String>> {
        match self {
            Store::Sqlite(s) => s.scheduled_tenants(),
            Store::Postgres(p) => p.scheduled_tenants(),
            Store::Memory(m) => Ok(m.scheduled_tenants()),
        }
    }

    /// Gives a database role read-only access to one tenant's tables (PostgreSQL): views in a
    /// schema of their own, filtered to the tenant, under row-level security. Returns the
    /// schema's name.
    pub fn grant_reader(&self, tenant: &str, role: &str) -> Result<String> {
        if self.tenant_info(tenant)?.is_none() {
            return Err(StoreError::NoTenant(tenant.to_owned()));
        }
        match self {
            Store::Postgres(p) => p.grant_reader(tenant, role),
            Store::Sqlite(_) | Store::Memory(_) => Err(StoreError::Unsupported(
                "reader roles are a PostgreSQL feature; on SQLite, give a BI tool the tenant's \
                 database file (tenants/<name>.db) read-only"
                    .into(),
            )),
        }
    }

    /// Opens a tenant's data.
    pub fn tenant(&self, name: &str) -> Result<TenantStore> {
        if self.tenant_info(name)?.is_none() {
            return Err(StoreError::NoTenant(name.to_owned()));
        }
        Ok(match self {
            Store::Sqlite(s) => TenantStore::Sqlite(Box::new(s.tenant(name)?)),
            Store::Postgres(p) => TenantStore::Postgres(Box::new(p.tenant(name)?)),
            Store::Memory(m) => TenantStore::Memory(m.tenant(name)),
        })
    }
}

impl TenantStore {
    /// The leadership operations, on a store other processes share (PostgreSQL); `None`
    /// elsewhere, where this process is the only one: it always leads, and the schema it holds
    /// is the stored one.
    pub fn shared(&mut self) -> Option<Lease<'_>> {
        match self {
            TenantStore::Postgres(p) => Some(p.lease()),
            TenantStore::Sqlite(_) | TenantStore::Memory(_) => None,
        }
    }

    /// The stream and view tables this tenant has.
    pub fn materialized(&self) -> Result<Materialized> {
        match self {
            TenantStore::Sqlite(s) => s.materialized(),
            TenantStore::Postgres(p) => p.conn().materialized(),
            TenantStore::Memory(m) => Ok(m.materialized()),
        }
    }

    /// Creates the (empty) raw event storage of a stream.
    pub fn create_stream(&mut self, def: &StreamDef) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.create_stream(def),
            TenantStore::Postgres(p) => p.conn().create_stream(def),
            TenantStore::Memory(m) => {
                m.create_stream(def);
                Ok(())
            }
        }
    }

    /// Appends the columns `new` adds to `old` and records the new definition.
    pub fn alter_stream(&mut self, old: &StreamDef, new: &StreamDef) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.alter_stream(old, new),
            TenantStore::Postgres(p) => p.conn().alter_stream(old, new),
            TenantStore::Memory(m) => {
                m.alter_stream(new);
                Ok(())
            }
        }
    }

    /// Deletes a stream's table and events.
    pub fn drop_stream(&mut self, name: &str) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.drop_stream(name),
            TenantStore::Postgres(p) => p.conn().drop_stream(name),
            TenantStore::Memory(m) => {
                m.drop_stream(name);
                Ok(())
            }
        }
    }

    /// Creates a view's table empty, at position 0, replacing any previous table of that name.
    pub fn reset_view(&mut self, plan: &ViewPlan) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.reset_view(plan),
            TenantStore::Postgres(p) => p.conn().reset_view(plan),
            TenantStore::Memory(m) => {
                m.reset_view(plan);
                Ok(())
            }
        }
    }

    /// Deletes a view's table.
    pub fn drop_view(&mut self, name: &str) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.drop_view(name),
            TenantStore::Postgres(p) => p.conn().drop_view(name),
            TenantStore::Memory(m) => {
                m.drop_view(name);
                Ok(())
            }
        }
    }

    /// Appends events in one durable transaction. For each row, the sequence number it was
    /// stored at, or `None` when its dedupe key was already stored (a duplicate, counted once).
    pub fn append(&mut self, stream: &StreamDef, rows: &[Vec<Value>]) -> Result<Vec<Option<u64>>> {
        self.append_hashed(stream, rows, None)
    }

    /// Whether appends of `stream` use [`KeyHashes`]: on SQLite, for a stream with a dedupe
    /// key; on PostgreSQL, for one whose keys its connection filters. A caller that appends
    /// from one thread and decodes on another computes them there.
    pub fn hashes_keys(&self, stream: &StreamDef) -> bool {
        match self {
            TenantStore::Sqlite(_) => stream.has_dedupe_key(),
            TenantStore::Postgres(_) => postgres::filters_keys(stream),
            TenantStore::Memory(_) => false,
        }
    }

    /// [`TenantStore::append`] with the rows' keys and hashes computed beforehand: they must be
    /// [`KeyHashes::new`] of these rows (they are not used when they describe another stream or
    /// another number of rows, nor by stores that hash keys otherwise).
    pub fn append_hashed(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
        hashed: Option<KeyHashes>,
    ) -> Result<Vec<Option<u64>>> {
        match self {
            TenantStore::Sqlite(s) => s.append(stream, rows, hashed),
            TenantStore::Postgres(p) => p.conn().append(stream, rows, hashed),
            TenantStore::Memory(m) => Ok(m.append(stream, rows)),
        }
    }

    /// [`TenantStore::append_hashed`] in two steps: the rows are written here and made durable
    /// by [`Staged::commit`], so that a caller can do other work while the commit is written
    /// and synced (the worker applies the events to its views then). Only SQLite leaves the
    /// commit to the second step; other stores have committed when this returns.
    pub fn stage_hashed(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
        hashed: Option<KeyHashes>,
    ) -> Result<Staged<'_>> {
        match self {
            TenantStore::Sqlite(s) => {
                let (seqs, pending) = s.stage(stream, rows, hashed)?;
                Ok(Staged {
                    seqs,
                    pending: Some(pending),
                })
            }
            other => Ok(Staged {
                seqs: other.append_hashed(stream, rows, hashed)?,
                pending: None,
            }),
        }
    }

    /// Up to `limit` events of `stream` with sequence numbers above `after`, in order.
    pub fn read_events(&self, stream: &StreamDef, after: u64, limit: usize) -> Result<Vec<Event>> {
        match self {
            TenantStore::Sqlite(s) => s.read_events(stream, after, limit),
            TenantStore::Postgres(p) => p.conn().read_events(stream, after, limit),
            TenantStore::Memory(m) => Ok(m.read_events(&stream.name, after, limit)),
        }
    }

    /// The sequence number of the last event of `stream` committed (0 for none): every event
    /// up to it is committed.
    pub fn last_seq(&self, stream: &StreamDef) -> Result<u64> {
        match self {
            TenantStore::Sqlite(s) => s.last_seq(&stream.name),
            TenantStore::Postgres(p) => p.conn().last_seq(&stream.name),
            TenantStore::Memory(m) => Ok(m.last_seq(&stream.name)),
        }
    }

    /// The stored states of the given groups (`None` for groups not stored yet).
    pub fn load_states(
        &self,
        plan: &ViewPlan,
        keys: &[&[Value]],
    ) -> Result<Vec<Option<Vec<AggState>>>> {
        self.load_encoded_states(plan, keys)?
            .into_iter()
            .map(|bytes| match bytes {
                None => Ok(None),
                Some(b) => Ok(Some(tally_views::agg::decode_states(plan.agg_kinds(), &b)?)),
            })
            .collect()
    }

    /// The stored states of the given groups as the view table holds them ([`encode_states`]
    /// output; `None` for groups not stored yet), for a flush to merge without decoding them
    /// ([`ViewPlan::merge_row_encoded`]).
    ///
    /// [`encode_states`]: tally_views::agg::encode_states
    pub fn load_encoded_states(
        &self,
        plan: &ViewPlan,
        keys: &[&[Value]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
        Ok(match self {
            TenantStore::Sqlite(s) => s.load_states(&plan.name, &encoded)?,
            TenantStore::Postgres(p) => p.conn().load_states(&plan.name, &encoded)?,
            TenantStore::Memory(m) => m.load_states(&plan.name, &encoded),
        })
    }

    /// Writes the rows of each view and its position, all in one transaction.
    pub fn flush(&mut self, flushes: &[ViewFlush<'_>]) -> Result<()> {
        let encoded = EncodedFlush::all(flushes);
        match self {
            TenantStore::Sqlite(s) => s.flush(&encoded),
            TenantStore::Postgres(p) => p.conn().flush(&encoded),
            TenantStore::Memory(m) => {
                m.flush(&encoded);
                Ok(())
            }
        }
    }

    /// The stored groups of a view whose time bucket lies in `[from, to)` when given.
    pub fn scan_view(
        &self,
        plan: &ViewPlan,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<StoredGroup>> {
        Ok(self.snapshot_view(plan, from, to, None)?.groups)
    }

    /// From one snapshot: a view's stored groups in `[from, to)`, the position and plan
    /// fingerprint they hold, and, with `tail`, every event of that stream after the position.
    /// What a process that does not write the view needs to answer a query exactly.
    pub fn snapshot_view(
        &self,
        plan: &ViewPlan,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        tail: Option<&StreamDef>,
    ) -> Result<ViewSnapshot> {
        let raw = match self {
            TenantStore::Sqlite(s) => s.snapshot_view(plan, from, to, tail)?,
            TenantStore::Postgres(p) => p.conn().snapshot_view(plan, from, to, tail)?,
            TenantStore::Memory(m) => m.snapshot_view(plan, from, to, tail),
        };
        let groups = raw
            .rows
            .into_iter()
            .map(|(key, state)| {
                Ok((
                    decode_key(&key, plan.keys.len())?,
                    tally_views::agg::decode_states(plan.agg_kinds(), &state)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ViewSnapshot {
            position: raw.position,
            fingerprint: raw.fingerprint,
            groups,
            tail: raw.tail,
        })
    }

    /// On SQLite: commits from now on are not synced when they return; the returned
    /// [`WalSync`] makes them durable, on any thread, until
    /// [`TenantStore::end_deferred_sync`]. `None` (nothing changed) on other stores, and on
    /// SQLite before its WAL file exists.
    pub fn defer_sync(&mut self) -> Result<Option<std::sync::Arc<WalSync>>> {
        match self {
            TenantStore::Sqlite(s) => s.defer_sync(),
            TenantStore::Postgres(_) | TenantStore::Memory(_) => Ok(None),
        }
    }

    /// Ends [`TenantStore::defer_sync`]: commits are durable when they return again.
    pub fn end_deferred_sync(&mut self) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.end_deferred_sync(),
            TenantStore::Postgres(_) | TenantStore::Memory(_) => Ok(()),
        }
    }

    /// Adds rejected events to the tenant's rejection log.
    pub fn log_rejections(&mut self, rejected: &[Rejected]) -> Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        match self {
            TenantStore::Sqlite(s) => s.log_rejections(rejected),
            TenantStore::Postgres(p) => p.conn().log_rejections(rejected),
            TenantStore::Memory(m) => {
                m.log_rejections(rejected);
                Ok(())
            }
        }
    }

    /// Up to `limit` logged rejections with ids above `after`, oldest first.
    pub fn rejections(&self, after: u64, limit: usize) -> Result<Vec<LoggedRejection>> {
        match self {
            TenantStore::Sqlite(s) => s.rejections(after, limit),
            TenantStore::Postgres(p) => p.conn().rejections(after, limit),
            TenantStore::Memory(m) => Ok(m.rejections(after, limit)),
        }
    }

    /// Deletes logged rejections older than `before`, and the oldest beyond the newest `keep`.
    /// Returns how many were deleted.
    pub fn trim_rejections(&mut self, before: Timestamp, keep: usize) -> Result<u64> {
        match self {
            TenantStore::Sqlite(s) => s.trim_rejections(before, keep),
            TenantStore::Postgres(p) => p.conn().trim_rejections(before, keep),
            TenantStore::Memory(m) => Ok(m.trim_rejections(before, keep)),
        }
    }

    /// Deletes events older than `before` among those at or below `max_seq` (the lowest position
    /// of the stream's views, so no unapplied event is lost). Returns how many were deleted.
    pub fn delete_events_before(
        &mut self,
        stream: &StreamDef,
        before: Timestamp,
        max_seq: u64,
    ) -> Result<u64> {
        match self {
            TenantStore::Sqlite(s) => s.delete_events_before(stream, before, max_seq),
            TenantStore::Postgres(p) => p.conn().delete_events_before(stream, before, max_seq),
            TenantStore::Memory(m) => Ok(m.delete_events_before(stream, before, max_seq)),
        }
    }

    /// The events of `stream` whose column `columns[i]` (TEXT) holds one of `ids`, for any `i`,
    /// in sequence order: a person's events.
    pub fn events_of(
        &self,
        stream: &StreamDef,
        columns: &[usize],
        ids: &[&str],
    ) -> Result<Vec<Event>> {
        if columns.is_empty() || ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            TenantStore::Sqlite(s) => s.events_of(stream, columns, ids),
            TenantStore::Postgres(p) => p.conn().events_of(stream, columns, ids),
            TenantStore::Memory(m) => Ok(m.events_of(stream, columns, ids)),
        }
    }

    /// Deletes events by sequence number (with their dedupe keys, so the same event may be sent
    /// again), replaces or deletes the view rows recomputed without them, and writes records,
    /// in one transaction. View positions do not move. On a shared store, fails with
    /// [`StoreError::Busy`] if another node rebuilt a view meanwhile.
    pub fn erase(&mut self, erasure: &Erasure<'_>) -> Result<()> {
        let encoded = EncodedErasure {
            events: &erasure.events,
            views: erasure
                .views
                .iter()
                .map(|c| EncodedCorrection {
                    plan: c.plan,
                    rows: c.rows.iter().map(EncodedRow::new).collect(),
                    removed: c.removed.iter().map(|k| encode_key(k)).collect(),
                })
                .collect(),
            records: &erasure.records,
        };
        match self {
            TenantStore::Sqlite(s) => s.erase(&encoded),
            TenantStore::Postgres(p) => p.conn().erase(&encoded),
            TenantStore::Memory(m) => {
                m.erase(&encoded);
                Ok(())
            }
        }
    }

    /// Deletes the view rows whose time bucket starts before `before`.
    pub fn delete_view_rows_before(&mut self, plan: &ViewPlan, before: Timestamp) -> Result<u64> {
        match self {
            TenantStore::Sqlite(s) => s.delete_view_rows_before(plan, before),
            TenantStore::Postgres(p) => p.conn().delete_view_rows_before(plan, before),
            TenantStore::Memory(m) => Ok(m.delete_view_rows_before(plan, before)),
        }
    }

    /// Inserts or replaces rows of a table by primary key, in one transaction. Each row has the
    /// table's columns in order.
    pub fn upsert_rows(&mut self, table: &TableDef, rows: &[Vec<Value>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = rows
            .iter()
            .map(|row| {
                (
                    encode_key(std::slice::from_ref(&row[table.key])),
                    encode_key(row),
                )
            })
            .collect();
        match self {
            TenantStore::Sqlite(s) => s.upsert_rows(&table.name, &encoded),
            TenantStore::Postgres(p) => p.conn().upsert_rows(&table.name, &encoded),
            TenantStore::Memory(m) => {
                m.upsert_rows(&table.name, &encoded);
                Ok(())
            }
        }
    }

    /// Deletes the row of a table with this key; whether there was one.
    pub fn delete_row(&mut self, table: &TableDef, key: &Value) -> Result<bool> {
        let key = encode_key(std::slice::from_ref(key));
        match self {
            TenantStore::Sqlite(s) => s.delete_row(&table.name, &key),
            TenantStore::Postgres(p) => p.conn().delete_row(&table.name, &key),
            TenantStore::Memory(m) => Ok(m.delete_row(&table.name, &key)),
        }
    }

    /// Every row of a table, in key order, with the table's columns (columns added after a
    /// row was written are `NULL` in it).
    pub fn table_rows(&self, table: &TableDef) -> Result<Vec<Vec<Value>>> {
        let encoded = match self {
            TenantStore::Sqlite(s) => s.table_rows(&table.name)?,
            TenantStore::Postgres(p) => p.conn().table_rows(&table.name)?,
            TenantStore::Memory(m) => m.table_rows(&table.name),
        };
        encoded
            .iter()
            .map(|bytes| {
                let mut row = decode_values(bytes)?;
                if row.len() > table.columns.len() {
                    return Err(StoreError::Migration(format!(
                        "a row of table {} has {} values; the table has {} columns",
                        table.name,
                        row.len(),
                        table.columns.len()
                    )));
                }
                row.resize(table.columns.len(), Value::Null);
                Ok(row)
            })
            .collect()
    }

    /// The tables this tenant has rows of.
    pub fn tables_with_rows(&self) -> Result<Vec<String>> {
        match self {
            TenantStore::Sqlite(s) => s.tables_with_rows(),
            TenantStore::Postgres(p) => p.conn().tables_with_rows(),
            TenantStore::Memory(m) => Ok(m.tables_with_rows()),
        }
    }

    /// Deletes every row of a table (the table was dropped).
    pub fn drop_table_rows(&mut self, name: &str) -> Result<()> {
        match self {
            TenantStore::Sqlite(s) => s.drop_table_rows(name),
            TenantStore::Postgres(p) => p.conn().drop_table_rows(name),
            TenantStore::Memory(m) => {
                m.drop_table_rows(name);
                Ok(())
            }
        }
    }

    /// Applies changes to the tenant's records (alerts and what they keep) in one transaction.
    pub fn write_records(&mut self, writes: &[RecordWrite]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        match self {
            TenantStore::Sqlite(s) => s.write_records(writes),
            TenantStore::Postgres(p) => p.conn().write_records(writes),
            TenantStore::Memory(m) => {
                m.write_records(writes);
                Ok(())
            }
        }
    }

    /// The records of one kind with keys in `[from, to)`, in key order (bytewise), at most
    /// `limit`: `(key, body)`.
    pub fn records(
        &self,
        kind: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        match self {
            TenantStore::Sqlite(s) => s.records(kind, from, to, limit),
            TenantStore::Postgres(p) => p.conn().records(kind, from, to, limit),
            TenantStore::Memory(m) => Ok(m.records(kind, from, to, limit)),
        }
    }

    /// Deletes the records of one kind with keys in `[from, to)`; how many there were.
    pub fn delete_records(&mut self, kind: &str, from: &str, to: &str) -> Result<u64> {
        match self {
            TenantStore::Sqlite(s) => s.delete_records(kind, from, to),
            TenantStore::Postgres(p) => p.conn().delete_records(kind, from, to),
            TenantStore::Memory(m) => Ok(m.delete_records(kind, from, to)),
        }
    }
}
