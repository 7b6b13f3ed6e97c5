//! The raw events of a SQLite stream, stored in blocks.
//!
//! A row per event cost an append most of its time: a B-tree cell, a record and a bound value
//! per column for every event (docs/performance.md, thirty-second round). Here
//! `tally_events__{stream}` holds one row per block of up to [`BLOCK_EVENTS`] consecutive events
//! (of one append; of several in a converted stream), `(last INTEGER PRIMARY KEY, events BLOB)`: `last` is at least the highest sequence
//! number in the block and below every sequence number of the next one, so the block that may
//! hold sequence number `s` is the first with `last >= s` (one descent). A block is written once
//! by its append; retention and erasure rewrite the blocks they take events out of (keeping
//! `last`) or delete them when they are left empty.
//!
//! The blob, written by [`encode`] and read by [`Block::parse`]: a format byte ([`FORMAT`]),
//! the number of events `n` (varint), the first sequence number and the `n - 1` gaps to the
//! next (varints), the byte length of each event (varints), then the events, each its values in
//! column order as [`tally_views::codec::Writer::value`] writes them (type tag first). An event
//! written before its stream gained columns has fewer values: the missing ones are NULL.
//!
//! A stream of an earlier layout (a table named as the stream, a row per event) is converted by
//! tenant migration 9 when its database is opened ([`convert`]).

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tally_views::codec::{Reader, Writer};
use tally_views::{Event, StreamDef, Value};

use crate::error::{Result, StoreError};
use crate::sqlite::{ident, table_exists};

/// Events a block holds at most: a larger append is cut into blocks of this many. Reading one
/// event (a dedupe check) reads its whole block, so blocks stay small enough for that.
pub(crate) const BLOCK_EVENTS: usize = 1_024;

/// The tenant migration that converts streams of the row layout.
pub(crate) const MIGRATION: i64 = 9;

/// The format byte of a block.
const FORMAT: u8 = 1;

/// The quoted name of a stream's block table.
pub(crate) fn table(stream: &str) -> String {
    ident(&format!("tally_events__{stream}"))
}

/// Creates the (empty) block table of a new stream, dropping any left from an earlier
/// definition.
pub(crate) fn create(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    let t = table(stream);
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (last INTEGER PRIMARY KEY, events BLOB NOT NULL);"
    ))?;
    Ok(())
}

/// Drops a stream's block table. (Not a table named as the stream: after migration 9 none is a
/// stream's, and a view of that name may have been created before the stream is dropped.)
pub(crate) fn drop(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", table(stream)))?;
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(tally_views::codec::CodecError::Cell(format!(
        "event block: {what}"
    )))
}

/// Encodes events (sequence numbers increasing, each row's encoded values) as a block.
fn encode<'a>(events: impl Iterator<Item = (i64, &'a [u8])> + Clone) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(FORMAT);
    let n = events.clone().count();
    w.varint(n as u64);
    let mut prev = None;
    for (seq, _) in events.clone() {
        match prev {
            None => w.varint(seq as u64),
            Some(p) => w.varint((seq - p) as u64),
        }
        prev = Some(seq);
    }
    for (_, row) in events.clone() {
        w.varint(row.len() as u64);
    }
    for (_, row) in events {
        w.raw(row);
    }
    w.finish()
}

/// Encodes a row's values, checked as the row table's constraints checked them: as many values
/// as columns, and no NULL in a `NOT NULL` column (the same errors SQLite gave).
fn encode_row(stream: &StreamDef, row: &[Value], out: &mut Writer) -> Result<()> {
    if row.len() != stream.columns.len() {
        let e = rusqlite::Error::InvalidParameterCount(row.len() + 1, stream.columns.len() + 1);
        return Err(e.into());
    }
    for (v, c) in row.iter().zip(&stream.columns) {
        if c.not_null && v.is_null() {
            let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL);
            let message = format!("NOT NULL constraint failed: {}.{}", stream.name, c.name);
            return Err(rusqlite::Error::SqliteFailure(code, Some(message)).into());
        }
        out.value(v);
    }
    Ok(())
}

/// Events encoded one after another, written as a block once [`BLOCK_EVENTS`] are gathered.
struct Builder<'t> {
    insert: rusqlite::CachedStatement<'t>,
    /// The events' values, one after another.
    body: Writer,
    /// Each event's sequence number and where its values end in `body`.
    ends: Vec<(i64, usize)>,
}

impl<'t> Builder<'t> {
    fn new(tx: &'t Transaction<'_>, stream: &str) -> Result<Self> {
        Ok(Builder {
            insert: tx.prepare_cached(&format!(
                "INSERT INTO {} (last, events) VALUES (?, ?)",
                table(stream)
            ))?,
            body: Writer::new(),
            ends: Vec::new(),
        })
    }

    /// Ends event `seq`, whose values were just written to `body`; writes the block when it is
    /// full.
    fn end_event(&mut self, seq: i64) -> Result<()> {
        self.ends.push((seq, self.body.len()));
        if self.ends.len() == BLOCK_EVENTS {
            self.write()?;
        }
        Ok(())
    }

    /// Writes the events gathered (if any) as a block keyed by the last one's sequence number.
    fn write(&mut self) -> Result<()> {
        let Some(&(last, _)) = self.ends.last() else {
            return Ok(());
        };
        let bytes = self.body.as_slice();
        let ends = &self.ends;
        let events = ends.iter().enumerate().map(|(j, &(seq, end))| {
            let begin = if j == 0 { 0 } else { ends[j - 1].1 };
            (seq, &bytes[begin..end])
        });
        self.insert.execute(params![last, encode(events)])?;
        self.body.clear();
        self.ends.clear();
        Ok(())
    }
}

/// Writes the rows `kept` (indices into `rows`) with sequence numbers from `first` on, in
/// blocks of up to [`BLOCK_EVENTS`].
pub(crate) fn append(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    rows: &[Vec<Value>],
    kept: &[usize],
    first: i64,
) -> Result<()> {
    let mut blocks = Builder::new(tx, &stream.name)?;
    for (seq, &i) in (first..).zip(kept) {
        encode_row(stream, &rows[i], &mut blocks.body)?;
        blocks.end_event(seq)?;
    }
    blocks.write()
}

/// A block read back: its key, sequence numbers and where each event's bytes are.
pub(crate) struct Block {
    /// The `last` column.
    pub(crate) key: i64,
    blob: Vec<u8>,
    seqs: Vec<i64>,
    /// Each event's byte range in `blob`, as its end (the next starts there).
    ends: Vec<usize>,
    start: usize,
}

impl Block {
    pub(crate) fn parse(key: i64, blob: Vec<u8>) -> Result<Block> {
        let mut r = Reader::new(&blob);
        if r.u8()? != FORMAT {
            return Err(corrupt("unknown format"));
        }
        let n = r.len()?;
        let mut seqs = Vec::with_capacity(n);
        let mut seq = 0i64;
        for i in 0..n {
            let v = i64::try_from(r.varint()?).map_err(|_| corrupt("sequence number"))?;
            seq = match i {
                0 => v,
                // Sequence numbers rise strictly within a block.
                _ if v == 0 => return Err(corrupt("a repeated sequence number")),
                _ => seq.checked_add(v).ok_or_else(|| corrupt("gap"))?,
            };
            seqs.push(seq);
        }
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            lens.push(r.len()?);
        }
        let start = r.position();
        let mut ends = Vec::with_capacity(n);
        let mut end = start;
        for len in lens {
            end = end.checked_add(len).ok_or_else(|| corrupt("length"))?;
            ends.push(end);
        }
        if end != blob.len() || seqs.last().is_some_and(|&s| s > key) {
            return Err(corrupt("lengths"));
        }
        Ok(Block {
            key,
            blob,
            seqs,
            ends,
            start,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.seqs.len()
    }

    pub(crate) fn seq(&self, i: usize) -> i64 {
        self.seqs[i]
    }

    /// The index of sequence number `seq`, if the block holds it.
    pub(crate) fn position(&self, seq: i64) -> Option<usize> {
        self.seqs.binary_search(&seq).ok()
    }

    fn bytes(&self, i: usize) -> &[u8] {
        let begin = if i == 0 { self.start } else { self.ends[i - 1] };
        &self.blob[begin..self.ends[i]]
    }

    /// Event `i`'s values, `width` of them (NULLs for columns added after it was written).
    pub(crate) fn row(&self, i: usize, width: usize) -> Result<Vec<Value>> {
        let mut r = Reader::new(self.bytes(i));
        let mut row = Vec::with_capacity(width);
        while !r.is_empty() {
            if row.len() == width {
                return Err(corrupt("more values than columns"));
            }
            row.push(r.value()?);
        }
        row.resize(width, Value::Null);
        Ok(row)
    }
}

/// Reads the block that may hold sequence number `seq` (the first with `last >= seq`).
fn block_at(conn: &Connection, stream: &str, seq: i64) -> Result<Option<Block>> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(&format!(
            "SELECT last, events FROM {} WHERE last >= ?1 ORDER BY last LIMIT 1",
            table(stream)
        ))?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    found.map(|(key, blob)| Block::parse(key, blob)).transpose()
}

/// Calls `f` with each event with a sequence number in `after + 1..=upto`, in order, until it
/// returns `false`.
pub(crate) fn scan(
    conn: &Connection,
    stream: &StreamDef,
    after: i64,
    upto: i64,
    mut f: impl FnMut(i64, Vec<Value>) -> Result<bool>,
) -> Result<()> {
    let width = stream.columns.len();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT last, events FROM {} WHERE last > ?1 ORDER BY last",
        table(&stream.name)
    ))?;
    let mut rows = stmt.query([after])?;
    // The last sequence number read: blocks in key order hold their events in order.
    let mut last = after;
    while let Some(r) = rows.next()? {
        let block = Block::parse(r.get(0)?, r.get(1)?)?;
        for i in 0..block.len() {
            let seq = block.seq(i);
            if seq <= after {
                continue;
            }
            if seq <= last {
                return Err(corrupt("blocks out of order"));
            }
            last = seq;
            if seq > upto || !f(seq, block.row(i, width)?)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Up to `limit` events after sequence number `after`, in order.
pub(crate) fn read(
    conn: &Connection,
    stream: &StreamDef,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    scan(conn, stream, after, i64::MAX, |seq, row| {
        out.push(Event {
            seq: seq as u64,
            row,
        });
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// Reads single events by sequence number, keeping the block read last (the events looked up
/// together are mostly in the same few blocks).
pub(crate) struct Lookup {
    block: Option<Block>,
}

impl Lookup {
    pub(crate) fn new() -> Lookup {
        Lookup { block: None }
    }

    /// The event with sequence number `seq`, if it is stored.
    pub(crate) fn event(
        &mut self,
        conn: &Connection,
        stream: &StreamDef,
        seq: i64,
    ) -> Result<Option<Vec<Value>>> {
        let cached = self
            .block
            .as_ref()
            .is_some_and(|b| b.key >= seq && b.seqs.first().is_some_and(|&f| f <= seq));
        if !cached {
            self.block = block_at(conn, &stream.name, seq)?;
        }
        let Some(block) = &self.block else {
            return Ok(None);
        };
        match block.position(seq) {
            Some(i) => Ok(Some(block.row(i, stream.columns.len())?)),
            None => Ok(None),
        }
    }
}

/// Rewrites `block` with only the events `keep` marks, or deletes it when none are.
fn rewrite(tx: &Transaction<'_>, stream: &str, block: &Block, keep: &[bool]) -> Result<()> {
    if keep.iter().all(|&k| k) {
        return Ok(());
    }
    let t = table(stream);
    if !keep.iter().any(|&k| k) {
        tx.prepare_cached(&format!("DELETE FROM {t} WHERE last = ?"))?
            .execute([block.key])?;
        return Ok(());
    }
    let kept = (0..block.len())
        .filter(|&i| keep[i])
        .map(|i| (block.seq(i), block.bytes(i)));
    tx.prepare_cached(&format!("UPDATE {t} SET events = ? WHERE last = ?"))?
        .execute(params![encode(kept), block.key])?;
    Ok(())
}

/// Visits the events with sequence numbers in `first..=last`; those for which `keep` returns
/// `false` are deleted (their blocks rewritten). Returns how many were deleted.
pub(crate) fn retain_range(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    first: i64,
    last: i64,
    mut keep: impl FnMut(i64, &[Value]) -> bool,
) -> Result<u64> {
    let width = stream.columns.len();
    let mut blocks = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT last, events FROM {} WHERE last >= ?1 ORDER BY last",
            table(&stream.name)
        ))?;
        let mut rows = stmt.query([first])?;
        while let Some(r) = rows.next()? {
            let block = Block::parse(r.get(0)?, r.get(1)?)?;
            let past = block.key >= last;
            blocks.push(block);
            if past {
                break;
            }
        }
    }
    let mut deleted = 0;
    for block in &blocks {
        let mut marks = vec![true; block.len()];
        for (i, mark) in marks.iter_mut().enumerate() {
            let seq = block.seq(i);
            if seq >= first && seq <= last && !keep(seq, &block.row(i, width)?) {
                *mark = false;
                deleted += 1;
            }
        }
        rewrite(tx, &stream.name, block, &marks)?;
    }
    Ok(deleted)
}

/// Deletes the events with the sequence numbers in `seqs` (any order), calling `removed` with
/// each before it goes. Returns how many were deleted.
pub(crate) fn remove(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    seqs: &[u64],
    mut removed: impl FnMut(i64, &[Value]),
) -> Result<u64> {
    let width = stream.columns.len();
    let mut seqs: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut deleted = 0;
    let mut rest = &seqs[..];
    while let Some(&seq) = rest.first() {
        let Some(block) = block_at(tx, &stream.name, seq)? else {
            break;
        };
        let upto = rest.partition_point(|&s| s <= block.key);
        let mut marks = vec![true; block.len()];
        for &s in &rest[..upto] {
            if let Some(i) = block.position(s) {
                removed(s, &block.row(i, width)?);
                marks[i] = false;
                deleted += 1;
            }
        }
        rewrite(tx, &stream.name, &block, &marks)?;
        rest = &rest[upto..];
    }
    Ok(deleted)
}

/// The events of which one of `columns` holds one of `ids` (compared as text, as SQLite compares
/// a column with text values), in order.
pub(crate) fn matching(
    conn: &Connection,
    stream: &StreamDef,
    columns: &[usize],
    ids: &[&str],
) -> Result<Vec<Event>> {
    let ids: std::collections::HashSet<&str> = ids.iter().copied().collect();
    let mut out = Vec::new();
    scan(conn, stream, 0, i64::MAX, |seq, row| {
        let hit = columns.iter().any(|&c| match &row[c] {
            Value::Null => false,
            Value::Text(s) => ids.contains(&**s),
            Value::Json(s) => ids.contains(&**s),
            Value::Int(i) => ids.contains(i.to_string().as_str()),
            other => ids.contains(other.to_string().as_str()),
        });
        if hit {
            out.push(Event {
                seq: seq as u64,
                row,
            });
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Converts a stream of the row layout (a table named as the stream) into blocks, inside the
/// migration's transaction: its rows in blocks of [`BLOCK_EVENTS`], the row table dropped.
/// Spans of a layout older still are computed from the rows first. A stream without a row
/// table (converted already) keeps its blocks.
pub(crate) fn convert(tx: &Transaction<'_>, stream: &StreamDef) -> Result<()> {
    if converted(tx, &stream.name)? {
        return ensure_tables(tx, &stream.name);
    }
    crate::sqlite_spans::ensure(tx, stream)?;
    let cols: Vec<String> = stream.columns.iter().map(|c| ident(&c.name)).collect();
    fill(
        tx,
        &stream.name,
        &cols.join(", "),
        stream.columns.len(),
        |v, i| crate::sqlite::raw_value(v, stream.columns[i].ty),
    )
}

/// Converts the row table of a stream whose stored definition this version cannot read (a name
/// reserved since it was created): each cell by its storage class (integer, real, text, NULL;
/// booleans and timestamps become integers, decimals and JSON text). No catalog can hold a
/// stream of a reserved name, so reconciling the tenant drops it; until then its events are kept.
pub(crate) fn convert_untyped(tx: &Transaction<'_>, name: &str) -> Result<()> {
    if converted(tx, name)? {
        return ensure_tables(tx, name);
    }
    let select: Vec<String> = tx
        .prepare(&format!("SELECT * FROM {}", ident(name)))?
        .column_names()
        .filter(|c| *c != "_seq")
        .map(ident)
        .collect();
    crate::sqlite_spans::create_if_missing(tx, name)?;
    fill(tx, name, &select.join(", "), select.len(), |v, _| {
        use rusqlite::types::ValueRef as R;
        Ok(match v {
            R::Null => Value::Null,
            R::Integer(i) => Value::Int(i),
            R::Real(d) => Value::Double(d),
            R::Text(t) => Value::text(std::str::from_utf8(t).map_err(|_| corrupt("text"))?),
            R::Blob(_) => return Err(corrupt("a blob in a raw event table")),
        })
    })
}

/// Whether a stream needs no conversion: it has its block table already (a table named like it
/// is then not its rows: a view created before the stream was dropped may have that name), or
/// it has no row table.
fn converted(tx: &Transaction<'_>, stream: &str) -> Result<bool> {
    Ok(table_exists(tx, &format!("tally_events__{stream}"))? || !table_exists(tx, stream)?)
}

/// The block and span tables of a stream without a row table, created if missing (never
/// emptied: a migration applied again must not lose events).
fn ensure_tables(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (last INTEGER PRIMARY KEY, events BLOB NOT NULL)",
        table(stream)
    ))?;
    crate::sqlite_spans::create_if_missing(tx, stream)
}

/// Moves the rows of the row table `stream` (columns `columns`, `width` of them, each cell read
/// by `cell`) into a new block table, and drops the row table.
fn fill(
    tx: &Transaction<'_>,
    stream: &str,
    columns: &str,
    width: usize,
    cell: impl Fn(rusqlite::types::ValueRef<'_>, usize) -> Result<Value>,
) -> Result<()> {
    create(tx, stream)?;
    let mut blocks = Builder::new(tx, stream)?;
    let mut select = tx.prepare(&format!(
        "SELECT \"_seq\", {columns} FROM {} ORDER BY \"_seq\"",
        ident(stream)
    ))?;
    let mut rows = select.query([])?;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        for i in 0..width {
            blocks.body.value(&cell(r.get_ref(i + 1)?, i)?);
        }
        blocks.end_event(seq)?;
    }
    blocks.write()?;
    std::mem::drop(rows);
    std::mem::drop(select);
    std::mem::drop(blocks);
    tx.execute_batch(&format!("DROP TABLE {}", ident(stream)))?;
    Ok(())
}

/// The reverse of [`convert`], for tests of the upgrades: a row table named as the stream with
/// every stored event, the block table dropped.
pub(crate) fn to_rows(tx: &Transaction<'_>, stream: &StreamDef) -> Result<()> {
    let mut cols = vec!["\"_seq\" INTEGER PRIMARY KEY".to_owned()];
    for c in &stream.columns {
        cols.push(format!(
            "{} {}",
            ident(&c.name),
            crate::sqlite::column_type(c.ty)
        ));
    }
    tx.execute_batch(&format!(
        "CREATE TABLE {} ({})",
        ident(&stream.name),
        cols.join(", ")
    ))?;
    let events = read(tx, stream, 0, usize::MAX)?;
    let names: Vec<String> = std::iter::once("\"_seq\"".to_owned())
        .chain(stream.columns.iter().map(|c| ident(&c.name)))
        .collect();
    let mut insert = tx.prepare(&format!(
        "INSERT INTO {} ({}) VALUES ({})",
        ident(&stream.name),
        names.join(", "),
        vec!["?"; names.len()].join(", ")
    ))?;
    for e in events {
        let mut values = vec![rusqlite::types::ToSqlOutput::from(e.seq as i64)];
        values.extend(e.row.iter().map(crate::sqlite::raw_sql));
        insert.execute(rusqlite::params_from_iter(values))?;
    }
    tx.execute_batch(&format!("DROP TABLE {}", table(&stream.name)))?;
    Ok(())
}
