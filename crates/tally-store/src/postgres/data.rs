//! The data path of a tenant: append (dedupe against the key table, binary COPY into a staging
//! table, one insert under the policy, sequence numbers under the stream's row lock), reading
//! events after a position, loading view states, flushing view rows with their positions,
//! snapshots for followers, and retention (dropping whole week partitions where every tenant
//! allows it, deleting rows otherwise).

use std::collections::HashMap;

use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type as PgType};

use tally_views::{Event, StreamDef, Timestamp, Type, Value, ViewPlan};

use super::PgConn;
use super::conn::tenant_tx;
use super::ddl::{derived, partition_name};
use super::wire::{
    WEEK_MICROS, Wire, insert_columns, key_text, quote, raw_type, read_cell, stage_type, to_read,
};
use crate::error::{Result, StoreError};
use crate::types::{
    EncodedErasure, EncodedFlush, EncodedRow, LoggedRejection, RawSnapshot, RecordWrite, Rejected,
};

/// How many keys one `load_states` query looks up.
const LOAD_CHUNK: usize = 5_000;

/// Which of `rows` to store: not a duplicate of an earlier row of the batch, nor of a stored
/// event of the tenant, by the dedupe column `d` (NULL keys are never duplicates, as in a unique
/// index). Stored keys are looked up in the stream's key table, one index probe per distinct
/// key of the batch by its hash `h` (`LATERAL … LIMIT 1`, so no plan reads the tenant's
/// whole table), compared by PostgreSQL as the column's type.
fn fresh_rows(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    rows: &[Vec<Value>],
) -> Result<Vec<bool>> {
    let mut seen: std::collections::HashSet<Value> =
        std::collections::HashSet::with_capacity(rows.len());
    let mut fresh = vec![true; rows.len()];
    let mut keys: Vec<(usize, String)> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Some(key) = stream.dedupe_value(row) else {
            continue;
        };
        let text = key_text(&key);
        if seen.insert(key) {
            keys.push((i, text));
        } else {
            fresh[i] = false;
        }
    }
    if keys.is_empty() {
        return Ok(fresh);
    }
    let texts: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
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
        if let Some(&(i, _)) = keys.get(ordinal as usize - 1) {
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

/// Up to `limit` events of `stream` after `after`, in order, within `tx`.
fn read_events_in(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    let cols: Vec<String> = stream
        .columns
        .iter()
        .map(|c| to_read(&quote(&c.name), c.ty))
        .collect();
    let sql = format!(
        "SELECT _seq, {} FROM {} WHERE tenant_id = $1 AND _seq > $2 ORDER BY _seq LIMIT $3",
        cols.join(", "),
        quote(&stream.name)
    );
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = tx.query(&sql, &[&tenant, &(after as i64), &limit])?;
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
    ) -> Result<Vec<Option<u64>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_partitions(stream, rows)?;
        let stage = format!("tally_stage_{}", stream.name);
        let mut stage_cols = vec![("_seq".to_owned(), "bigint")];
        let mut types = vec![PgType::INT8];
        for c in &stream.columns {
            let (sql, ty) = stage_type(c.ty);
            stage_cols.push((c.name.clone(), sql));
            types.push(ty);
        }
        // A composite dedupe key is computed here, staged beside the row for the keys table.
        let composite = stream.dedupe_key.len() > 1;
        if composite {
            let (sql, ty) = stage_type(Type::Text);
            stage_cols.push(("_dkey".to_owned(), sql));
            types.push(ty);
        }
        self.stage(&stage, &stage_cols)?;
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        // The row lock orders appends of this tenant's stream across nodes until commit, so
        // sequence numbers commit in order and dedupe sees every earlier row. The same
        // statement turns bitmap scans off for this transaction (no round trip of its own), so
        // that the dedupe probe is one plain index probe per key: on a key table without
        // statistics yet (a new stream, or one autovacuum has not analyzed) the planner
        // expects many rows per hash and picks a bitmap scan for each probe, lookups 28–51 %
        // slower (docs/performance.md, nineteenth round). Nothing else in the append scans.
        let last: i64 = tx
            .query_one(
                "SELECT last_seq, set_config('enable_bitmapscan', 'off', true) FROM tally_streams
                  WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
                &[&tenant, &stream.name],
            )?
            .get(0);
        let fresh = if stream.has_dedupe_key() {
            fresh_rows(&mut tx, &tenant, stream, rows)?
        } else {
            vec![true; rows.len()]
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
            let writer = tx.copy_in(&format!(
                "COPY {} FROM STDIN (FORMAT binary)",
                quote(&stage)
            ))?;
            let mut writer = BinaryCopyInWriter::new(writer, &types);
            for (row, seq) in rows.iter().zip(&out) {
                let Some(seq) = seq.map(|s| s as i64) else {
                    continue;
                };
                let cells: Vec<Wire<'_>> = row.iter().map(Wire).collect();
                let dkey = if composite {
                    stream.dedupe_value(row).unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                let dkey = Wire(&dkey);
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(row.len() + 2);
                params.push(&seq);
                params.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
                if composite {
                    params.push(&dkey);
                }
                writer.write(&params)?;
            }
            writer.finish()?;
            // COPY cannot write a table under row-level security: the staged rows go in with one
            // INSERT, which the policy checks.
            let (names, casts) =
                insert_columns(stream.columns.iter().map(|c| (c.name.as_str(), c.ty)));
            tx.execute(
                &format!(
                    "INSERT INTO {} (tenant_id, _seq, {}) SELECT $1, s._seq, {} FROM {} s",
                    quote(&stream.name),
                    names.join(", "),
                    casts.join(", "),
                    quote(&stage)
                ),
                &[&tenant],
            )?;
            if let [d] = stream.dedupe_key[..] {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (tenant_id, key, h, _seq, at) SELECT $1, {}, {}, s._seq, s.{} FROM {} s WHERE s.{} IS NOT NULL",
                        quote(&derived(&stream.name, "keys")),
                        casts[d],
                        key_hash(&casts[d], stream.columns[d].ty, "$1"),
                        names[stream.event_time],
                        quote(&stage),
                        names[d]
                    ),
                    &[&tenant],
                )?;
            } else if composite {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (tenant_id, key, h, _seq, at) SELECT $1, s._dkey, {}, s._seq, s.{} FROM {} s WHERE s._dkey IS NOT NULL",
                        quote(&derived(&stream.name, "keys")),
                        key_hash("s._dkey", Type::Text, "$1"),
                        names[stream.event_time],
                        quote(&stage),
                    ),
                    &[&tenant],
                )?;
            }
        }
        tx.execute(
            "UPDATE tally_streams SET last_seq = $3 WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &stream.name, &next],
        )?;
        tx.commit()?;
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

    pub(crate) fn erase(&mut self, erasure: &EncodedErasure<'_>) -> Result<()> {
        self.stage_views(erasure.views.iter().map(|c| c.plan))?;
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        for (stream, seqs) in erasure.events {
            if seqs.is_empty() {
                continue;
            }
            let seqs: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
            if stream.has_dedupe_key() {
                tx.execute(
                    &format!(
                        "DELETE FROM {} WHERE tenant_id = $1 AND _seq = ANY($2)",
                        quote(&derived(&stream.name, "keys"))
                    ),
                    &[&tenant, &seqs],
                )?;
            }
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE tenant_id = $1 AND _seq = ANY($2)",
                    quote(&stream.name)
                ),
                &[&tenant, &seqs],
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
    /// deleted row by row. Returns how many of this tenant's events went.
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
                let row = tx.query_one(
                    &format!(
                        "SELECT coalesce(max(_seq), 0), count(*) FROM {part} WHERE tenant_id = $1"
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
                deleted += tx.execute(
                    &format!("DELETE FROM {part} WHERE tenant_id = $1 AND _seq <= $2"),
                    &[&tenant, &(max_seq as i64)],
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
