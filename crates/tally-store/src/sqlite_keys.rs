//! The dedupe index of a SQLite raw event table: 64-bit hashes of the keys, in two tables.
//!
//! Dedupe keys are random (Segment's `messageId` is a UUID), so a B-tree over them takes each
//! insert at a random leaf: a commit of 10,000 events dirtied almost every page of a large unique
//! index, and the WAL wrote the whole index again at every commit. Here a key is stored as
//! `(h, _seq)`, `h` the first 8 bytes of the SHA-256 of the key's text, in one of two
//! `WITHOUT ROWID` tables:
//!
//! - `tally_recent__{stream}`: the keys of the last appends, small, so that the pages a commit
//!   dirties are few and stay in the page cache;
//! - `tally_keys__{stream}`: all older keys. When the recent table holds [`MERGE_ROWS`] keys,
//!   the appending transaction moves them over in key order, so the large tree takes them as
//!   one sorted run, touching each of its pages at most once.
//!
//! An append looks the hashes of its whole batch up in both tables with one statement; a hit is
//! a duplicate only when the raw row at that `_seq` holds the same key (two keys of one hash are
//! both kept). Retention deletes a row's key with the row (both tables have an index on `_seq`);
//! a key left behind would not match anyway.
//! NULL keys are never duplicates and are not indexed, as in a unique index.

use std::collections::HashMap;
use std::rc::Rc;

use rusqlite::types::Value as SqlValue;
use rusqlite::vtab::array::Array;
use rusqlite::{CachedStatement, Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use tally_views::{StreamDef, Timestamp, Value};

use crate::error::Result;
use crate::sqlite::{ident, raw_sql};

/// Keys the recent table collects before they move to the large one.
pub(crate) const MERGE_ROWS: usize = 65_536;

fn recent(stream: &str) -> String {
    ident(&format!("tally_recent__{stream}"))
}

fn keys(stream: &str) -> String {
    ident(&format!("tally_keys__{stream}"))
}

/// The hash a key is indexed by: the first 8 bytes of the SHA-256 of its text.
pub(crate) fn key_hash(key: &Value) -> i64 {
    let digest = match key {
        Value::Text(s) | Value::Json(s) => Sha256::digest(s.as_bytes()),
        other => Sha256::digest(other.to_string().as_bytes()),
    };
    i64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// Whether the stream's key tables exist (it was created or converted with this layout).
pub(crate) fn converted(conn: &Connection, stream: &str) -> Result<bool> {
    let found: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            [format!("tally_keys__{stream}")],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// Creates the two key tables of a stream (dropping any left from an earlier definition).
pub(crate) fn create(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    for table in [recent(stream), keys(stream)] {
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (h INTEGER NOT NULL, \"_seq\" INTEGER NOT NULL, PRIMARY KEY (h, \"_seq\")) WITHOUT ROWID;
             CREATE INDEX {} ON {table} (\"_seq\");",
            ident(&format!("{}__seq", table.trim_matches('"')))
        ))?;
    }
    Ok(())
}

/// Drops the key tables of a stream.
pub(crate) fn drop(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        recent(stream),
        keys(stream)
    ))?;
    Ok(())
}

/// Moves a stream created before this layout (a unique index on the key column) to the key
/// tables, in one transaction: hashes every stored key, then drops the old index. A no-op when
/// the stream has no dedupe key or is already converted. Returns the number of recent keys.
pub(crate) fn upgrade(conn: &mut Connection, stream: &StreamDef) -> Result<usize> {
    let Some(d) = stream.dedupe_key else {
        return Ok(0);
    };
    // Checked inside the write transaction: two processes opening one tenant convert it once.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if converted(&tx, &stream.name)? {
        let n: i64 = tx.query_row(
            &format!("SELECT count(*) FROM {}", recent(&stream.name)),
            [],
            |r| r.get(0),
        )?;
        tx.commit()?;
        return Ok(n as usize);
    }
    create(&tx, &stream.name)?;
    let mut hashed: Vec<(i64, i64)> = Vec::new();
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT \"_seq\", {} FROM {} WHERE {0} IS NOT NULL",
            ident(&stream.columns[d].name),
            ident(&stream.name)
        ))?;
        let ty = stream.columns[d].ty;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let key = crate::sqlite::raw_value(r.get_ref(1)?, ty)?;
            hashed.push((key_hash(&key), r.get(0)?));
        }
    }
    hashed.sort_unstable();
    {
        let mut insert = tx.prepare(&format!(
            "INSERT INTO {} (h, \"_seq\") VALUES (?, ?)",
            keys(&stream.name)
        ))?;
        for (h, seq) in hashed {
            insert.execute(params![h, seq])?;
        }
    }
    tx.execute_batch(&format!(
        "DROP INDEX IF EXISTS {}",
        ident(&format!("{}__dedupe", stream.name))
    ))?;
    tx.commit()?;
    Ok(0)
}

/// The statements an append uses to look keys up and record them, prepared once per append.
pub(crate) struct Probe<'t> {
    find: CachedStatement<'t>,
    verify: CachedStatement<'t>,
    insert: CachedStatement<'t>,
}

impl<'t> Probe<'t> {
    pub(crate) fn new(tx: &'t Transaction<'_>, stream: &StreamDef, d: usize) -> Result<Probe<'t>> {
        Ok(Probe {
            find: tx.prepare_cached(&format!(
                "SELECT h, \"_seq\" FROM {} WHERE h IN rarray(?1) \
                 UNION ALL SELECT h, \"_seq\" FROM {} WHERE h IN rarray(?1)",
                keys(&stream.name),
                recent(&stream.name)
            ))?,
            verify: tx.prepare_cached(&format!(
                "SELECT 1 FROM {} WHERE \"_seq\" = ? AND {} = ?",
                ident(&stream.name),
                ident(&stream.columns[d].name)
            ))?,
            insert: tx.prepare_cached(&format!(
                "INSERT INTO {} (h, \"_seq\") VALUES (?, ?)",
                recent(&stream.name)
            ))?,
        })
    }

    /// The stored rows whose keys have one of `hashes`, by hash: one statement for a whole
    /// batch, its hashes sorted so that the lookups walk each tree in order.
    pub(crate) fn candidates(&mut self, mut hashes: Vec<i64>) -> Result<HashMap<i64, Vec<i64>>> {
        hashes.sort_unstable();
        hashes.dedup();
        let array: Array = Rc::new(hashes.into_iter().map(SqlValue::Integer).collect());
        let mut found: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut rows = self.find.query([array])?;
        while let Some(r) = rows.next()? {
            found.entry(r.get(0)?).or_default().push(r.get(1)?);
        }
        Ok(found)
    }

    /// Whether one of the rows at `seqs` holds `key`.
    pub(crate) fn holds(&mut self, seqs: &[i64], key: &Value) -> Result<bool> {
        for &seq in seqs {
            let found: Option<i64> = self
                .verify
                .query_row(params![seq, raw_sql(key)], |r| r.get(0))
                .optional()?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records that the row at `seq` holds a key of hash `h`.
    pub(crate) fn record(&mut self, h: i64, seq: i64) -> Result<()> {
        self.insert.execute(params![h, seq])?;
        Ok(())
    }
}

/// Moves the recent keys into the large table, in key order.
pub(crate) fn merge(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "INSERT INTO {keys} (h, \"_seq\") SELECT h, \"_seq\" FROM {recent} ORDER BY h, \"_seq\";
         DELETE FROM {recent};",
        keys = keys(stream),
        recent = recent(stream)
    ))?;
    Ok(())
}

/// Deletes the keys of the rows retention is about to delete (same bounds), for a stream with
/// key tables.
pub(crate) fn forget_before(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    before: Timestamp,
    max_seq: u64,
) -> Result<()> {
    for table in [recent(&stream.name), keys(&stream.name)] {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE \"_seq\" IN \
                 (SELECT \"_seq\" FROM {} WHERE {} < ? AND \"_seq\" <= ?)",
                ident(&stream.name),
                ident(&stream.columns[stream.event_time].name)
            ),
            params![before.0, max_seq as i64],
        )?;
    }
    Ok(())
}
