//! The embedded SQLite backend: `catalog.db` plus one database file per tenant.
//!
//! One file per tenant makes isolation physical: a tenant's connection cannot name another
//! tenant's tables. Every database runs in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives power loss, and an ingest is acknowledged only after its commit. A
//! tenant database's checkpoints run mostly on a background thread of their own
//! ([`crate::sqlite_checkpoint`]); the committing thread only finishes them.
//!
//! Raw event tables keep typed columns (timestamps as integer microseconds, decimals as exact
//! text) after a sequence column. Sequence numbers are handed out from `tally_streams.last_seq`
//! inside the appending transaction: dense (a duplicate costs no number), never reused (retention
//! may delete the newest rows), and correct with several processes writing one tenant. View tables keep the encoded group key, every view column
//! in readable form (timestamps as RFC 3339 text) and the encoded states, so `sqlite3` and BI
//! tools can read them directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use hashbrown::HashTable;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::vtab::array::Array;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use tally_views::{Event, StreamDef, Timestamp, Type, Value, ViewPlan};

use crate::error::{Result, StoreError};
use crate::migrations::{MIGRATIONS_TABLE, Migration, TENANT};
use crate::sqlite_checkpoint::Checkpoints;
use crate::sqlite_keys::{self, KeyFilter, KeyHashes, Probe, RecentKeys};
use crate::sqlite_spans::{self, NewSpans};
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

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
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
    // An append's statements (multi-row inserts of three sizes per stream, key probes and
    // merges, spans) and a flush's outnumber the default cache of 16.
    conn.set_prepared_statement_cache_capacity(64);
    // `rarray(?)`: an append looks its batch's dedupe hashes up with one statement.
    rusqlite::vtab::array::load_module(&conn)?;
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
        })
    }
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

pub(crate) fn ident(name: &str) -> String {
    // Names are validated by the compiler ([a-z][a-z0-9_]*), so quoting cannot be escaped.
    format!("\"{name}\"")
}

fn column_type(ty: Type) -> &'static str {
    match ty {
        Type::Text | Type::Decimal { .. } | Type::Json => "TEXT",
        Type::Boolean | Type::BigInt => "INTEGER",
        Type::Double => "REAL",
        Type::Timestamp => "INTEGER",
    }
}

/// A value as stored in a raw event table.
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

/// Values a raw insert statement binds, at most (a single row binds all of its own, however
/// wide). SQLite copies each bound text into the connection's lookaside memory (by default 93
/// slots of up to 128 bytes and 30 of up to 1,200, shared with its other allocations) and into
/// `malloc`'s once those are taken: statements of 64 rows (about 330 texts of the rollups
/// stream) took the binding from 11 % to 25 % of the committing thread's samples and saved no
/// instructions; 80 values keep even a stream of ten text columns within the small slots.
const RAW_VALUES_PER_STATEMENT: usize = 80;

/// The rows per statement of [`insert_chunked`], largest first, for rows of `width` values and
/// about `values` values a statement: the most rows that fit (one when none does), a quarter of
/// that, and single rows for what is left. A statement per row paid, for every row, for
/// starting and ending the statement and opening a cursor: with several rows a statement
/// (`INSERT … VALUES (…), (…)`) the committing thread of `tally ingest` executed 18.5 % fewer
/// instructions, most of it in the keys' merge (docs/performance.md, twenty-ninth round).
fn rows_per_statement(width: usize, values: usize) -> [usize; 3] {
    let large = (values / width.max(1)).max(1);
    [large, (large / 4).max(1), 1]
}

/// Inserts `items` into `columns` of `table`, a few rows a statement ([`rows_per_statement`],
/// about `values` values each; the statements are cached): `bind` appends an item's `width`
/// values, called for the items in order.
pub(crate) fn insert_chunked<'a, T, P: rusqlite::ToSql>(
    tx: &Transaction<'_>,
    table: &str,
    columns: &str,
    width: usize,
    values: usize,
    items: &'a [T],
    mut bind: impl FnMut(&'a T, &mut Vec<P>) -> Result<()>,
) -> Result<()> {
    let marks = format!("({})", vec!["?"; width].join(", "));
    let mut rest = items;
    let mut params: Vec<P> = Vec::new();
    for size in rows_per_statement(width, values) {
        if rest.len() < size {
            continue;
        }
        let sql = format!(
            "INSERT INTO {table} ({columns}) VALUES {}",
            vec![marks.as_str(); size].join(", ")
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            params.clear();
            for item in chunk {
                bind(item, &mut params)?;
            }
            stmt.execute(rusqlite::params_from_iter(params.iter()))?;
            rest = tail;
        }
    }
    Ok(())
}

/// Inserts the raw rows `kept` (indices into `rows`) with sequence numbers from `first` on, a
/// few rows a statement ([`insert_chunked`]).
fn insert_rows(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    rows: &[Vec<Value>],
    kept: &[usize],
    first: i64,
) -> Result<()> {
    let width = stream.columns.len() + 1;
    let columns = std::iter::once(ident("_seq"))
        .chain(stream.columns.iter().map(|c| ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut seq = first;
    insert_chunked(
        tx,
        &ident(&stream.name),
        &columns,
        width,
        RAW_VALUES_PER_STATEMENT,
        kept,
        |&i, values| {
            // One row short and the next one long would bind a whole chunk shifted.
            if rows[i].len() + 1 != width {
                let e = rusqlite::Error::InvalidParameterCount(rows[i].len() + 1, width);
                return Err(e.into());
            }
            values.push(ToSqlOutput::Owned(SqlValue::Integer(seq)));
            values.extend(rows[i].iter().map(raw_sql));
            seq += 1;
            Ok(())
        },
    )
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

/// Reads a raw event table cell of type `ty`.
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
        let table = ident(&def.name);
        let mut cols = vec!["\"_seq\" INTEGER PRIMARY KEY".to_owned()];
        for c in &def.columns {
            cols.push(format!(
                "{} {}{}",
                ident(&c.name),
                column_type(c.ty),
                if c.not_null { " NOT NULL" } else { "" }
            ));
        }
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({})",
            cols.join(", ")
        ))?;
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
        let tx = self.conn.transaction()?;
        for c in &new.columns[old.columns.len()..] {
            tx.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                ident(&new.name),
                ident(&c.name),
                column_type(c.ty)
            ))?;
        }
        tx.execute(
            "UPDATE tally_streams SET definition = ? WHERE name = ?",
            params![new.sql(), new.name],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn drop_stream(&mut self, name: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(name)))?;
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
        sqlite_spans::ensure(&tx, stream)?;
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
        insert_rows(&tx, stream, rows, &kept, first)?;
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
        let cols: Vec<String> = stream.columns.iter().map(|c| ident(&c.name)).collect();
        let sql = format!(
            "SELECT \"_seq\", {} FROM {} WHERE \"_seq\" > ? ORDER BY \"_seq\" LIMIT ?",
            cols.join(", "),
            ident(&stream.name)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![after as i64, limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let mut row = Vec::with_capacity(stream.columns.len());
            for (i, c) in stream.columns.iter().enumerate() {
                row.push(raw_value(r.get_ref(i + 1)?, c.ty)?);
            }
            out.push(Event {
                seq: seq as u64,
                row,
            });
        }
        Ok(out)
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
        let cols: Vec<String> = stream.columns.iter().map(|c| ident(&c.name)).collect();
        let matches: Vec<String> = columns
            .iter()
            .map(|&c| format!("{} IN rarray(?1)", ident(&stream.columns[c].name)))
            .collect();
        let sql = format!(
            "SELECT \"_seq\", {} FROM {} WHERE {} ORDER BY \"_seq\"",
            cols.join(", "),
            ident(&stream.name),
            matches.join(" OR ")
        );
        let ids: Array = Rc::new(
            ids.iter()
                .map(|s| SqlValue::Text((*s).to_owned()))
                .collect(),
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([ids])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let mut row = Vec::with_capacity(stream.columns.len());
            for (i, c) in stream.columns.iter().enumerate() {
                row.push(raw_value(r.get_ref(i + 1)?, c.ty)?);
            }
            out.push(Event {
                seq: seq as u64,
                row,
            });
        }
        Ok(out)
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
            let array = || -> Array {
                Rc::new(seqs.iter().map(|&s| SqlValue::Integer(s as i64)).collect())
            };
            if stream.has_dedupe_key()
                && (self.recent_keys.contains_key(&stream.name)
                    || sqlite_keys::converted(&tx, &stream.name)?)
            {
                sqlite_keys::forget_seqs(&tx, stream, array())?;
            }
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE \"_seq\" IN rarray(?1)",
                    ident(&stream.name)
                ),
                [array()],
            )?;
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
        let sql = format!(
            "DELETE FROM {} WHERE \"_seq\" BETWEEN ? AND ? AND {} < ?",
            ident(&stream.name),
            ident(&stream.columns[stream.event_time].name)
        );
        let mut filter = self.key_filters.remove(&stream.name);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        sqlite_spans::ensure(&tx, stream)?;
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
        // A stream not converted yet (no append since it was opened) has the old unique index,
        // which goes with the rows; the conversion hashes what is left.
        let keyed = stream.has_dedupe_key()
            && (self.recent_keys.contains_key(&stream.name)
                || sqlite_keys::converted(&tx, &stream.name)?);
        let mut deleted = 0;
        // The keys of the deleted rows, read span by span before the rows go and taken out of
        // the key blocks many spans at a time.
        let mut keys = Vec::new();
        for (span, first, last) in sqlite_spans::before(&tx, &stream.name, before, max_seq)? {
            if keyed {
                keys.extend(sqlite_keys::keys_before(&tx, stream, before, first, last)?);
                if keys.len() >= sqlite_keys::FORGET_BATCH {
                    sqlite_keys::forget(&tx, &stream.name, &keys)?;
                    keys.clear();
                }
            }
            let gone = tx
                .prepare_cached(&sql)?
                .execute(params![first, last, before.0])? as u64;
            // Also when nothing went: the span was wider than its rows (after an erasure).
            sqlite_spans::narrow(&tx, stream, span)?;
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
