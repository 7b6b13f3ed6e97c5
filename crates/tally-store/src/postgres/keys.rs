//! The dedupe keys of a PostgreSQL stream: the key table (one row per stored key, found by a
//! hash index on `h`, PostgreSQL's 64-bit hash of the typed key seeded by the tenant), the
//! probe of an append's keys against it, and [`KeyFilter`], a Bloom filter of the stored keys
//! that a tenant's connection keeps so that most appends need no probe.
//!
//! Most keys of an append are new. The probe of 10,000 of them cost 1.3 µs a key, a quarter of
//! an append (docs/performance.md, twenty-fourth round); the filter rules nearly all of them out
//! in memory. It holds a hash of every key stored up to `known`, the stream's `last_seq` it was
//! last in step with: the first 8 bytes of the key's SHA-256 (as on SQLite; `tally ingest`
//! computes them on its decoding thread, [`crate::KeyHashes`]). It was built in the stream's
//! `incarnation`, a number `tally_streams` gives the stream each time it is created (migration
//! 10). An append brings it in step under the stream's row lock, before its probe: the keys of
//! events other nodes appended since `known` are read from their blocks (the index on
//! `(tenant_id, _last_seq)` finds them); a stream created again since, or a filter past its
//! room, is read whole. Events erased or dropped by retention leave their hashes in it: a key
//! of theirs is probed, and the key table, which lost it with them, says it is new. So the
//! filter never rules out a stored key, and a hit costs what a probe cost before.
//!
//! Only streams whose keys have one text for every equal value are filtered (text, integers,
//! booleans, timestamps, and composites of those; [`KeyFilter::applies`]): `1.0 = 1.00` as
//! `numeric`, but their texts, and so their hashes, differ.

use std::collections::HashSet;

use postgres::Transaction;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use tally_views::{ColumnDef, StreamDef, Type, Value};

use super::data::{array_param, event_columns, unnested};
use super::ddl::{blocks_table, derived};
use super::wire::{WireArray, from_stage, key_text, quote, raw_type, read_cell};
use crate::bloom::{Bloom, MAX_KEYS};
use crate::error::Result;
use crate::sqlite_keys::key_hash as filter_hash;

/// Which of `rows` to store: not a duplicate of an earlier row of the batch, nor of a stored
/// event of the tenant, by the dedupe column `d` (NULL keys are never duplicates, as in a unique
/// index). Stored keys are looked up in the stream's key table, one index probe per distinct
/// key of the batch that `filter` (with each row's filter hash) does not rule out, by its hash
/// `h` (`LATERAL … LIMIT 1`, so no plan reads the tenant's whole table), compared by PostgreSQL
/// as the column's type.
pub(super) fn fresh_rows(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    keys: &[Option<Value>],
    filter: Option<(&KeyFilter, &[Option<i64>])>,
) -> Result<Vec<bool>> {
    let mut seen: HashSet<&Value> = HashSet::with_capacity(keys.len());
    let mut fresh = vec![true; keys.len()];
    let mut probed: Vec<(usize, String)> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key else {
            continue;
        };
        if !seen.insert(key) {
            fresh[i] = false;
        } else if filter.is_none_or(|(f, hashes)| hashes[i].is_none_or(|h| f.bloom.may_hold(h))) {
            probed.push((i, key_text(key)));
        }
    }
    if probed.is_empty() {
        return Ok(fresh);
    }
    let texts: Vec<&str> = probed.iter().map(|(_, k)| k.as_str()).collect();
    let probe = match key_type(stream) {
        Type::Text => "u.k".to_owned(),
        other => format!("u.k::{}", raw_type(other)),
    };
    // The index finds the key by its hash; tenant and key are compared on the row. The typed
    // keys and their hashes are computed before the lookup (a materialized common table
    // expression, so the planner does not move them back into it): under row-level security a
    // condition that passes a column to a function that is not leakproof (the hash functions,
    // `numeric` equality) cannot be an index condition.
    let sql = format!(
        "WITH u AS MATERIALIZED (SELECT i, {probe} AS v, {} AS h FROM unnest($2::text[]) WITH ORDINALITY AS u(k, i))
         SELECT u.i FROM u
           CROSS JOIN LATERAL (SELECT 1 FROM {} t WHERE t.h = u.h AND t.tenant_id = $1 AND t.key = u.v LIMIT 1) stored",
        key_hash(&probe, key_type(stream), "$1"),
        quote(&derived(&stream.name, "keys")),
    );
    for row in tx.query(&sql, &[&tenant, &texts])? {
        let ordinal: i64 = row.get(0);
        if let Some(&(i, _)) = probed.get(ordinal as usize - 1) {
            fresh[i] = false;
        }
    }
    Ok(fresh)
}

/// The SQL of a dedupe key's 64-bit hash, the `h` of the key table, from `value`, an
/// expression of the key column's type `ty`, seeded by the hash of `tenant` (an expression of
/// the tenant's name), so that tenants sharing a key do not share its hash. Computed by
/// PostgreSQL from the typed value, so equal keys hash alike however they were written (`1.0`
/// and `1.00` as `numeric`), and the same on every node: no text form that depends on session
/// settings. Migration 7 uses the same expressions.
pub(super) fn key_hash(value: &str, ty: Type, tenant: &str) -> String {
    let seed = format!("hashtextextended({tenant}, 0)");
    match ty {
        Type::BigInt => format!("hashint8extended({value}, {seed})"),
        Type::Double => format!("hashfloat8extended({value}, {seed})"),
        Type::Decimal { .. } => format!("hash_numeric_extended({value}, {seed})"),
        Type::Boolean => format!("hashint4extended(({value})::int, {seed})"),
        Type::Timestamp => {
            format!("hashint8extended((extract(epoch from {value}) * 1000000)::bigint, {seed})")
        }
        Type::Text | Type::Json => format!("hashtextextended(({value})::text, {seed})"),
    }
}

/// The type of a stream's keys table column: the key column's, or `TEXT` for a composite key.
pub(super) fn key_type(stream: &StreamDef) -> Type {
    match stream.dedupe_key[..] {
        [d] => stream.columns[d].ty,
        _ => Type::Text,
    }
}

/// Records the dedupe keys of stored `events` in the stream's key table, with their hashes
/// (see [`fresh_rows`]), sequence numbers and event times: one statement over three array
/// parameters.
pub(super) fn insert_keys(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    events: &[(i64, &[Value])],
) -> Result<()> {
    let composite: Vec<Value>;
    let (keys, ty): (Vec<&Value>, Type) = match stream.dedupe_key[..] {
        [d] => (
            events.iter().map(|(_, row)| &row[d]).collect(),
            stream.columns[d].ty,
        ),
        _ => {
            composite = events
                .iter()
                .map(|(_, row)| stream.dedupe_value(row).unwrap_or(Value::Null))
                .collect();
            (composite.iter().collect(), Type::Text)
        }
    };
    let seqs: Vec<i64> = events.iter().map(|(s, _)| *s).collect();
    let times = WireArray(
        events
            .iter()
            .map(|(_, row)| &row[stream.event_time])
            .collect(),
    );
    let key = from_stage("k.v", ty);
    tx.execute(
        &format!(
            "INSERT INTO {} (tenant_id, key, h, _seq, at) SELECT $1, {key}, {}, k.s, k.a \
             FROM unnest({}, $3::bigint[], $4::timestamptz[]) AS k(v, s, a) WHERE k.v IS NOT NULL",
            quote(&derived(&stream.name, "keys")),
            key_hash(&key, ty, "$1"),
            array_param(2, ty),
        ),
        &[&tenant, &WireArray(keys), &seqs, &times],
    )?;
    Ok(())
}

/// A Bloom filter of a stream's stored keys, kept by a tenant's connection (see the module's
/// documentation).
pub(crate) struct KeyFilter {
    bloom: Bloom,
    /// The stream's `last_seq` up to which it holds every stored key.
    known: i64,
    /// The stream's `incarnation` it was built in.
    incarnation: i64,
    /// The `last_seq` it was built at: one without bits (too many keys) is built again once
    /// [`REBUILD_EVENTS`] more events came, in case retention left fewer.
    built: i64,
}

/// Events after which a filter without bits is built again.
const REBUILD_EVENTS: i64 = (MAX_KEYS / 4) as i64;

impl KeyFilter {
    /// Whether appends of `stream` keep a filter: it has a dedupe key, and each of its key
    /// columns has one text for every value PostgreSQL holds equal (not `DECIMAL`).
    pub(crate) fn applies(stream: &StreamDef) -> bool {
        stream.has_dedupe_key()
            && stream.dedupe_key.iter().all(|&d| {
                matches!(
                    stream.columns[d].ty,
                    Type::Text | Type::BigInt | Type::Boolean | Type::Timestamp
                )
            })
    }

    /// The filter of the stream's keys stored up to `last` in `incarnation`, as `tx` sees them
    /// under the stream's row lock: `old` when it is in step, brought in step when only appends
    /// came since, else built from every stored key.
    pub(super) fn current(
        old: Option<KeyFilter>,
        tx: &mut Transaction<'_>,
        tenant: &str,
        stream: &StreamDef,
        last: i64,
        incarnation: i64,
    ) -> Result<KeyFilter> {
        let mut f = match old {
            Some(f) if f.incarnation == incarnation && f.known == last => f,
            Some(mut f) if f.incarnation == incarnation && f.known < last => {
                if f.bloom.has_bits() {
                    for h in stored_hashes(tx, tenant, stream, f.known, last)? {
                        f.bloom.insert(h);
                    }
                }
                f.known = last;
                f
            }
            _ => return KeyFilter::build(tx, tenant, stream, last, incarnation, 1),
        };
        if !f.bloom.has_bits() && last - f.built >= REBUILD_EVENTS {
            f = KeyFilter::build(tx, tenant, stream, last, incarnation, 1)?;
        } else if f.bloom.over_capacity() {
            // Grown past its room: built again with room for four times its keys, so that a
            // growing stream's keys are read again about a third of a time each in all.
            f = KeyFilter::build(tx, tenant, stream, last, incarnation, 2)?;
        }
        Ok(f)
    }

    /// Reads the hash of every stored key (none when there are more events than a filter
    /// keeps bits for: then it rules nothing out), into a filter with room for `growth` × 2
    /// times as many keys as the stream has events.
    fn build(
        tx: &mut Transaction<'_>,
        tenant: &str,
        stream: &StreamDef,
        last: i64,
        incarnation: i64,
        growth: usize,
    ) -> Result<KeyFilter> {
        let events: i64 = tx
            .query_one(
                &format!(
                    "SELECT coalesce(sum(_n), 0)::bigint FROM {} WHERE tenant_id = $1",
                    quote(&blocks_table(&stream.name))
                ),
                &[&tenant],
            )?
            .get(0);
        let events = usize::try_from(events).unwrap_or(0);
        let room = match events <= MAX_KEYS {
            true => events.saturating_mul(growth).min(MAX_KEYS),
            false => events,
        };
        let mut bloom = Bloom::for_keys(room);
        if bloom.has_bits() {
            for h in stored_hashes(tx, tenant, stream, 0, last)? {
                bloom.insert(h);
            }
        }
        Ok(KeyFilter {
            bloom,
            known: last,
            incarnation,
            built: last,
        })
    }

    /// The filter after its own append committed: its stored keys' hashes are in, and the
    /// stream's `last_seq` is `last`.
    pub(super) fn stored(&mut self, hashes: impl IntoIterator<Item = i64>, last: i64) {
        for h in hashes {
            self.bloom.insert(h);
        }
        self.known = last;
    }
}

/// The [`key_hash`](crate::sqlite_keys::key_hash)es of the stream's stored keys with sequence
/// numbers in `after + 1..=upto`, read from the blocks of the appends after `after`.
fn stored_hashes(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    after: i64,
    upto: i64,
) -> Result<Vec<i64>> {
    let key: Vec<&ColumnDef> = stream
        .dedupe_key
        .iter()
        .map(|&d| &stream.columns[d])
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE b.tenant_id = $1 AND b._last_seq > $2 AND e._seq > $2 AND e._seq <= $3",
        event_columns(key.iter().copied()),
        unnested(stream, key.iter().copied()),
    );
    // Rows streamed, not collected: a filter built for millions of keys holds their hashes
    // only.
    let mut rows = tx.query_raw(&sql, [&tenant as &dyn ToSql, &after, &upto])?;
    let mut hashes = Vec::new();
    while let Some(r) = rows.next()? {
        let parts = key
            .iter()
            .enumerate()
            .map(|(i, c)| read_cell(&r, i, c.ty))
            .collect::<Result<Vec<_>>>()?;
        if let Some(key) = StreamDef::key_of_parts(&parts) {
            hashes.push(filter_hash(&key));
        }
    }
    Ok(hashes)
}
