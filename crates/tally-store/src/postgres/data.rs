//! The data path of a tenant: append (dedupe through `keys.rs`: the connection's key filter,
//! then the key table; sequence numbers under the stream's row lock; the events as blocks of
//! arrays, one per week), reading events after a position (whole appends' blocks), loading view
//! states, flushing view rows with their positions (binary COPY into a staging table, one upsert
//! under the policy), snapshots for followers, erasure, and retention (dropping whole week
//! partitions where every tenant allows it, deleting or rewriting this tenant's blocks
//! otherwise).

use std::collections::HashMap;

use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type as PgType};

use tally_views::{ColumnDef, Event, StreamDef, Timestamp, Type, Value, ViewPlan};

use super::PgConn;
use super::conn::tenant_tx;
use super::ddl::{blocks_table, derived, partition_name, week_of};
use super::keys::{KeyFilter, fresh_rows, insert_keys};
use super::wire::{
    WEEK_MICROS, Wire, WireArray, insert_columns, quote, read_cell, stage_type, to_read,
};
use crate::error::{Result, StoreError};
use crate::sqlite_keys::KeyHashes;
use crate::types::{
    EncodedErasure, EncodedFlush, EncodedRow, LoggedRejection, RawSnapshot, RecordWrite, Rejected,
};

/// How many keys one `load_states` query looks up.
const LOAD_CHUNK: usize = 5_000;

/// How many blocks one round of [`read_events_in`] looks at, at most.
const READ_BLOCKS: i64 = 256;

/// Columns of a stream's events as [`read_cell`] reads them, from the unnested row `e`.
pub(super) fn event_columns<'c>(columns: impl IntoIterator<Item = &'c ColumnDef>) -> String {
    columns
        .into_iter()
        .map(|c| to_read(&format!("e.{}", quote(&c.name)), c.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `FROM` a stream's blocks `b`, each unnested into its events `e` (`_seq`, then `columns`).
pub(super) fn unnested<'c>(
    stream: &StreamDef,
    columns: impl IntoIterator<Item = &'c ColumnDef>,
) -> String {
    let names: Vec<String> = columns.into_iter().map(|c| quote(&c.name)).collect();
    format!(
        "{} b CROSS JOIN LATERAL unnest(b._seq, {}) AS e(_seq, {})",
        quote(&blocks_table(&stream.name)),
        names
            .iter()
            .map(|n| format!("b.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        names.join(", ")
    )
}

/// Events of rows selected as `e._seq, ` then [`event_columns`].
fn events_from(stream: &StreamDef, rows: &[postgres::Row]) -> Result<Vec<Event>> {
    rows.iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let row = stream
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| read_cell(r, i + 1, c.ty))
                .collect::<Result<Vec<_>>>()?;
            Ok(Event {
                seq: seq as u64,
                row,
            })
        })
        .collect()
}

/// Up to `limit` events of `stream` after `after`, in order, within `tx`. Each round reads the
/// blocks of whole appends after `after` (found by the index on `(tenant_id, _last_seq)`) until
/// they hold enough events, and sorts their events by sequence number: appends never overlap, so
/// every event up to the last block read is among them.
fn read_events_in(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    let blocks = quote(&blocks_table(&stream.name));
    let sizes_sql = format!(
        "SELECT _last_seq, _n FROM {blocks} WHERE tenant_id = $1 AND _last_seq > $2 ORDER BY _last_seq LIMIT {READ_BLOCKS}"
    );
    let events_sql = format!(
        "SELECT e._seq, {} FROM {} WHERE b.tenant_id = $1 AND b._last_seq > $2 AND b._last_seq <= $3 AND e._seq > $2 ORDER BY e._seq LIMIT $4",
        event_columns(&stream.columns),
        unnested(stream, &stream.columns)
    );
    let mut events: Vec<Event> = Vec::new();
    let mut after = i64::try_from(after).unwrap_or(i64::MAX);
    while events.len() < limit {
        let need = limit - events.len();
        let sizes = tx.query(&sizes_sql, &[&tenant, &after])?;
        let Some(last) = sizes.last() else { break };
        let last: i64 = last.get(0);
        // The blocks up to the one that holds enough events (at most: the first may hold some
        // at or before `after`), or all this round looked at.
        let mut bound = last;
        let mut held = 0_usize;
        for r in &sizes {
            held += usize::try_from(r.get::<_, i32>(1)).unwrap_or(0);
            if held >= need {
                bound = r.get(0);
                break;
            }
        }
        let take = i64::try_from(need).unwrap_or(i64::MAX);
        let rows = tx.query(&events_sql, &[&tenant, &after, &bound, &take])?;
        events.extend(events_from(stream, &rows)?);
        if bound == last && sizes.len() < READ_BLOCKS as usize {
            break;
        }
        after = bound;
    }
    Ok(events)
}

/// The SQL of block column parameter `$n` of type `ty`, as the column's array type.
pub(super) fn array_param(n: usize, ty: Type) -> String {
    match ty {
        Type::Decimal { .. } => format!("${n}::text[]::numeric[]"),
        Type::Json => format!("${n}::text[]::json[]"),
        other => format!("${n}::{}[]", stage_type(other).0),
    }
}

/// Writes `events` (sequence number and row, in order) of one append, whose numbers are within
/// `first..=last`, as blocks: one per week of their event time (and one for events without a
/// time), each column one array parameter (see [`stream_ddl`](super::ddl)). Returns nothing:
/// the caller's transaction commits them.
fn write_blocks(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    (first, last): (i64, i64),
    events: &[(i64, &[Value])],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut weeks: std::collections::BTreeMap<Option<i64>, Vec<usize>> = Default::default();
    for (i, (_, row)) in events.iter().enumerate() {
        let week = match row[stream.event_time] {
            Value::Timestamp(t) => Some(week_of(t)),
            _ => None,
        };
        weeks.entry(week).or_default().push(i);
    }
    let names: Vec<String> = stream.columns.iter().map(|c| quote(&c.name)).collect();
    let params: Vec<String> = stream
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| array_param(i + 7, c.ty))
        .collect();
    let insert = tx.prepare(&format!(
        "INSERT INTO {} (tenant_id, _week, _first_seq, _last_seq, _n, _seq, {}) VALUES ($1, $2::timestamptz, $3, $4, $5, $6::bigint[], {})",
        quote(&blocks_table(&stream.name)),
        names.join(", "),
        params.join(", ")
    ))?;
    for (week, members) in &weeks {
        let week = week.map(|w| Value::Timestamp(Timestamp(w)));
        let week = week.as_ref().map(Wire);
        let n = i32::try_from(members.len()).unwrap_or(i32::MAX);
        let seqs: Vec<i64> = members.iter().map(|&i| events[i].0).collect();
        let columns: Vec<WireArray<'_>> = (0..stream.columns.len())
            .map(|c| WireArray(members.iter().map(|&i| &events[i].1[c]).collect()))
            .collect();
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &week, &first, &last, &n, &seqs];
        values.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
        tx.execute(&insert, &values)?;
    }
    Ok(())
}

/// Rewrites the tenant's blocks of `stream` that `candidates` selects (a condition on the
/// blocks `b`, over `params`, `$1` the tenant), keeping only the events `keep` accepts: each is
/// deleted and written again, in its week, with its `_last_seq`; a block left empty goes.
/// Returns how many events went.
fn rewrite_blocks(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    candidates: &str,
    params: &[&(dyn ToSql + Sync)],
    keep: impl Fn(u64) -> bool,
) -> Result<u64> {
    let blocks = quote(&blocks_table(&stream.name));
    let found = tx.query(
        &format!("SELECT _week, _first_seq, _last_seq FROM {blocks} b WHERE b.tenant_id = $1 AND {candidates}"),
        params,
    )?;
    // A block is its week's (`=`, so that PostgreSQL reads one partition) and its `_last_seq`.
    let read = |week: &str| {
        format!(
            "SELECT e._seq, {} FROM {} WHERE b.tenant_id = $1 AND b._last_seq = $2 AND b._week {week} ORDER BY e._seq",
            event_columns(&stream.columns),
            unnested(stream, &stream.columns)
        )
    };
    let delete = |week: &str| {
        format!("DELETE FROM {blocks} WHERE tenant_id = $1 AND _last_seq = $2 AND _week {week}")
    };
    let mut removed = 0;
    for block in &found {
        let week: Option<std::time::SystemTime> = block.get(0);
        let (first, last): (i64, i64) = (block.get(1), block.get(2));
        let (rows, week_is) = match &week {
            Some(w) => (tx.query(&read("= $3"), &[&tenant, &last, w])?, "= $3"),
            None => (tx.query(&read("IS NULL"), &[&tenant, &last])?, "IS NULL"),
        };
        let events = events_from(stream, &rows)?;
        let kept: Vec<(i64, &[Value])> = events
            .iter()
            .filter(|e| keep(e.seq))
            .map(|e| (e.seq as i64, e.row.as_slice()))
            .collect();
        if kept.len() == events.len() {
            continue;
        }
        removed += (events.len() - kept.len()) as u64;
        match &week {
            Some(w) => tx.execute(&delete(week_is), &[&tenant, &last, w])?,
            None => tx.execute(&delete(week_is), &[&tenant, &last])?,
        };
        // The block's range narrows to its first event left (still within its append's), so
        // that retention does not find it again.
        let first = kept.first().map_or(first, |(seq, _)| first.max(*seq));
        write_blocks(tx, tenant, stream, (first, last), &kept)?;
    }
    Ok(removed)
}

impl PgConn {
    /// Creates (once per connection and definition) the temporary staging table `name`.
    fn stage(&mut self, name: &str, columns: &[(String, &'static str)]) -> Result<()> {
        let definition: Vec<String> = columns
            .iter()
            .map(|(c, ty)| format!("{} {ty}", quote(c)))
            .collect();
        let definition = definition.join(", ");
        if self.stages.get(name) == Some(&definition) {
            return Ok(());
        }
        self.client.batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.{table}; CREATE TEMP TABLE {table} ({definition}) ON COMMIT DELETE ROWS",
            table = quote(name)
        ))?;
        self.stages.insert(name.to_owned(), definition);
        Ok(())
    }

    pub(crate) fn append(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
        hashed: Option<KeyHashes>,
    ) -> Result<Vec<Option<u64>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_partitions(stream, rows)?;
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        // The row lock orders appends of this tenant's stream across nodes until commit, so
        // sequence numbers commit in order and dedupe sees every earlier row. The same
        // statement turns bitmap scans off for this transaction (no round trip of its own), so
        // that the dedupe probe is one plain index probe per key: on a key table without
        // statistics yet (a new stream, or one autovacuum has not analyzed) the planner
        // expects many rows per hash and picks a bitmap scan for each probe, lookups 28–51 %
        // slower (docs/performance.md, nineteenth round). Nothing else in the append scans.
        let locked = tx.query_one(
            "SELECT last_seq, incarnation, set_config('enable_bitmapscan', 'off', true) FROM tally_streams
              WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
            &[&tenant, &stream.name],
        )?;
        let (last, incarnation): (i64, i64) = (locked.get(0), locked.get(1));
        // Keys filtered: their hashes, and the filter in step with what is stored (taken out
        // of the connection until the commit, so a failed append leaves none behind).
        let filtered = KeyFilter::applies(stream)
            .then(|| KeyHashes::for_rows(hashed, stream, rows))
            .map(|hashes| {
                let old = self.key_filters.remove(&stream.name);
                KeyFilter::current(old, &mut tx, &tenant, stream, last, incarnation)
                    .map(|filter| (filter, hashes))
            })
            .transpose()?;
        let fresh = match &filtered {
            Some((filter, hashes)) => fresh_rows(
                &mut tx,
                &tenant,
                stream,
                &hashes.keys,
                Some((filter, &hashes.hashes)),
            )?,
            None if stream.has_dedupe_key() => {
                let keys: Vec<Option<Value>> =
                    rows.iter().map(|r| stream.dedupe_value(r)).collect();
                fresh_rows(&mut tx, &tenant, stream, &keys, None)?
            }
            None => vec![true; rows.len()],
        };
        // Sequence numbers in row order, for the rows to store only: dense, as on SQLite.
        let mut out = vec![None; rows.len()];
        let mut next = last;
        for (slot, keep) in out.iter_mut().zip(&fresh) {
            if *keep {
                next += 1;
                *slot = Some(next as u64);
            }
        }
        if next > last {
            let events: Vec<(i64, &[Value])> = rows
                .iter()
                .zip(&out)
                .filter_map(|(row, seq)| seq.map(|s| (s as i64, row.as_slice())))
                .collect();
            write_blocks(&mut tx, &tenant, stream, (last + 1, next), &events)?;
            if stream.has_dedupe_key() {
                insert_keys(&mut tx, &tenant, stream, &events)?;
            }
        }
        tx.execute(
            "UPDATE tally_streams SET last_seq = $3 WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &stream.name, &next],
        )?;
        tx.commit()?;
        if let Some((mut filter, hashes)) = filtered {
            let stored = out.iter().zip(&hashes.hashes);
            filter.stored(stored.filter_map(|(seq, h)| seq.and(*h)), next);
            self.key_filters.insert(stream.name.clone(), filter);
        }
        Ok(out)
    }

    pub(crate) fn read_events(
        &mut self,
        stream: &StreamDef,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let events = read_events_in(&mut tx, &tenant, stream, after, limit)?;
        tx.commit()?;
        Ok(events)
    }

    pub(crate) fn load_states(
        &mut self,
        view: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let sql = format!(
            "SELECT _key, _state FROM {} WHERE tenant_id = $1 AND _key = ANY($2)",
            quote(view)
        );
        let tenant = self.tenant.clone();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        for chunk in keys.chunks(LOAD_CHUNK) {
            let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
            for r in tx.query(&sql, &[&tenant, &refs])? {
                found.insert(r.get(0), r.get(1));
            }
        }
        tx.commit()?;
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    /// Creates the staging table of each view's rows (outside any transaction).
    fn stage_views<'p>(&mut self, plans: impl Iterator<Item = &'p ViewPlan>) -> Result<()> {
        for plan in plans {
            let mut cols = vec![("_key".to_owned(), "bytea")];
            cols.extend(
                plan.columns
                    .iter()
                    .map(|c| (c.name.clone(), stage_type(c.ty).0)),
            );
            cols.push(("_state".to_owned(), "bytea"));
            self.stage(&format!("tally_stage_{}", plan.name), &cols)?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self, flushes: &[EncodedFlush<'_>]) -> Result<()> {
        self.stage_views(flushes.iter().map(|f| f.plan))?;
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        for f in flushes {
            let plan = f.plan;
            upsert_view_rows(&mut tx, &tenant, plan, &f.rows)?;
            // Only into the table built for this plan: if another node rebuilt it meanwhile,
            // nothing of this flush may land.
            let moved = tx.execute(
                "UPDATE tally_views SET position = $3, failed = failed + $5 WHERE tenant_id = $1 AND name = $2 AND fingerprint = $4",
                &[&tenant, &plan.name, &(f.position as i64), &plan.fingerprint(), &(f.failed as i64)],
            )?;
            if moved == 0 {
                return Err(rebuilt(plan));
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn last_seq(&mut self, stream: &str) -> Result<u64> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let last: Option<i64> = tx
            .query_opt(
                "SELECT last_seq FROM tally_streams WHERE tenant_id = $1 AND name = $2",
                &[&tenant, &stream],
            )?
            .map(|r| r.get(0));
        tx.commit()?;
        Ok(last.unwrap_or(0) as u64)
    }

    pub(crate) fn events_of(
        &mut self,
        stream: &StreamDef,
        columns: &[usize],
        ids: &[&str],
    ) -> Result<Vec<Event>> {
        let cols: Vec<String> = stream
            .columns
            .iter()
            .map(|c| to_read(&quote(&c.name), c.ty))
            .collect();
        let matches: Vec<String> = columns
            .iter()
            .map(|&c| format!("{} = ANY($2)", quote(&stream.columns[c].name)))
            .collect();
        let sql = format!(
            "SELECT _seq, {} FROM {} WHERE tenant_id = $1 AND ({}) ORDER BY _seq",
            cols.join(", "),
            quote(&stream.name),
            matches.join(" OR ")
        );
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let rows = tx.query(&sql, &[&tenant, &ids])?;
        tx.commit()?;
        events_from(stream, &rows)
    }

    pub(crate) fn erase(&mut self, erasure: &EncodedErasure<'_>) -> Result<()> {
        self.stage_views(erasure.views.iter().map(|c| c.plan))?;
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        for (stream, seqs) in erasure.events {
            if seqs.is_empty() {
                continue;
            }
            let mut seqs: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
            seqs.sort_unstable();
            if stream.has_dedupe_key() {
                tx.execute(
                    &format!(
                        "DELETE FROM {} WHERE tenant_id = $1 AND _seq = ANY($2)",
                        quote(&derived(&stream.name, "keys"))
                    ),
                    &[&tenant, &seqs],
                )?;
            }
            let (low, high) = (seqs[0], seqs[seqs.len() - 1]);
            rewrite_blocks(
                &mut tx,
                &tenant,
                stream,
                "b._last_seq >= $2 AND b._first_seq <= $3 AND b._seq && $4::bigint[]",
                &[&tenant, &low, &high, &seqs],
                |seq| seqs.binary_search(&(seq as i64)).is_err(),
            )?;
        }
        for c in &erasure.views {
            // Only into the table built for this plan, as a flush.
            let built = tx
                .query_opt(
                    "SELECT 1 FROM tally_views WHERE tenant_id = $1 AND name = $2 AND fingerprint = $3 FOR UPDATE",
                    &[&tenant, &c.plan.name, &c.plan.fingerprint()],
                )?
                .is_some();
            if !built {
                return Err(rebuilt(c.plan));
            }
            upsert_view_rows(&mut tx, &tenant, c.plan, &c.rows)?;
            if !c.removed.is_empty() {
                let keys: Vec<&[u8]> = c.removed.iter().map(|k| k.as_slice()).collect();
                tx.execute(
                    &format!(
                        "DELETE FROM {} WHERE tenant_id = $1 AND _key = ANY($2)",
                        quote(&c.plan.name)
                    ),
                    &[&tenant, &keys],
                )?;
            }
        }
        write_records_in(&mut tx, &tenant, erasure.records)?;
        tx.commit()?;
        Ok(())
    }

    /// The stored rows of a view in `[from, to)` and the position they hold, read from one
    /// snapshot.
    pub(crate) fn snapshot_view(
        &mut self,
        plan: &ViewPlan,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        tail: Option<&StreamDef>,
    ) -> Result<RawSnapshot> {
        let mut sql = format!(
            "SELECT _key, _state FROM {} WHERE tenant_id = $1",
            quote(&plan.name)
        );
        let from = from.map(Value::Timestamp);
        let to = to.map(Value::Timestamp);
        let tenant = self.tenant.clone();
        let from_w = from.as_ref().map(Wire);
        let to_w = to.as_ref().map(Wire);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        if let Some(b) = plan.bucket {
            let col = quote(&plan.keys[b].name);
            if let Some(from) = &from_w {
                params.push(from);
                sql.push_str(&format!(" AND {col} >= ${}", params.len()));
            }
            if let Some(to) = &to_w {
                params.push(to);
                sql.push_str(&format!(" AND {col} < ${}", params.len()));
            }
        }
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        tx.execute(
            "SELECT set_config('tally.tenant_id', $1, true)",
            &[&self.tenant],
        )?;
        let (position, fingerprint) = tx
            .query_opt(
                "SELECT position, fingerprint FROM tally_views WHERE tenant_id = $1 AND name = $2",
                &[&tenant, &plan.name],
            )?
            .map_or((0, String::new()), |r| {
                (r.get::<_, i64>(0) as u64, r.get(1))
            });
        let fresh = fingerprint == plan.fingerprint();
        let rows = if fresh {
            tx.query(&sql, &params)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        } else {
            // The table holds another plan's rows (or none): the caller finds out by the
            // fingerprint, without decoding them.
            Vec::new()
        };
        let tail = match tail {
            Some(stream) if fresh => {
                read_events_in(&mut tx, &tenant, stream, position, usize::MAX)?
            }
            _ => Vec::new(),
        };
        tx.commit()?;
        Ok(RawSnapshot {
            position,
            fingerprint,
            rows,
            tail,
        })
    }

    /// Retention on partitions: records how far this tenant's views applied the stream, then
    /// drops each week partition that ended before `before` once every tenant has applied all of
    /// its events there. Where some tenant has not, this tenant's applied events in it are
    /// deleted: whole blocks, and the blocks of the append holding `max_seq` rewritten without
    /// them. Returns how many of this tenant's events went.
    pub(crate) fn delete_events_before(
        &mut self,
        stream: &StreamDef,
        before: Timestamp,
        max_seq: u64,
    ) -> Result<u64> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        tx.execute(
            "UPDATE tally_streams SET applied_seq = greatest(applied_seq, $3) WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &stream.name, &(max_seq as i64)],
        )?;
        tx.commit()?;
        let weeks = self.existing_partitions(&stream.name)?;
        let tenants: Vec<String> = self
            .client
            .query("SELECT tenant_id FROM tenants ORDER BY tenant_id", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let keys = quote(&derived(&stream.name, "keys"));
        let mut deleted = 0;
        for week in weeks {
            if week + WEEK_MICROS > before.0 {
                continue;
            }
            let part = quote(&partition_name(&stream.name, week));
            let mut droppable = true;
            let mut mine = 0;
            for t in &tenants {
                let mut tx = tenant_tx(&mut self.client, t)?;
                // The newest number of an append with events in the week: all of them must be
                // applied before the week goes.
                let row = tx.query_one(
                    &format!(
                        "SELECT coalesce(max(_last_seq), 0), coalesce(sum(_n), 0)::bigint FROM {part} WHERE tenant_id = $1"
                    ),
                    &[t],
                )?;
                let (newest, count): (i64, i64) = (row.get(0), row.get(1));
                let applied: i64 = tx
                    .query_opt(
                        "SELECT applied_seq FROM tally_streams WHERE tenant_id = $1 AND name = $2",
                        &[t, &stream.name],
                    )?
                    .map_or(0, |r| r.get(0));
                tx.commit()?;
                if *t == tenant {
                    mine = count as u64;
                }
                if newest > applied {
                    droppable = false;
                }
            }
            let (from, until) = (
                Value::Timestamp(Timestamp(week)),
                Value::Timestamp(Timestamp(week + WEEK_MICROS)),
            );
            if droppable {
                let mut tx = self.client.transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
                    &[&stream.name],
                )?;
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {part}"))?;
                // The week's dedupe keys go with its events, every tenant's.
                if stream.has_dedupe_key() {
                    for t in &tenants {
                        tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[t])?;
                        tx.execute(
                            &format!(
                                "DELETE FROM {keys} WHERE tenant_id = $1 AND at >= $2 AND at < $3"
                            ),
                            &[t, &Wire(&from), &Wire(&until)],
                        )?;
                    }
                }
                tx.commit()?;
                if let Some(known) = self.partitions.get_mut(&stream.name) {
                    known.remove(&week);
                }
                deleted += mine;
            } else {
                let mut tx = tenant_tx(&mut self.client, &tenant)?;
                // Whole blocks where every event is applied; a block of the append that holds
                // `max_seq` keeps its later events.
                let max = max_seq as i64;
                deleted += tx
                    .query(
                        &format!(
                            "DELETE FROM {part} WHERE tenant_id = $1 AND _last_seq <= $2 RETURNING _n"
                        ),
                        &[&tenant, &max],
                    )?
                    .iter()
                    .map(|r| u64::try_from(r.get::<_, i32>(0)).unwrap_or(0))
                    .sum::<u64>();
                let week_value = Value::Timestamp(Timestamp(week));
                deleted += rewrite_blocks(
                    &mut tx,
                    &tenant,
                    stream,
                    "b._week = $2 AND b._first_seq <= $3 AND b._last_seq > $3",
                    &[&tenant, &Wire(&week_value), &max],
                    |seq| seq > max_seq,
                )?;
                if stream.has_dedupe_key() {
                    tx.execute(
                        &format!(
                            "DELETE FROM {keys} WHERE tenant_id = $1 AND at >= $2 AND at < $3 AND _seq <= $4"
                        ),
                        &[&tenant, &Wire(&from), &Wire(&until), &(max_seq as i64)],
                    )?;
                }
                tx.commit()?;
            }
        }
        Ok(deleted)
    }

    pub(crate) fn delete_view_rows_before(
        &mut self,
        plan: &ViewPlan,
        before: Timestamp,
    ) -> Result<u64> {
        let Some(b) = plan.bucket else { return Ok(0) };
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND {} < $2",
            quote(&plan.name),
            quote(&plan.keys[b].name)
        );
        let tenant = self.tenant.clone();
        let before = Value::Timestamp(before);
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let n = tx.execute(&sql, &[&tenant, &Wire(&before)])?;
        tx.commit()?;
        Ok(n)
    }

    pub(crate) fn log_rejections(&mut self, rejected: &[Rejected]) -> Result<()> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let stmt = tx.prepare(
            "INSERT INTO tally_rejections (tenant_id, at, stream, route, reason, message, payload) \
             VALUES ($1, 'epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3, $4, $5, $6, $7)",
        )?;
        for r in rejected {
            tx.execute(
                &stmt,
                &[
                    &tenant, &r.at.0, &r.stream, &r.route, &r.reason, &r.message, &r.payload,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn rejections(&mut self, after: u64, limit: usize) -> Result<Vec<LoggedRejection>> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let rows = tx.query(
            "SELECT id, (extract(epoch FROM at) * 1e6)::bigint, stream, route, reason, message, payload \
             FROM tally_rejections WHERE id > $1 ORDER BY id LIMIT $2",
            &[
                &i64::try_from(after).unwrap_or(i64::MAX),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        tx.commit()?;
        Ok(rows
            .iter()
            .map(|r| LoggedRejection {
                id: r.get::<_, i64>(0) as u64,
                rejected: Rejected {
                    at: Timestamp(r.get(1)),
                    stream: r.get(2),
                    route: r.get(3),
                    reason: r.get(4),
                    message: r.get(5),
                    payload: r.get(6),
                },
            })
            .collect())
    }

    pub(crate) fn trim_rejections(&mut self, before: Timestamp, keep: usize) -> Result<u64> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let old = tx.execute(
            "DELETE FROM tally_rejections WHERE at < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'",
            &[&before.0],
        )?;
        let over = tx.execute(
            "DELETE FROM tally_rejections WHERE id <= \
             (SELECT id FROM tally_rejections ORDER BY id DESC LIMIT 1 OFFSET $1)",
            &[&i64::try_from(keep).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(old + over)
    }

    pub(crate) fn upsert_rows(&mut self, table: &str, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let stmt = tx.prepare(
            "INSERT INTO tally_table_rows (tenant_id, tbl, key, row) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, tbl, key) DO UPDATE SET row = excluded.row",
        )?;
        for (key, row) in rows {
            tx.execute(&stmt, &[&tenant, &table, key, row])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn delete_row(&mut self, table: &str, key: &[u8]) -> Result<bool> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let n = tx.execute(
            "DELETE FROM tally_table_rows WHERE tbl = $1 AND key = $2",
            &[&table, &key],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub(crate) fn table_rows(&mut self, table: &str) -> Result<Vec<Vec<u8>>> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let rows = tx.query(
            "SELECT row FROM tally_table_rows WHERE tbl = $1 ORDER BY key",
            &[&table],
        )?;
        tx.commit()?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) fn tables_with_rows(&mut self) -> Result<Vec<String>> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let rows = tx.query(
            "SELECT DISTINCT tbl FROM tally_table_rows ORDER BY tbl",
            &[],
        )?;
        tx.commit()?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) fn drop_table_rows(&mut self, table: &str) -> Result<()> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        tx.execute("DELETE FROM tally_table_rows WHERE tbl = $1", &[&table])?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn write_records(&mut self, writes: &[RecordWrite]) -> Result<()> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        write_records_in(&mut tx, &tenant, writes)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn records(
        &mut self,
        kind: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let rows = tx.query(
            "SELECT key, body FROM tally_records WHERE kind = $1 AND key >= $2 AND key < $3 \
             ORDER BY key LIMIT $4",
            &[&kind, &from, &to, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(crate) fn delete_records(&mut self, kind: &str, from: &str, to: &str) -> Result<u64> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &tenant)?;
        let n = tx.execute(
            "DELETE FROM tally_records WHERE kind = $1 AND key >= $2 AND key < $3",
            &[&kind, &from, &to],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

/// The error of a write into a view table another node rebuilt meanwhile.
fn rebuilt(plan: &ViewPlan) -> StoreError {
    StoreError::Busy(format!(
        "view {} was rebuilt by another node; the tenant reopens with it",
        plan.name
    ))
}

/// Inserts or replaces view rows (key, every column, states) of the tenant within `tx`,
/// through the view's staging table (see `PgConn::stage_views`).
fn upsert_view_rows(
    tx: &mut Transaction<'_>,
    tenant: &str,
    plan: &ViewPlan,
    rows: &[EncodedRow<'_>],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let stage = quote(&format!("tally_stage_{}", plan.name));
    let mut types = vec![PgType::BYTEA];
    types.extend(plan.columns.iter().map(|c| stage_type(c.ty).1));
    types.push(PgType::BYTEA);
    let writer = tx.copy_in(&format!("COPY {stage} FROM STDIN (FORMAT binary)"))?;
    let mut writer = BinaryCopyInWriter::new(writer, &types);
    for row in rows {
        let cells: Vec<Wire<'_>> = row.cells.iter().map(Wire).collect();
        let key = row.key.as_slice();
        let state = row.state.as_slice();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(cells.len() + 2);
        params.push(&key);
        params.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        params.push(&state);
        writer.write(&params)?;
    }
    writer.finish()?;
    let (names, casts) = insert_columns(plan.columns.iter().map(|c| (c.name.as_str(), c.ty)));
    let updates: Vec<String> = names
        .iter()
        .chain(std::iter::once(&"_state".to_owned()))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO {} (tenant_id, _key, {}, _state) SELECT $1, s._key, {}, s._state FROM {stage} s
             ON CONFLICT (tenant_id, _key) DO UPDATE SET {}",
            quote(&plan.name),
            names.join(", "),
            casts.join(", "),
            updates.join(", ")
        ),
        &[&tenant],
    )?;
    // The staging rows go at commit; clear them now for the next view of this transaction.
    tx.execute(&format!("DELETE FROM {stage}"), &[])?;
    Ok(())
}

/// Applies record writes of the tenant within `tx`.
fn write_records_in(tx: &mut Transaction<'_>, tenant: &str, writes: &[RecordWrite]) -> Result<()> {
    let put = tx.prepare(
        "INSERT INTO tally_records (tenant_id, kind, key, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, kind, key) DO UPDATE SET body = excluded.body",
    )?;
    let delete = tx.prepare("DELETE FROM tally_records WHERE kind = $1 AND key = $2")?;
    for w in writes {
        match w {
            RecordWrite::Put { kind, key, body } => {
                tx.execute(&put, &[&tenant, kind, key, body])?;
            }
            RecordWrite::Delete { kind, key } => {
                tx.execute(&delete, &[kind, key])?;
            }
        }
    }
    Ok(())
}
