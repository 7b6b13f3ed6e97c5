//! The embedded SQLite backend: `catalog.db` plus one database file per tenant.
//!
//! One file per tenant makes isolation physical: a tenant's connection cannot name another
//! tenant's tables. Every database runs in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives power loss, and an ingest is acknowledged only after its commit; the
//! one exception is a tenant's deferred sync ([`crate::sqlite_sync`]: commits synced by the
//! caller's thread before it acknowledges them). A
//! tenant database's checkpoints run mostly on a background thread of their own
//! ([`crate::sqlite_checkpoint`]); the committing thread only finishes them.
//!
//! Raw events are stored in blocks of up to 1,024 events ([`crate::sqlite_events`]) with their
//! sequence numbers. Sequence numbers are handed out from `tally_streams.last_seq` inside the
//! appending transaction: dense (a duplicate costs no number), never reused (retention may
//! delete the newest rows), and correct with several processes writing one tenant. View tables
//! keep the encoded group key, every view column in readable form (timestamps as RFC 3339 text)
//! and the encoded states, so `sqlite3` and BI tools can read them directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hashbrown::HashTable;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use tally_views::{Event, StreamDef, Timestamp, Type, Value, ViewPlan};

use crate::error::{Result, StoreError};
use crate::migrations::{MIGRATIONS_TABLE, Migration, TENANT};
use crate::sqlite_checkpoint::Checkpoints;
use crate::sqlite_events;
use crate::sqlite_keys::{self, KeyFilter, KeyHashes, Probe, RecentKeys};
use crate::sqlite_spans::{self, NewSpans};
use crate::sqlite_sync::WalSync;
use crate::types::{
    EncodedErasure, EncodedFlush, EncodedRow, KeyKind, KeyRecord, LoggedRejection, Materialized,
    MaterializedView, RawSnapshot, RecordWrite, Rejected, TenantInfo,
};

/// The SQLite catalog of a data directory.
pub struct SqliteStore {
    dir: PathBuf,
    /// The catalog connection; catalog operations are short and never overlap an `.await`.
    catalog: Mutex<Connection>,
}

/// One tenant's SQLite database.
pub struct SqliteTenant {
    /// The background checkpoints of `conn`'s database; declared first so that it is dropped
    /// (waiting for a running checkpoint) before the connection closes.
    _checkpoints: Checkpoints,
    conn: Connection,
    /// Per stream with a dedupe key, after this process's last append to it: the keys of its
    /// rows after `keys_merged` (see [`crate::sqlite_keys`]).
    recent_keys: HashMap<String, RecentKeys>,
    /// Per stream with a dedupe key: the filter of its key blocks, as of this process's last
    /// write to it.
    key_filters: HashMap<String, KeyFilter>,
    /// The WAL, opened by the first [`SqliteTenant::defer_sync`] and kept: a later one that
    /// found another file at its path would sync that file, not the one SQLite writes.
    wal: Option<Arc<WalSync>>,
}

/// An append written but not committed ([`SqliteTenant::stage`]). Its stream's recent keys
/// and key filter go back to the tenant only when the commit succeeds.
pub(crate) struct SqliteStaged<'a> {
    tx: Transaction<'a>,
    stream: String,
    recent: Option<RecentKeys>,
    filter: Option<KeyFilter>,
    recent_keys: &'a mut HashMap<String, RecentKeys>,
    key_filters: &'a mut HashMap<String, KeyFilter>,
}

impl SqliteStaged<'_> {
    /// Commits the append (`synchronous=FULL`: durable when this returns).
    pub(crate) fn commit(self) -> Result<()> {
        self.tx.commit()?;
        if let Some(recent) = self.recent {
            self.recent_keys.insert(self.stream.clone(), recent);
        }
        if let Some(filter) = self.filter {
            self.key_filters.insert(self.stream, filter);
        }
        Ok(())
    }
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Migration(format!(
            "{} cannot use WAL mode (got {mode})",
            path.display()
        )));
    }
    // A page cache of up to 16 MB (SQLite's default is 2 MB): the dedupe index's probes and the
    // views' flushes read the same pages again and again. It fills only as pages are read.
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-16384;",
    )?;
    // An append's statements (blocks, key probes and merges, spans) and a flush's outnumber the
    // default cache of 16.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Maps "no such table" on the catalog to the actionable error.
fn catalog_error(e: rusqlite::Error) -> StoreError {
    if e.to_string().contains("no such table") {
        StoreError::NotMigrated
    } else {
        StoreError::Sqlite(e)
    }
}

fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

impl SqliteStore {
    pub(crate) fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir.join("tenants")).map_err(|e| io_error(dir, e))?;
        let conn = open_connection(&dir.join("catalog.db"))?;
        conn.execute_batch(MIGRATIONS_TABLE)?;
        Ok(SqliteStore {
            dir: dir.to_owned(),
            catalog: Mutex::new(conn),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection inconsistent: SQLite rolls
        // back any open transaction, so a poisoned lock is safe to reuse.
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn applied_migrations(&self) -> Result<Vec<i64>> {
        applied_migrations(&self.conn())
    }

    pub(crate) fn run_migration(&self, m: &Migration, up: bool) -> Result<()> {
        run_migration(&mut self.conn(), m, up)
    }

    pub(crate) fn schema(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, definition FROM schema_objects ORDER BY position")
            .map_err(catalog_error)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn save_schema(&self, definitions: &[(String, String)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM schema_objects", [])
            .map_err(catalog_error)?;
        for (i, (name, def)) in definitions.iter().enumerate() {
            tx.execute(
                "INSERT INTO schema_objects (position, name, definition) VALUES (?, ?, ?)",
                params![i as i64, name, def],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn create_tenant(&self, name: &str, time_zone: &str, now: Timestamp) -> Result<()> {
        let conn = self.conn();
        let inserted = conn
            .execute(
                "INSERT INTO tenants (name, time_zone, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                params![name, time_zone, now.to_string()],
            )
            .map_err(catalog_error)?;
        if inserted == 0 {
            return Err(StoreError::TenantExists(name.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn forget_tenant(&self, name: &str) -> Result<()> {
        {
            let conn = self.conn();
            conn.execute("DELETE FROM api_keys WHERE tenant = ?", params![name])
                .map_err(catalog_error)?;
            conn.execute(
                "DELETE FROM scheduled_tenants WHERE tenant = ?",
                params![name],
            )
            .map_err(catalog_error)?;
            conn.execute("DELETE FROM tenants WHERE name = ?", params![name])
                .map_err(catalog_error)?;
        }
        let base = self.dir.join("tenants").join(format!("{name}.db"));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = base.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        path: std::path::PathBuf::from(path).display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn set_scheduled(&self, tenant: &str, scheduled: bool) -> Result<()> {
        let conn = self.conn();
        if scheduled {
            conn.execute(
                "INSERT INTO scheduled_tenants (tenant) VALUES (?) ON CONFLICT DO NOTHING",
                params![tenant],
            )
        } else {
            conn.execute(
                "DELETE FROM scheduled_tenants WHERE tenant = ?",
                params![tenant],
            )
        }
        .map_err(catalog_error)?;
        Ok(())
    }

    pub(crate) fn scheduled_tenants(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT tenant FROM scheduled_tenants ORDER BY tenant")
            .map_err(catalog_error)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn tenants(&self) -> Result<Vec<TenantInfo>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, time_zone, created_at FROM tenants ORDER BY name")
            .map_err(catalog_error)?;
        let rows = stmt.query_map([], |r| {
            let created: String = r.get(2)?;
            Ok(TenantInfo {
                name: r.get(0)?,
                time_zone: r.get(1)?,
                created_at: Timestamp::parse(&created).unwrap_or(Timestamp(0)),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn create_key(&self, hash: &[u8], record: &KeyRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO api_keys (hash, tenant, kind, prefix, created_at) VALUES (?, ?, ?, ?, ?)",
                params![hash, record.tenant, record.kind.as_str(), record.prefix, record.created_at.to_string()],
            )
            .map_err(catalog_error)?;
        Ok(())
    }

    pub(crate) fn find_key(&self, hash: &[u8]) -> Result<Option<KeyRecord>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT tenant, kind, prefix, created_at, revoked_at IS NOT NULL FROM api_keys WHERE hash = ?",
            [hash],
            |r| {
                let kind: String = r.get(1)?;
                let created: String = r.get(3)?;
                Ok(KeyRecord {
                    tenant: r.get(0)?,
                    kind: KeyKind::parse(&kind).unwrap_or(KeyKind::Read),
                    prefix: r.get(2)?,
                    created_at: Timestamp::parse(&created).unwrap_or(Timestamp(0)),
                    revoked: r.get(4)?,
                })
            },
        )
        .optional()
        .map_err(catalog_error)
    }

    pub(crate) fn revoke_key(&self, tenant: &str, prefix: &str) -> Result<usize> {
        self.conn()
            .execute(
                "UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND prefix = ? AND revoked_at IS NULL",
                params![now_text(), tenant, prefix],
            )
            .map_err(catalog_error)
    }

    pub(crate) fn tenant(&self, name: &str) -> Result<SqliteTenant> {
        let path = self.dir.join("tenants").join(format!("{name}.db"));
        let mut conn = open_connection(&path)?;
        conn.execute_batch(MIGRATIONS_TABLE)?;
        let known = TENANT.last().map_or(0, |m| m.version);
        let too_new = |applied: &[i64]| match applied.iter().max() {
            Some(&newest) if newest > known => Err(StoreError::TooNew {
                found: newest,
                known,
            }),
            _ => Ok(()),
        };
        let applied = applied_migrations(&conn)?;
        too_new(&applied)?;
        if TENANT.iter().any(|m| !applied.contains(&m.version)) {
            // Checked again under the write lock: two processes opening the tenant at once
            // apply each migration once.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let applied = applied_migrations(&tx)?;
            too_new(&applied)?;
            for m in TENANT {
                if !applied.contains(&m.version) {
                    migrate(&tx, m, true)?;
                    if m.version == sqlite_events::MIGRATION {
                        convert_streams(&tx)?;
                    }
                }
            }
            tx.commit()?;
        }
        let checkpoints = Checkpoints::install(&mut conn, &path)?;
        Ok(SqliteTenant {
            _checkpoints: checkpoints,
            conn,
            recent_keys: HashMap::new(),
            key_filters: HashMap::new(),
            wal: None,
        })
    }
}

/// The stored definitions of a tenant's streams: each parsed, or its name with the parser's
/// complaint when this version cannot read it.
fn stream_defs(tx: &Transaction<'_>) -> Result<Vec<std::result::Result<StreamDef, String>>> {
    let mut stmt = tx.prepare("SELECT name, definition FROM tally_streams ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut defs = Vec::new();
    for row in rows {
        let (name, sql) = row?;
        defs.push(tally_views::sql::parse_stream(&sql).map_err(|_| name));
    }
    Ok(defs)
}

/// Converts every stream's raw events into blocks ([`sqlite_events::convert`]).
fn convert_streams(tx: &Transaction<'_>) -> Result<()> {
    for def in stream_defs(tx)? {
        match def {
            Ok(def) => sqlite_events::convert(tx, &def).map_err(|e| {
                StoreError::Migration(format!("converting stream {}: {e}", def.name))
            })?,
            Err(name) => sqlite_events::convert_untyped(tx, &name)
                .map_err(|e| StoreError::Migration(format!("converting stream {name}: {e}")))?,
        }
    }
    Ok(())
}

/// Turns a tenant database back into the layout before the event blocks (a row table per
/// stream, migration 9 not applied): what tests of the upgrades start from.
pub(crate) fn to_row_layout(path: &Path) -> Result<()> {
    let mut conn = open_connection(path)?;
    let tx = conn.transaction()?;
    for def in stream_defs(&tx)? {
        let def = def.map_err(|name| StoreError::Migration(format!("stream {name}")))?;
        sqlite_events::to_rows(&tx, &def)?;
    }
    tx.execute(
        "DELETE FROM tally_migrations WHERE version >= ?",
        [sqlite_events::MIGRATION],
    )?;
    tx.commit()?;
    Ok(())
}

fn applied_migrations(conn: &Connection) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT version FROM tally_migrations ORDER BY version")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn run_migration(conn: &mut Connection, m: &Migration, up: bool) -> Result<()> {
    let tx = conn.transaction()?;
    migrate(&tx, m, up)?;
    tx.commit()?;
    Ok(())
}

/// Applies (or reverts) one migration inside `tx`, with its row in `tally_migrations`.
fn migrate(tx: &rusqlite::Transaction<'_>, m: &Migration, up: bool) -> Result<()> {
    let sql = if up { m.up } else { m.down };
    tx.execute_batch(sql).map_err(|e| {
        StoreError::Migration(format!(
            "{} {}: {e}",
            if up { "applying" } else { "reverting" },
            m.name
        ))
    })?;
    if up {
        tx.execute(
            "INSERT INTO tally_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            params![m.version, m.name, now_text()],
        )?;
    } else {
        tx.execute(
            "DELETE FROM tally_migrations WHERE version = ?",
            [m.version],
        )?;
    }
    Ok(())
}

/// Whether the database has a table of this name.
pub(crate) fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

pub(crate) fn ident(name: &str) -> String {
    // Names are validated by the compiler ([a-z][a-z0-9_]*), so quoting cannot be escaped.
    format!("\"{name}\"")
}

pub(crate) fn column_type(ty: Type) -> &'static str {
    match ty {
        Type::Text | Type::Decimal { .. } | Type::Json => "TEXT",
        Type::Boolean | Type::BigInt => "INTEGER",
        Type::Double => "REAL",
        Type::Timestamp => "INTEGER",
    }
}

/// A value as stored in a raw event table of the row layout (converted by migration 9).
pub(crate) fn raw_sql(v: &Value) -> ToSqlOutput<'_> {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => ToSqlOutput::Owned(S::Null),
        Value::Bool(b) => ToSqlOutput::Owned(S::Integer(i64::from(*b))),
        Value::Int(i) => ToSqlOutput::Owned(S::Integer(*i)),
        Value::Double(d) => ToSqlOutput::Owned(S::Real(*d)),
        Value::Decimal(d) => ToSqlOutput::Owned(S::Text(d.to_string())),
        Value::Timestamp(t) => ToSqlOutput::Owned(S::Integer(t.0)),
        Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
    }
}

/// A value as shown in a view table: like raw, but timestamps as RFC 3339 text.
fn view_sql(v: &Value) -> ToSqlOutput<'_> {
    match v {
        Value::Timestamp(t) => ToSqlOutput::Owned(rusqlite::types::Value::Text(t.to_string())),
        other => raw_sql(other),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(tally_views::codec::CodecError::Cell(what.to_owned()))
}

/// Reads a cell of type `ty` of a raw event table of the row layout.
pub(crate) fn raw_value(v: ValueRef<'_>, ty: Type) -> Result<Value> {
    use std::sync::Arc;
    Ok(match (v, ty) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), Type::Boolean) => Value::Bool(i != 0),
        (ValueRef::Integer(i), Type::BigInt) => Value::Int(i),
        (ValueRef::Integer(i), Type::Timestamp) => Value::Timestamp(Timestamp(i)),
        (ValueRef::Real(d), Type::Double) => Value::Double(d),
        (ValueRef::Integer(i), Type::Double) => Value::Double(i as f64),
        (ValueRef::Text(t), Type::Decimal { .. }) => {
            let s = std::str::from_utf8(t).map_err(|_| corrupt("decimal text"))?;
            Value::Decimal(tally_views::decimal::Decimal::parse(s).map_err(|_| corrupt("decimal"))?)
        }
        (ValueRef::Text(t), Type::Text) => {
            Value::text(std::str::from_utf8(t).map_err(|_| corrupt("text"))?)
        }
        (ValueRef::Text(t), Type::Json) => Value::Json(Arc::from(
            std::str::from_utf8(t).map_err(|_| corrupt("json"))?,
        )),
        (other, ty) => {
            return Err(corrupt(&format!(
                "a {ty} column holds {:?}",
                other.data_type()
            )));
        }
    })
}

/// A conservative text bound for a timestamp column of a view table: whole seconds, shifted one
/// second outward, so that the text comparison never excludes a row inside the exact bounds.
fn text_bound(t: Timestamp, lower: bool) -> String {
    const SECOND: i64 = 1_000_000;
    let seconds = if lower {
        t.0.div_euclid(SECOND) - 1
    } else {
        t.0.div_euclid(SECOND) + 2
    };
    Timestamp(seconds * SECOND).to_string()
}

impl SqliteTenant {
    pub(crate) fn materialized(&self) -> Result<Materialized> {
        let mut streams = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT name, definition FROM tally_streams ORDER BY name")?;
        for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            streams.push(row?);
        }
        let mut views = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT name, fingerprint, position, failed FROM tally_views ORDER BY name")?;
        for row in stmt.query_map([], |r| {
            Ok(MaterializedView {
                name: r.get(0)?,
                fingerprint: r.get(1)?,
                position: r.get::<_, i64>(2)? as u64,
                failed: r.get::<_, i64>(3)? as u64,
            })
        })? {
            views.push(row?);
        }
        Ok(Materialized { streams, views })
    }

    pub(crate) fn create_stream(&mut self, def: &StreamDef) -> Result<()> {
        let tx = self.conn.transaction()?;
        sqlite_events::create(&tx, &def.name)?;
        if def.has_dedupe_key() {
            sqlite_keys::create(&tx, &def.name)?;
        }
        sqlite_spans::create(&tx, &def.name)?;
        tx.execute(
            "INSERT OR REPLACE INTO tally_streams (name, definition, last_seq, keys_epoch) \
             VALUES (?, ?, 0, random())",
            params![def.name, def.sql()],
        )?;
        tx.commit()?;
        self.recent_keys.remove(&def.name);
        self.key_filters.remove(&def.name);
        Ok(())
    }

    pub(crate) fn alter_stream(&mut self, old: &StreamDef, new: &StreamDef) -> Result<()> {
        // Columns are only ever added, at the end: events stored before read them as NULL.
        debug_assert!(
            old.columns.len() <= new.columns.len()
                && old
                    .columns
                    .iter()
                    .zip(&new.columns)
                    .all(|(a, b)| a.name == b.name && a.ty == b.ty)
        );
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE tally_streams SET definition = ? WHERE name = ?",
            params![new.sql(), new.name],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn drop_stream(&mut self, name: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        sqlite_events::drop(&tx, name)?;
        sqlite_keys::drop(&tx, name)?;
        sqlite_spans::drop(&tx, name)?;
        tx.execute("DELETE FROM tally_streams WHERE name = ?", [name])?;
        tx.commit()?;
        self.recent_keys.remove(name);
        self.key_filters.remove(name);
        Ok(())
    }

    pub(crate) fn reset_view(&mut self, plan: &ViewPlan) -> Result<()> {
        let tx = self.conn.transaction()?;
        let table = ident(&plan.name);
        let mut cols = vec!["\"_key\" BLOB PRIMARY KEY".to_owned()];
        for c in &plan.columns {
            let ty = match c.ty {
                Type::Timestamp => "TEXT",
                other => column_type(other),
            };
            cols.push(format!("{} {ty}", ident(&c.name)));
        }
        cols.push("\"_state\" BLOB NOT NULL".to_owned());
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({}) WITHOUT ROWID",
            cols.join(", ")
        ))?;
        if let Some(b) = plan.bucket {
            tx.execute_batch(&format!(
                "CREATE INDEX {} ON {table} ({})",
                ident(&format!("{}__bucket", plan.name)),
                ident(&plan.keys[b].name)
            ))?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO tally_views (name, fingerprint, position) VALUES (?, ?, 0)",
            params![plan.name, plan.fingerprint()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn drop_view(&mut self, name: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(name)))?;
        tx.execute("DELETE FROM tally_views WHERE name = ?", [name])?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn append(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
        hashed: Option<KeyHashes>,
    ) -> Result<Vec<Option<u64>>> {
        let (seqs, staged) = self.stage(stream, rows, hashed)?;
        staged.commit()?;
        Ok(seqs)
    }

    /// Writes an append's rows (each row's sequence number, `None` for a duplicate) in a
    /// transaction left open: [`SqliteStaged::commit`] makes them durable; dropping it rolls
    /// them back.
    pub(crate) fn stage(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
        hashed: Option<KeyHashes>,
    ) -> Result<(Vec<Option<u64>>, SqliteStaged<'_>)> {
        let SqliteTenant {
            conn,
            recent_keys,
            key_filters,
            ..
        } = self;
        // Taken out while the transaction runs: put back only after its commit, so that a
        // failed append leaves nothing behind and the next one reads the keys again.
        let cached = recent_keys.remove(&stream.name);
        let filter = key_filters.remove(&stream.name);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Cached statements: a group commit of a few single events paid for parsing them.
        let (mut last, merged, epoch): (i64, i64, i64) = tx
            .prepare_cached(
                "SELECT last_seq, keys_merged, keys_epoch FROM tally_streams WHERE name = ?",
            )?
            .query_row([&stream.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let mut spans = NewSpans::default();
        let mut recent = match (stream.has_dedupe_key(), cached) {
            (false, _) => None,
            (true, Some(r)) if r.in_step(last, merged, epoch) => Some(r),
            (true, _) => Some(RecentKeys::load(&tx, stream, last, merged, epoch)?),
        };
        let mut filter = match &recent {
            Some(r) => Some(KeyFilter::current(filter, &tx, stream, r.merged(), epoch)?),
            None => None,
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut added: Vec<(i64, i64)> = Vec::new();
        // The rows to store, in order: their sequence numbers follow `last` densely.
        let mut kept: Vec<usize> = Vec::with_capacity(rows.len());
        let first = last + 1;
        {
            let mut probe = match &recent {
                Some(recent) => Some((recent, Probe::new(&tx, stream)?)),
                None => None,
            };
            // Each row's key and its hash (none for a NULL key or a stream without keys), unless
            // the caller computed them, and the stored keys of those hashes, looked up in the
            // key blocks for the whole batch at once (in key order, each block read once).
            let KeyHashes { keys, hashes, .. } = KeyHashes::for_rows(hashed, stream, rows);
            let stored = match &mut probe {
                Some((.., probe)) => probe.stored(
                    hashes.iter().flatten().copied().collect(),
                    filter.as_ref().expect("a stream with keys has a filter"),
                )?,
                None => HashTable::new(),
            };
            // Keys of this batch, as (hash, row index): a repeated one is a duplicate without a
            // look at the tables.
            let mut batch: HashTable<(i64, usize)> = HashTable::new();
            for (i, (row, &hash)) in rows.iter().zip(&hashes).enumerate() {
                let seq = last + 1;
                if let (Some(h), Some(key), Some((recent, probe))) = (hash, &keys[i], &mut probe) {
                    let repeated = batch
                        .iter_hash(h as u64)
                        .any(|&(bh, j)| bh == h && keys[j].as_ref() == Some(key));
                    if repeated || probe.holds(&stored, recent, h, key)? {
                        out.push(None);
                        continue;
                    }
                    batch.insert_unique(h as u64, (h, i), |e| e.0 as u64);
                    added.push((h, seq));
                }
                spans.add(seq, &row[stream.event_time]);
                last = seq;
                out.push(Some(seq as u64));
                kept.push(i);
            }
        }
        sqlite_events::append(&tx, stream, rows, &kept, first)?;
        tx.prepare_cached("UPDATE tally_streams SET last_seq = ? WHERE name = ?")?
            .execute(params![last, stream.name])?;
        spans.write(&tx, &stream.name)?;
        if let (Some(recent), Some(filter)) = (&mut recent, &mut filter) {
            sqlite_keys::record(&tx, stream, recent, added, last, filter)?;
        }
        Ok((
            out,
            SqliteStaged {
                tx,
                stream: stream.name.clone(),
                recent,
                filter,
                recent_keys,
                key_filters,
            },
        ))
    }

    pub(crate) fn read_events(
        &self,
        stream: &StreamDef,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        sqlite_events::read(&self.conn, stream, after, limit)
    }

    pub(crate) fn load_states(&self, view: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        // One read transaction for every lookup: on its own, each statement took and released
        // the WAL read lock (two `fcntl` calls a key, 40 % of a flush's loading).
        let tx = self.conn.unchecked_transaction()?;
        let states = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT \"_state\" FROM {} WHERE \"_key\" = ?",
                ident(view)
            ))?;
            keys.iter()
                .map(|k| Ok(stmt.query_row([k], |r| r.get(0)).optional()?))
                .collect::<Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(states)
    }

    pub(crate) fn flush(&mut self, flushes: &[EncodedFlush<'_>]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for f in flushes {
            upsert_view_rows(&tx, f.plan, &f.rows)?;
            tx.prepare_cached(
                "UPDATE tally_views SET position = ?, failed = failed + ? WHERE name = ?",
            )?
            .execute(params![f.position as i64, f.failed as i64, f.plan.name])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn last_seq(&self, stream: &str) -> Result<u64> {
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT last_seq FROM tally_streams WHERE name = ?",
                [stream],
                |r| r.get(0),
            )
            .optional()?;
        Ok(last.unwrap_or(0) as u64)
    }

    pub(crate) fn events_of(
        &self,
        stream: &StreamDef,
        columns: &[usize],
        ids: &[&str],
    ) -> Result<Vec<Event>> {
        sqlite_events::matching(&self.conn, stream, columns, ids)
    }

    pub(crate) fn erase(&mut self, erasure: &EncodedErasure<'_>) -> Result<()> {
        // Immediate, as an append: it reads before it writes, and a deferred transaction would
        // fail at once instead of waiting when another process wrote in between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut touched = Vec::new();
        for (stream, seqs) in erasure.events {
            if seqs.is_empty() {
                continue;
            }
            let keyed = stream.has_dedupe_key()
                && (self.recent_keys.contains_key(&stream.name)
                    || sqlite_keys::converted(&tx, &stream.name)?);
            let mut pairs = Vec::new();
            sqlite_events::remove(&tx, stream, seqs, |seq, row| {
                if keyed && let Some(h) = sqlite_keys::row_hash(stream, row) {
                    pairs.push((h, seq));
                }
            })?;
            if keyed {
                sqlite_keys::forget(&tx, &stream.name, &pairs)?;
            }
            if stream.has_dedupe_key() {
                // As for retention: recent keys kept in memory may be of deleted rows.
                tx.execute(
                    "UPDATE tally_streams SET keys_epoch = random() WHERE name = ?",
                    [&stream.name],
                )?;
                touched.push(stream.name.clone());
            }
        }
        for c in &erasure.views {
            upsert_view_rows(&tx, c.plan, &c.rows)?;
            let mut delete = tx.prepare_cached(&format!(
                "DELETE FROM {} WHERE \"_key\" = ?",
                ident(&c.plan.name)
            ))?;
            for key in &c.removed {
                delete.execute([key])?;
            }
        }
        write_records_in(&tx, erasure.records)?;
        tx.commit()?;
        for name in touched {
            self.recent_keys.remove(&name);
            self.key_filters.remove(&name);
        }
        Ok(())
    }

    pub(crate) fn snapshot_view(
        &self,
        plan: &ViewPlan,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        tail: Option<&StreamDef>,
    ) -> Result<RawSnapshot> {
        let table = ident(&plan.name);
        let mut sql = format!("SELECT \"_key\", \"_state\" FROM {table}");
        let mut bounds: Vec<String> = Vec::new();
        if let Some(b) = plan.bucket {
            let col = ident(&plan.keys[b].name);
            let mut conds = Vec::new();
            if let Some(from) = from {
                conds.push(format!("{col} >= ?"));
                bounds.push(text_bound(from, true));
            }
            if let Some(to) = to {
                conds.push(format!("{col} < ?"));
                bounds.push(text_bound(to, false));
            }
            if !conds.is_empty() {
                sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
            }
        }
        // One read transaction: position, rows and tail come from the same snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let (position, fingerprint): (i64, String) = tx
            .query_row(
                "SELECT position, fingerprint FROM tally_views WHERE name = ?",
                [&plan.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, String::new()));
        let rows = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(bounds.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let tail = match tail {
            Some(stream) => self.read_events(stream, position as u64, usize::MAX)?,
            None => Vec::new(),
        };
        tx.commit()?;
        Ok(RawSnapshot {
            position: position as u64,
            fingerprint,
            rows,
            tail,
        })
    }

    pub(crate) fn delete_events_before(
        &mut self,
        stream: &StreamDef,
        before: Timestamp,
        max_seq: u64,
    ) -> Result<u64> {
        let mut filter = self.key_filters.remove(&stream.name);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if filter.is_some() {
            // Kept only if no other process moved the epoch (it may have created the stream
            // again): then the filter holds the blocks' keys up to its `merged`.
            let epoch: i64 = tx.query_row(
                "SELECT keys_epoch FROM tally_streams WHERE name = ?",
                [&stream.name],
                |r| r.get(0),
            )?;
            filter = filter.filter(|f| f.epoch() == epoch);
        }
        // A stream whose keys are of the first layout (no key table yet: no append since it was
        // opened) has no keys to forget; its first append hashes what is left.
        let keyed = stream.has_dedupe_key()
            && (self.recent_keys.contains_key(&stream.name)
                || sqlite_keys::converted(&tx, &stream.name)?);
        let mut deleted = 0;
        // The keys of the deleted rows, read span by span before the rows go and taken out of
        // the key blocks many spans at a time.
        let mut keys = Vec::new();
        for (span, first, last) in sqlite_spans::before(&tx, &stream.name, before, max_seq)? {
            // The times of the events the span keeps (past `max_seq` too), to narrow it to them.
            let mut left: Option<(i64, i64)> = None;
            let end = first + sqlite_spans::SPAN_ROWS - 1;
            let gone = sqlite_events::retain_range(&tx, stream, first, end, |seq, row| {
                let Value::Timestamp(Timestamp(t)) = row[stream.event_time] else {
                    return true;
                };
                if t >= before.0 || seq > last {
                    left = Some(left.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
                    return true;
                }
                if keyed && let Some(h) = sqlite_keys::row_hash(stream, row) {
                    keys.push((h, seq));
                }
                false
            })?;
            if keys.len() >= sqlite_keys::FORGET_BATCH {
                sqlite_keys::forget(&tx, &stream.name, &keys)?;
                keys.clear();
            }
            // Also when nothing went: the span was wider than its rows (after an erasure).
            sqlite_spans::narrow(&tx, &stream.name, span, left)?;
            deleted += gone;
        }
        if !keys.is_empty() {
            sqlite_keys::forget(&tx, &stream.name, &keys)?;
        }
        if deleted > 0 && stream.has_dedupe_key() {
            // Recent keys in memory, here and in other processes, may be of deleted rows: a new
            // epoch makes every process read them again, so that they never reach the key
            // blocks, where nothing would delete them.
            let epoch: i64 = tx.query_row(
                "UPDATE tally_streams SET keys_epoch = random() WHERE name = ? RETURNING keys_epoch",
                [&stream.name],
                |r| r.get(0),
            )?;
            self.recent_keys.remove(&stream.name);
            // Deletions leave the filter a superset of the blocks: it stays, at the new epoch.
            filter = filter.map(|f| f.with_epoch(epoch));
        }
        tx.commit()?;
        if let Some(filter) = filter {
            self.key_filters.insert(stream.name.clone(), filter);
        }
        Ok(deleted)
    }

    pub(crate) fn delete_view_rows_before(
        &mut self,
        plan: &ViewPlan,
        before: Timestamp,
    ) -> Result<u64> {
        let Some(b) = plan.bucket else { return Ok(0) };
        // Only whole seconds strictly before the cutoff: deleting too little is safe.
        let bound = text_bound(before, true);
        let sql = format!(
            "DELETE FROM {} WHERE {} < ?",
            ident(&plan.name),
            ident(&plan.keys[b].name)
        );
        Ok(self.conn.execute(&sql, [bound])? as u64)
    }

    /// Commits from now on leave their sync to the returned [`WalSync`] (`synchronous=NORMAL`)
    /// until [`SqliteTenant::end_deferred_sync`]; `None` (and nothing changed) if the database
    /// has no WAL file yet.
    pub(crate) fn defer_sync(&mut self) -> Result<Option<Arc<WalSync>>> {
        if self.wal.is_none() {
            let Some(path) = self.conn.path().filter(|p| !p.is_empty()) else {
                return Ok(None);
            };
            self.wal = WalSync::open(PathBuf::from(format!("{path}-wal")))?.map(Arc::new);
        }
        let Some(wal) = self.wal.clone() else {
            return Ok(None);
        };
        self.conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        Ok(Some(wal))
    }

    /// Commits are durable when they return again (`synchronous=FULL`).
    pub(crate) fn end_deferred_sync(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("PRAGMA synchronous=FULL")?)
    }

    /// The connection's `synchronous` setting (1 is `NORMAL`, 2 `FULL`).
    #[cfg(test)]
    pub(crate) fn synchronous(&self) -> i64 {
        (self.conn)
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    pub(crate) fn log_rejections(&mut self, rejected: &[Rejected]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO tally_rejections (at, stream, route, reason, message, payload) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?;
            for r in rejected {
                stmt.execute(params![
                    r.at.0, r.stream, r.route, r.reason, r.message, r.payload
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn rejections(&self, after: u64, limit: usize) -> Result<Vec<LoggedRejection>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, stream, route, reason, message, payload FROM tally_rejections \
             WHERE id > ? ORDER BY id LIMIT ?",
        )?;
        let rows = stmt.query_map(
            params![
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(LoggedRejection {
                    id: r.get::<_, i64>(0)? as u64,
                    rejected: Rejected {
                        at: Timestamp(r.get(1)?),
                        stream: r.get(2)?,
                        route: r.get(3)?,
                        reason: r.get(4)?,
                        message: r.get(5)?,
                        payload: r.get(6)?,
                    },
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn trim_rejections(&mut self, before: Timestamp, keep: usize) -> Result<u64> {
        let old = self.conn.execute(
            "DELETE FROM tally_rejections WHERE at < ?",
            params![before.0],
        )?;
        let over = self.conn.execute(
            "DELETE FROM tally_rejections WHERE id <= \
             (SELECT id FROM tally_rejections ORDER BY id DESC LIMIT 1 OFFSET ?)",
            params![i64::try_from(keep).unwrap_or(i64::MAX)],
        )?;
        Ok((old + over) as u64)
    }

    pub(crate) fn upsert_rows(&mut self, table: &str, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO tally_table_rows (tbl, key, row) VALUES (?, ?, ?) \
                 ON CONFLICT (tbl, key) DO UPDATE SET row = excluded.row",
            )?;
            for (key, row) in rows {
                stmt.execute(params![table, key, row])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn delete_row(&mut self, table: &str, key: &[u8]) -> Result<bool> {
        let n = self.conn.execute(
            "DELETE FROM tally_table_rows WHERE tbl = ? AND key = ?",
            params![table, key],
        )?;
        Ok(n > 0)
    }

    pub(crate) fn table_rows(&self, table: &str) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT row FROM tally_table_rows WHERE tbl = ? ORDER BY key")?;
        let rows = stmt.query_map(params![table], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn tables_with_rows(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT tbl FROM tally_table_rows ORDER BY tbl")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn drop_table_rows(&mut self, table: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM tally_table_rows WHERE tbl = ?", params![table])?;
        Ok(())
    }

    pub(crate) fn write_records(&mut self, writes: &[RecordWrite]) -> Result<()> {
        let tx = self.conn.transaction()?;
        write_records_in(&tx, writes)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn records(
        &self,
        kind: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, body FROM tally_records WHERE kind = ? AND key >= ? AND key < ? \
             ORDER BY key LIMIT ?",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![kind, from, to, limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn delete_records(&mut self, kind: &str, from: &str, to: &str) -> Result<u64> {
        let n = self.conn.execute(
            "DELETE FROM tally_records WHERE kind = ? AND key >= ? AND key < ?",
            params![kind, from, to],
        )?;
        Ok(n as u64)
    }
}

/// Inserts or replaces view rows (key, every column, states) within `tx`.
fn upsert_view_rows(tx: &Transaction<'_>, plan: &ViewPlan, rows: &[EncodedRow<'_>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let cols: Vec<String> = plan.columns.iter().map(|c| ident(&c.name)).collect();
    let marks = vec!["?"; cols.len() + 2].join(", ");
    let updates: Vec<String> = cols
        .iter()
        .chain(std::iter::once(&"\"_state\"".to_owned()))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO {} (\"_key\", {}, \"_state\") VALUES ({marks}) ON CONFLICT (\"_key\") DO UPDATE SET {}",
        ident(&plan.name),
        cols.join(", "),
        updates.join(", ")
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    for row in rows {
        let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(row.cells.len() + 2);
        values.push(ToSqlOutput::Borrowed(ValueRef::Blob(&row.key)));
        values.extend(row.cells.iter().map(view_sql));
        values.push(ToSqlOutput::Borrowed(ValueRef::Blob(&row.state)));
        stmt.execute(rusqlite::params_from_iter(values.iter()))?;
    }
    Ok(())
}

/// Applies record writes within `tx`.
fn write_records_in(tx: &Transaction<'_>, writes: &[RecordWrite]) -> Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT INTO tally_records (kind, key, body) VALUES (?, ?, ?) \
         ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM tally_records WHERE kind = ? AND key = ?")?;
    for w in writes {
        match w {
            RecordWrite::Put { kind, key, body } => {
                put.execute(params![kind, key, body])?;
            }
            RecordWrite::Delete { kind, key } => {
                delete.execute(params![kind, key])?;
            }
        }
    }
    Ok(())
}
