//! The dedupe index of a SQLite stream's raw events: 64-bit hashes of the keys.
//!
//! Dedupe keys are random (Segment's `messageId` is a UUID), so a B-tree over them takes each
//! insert at a random leaf: a commit of 10,000 events dirtied almost every page of a large unique
//! index, and the WAL wrote the whole index again at every commit. Here a key is known by `h`,
//! the first 8 bytes of the SHA-256 of its text, and the row's `_seq`:
//!
//! - the keys of the rows after `tally_streams.keys_merged` (the recent ones) are not stored
//!   apart: they are the keys of those rows, kept in memory ([`RecentKeys`]) and read back from
//!   the raw events when a process opens the stream or finds `last_seq`, `keys_merged` or
//!   `keys_epoch` changed by another process (an append, a merge, retention, the stream created
//!   again);
//! - older keys are in `tally_keyblocks__{stream}`: blocks of up to [`BLOCK_KEYS`] `(h, _seq)`
//!   pairs in key order, 16 bytes each, one blob a row, each row keyed by the highest hash its
//!   block may hold (`hi`, the rowid; a block holds the keys above the previous block's `hi`
//!   up to its own, so a lookup is one descent to the first row at or above a hash). When as
//!   many keys are recent as the blocks hold ([`merge_rows`]: at least [`MERGE_ROWS`], at most
//!   [`MAX_RECENT`]), the appending transaction merges them into the blocks in key order and
//!   moves `keys_merged` to its last row, so a commit otherwise writes no key at all. A merge
//!   rewrites each block that gets a key (splitting those that grow past [`BLOCK_KEYS`]): a
//!   few statements and a copy of 4 KB a block, where one B-tree insert a key cost about 3,600
//!   instructions (the thirty-first round of docs/performance.md). Random hashes land in every
//!   block once the recent keys outnumber the blocks, so a merge writes the whole table again:
//!   merging as the table doubles makes that about twice the stored keys in all, up to
//!   [`MAX_RECENT`] recent keys; past that a merge comes every [`MAX_RECENT`] keys and the
//!   writes grow with the square of the stream again (eight times less steeply than with
//!   merges every [`MERGE_ROWS`]).
//!
//! The hashes of a batch may come with it, computed by the caller on another thread
//! ([`KeyHashes`], [`crate::TenantStore::append_hashed`]: `tally ingest` hashes on its decoding
//! thread). An append looks the hashes of its batch up in memory and in the blocks (one block
//! read a hash, in key order), skipping the hashes that the process's Bloom filter of the
//! blocks ([`KeyFilter`], kept in step through `keys_merged` and `keys_epoch` like the recent
//! keys) rules out; a hit is a duplicate only when the raw event at that `_seq` holds the same key
//! (two keys of one hash are both kept). Retention and erasure delete a row's key with the row,
//! by `(h, _seq)` computed from the row's key, rewriting the blocks that held them (so nothing
//! indexes `_seq`); a recent key of a deleted row no longer matches its row. NULL keys are
//! never duplicates and are not indexed, as in a unique index.
//!
//! Earlier layouts are converted on the first append of a process, inside its write
//! transaction: a unique index on the key column (every key is hashed into the blocks), a
//! `WITHOUT ROWID` table `tally_keys__{stream}` of `(h, _seq)` (its keys moved into the blocks,
//! those after `keys_merged` staying recent), with in a still earlier layout a
//! `tally_recent__{stream}` table of recent keys (moved into the blocks too) or an index on its
//! `_seq` (dropped).

use hashbrown::HashTable;
use rusqlite::{CachedStatement, Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use tally_views::{StreamDef, Value};

use crate::bloom::Bloom;
use crate::error::Result;
use crate::sqlite::{ident, table_exists};

/// Recent keys that make the appending transaction merge them into the blocks when these hold
/// fewer.
pub(crate) const MERGE_ROWS: usize = 65_536;

/// The most recent keys a process keeps in memory (17 bytes a slot, at most 1,048,576 slots:
/// about 18 MB a stream) and reads back from the raw events, hashing each, whenever it is not in
/// step with the stream (it opens it; retention, an erasure or another process wrote). Past
/// this many, a merge comes every `MAX_RECENT` keys.
pub(crate) const MAX_RECENT: usize = 1 << 19;

/// Recent keys that make an append merge them into blocks of `large` keys.
pub(crate) fn merge_rows(large: usize) -> usize {
    large.clamp(MERGE_ROWS, MAX_RECENT)
}

fn recent(stream: &str) -> String {
    ident(&format!("tally_recent__{stream}"))
}

/// The `WITHOUT ROWID` key table of the previous layout.
fn old_keys(stream: &str) -> String {
    ident(&format!("tally_keys__{stream}"))
}

fn blocks(stream: &str) -> String {
    ident(&format!("tally_keyblocks__{stream}"))
}

/// The statement that reads the block whose range may hold a hash: the first at or above it.
fn block_at(stream: &str) -> String {
    format!(
        "SELECT hi, keys FROM {} WHERE hi >= ?1 ORDER BY hi LIMIT 1",
        blocks(stream)
    )
}

/// The most keys a block is written with (4,000 bytes: one row fits a page of 4 KB); a block
/// holds more only when more keys share its last hash, which a lookup must find in one block.
pub(crate) const BLOCK_KEYS: usize = 250;

/// Bytes of a key in a block: its hash, then its `_seq`, little-endian.
const ENTRY: usize = 16;

/// The `(h, _seq)` pairs of a block.
fn entries(block: &[u8]) -> impl Iterator<Item = (i64, i64)> + '_ {
    block.chunks_exact(ENTRY).map(entry)
}

fn entry(e: &[u8]) -> (i64, i64) {
    let int = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
    (int(&e[..8]), int(&e[8..ENTRY]))
}

/// The block of `pairs` (in key order).
fn encode(pairs: &[(i64, i64)]) -> Vec<u8> {
    let mut block = Vec::with_capacity(pairs.len() * ENTRY);
    for &(h, seq) in pairs {
        block.extend_from_slice(&h.to_le_bytes());
        block.extend_from_slice(&seq.to_le_bytes());
    }
    block
}

/// The `_seq`s of the keys of hash `h` in a block (a binary search).
fn seqs_in(block: &[u8], h: i64) -> impl Iterator<Item = i64> + '_ {
    let n = block.len() / ENTRY;
    let at = |i: usize| entry(&block[i * ENTRY..(i + 1) * ENTRY]);
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if at(mid).0 < h {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo..n).map(at).take_while(move |e| e.0 == h).map(|e| e.1)
}

/// The dedupe keys of a batch of rows and their hashes (SHA-256 prefixes), which a SQLite store
/// indexes them by and a PostgreSQL one filters them by (`postgres/keys.rs`): the part
/// of an append that needs no store, which a caller can compute on another thread than the one
/// that writes ([`crate::TenantStore::append_hashed`]). Rows without a key (a NULL key, a
/// stream without one) have `None`.
#[derive(Debug, PartialEq)]
pub struct KeyHashes {
    /// The stream the rows belong to: hashes given for another stream are not used.
    pub(crate) stream: String,
    pub(crate) keys: Vec<Option<Value>>,
    pub(crate) hashes: Vec<Option<i64>>,
}

impl KeyHashes {
    /// The keys and hashes of `rows` of `stream`.
    pub fn new(stream: &StreamDef, rows: &[Vec<Value>]) -> KeyHashes {
        KeyHashes::of(stream, rows)
    }

    /// [`KeyHashes::new`] of rows not held in one slice.
    pub fn of<'r>(stream: &StreamDef, rows: impl IntoIterator<Item = &'r Vec<Value>>) -> KeyHashes {
        let keys = KeyHashes::keys(stream, rows);
        let hashes = keys.iter().map(|k| k.as_ref().map(key_hash)).collect();
        KeyHashes {
            stream: stream.name.clone(),
            keys,
            hashes,
        }
    }

    /// Describes `other`'s rows after these (the rows of a group of batches, in order); `false`,
    /// and nothing appended, if `other` describes another stream's.
    pub fn append(&mut self, other: KeyHashes) -> bool {
        if other.stream != self.stream {
            return false;
        }
        self.keys.extend(other.keys);
        self.hashes.extend(other.hashes);
        true
    }

    /// These if they were computed for `rows` of `stream`, else computed now. A caller's
    /// mistake (hashes of other rows of the same number) would store wrong keys, or keep a
    /// filter that misses stored ones, so every build compares every key.
    pub(crate) fn for_rows(
        given: Option<KeyHashes>,
        stream: &StreamDef,
        rows: &[Vec<Value>],
    ) -> KeyHashes {
        match given {
            Some(h) if h.describes(stream, rows) => h,
            _ => KeyHashes::new(stream, rows),
        }
    }

    /// Whether these are the keys of `rows` of `stream`. Cheap for a single key column: each
    /// row's key is compared with a copy of it (short text in the value, longer text the same
    /// allocation), with no hashing.
    fn describes(&self, stream: &StreamDef, rows: &[Vec<Value>]) -> bool {
        if self.stream != stream.name || self.keys.len() != rows.len() {
            return false;
        }
        match stream.dedupe_key[..] {
            [] => self.keys.iter().all(Option::is_none),
            [d] => self.keys.iter().zip(rows).all(|(key, row)| match key {
                Some(key) => *key == row[d],
                None => row[d].is_null(),
            }),
            _ => self.keys == KeyHashes::keys(stream, rows),
        }
    }

    /// Each row's dedupe key (`None` for a NULL key or a stream without keys).
    fn keys<'r>(
        stream: &StreamDef,
        rows: impl IntoIterator<Item = &'r Vec<Value>>,
    ) -> Vec<Option<Value>> {
        let keyed = stream.has_dedupe_key();
        rows.into_iter()
            .map(|row| keyed.then(|| stream.dedupe_value(row)).flatten())
            .collect()
    }

    /// The number of rows described.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no row is described.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The hash a key is indexed by: the first 8 bytes of the SHA-256 of its text.
pub(crate) fn key_hash(key: &Value) -> i64 {
    let digest = match key.as_str() {
        Some(s) => Sha256::digest(s.as_bytes()),
        None => Sha256::digest(key.to_string().as_bytes()),
    };
    i64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// Whether the stream's keys are hashed: its blocks exist, or the key table of the previous
/// layout (converted at the next append).
pub(crate) fn converted(conn: &Connection, stream: &str) -> Result<bool> {
    Ok(table_exists(conn, &format!("tally_keyblocks__{stream}"))?
        || table_exists(conn, &format!("tally_keys__{stream}"))?)
}

/// Creates the key blocks of a stream (dropping any left from an earlier definition).
pub(crate) fn create(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    drop(tx, stream)?;
    create_blocks(tx, stream)
}

fn create_blocks(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "CREATE TABLE {} (hi INTEGER PRIMARY KEY, keys BLOB NOT NULL);",
        blocks(stream)
    ))?;
    Ok(())
}

/// Drops the key tables of a stream, of this layout and the earlier ones.
pub(crate) fn drop(tx: &Transaction<'_>, stream: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        recent(stream),
        old_keys(stream),
        blocks(stream)
    ))?;
    Ok(())
}

/// The keys of a stream's rows after `keys_merged`, by hash, as of `last_seq`.
pub(crate) struct RecentKeys {
    /// `tally_streams.last_seq` when these were last in step with the raw events.
    last_seq: i64,
    /// `tally_streams.keys_merged` then.
    merged: i64,
    /// `tally_streams.keys_epoch` then: a random value that changes when the stream is
    /// created again or retention deletes rows, which `last_seq` alone would not show.
    epoch: i64,
    /// `(h, _seq)`, hashed by `h` (a SHA-256 prefix is hash enough).
    keys: HashTable<(i64, i64)>,
}

impl RecentKeys {
    /// Whether these are the recent keys of a stream at `last_seq`, `merged` and `epoch`: no
    /// other process appended, merged, deleted rows or created the stream again since this one
    /// appended.
    pub(crate) fn in_step(&self, last_seq: i64, merged: i64, epoch: i64) -> bool {
        self.last_seq == last_seq && self.merged == merged && self.epoch == epoch
    }

    /// Reads the recent keys of a stream with a dedupe key from its raw events, converting an
    /// earlier layout first. Runs inside the appending transaction; returns them with
    /// `keys_merged` as it is then.
    pub(crate) fn load(
        tx: &Transaction<'_>,
        stream: &StreamDef,
        last_seq: i64,
        merged: i64,
        epoch: i64,
    ) -> Result<RecentKeys> {
        let merged = upgrade(tx, stream, last_seq, merged)?;
        let mut recent = RecentKeys {
            last_seq,
            merged,
            epoch,
            keys: HashTable::new(),
        };
        for (h, seq) in hashes_after(tx, stream, merged)? {
            recent.insert(h, seq);
        }
        Ok(recent)
    }

    /// `tally_streams.keys_merged` as these keys know it.
    pub(crate) fn merged(&self) -> i64 {
        self.merged
    }

    fn insert(&mut self, h: i64, seq: i64) {
        self.keys.insert_unique(h as u64, (h, seq), |e| e.0 as u64);
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The rows holding a recent key of hash `h`.
    fn seqs(&self, h: i64) -> impl Iterator<Item = i64> + '_ {
        self.keys
            .iter_hash(h as u64)
            .filter(move |e| e.0 == h)
            .map(|e| e.1)
    }
}

/// A Bloom filter of the hashes in a stream's key blocks, kept by the appending process, with
/// their number (which decides when the recent keys are merged).
/// Most keys of a batch are new, and the filter says so without reading a block (probing every
/// key of a batch was an eighth of an append). It holds every hash of the blocks as of
/// `keys_merged` = `merged` and `keys_epoch` = `epoch`; rows deleted since (retention, an
/// erasure) leave their hashes in it, which costs a probe and nothing else. It may be thin
/// ([`Bloom::for_keys_or_thin`]): built for more than [`crate::bloom::MAX_KEYS`] keys, or grown
/// to 16 MB, it holds up to [`crate::bloom::MAX_THIN_KEYS`] at 8 bits a key (about 3 % false
/// positives at capacity); built for more, it gets no bits and every hash is probed, as without
/// a filter.
pub(crate) struct KeyFilter {
    /// The table's hashes; its count: the keys counted when the filter was built, plus those
    /// merged since (rows deleted since are still counted).
    bloom: Bloom,
    merged: i64,
    epoch: i64,
}

impl KeyFilter {
    /// The filter of the blocks as they are in `tx`: `old` brought up to date when it can be
    /// (same epoch: only merges happened since, whose keys are those of the raw events after its
    /// `merged`), else built from the blocks.
    pub(crate) fn current(
        old: Option<KeyFilter>,
        tx: &Transaction<'_>,
        stream: &StreamDef,
        merged: i64,
        epoch: i64,
    ) -> Result<KeyFilter> {
        match old {
            Some(f) if f.epoch == epoch && f.merged == merged => Ok(f),
            Some(mut f) if f.epoch == epoch && f.merged < merged => {
                for (h, _) in hashes_in(tx, stream, f.merged, merged)? {
                    f.bloom.insert(h);
                }
                f.merged = merged;
                if f.bloom.over_capacity() {
                    f = KeyFilter::build(tx, &stream.name, merged, epoch)?;
                }
                Ok(f)
            }
            _ => KeyFilter::build(tx, &stream.name, merged, epoch),
        }
    }

    /// Reads every hash of the blocks.
    fn build(tx: &Transaction<'_>, stream: &str, merged: i64, epoch: i64) -> Result<KeyFilter> {
        let table = blocks(stream);
        let bytes: i64 = tx.query_row(
            &format!("SELECT coalesce(sum(length(keys)), 0) FROM {table}"),
            [],
            |r| r.get(0),
        )?;
        let n = bytes as usize / ENTRY;
        let mut bloom = Bloom::for_keys_or_thin(n);
        if bloom.has_bits() {
            let mut stmt = tx.prepare(&format!("SELECT keys FROM {table}"))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let keys: Vec<u8> = r.get(0)?;
                for (h, _) in entries(&keys) {
                    bloom.insert(h);
                }
            }
        }
        bloom.set_len(n);
        Ok(KeyFilter {
            bloom,
            merged,
            epoch,
        })
    }

    /// Whether `h` may be in the table: false only when it is certainly not.
    pub(crate) fn may_hold(&self, h: i64) -> bool {
        self.bloom.may_hold(h)
    }

    /// The `keys_epoch` it was last in step with.
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The filter after its own process's retention or erasure moved the epoch: deletions leave
    /// it a superset of the blocks.
    pub(crate) fn with_epoch(mut self, epoch: i64) -> KeyFilter {
        self.epoch = epoch;
        self
    }
}

/// Converts a stream of an earlier layout inside `tx`; returns `keys_merged` after it.
/// - A stream with a unique index on its key column has every stored key hashed into the
///   blocks, and `keys_merged` moved to `last_seq`.
/// - One with the previous layout's key table has its keys moved into the blocks; those after
///   `keys_merged` stay recent.
/// - One with a recent key table as well (the layout before) has those moved into the blocks
///   too, and `keys_merged` moved to `last_seq`.
fn upgrade(tx: &Transaction<'_>, stream: &StreamDef, last_seq: i64, merged: i64) -> Result<i64> {
    let name = &stream.name;
    if table_exists(tx, &format!("tally_keyblocks__{name}"))? {
        return Ok(merged);
    }
    create_blocks(tx, name)?;
    if !table_exists(tx, &format!("tally_keys__{name}"))? {
        add_sorted(tx, name, hashes_after(tx, stream, 0)?)?;
        tx.execute_batch(&format!(
            "DROP INDEX IF EXISTS {}",
            ident(&format!("{name}__dedupe"))
        ))?;
        set_merged(tx, name, last_seq)?;
        return Ok(last_seq);
    }
    let mut pairs = pairs_of(tx, &old_keys(name))?;
    let had_recent = table_exists(tx, &format!("tally_recent__{name}"))?;
    if had_recent {
        pairs.extend(pairs_of(tx, &recent(name))?);
    }
    add_sorted(tx, name, pairs)?;
    // The previous layout's table had, in the layout before, an index on `_seq`: it goes with it.
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        old_keys(name),
        recent(name)
    ))?;
    if had_recent {
        set_merged(tx, name, last_seq)?;
        return Ok(last_seq);
    }
    Ok(merged)
}

/// The `(h, _seq)` rows of a key table of an earlier layout.
fn pairs_of(tx: &Transaction<'_>, table: &str) -> Result<Vec<(i64, i64)>> {
    let mut stmt = tx.prepare(&format!("SELECT h, \"_seq\" FROM {table}"))?;
    let pairs = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(pairs)
}

/// The key hashes of the stream's rows after `after`, as `(h, _seq)`, read from the raw events
/// (rows with a NULL key have none).
fn hashes_after(tx: &Transaction<'_>, stream: &StreamDef, after: i64) -> Result<Vec<(i64, i64)>> {
    hashes_in(tx, stream, after, i64::MAX)
}

/// The key hashes of the stream's rows in `after + 1..=upto`, as `(h, _seq)`.
fn hashes_in(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    after: i64,
    upto: i64,
) -> Result<Vec<(i64, i64)>> {
    assert!(
        stream.has_dedupe_key(),
        "only streams with a dedupe key have key tables"
    );
    let mut hashed = Vec::new();
    crate::sqlite_events::scan(tx, stream, after, upto, |seq, row| {
        if let Some(h) = row_hash(stream, &row) {
            hashed.push((h, seq));
        }
        Ok(true)
    })?;
    Ok(hashed)
}

/// The hash of a stored row's dedupe key; `None` when a key column is NULL.
pub(crate) fn row_hash(stream: &StreamDef, row: &[Value]) -> Option<i64> {
    stream.dedupe_value(row).map(|key| key_hash(&key))
}

fn set_merged(tx: &Transaction<'_>, stream: &str, merged: i64) -> Result<()> {
    tx.execute(
        "UPDATE tally_streams SET keys_merged = ? WHERE name = ?",
        params![merged, stream],
    )?;
    Ok(())
}

/// Merges `(h, _seq)` pairs into the stream's blocks ([`edit`]).
fn add_sorted(tx: &Transaction<'_>, stream: &str, mut pairs: Vec<(i64, i64)>) -> Result<()> {
    pairs.sort_unstable();
    pairs.dedup();
    edit(tx, stream, &pairs, Edit::Add)
}

/// What [`edit`] does to the blocks.
#[derive(Clone, Copy, PartialEq)]
enum Edit {
    Add,
    Remove,
}

/// Adds `pairs` (sorted, distinct) to the stream's blocks, or removes them, one block's range
/// at a time: the block whose range holds the next pair is read, the pairs up to its `hi`
/// merged into it or taken out of it, and it is written again (split into blocks of at most
/// [`BLOCK_KEYS`] keys as even as its keys allow, deleted when it is left empty). Pairs above
/// every block make blocks of their own when added, and are absent when removed.
fn edit(tx: &Transaction<'_>, stream: &str, pairs: &[(i64, i64)], edit: Edit) -> Result<()> {
    let table = blocks(stream);
    let mut at = tx.prepare_cached(&block_at(stream))?;
    let mut delete = tx.prepare_cached(&format!("DELETE FROM {table} WHERE hi = ?1"))?;
    let mut insert =
        tx.prepare_cached(&format!("INSERT INTO {table} (hi, keys) VALUES (?1, ?2)"))?;
    let mut rest = pairs;
    let mut edited = Vec::new();
    while let Some(&(h, _)) = rest.first() {
        let block: Option<(i64, Vec<u8>)> = at
            .query_row([h], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let n = block
            .as_ref()
            .map_or(rest.len(), |(hi, _)| rest.partition_point(|p| p.0 <= *hi));
        let (part, tail) = rest.split_at(n);
        rest = tail;
        edited.clear();
        match (edit, &block) {
            (Edit::Add, None) => edited.extend_from_slice(part),
            (Edit::Add, Some((_, keys))) => merge(entries(keys), part, &mut edited),
            (Edit::Remove, None) => continue,
            (Edit::Remove, Some((_, keys))) => {
                edited.extend(entries(keys).filter(|p| part.binary_search(p).is_err()));
                if edited.len() * ENTRY == keys.len() {
                    continue;
                }
            }
        }
        if let Some((hi, _)) = block {
            delete.execute([hi])?;
        }
        write_blocks(&mut insert, &edited)?;
    }
    Ok(())
}

/// `old` and `new` (both in key order) merged into `out`, in key order.
fn merge(old: impl Iterator<Item = (i64, i64)>, new: &[(i64, i64)], out: &mut Vec<(i64, i64)>) {
    let mut new = new.iter().copied().peekable();
    for o in old {
        while let Some(n) = new.next_if(|&n| n < o) {
            out.push(n);
        }
        new.next_if_eq(&o);
        out.push(o);
    }
    out.extend(new);
}

/// Writes `pairs` (in key order) as blocks of at most [`BLOCK_KEYS`] keys, as even as they
/// can be without parting keys of one hash, each keyed by its last hash.
fn write_blocks(insert: &mut CachedStatement<'_>, pairs: &[(i64, i64)]) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let size = pairs.len().div_ceil(pairs.len().div_ceil(BLOCK_KEYS));
    let mut rest = pairs;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while end < rest.len() && rest[end].0 == rest[end - 1].0 {
            end += 1;
        }
        insert.execute(params![rest[end - 1].0, encode(&rest[..end])])?;
        rest = &rest[end..];
    }
    Ok(())
}

/// What an append uses to find stored keys, prepared once per append.
pub(crate) struct Probe<'t> {
    find: CachedStatement<'t>,
    /// Reads the stored events whose keys a hash points at.
    events: crate::sqlite_events::Lookup,
    tx: &'t Transaction<'t>,
    stream: &'t StreamDef,
}

impl<'t> Probe<'t> {
    pub(crate) fn new(tx: &'t Transaction<'t>, stream: &'t StreamDef) -> Result<Probe<'t>> {
        Ok(Probe {
            find: tx.prepare_cached(&block_at(&stream.name))?,
            events: crate::sqlite_events::Lookup::new(),
            tx,
            stream,
        })
    }

    /// The stored keys (in the blocks) of the hashes in `hashes`, as `(h, _seq)`: the hashes in
    /// key order, each block read once for the hashes in it; none read when the filter rules
    /// every hash out (a group commit of a few single events mostly: a statement on an empty
    /// array was 10 % of such an append).
    pub(crate) fn stored(
        &mut self,
        mut hashes: Vec<i64>,
        filter: &KeyFilter,
    ) -> Result<HashTable<(i64, i64)>> {
        hashes.retain(|&h| filter.may_hold(h));
        let mut found = HashTable::new();
        hashes.sort_unstable();
        hashes.dedup();
        // The block read last, with its `hi`: it holds every stored hash from the one it was
        // read for up to `hi`.
        let mut block: Option<(i64, Vec<u8>)> = None;
        for h in hashes {
            if block.as_ref().is_none_or(|(hi, _)| *hi < h) {
                block = self
                    .find
                    .query_row([h], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
            }
            // No block: `h` is above every block, and so are the hashes after it.
            let Some((_, keys)) = &block else { break };
            for seq in seqs_in(keys, h) {
                found.insert_unique(h as u64, (h, seq), |e: &(i64, i64)| e.0 as u64);
            }
        }
        Ok(found)
    }

    /// Whether a stored row of key hash `h`, in the blocks (`stored`) or recent, holds `key`.
    pub(crate) fn holds(
        &mut self,
        stored: &HashTable<(i64, i64)>,
        recent: &RecentKeys,
        h: i64,
        key: &Value,
    ) -> Result<bool> {
        let large = stored.iter_hash(h as u64).filter(|e| e.0 == h).map(|e| e.1);
        let stream = self.stream;
        for seq in large.chain(recent.seqs(h)) {
            if let Some(row) = self.events.event(self.tx, stream, seq)?
                && stream.dedupe_value(&row).as_ref() == Some(key)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Records the keys an append stored (`(h, _seq)`, `last_seq` its last row) in `recent`, and,
/// when that makes [`merge_rows`] recent keys, merges them all into the blocks inside `tx`.
pub(crate) fn record(
    tx: &Transaction<'_>,
    stream: &StreamDef,
    recent: &mut RecentKeys,
    added: Vec<(i64, i64)>,
    last_seq: i64,
    filter: &mut KeyFilter,
) -> Result<()> {
    recent.last_seq = last_seq;
    if recent.len() + added.len() < merge_rows(filter.bloom.len()) {
        for (h, seq) in added {
            recent.insert(h, seq);
        }
        return Ok(());
    }
    let mut all: Vec<(i64, i64)> = recent.keys.drain().collect();
    recent.keys.shrink_to_fit(|e| e.0 as u64);
    all.extend(added);
    for &(h, _) in &all {
        filter.bloom.insert(h);
    }
    add_sorted(tx, &stream.name, all)?;
    set_merged(tx, &stream.name, last_seq)?;
    recent.merged = last_seq;
    filter.merged = last_seq;
    if filter.bloom.over_capacity() {
        *filter = KeyFilter::build(tx, &stream.name, last_seq, filter.epoch)?;
    }
    Ok(())
}

/// Keys of the rows of retention's spans that [`forget`] takes out in one walk over the blocks
/// (16 bytes each: 16 MB): the spans of 4,096 rows each would otherwise rewrite most blocks
/// once a span.
pub(crate) const FORGET_BATCH: usize = 1 << 20;

/// Deletes `(h, _seq)` pairs from the key blocks (a recent key is in none, and is forgotten when
/// the moved epoch makes every process read them again), and from the key tables of an earlier
/// layout not converted yet.
pub(crate) fn forget(tx: &Transaction<'_>, stream: &str, pairs: &[(i64, i64)]) -> Result<()> {
    let mut sorted = pairs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if table_exists(tx, &format!("tally_keyblocks__{stream}"))? {
        edit(tx, stream, &sorted, Edit::Remove)?;
    }
    for (table, name) in [
        (old_keys(stream), format!("tally_keys__{stream}")),
        (recent(stream), format!("tally_recent__{stream}")),
    ] {
        if !table_exists(tx, &name)? {
            continue;
        }
        let mut delete =
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE h = ? AND \"_seq\" = ?"))?;
        for &(h, seq) in &sorted {
            delete.execute(params![h, seq])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes of parts appended describe the whole: the same keys and hashes as of all the rows
    /// at once, in order; another stream's are refused.
    #[test]
    fn key_hashes_of_parts_append_to_those_of_the_whole() {
        let stream = |name: &str| {
            let schema = format!(
                "CREATE STREAM {name} (id TEXT, n BIGINT, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'id');"
            );
            let catalog = tally_views::sql::apply(&tally_views::Catalog::new(), &schema)
                .unwrap()
                .catalog;
            StreamDef::clone(catalog.stream(name).unwrap())
        };
        let (hits, other) = (stream("hits"), stream("other"));
        let row = |i: i64| {
            let id = if i % 5 == 0 {
                Value::Null
            } else {
                Value::text(&format!("k{}", i % 7))
            };
            vec![
                id,
                Value::Int(i),
                Value::Timestamp(tally_views::Timestamp(i)),
            ]
        };
        let rows: Vec<Vec<Value>> = (0..40).map(row).collect();
        let whole = KeyHashes::new(&hits, &rows);
        let mut parts = KeyHashes::of(&hits, &rows[..15]);
        assert!(parts.append(KeyHashes::of(&hits, rows[15..].iter())));
        assert_eq!((&parts.keys, &parts.hashes), (&whole.keys, &whole.hashes));
        assert!(whole.keys.iter().any(Option::is_none) && whole.keys.iter().any(Option::is_some));
        assert!(!parts.append(KeyHashes::of(&other, &rows[..3])));
        assert_eq!(parts.len(), 40);
    }

    /// Hashes given with a batch are used only when they are its rows' keys: those of other
    /// rows of the same number are computed again, in every build.
    #[test]
    fn hashes_of_other_rows_are_not_used() {
        let catalog = tally_views::sql::apply(
            &tally_views::Catalog::new(),
            "CREATE STREAM hits (id TEXT, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'id');",
        )
        .unwrap()
        .catalog;
        let hits = catalog.stream("hits").unwrap();
        let row = |id: Option<&str>| {
            vec![
                id.map_or(Value::Null, Value::text),
                Value::Timestamp(tally_views::Timestamp(0)),
            ]
        };
        let rows = [row(Some("a")), row(None), row(Some("b"))];
        let others = [row(Some("a")), row(Some("c")), row(Some("b"))];
        let own = KeyHashes::new(hits, &rows);
        let used = KeyHashes::for_rows(Some(KeyHashes::new(hits, &others)), hits, &rows);
        assert_eq!(used, own);
        let given = KeyHashes::new(hits, &rows);
        assert_eq!(KeyHashes::for_rows(Some(given), hits, &rows), own);
    }

    /// The blocks as stored: `(hi, pairs)` in `hi` order.
    fn read_blocks(tx: &Transaction<'_>) -> Vec<(i64, Vec<(i64, i64)>)> {
        let mut stmt = tx
            .prepare("SELECT hi, keys FROM tally_keyblocks__s ORDER BY hi")
            .unwrap();
        stmt.query_map([], |r| {
            let keys: Vec<u8> = r.get(1)?;
            Ok((r.get(0)?, entries(&keys).collect()))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Adds and removes of random pairs, many of a few hashes (more than a block holds), leave
    /// the blocks holding exactly the pairs a set holds: each block in key order, within its
    /// range (above the previous block's `hi`, up to its own), no larger than it must be, a
    /// hash never in two blocks; and a lookup of a hash (the probe's statement, then a binary
    /// search) finds exactly its pairs.
    #[test]
    fn blocks_edited_at_random_hold_what_a_set_holds() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        create_blocks(&tx, "s").unwrap();
        let mut model = std::collections::BTreeSet::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut seq = 0;
        let mut overfull = 0;
        for round in 0..40 {
            let mut pairs = Vec::new();
            for _ in 0..(next() % 2_000) {
                // One hash in four from a set of two: runs of one hash longer than a block.
                let h = if next() % 4 == 0 {
                    (next() % 2) as i64 * 1_000_003
                } else {
                    next() as i64
                };
                seq += 1;
                pairs.push((h, seq));
            }
            if round % 3 == 2 {
                // Remove about half of what is stored, and a few pairs never stored.
                let mut gone: Vec<(i64, i64)> =
                    model.iter().copied().filter(|_| next() % 2 == 0).collect();
                gone.extend(pairs.iter().take(10));
                gone.sort_unstable();
                gone.dedup();
                edit(&tx, "s", &gone, Edit::Remove).unwrap();
                for p in &gone {
                    model.remove(p);
                }
            } else {
                model.extend(pairs.iter().copied());
                add_sorted(&tx, "s", pairs).unwrap();
            }
            let blocks = read_blocks(&tx);
            let all: Vec<(i64, i64)> = blocks.iter().flat_map(|b| b.1.clone()).collect();
            assert_eq!(
                all,
                model.iter().copied().collect::<Vec<_>>(),
                "round {round}"
            );
            for (i, (hi, pairs)) in blocks.iter().enumerate() {
                assert!(!pairs.is_empty() && pairs.is_sorted());
                assert!(pairs.last().unwrap().0 <= *hi);
                if let Some((_, next_pairs)) = blocks.get(i + 1) {
                    assert!(next_pairs[0].0 > *hi);
                }
                let last = pairs.last().unwrap().0;
                let tail = pairs.iter().rev().take_while(|p| p.0 == last).count();
                assert!(pairs.len() <= BLOCK_KEYS || pairs.len() - tail < BLOCK_KEYS);
                overfull += usize::from(pairs.len() > BLOCK_KEYS);
            }
            let mut find = tx
                .prepare("SELECT keys FROM tally_keyblocks__s WHERE hi >= ?1 ORDER BY hi LIMIT 1")
                .unwrap();
            let probes = model
                .iter()
                .step_by(7)
                .map(|p| p.0)
                .chain((0..50).map(|_| next() as i64));
            for h in probes {
                let block: Option<Vec<u8>> = find.query_row([h], |r| r.get(0)).optional().unwrap();
                let found: Vec<i64> = block.map_or(Vec::new(), |b| seqs_in(&b, h).collect());
                let want: Vec<i64> = model
                    .range((h, i64::MIN)..=(h, i64::MAX))
                    .map(|p| p.1)
                    .collect();
                assert_eq!(found, want, "hash {h}");
            }
        }
        assert!(
            model.len() > 5 * BLOCK_KEYS,
            "the test stored many blocks' worth"
        );
        assert!(overfull > 0, "a hash held more keys than a block");
    }
}
