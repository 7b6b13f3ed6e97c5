//! The tenant tables' DDL: the names Tally derives from stream and view names, a stream's
//! tables (built by [`stream_ddl`] and altered column by column with [`block_column`]), its
//! week partitions, a view's table, the tenant policy ([`isolate`]), and dropping them. Tables
//! are shared by every tenant: changes to one are serialized across nodes by an advisory lock on
//! its name, and the `tally_tables` catalog says which definition each was built for.

use std::collections::BTreeSet;

use postgres::Transaction;

use tally_views::{ColumnDef, StreamDef, Timestamp, Value, ViewPlan};

use super::PgConn;
use super::conn::tenant_tx;
use super::wire::{FIRST_MONDAY, WEEK_MICROS, literal, pg_time_literal, quote, raw_type};
use crate::error::{Result, StoreError};
use crate::types::{Materialized, MaterializedView};

/// The lower bound of a week's partition: `MINVALUE` for the first week of the supported time
/// range (it starts before year 1, which PostgreSQL cannot write).
fn week_start(week: i64) -> String {
    if week <= Timestamp::MIN_STORED.0 {
        "MINVALUE".into()
    } else {
        pg_time_literal(week)
    }
}

/// The upper bound of a week's partition: `MAXVALUE` for the last week of the supported range.
fn week_end(week: i64) -> String {
    let end = week + WEEK_MICROS;
    if end > Timestamp::MAX_STORED.0 {
        "MAXVALUE".into()
    } else {
        pg_time_literal(end)
    }
}

/// The Monday 00:00 UTC that starts the week of `t`.
pub(super) fn week_of(t: Timestamp) -> i64 {
    FIRST_MONDAY + (t.0 - FIRST_MONDAY).div_euclid(WEEK_MICROS) * WEEK_MICROS
}

/// The name of a table or index Tally derives from a stream or view name: `name#suffix`. User
/// names are `[a-z][a-z0-9_]*`, so a derived name can never be one; a name too long for
/// PostgreSQL's 63 bytes is cut and told apart by a hash of the whole.
pub(super) fn derived(name: &str, suffix: &str) -> String {
    if name.len() + 1 + suffix.len() <= 63 {
        return format!("{name}#{suffix}");
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = 63 - 1 - 8 - 1 - suffix.len();
    format!("{}#{:08x}#{suffix}", &name[..keep], hash as u32)
}

/// The name of the partition of `stream` for the week starting at `week`.
pub(super) fn partition_name(stream: &str, week: i64) -> String {
    let date = Timestamp(week).to_string();
    derived(stream, &date[..10])
}

/// The week start a partition name stands for, if it is one of `stream`'s.
fn partition_week(stream: &str, name: &str) -> Option<i64> {
    let date = name.get(name.len().checked_sub(10)?..)?;
    let week = Timestamp::parse(&format!("{date}T00:00:00Z"))?.0;
    (partition_name(stream, week) == name).then_some(week)
}

/// The statements that put a table under the tenant policy. The setting is read in a scalar
/// subquery, evaluated once per statement (an InitPlan) instead of once per row checked: the
/// bare call cost an insert about 0.3 µs a row (docs/performance.md, twentieth round; migration
/// 8 rewrites older policies so).
pub(super) fn isolate(table: &str) -> String {
    let t = quote(table);
    format!(
        "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY; \
         CREATE POLICY tally_tenant ON {t} \
         USING (tenant_id = (SELECT current_setting('tally.tenant_id', true))) \
         WITH CHECK (tenant_id = (SELECT current_setting('tally.tenant_id', true)));"
    )
}

/// Whether the current schema has a relation called `name`.
fn relation_exists(tx: &mut Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relname = $1",
            &[&name],
        )?
        .is_some())
}

/// Voids every other tenant's position in view `view`, whose table was just created or dropped
/// for all: a tenant whose stored fingerprint no longer matches rebuilds the view when it
/// reconciles. Row-level security hides other tenants' rows, so each is visited under its own
/// setting, within this transaction; the setting returns to `tenant` at the end.
fn forget_view_everywhere(tx: &mut Transaction<'_>, tenant: &str, view: &str) -> Result<()> {
    let tenants: Vec<String> = tx
        .query(
            "SELECT tenant_id FROM tenants WHERE tenant_id <> $1",
            &[&tenant],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for other in &tenants {
        tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[other])?;
        tx.execute(
            "UPDATE tally_views SET fingerprint = '', position = 0, failed = 0 WHERE tenant_id = $1 AND name = $2",
            &[other, &view],
        )?;
    }
    tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[&tenant])?;
    Ok(())
}

/// The name of the table of a stream's raw events, in blocks (see [`stream_ddl`]).
pub(super) fn blocks_table(stream: &str) -> String {
    derived(stream, "blocks")
}

/// A column of a stream's blocks, as `CREATE TABLE` declares it and `ALTER TABLE … ADD COLUMN`
/// adds it: an array of the column's type, one element per event of the block. Nullable (a
/// block written before the column was added has none: reading it pads NULLs).
fn block_column(c: &ColumnDef) -> String {
    format!("{} {}[]", quote(&c.name), raw_type(c.ty))
}

/// The view of a stream's events, one row per event, named like the stream: `tenant_id`,
/// `_seq`, `_week` (the block's week: a filter on it reads only those weeks' partitions, where
/// one on the event time unnests every block), then the stream's columns, unnested from its
/// blocks. What `grant-reader` shows a BI tool, and what SQL written for the per-event tables
/// of stores before migration 9 reads.
fn events_view(def: &StreamDef) -> String {
    let names: Vec<String> = def.columns.iter().map(|c| quote(&c.name)).collect();
    let from_block: Vec<String> = names.iter().map(|n| format!("b.{n}")).collect();
    format!(
        "CREATE OR REPLACE VIEW {} AS SELECT b.tenant_id, e._seq, b._week, {} FROM {} b \
         CROSS JOIN LATERAL unnest(b._seq, {}) AS e(_seq, {});",
        quote(&def.name),
        names
            .iter()
            .map(|n| format!("e.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        quote(&blocks_table(&def.name)),
        from_block.join(", "),
        names.join(", "),
    )
}

/// The DDL of a stream's tables, each under the tenant policy.
///
/// Raw events are stored in blocks, `<stream>#blocks`: one row per append and week (`_week`,
/// the Monday of the events' time, `NULL` for events without one), each column an array
/// holding the block's events in sequence order, and `_n`, how many. `_first_seq` and
/// `_last_seq` bound the sequence numbers of the append the block came from (the same for every
/// block of one append: an append that spans weeks writes one block per week, their numbers
/// interleaved), so the blocks of different appends never overlap, and the index on
/// `(tenant_id, _last_seq)` finds where a reader resumes. The table is partitioned by week,
/// with a default partition for `NULL`. Metadata columns start with `_`, which stream column
/// names cannot. A row per event cost an append about 3.8 µs an event (staging `COPY`, then the
/// row, its index entry and its policy check); its blocks cost about 1 µs, most of it
/// PostgreSQL reading the array parameters (docs/performance.md, twenty-fourth round). The view
/// named like the stream shows the events one per row.
///
/// Then the table of its dedupe keys (dropped first: one may be left from an earlier
/// definition).
fn stream_ddl(def: &StreamDef) -> String {
    let blocks = blocks_table(&def.name);
    let table = quote(&blocks);
    let keys = quote(&derived(&def.name, "keys"));
    let mut cols = vec![
        "tenant_id text NOT NULL".to_owned(),
        "_week timestamptz".to_owned(),
        "_first_seq bigint NOT NULL".to_owned(),
        "_last_seq bigint NOT NULL".to_owned(),
        "_n integer NOT NULL".to_owned(),
        "_seq bigint[] NOT NULL".to_owned(),
    ];
    cols.extend(def.columns.iter().map(block_column));
    let mut ddl = format!(
        "CREATE TABLE {table} ({}) PARTITION BY RANGE (_week);\
         CREATE INDEX {} ON {table} (tenant_id, _last_seq);",
        cols.join(", "),
        quote(&derived(&def.name, "seq")),
    );
    // The dedupe keys live in a table of their own, not partitioned: one probe finds a key
    // whatever its week (a partitioned index would cost one probe per week). Its rows go when
    // retention removes their events. The keys are found by a hash index on `h`, a 64-bit hash
    // of the tenant and the key (`key_hash`), the tenant and the key compared on the row: a
    // B-tree on `(tenant_id, key)` over random text cost twice as much to insert into and four
    // times as much to probe, a B-tree on `(tenant_id, h)` still 15–20 % of the append. No index
    // enforces uniqueness: the stream's row lock orders a tenant's appends, each probing under it.
    ddl.push_str(&format!("DROP TABLE IF EXISTS {keys};"));
    if def.has_dedupe_key() {
        ddl.push_str(&format!(
            "CREATE TABLE {keys} (tenant_id text NOT NULL, key {} NOT NULL, h bigint NOT NULL, \
             _seq bigint NOT NULL, at timestamptz);\
             CREATE INDEX {} ON {keys} USING hash (h);\
             CREATE INDEX {} ON {keys} USING brin (at);",
            raw_type(super::keys::key_type(def)),
            quote(&derived(&def.name, "keys_h")),
            quote(&derived(&def.name, "keys_at")),
        ));
        ddl.push_str(&isolate(&derived(&def.name, "keys")));
    }
    // What the blocks' types do not say, for migration 9's down step to rebuild a table of
    // events: which column is the event time, and which columns are NOT NULL.
    ddl.push_str(&format!(
        "COMMENT ON COLUMN {table}._week IS {};",
        literal(&def.columns[def.event_time].name)
    ));
    for c in def.columns.iter().filter(|c| c.not_null) {
        ddl.push_str(&format!(
            "COMMENT ON COLUMN {table}.{} IS 'NOT NULL';",
            quote(&c.name)
        ));
    }
    ddl.push_str(&isolate(&blocks));
    // Blocks of events without an event time land in the default partition.
    ddl.push_str(&partition_ddl(
        &def.name,
        &derived(&def.name, "default"),
        "DEFAULT",
    ));
    ddl.push_str(&events_view(def));
    ddl
}

/// The DDL of partition `name` of a stream's blocks table, under the tenant policy: `bounds` is
/// `DEFAULT` or a week's `FOR VALUES FROM (…) TO (…)`.
fn partition_ddl(stream: &str, name: &str, bounds: &str) -> String {
    format!(
        "CREATE TABLE {} PARTITION OF {} {bounds};{}",
        quote(name),
        quote(&blocks_table(stream)),
        isolate(name)
    )
}

/// Drops the relations of stream or view `name`, whatever it was: a stream's view of events and
/// its blocks (with their partitions), or a view's table.
fn drop_relations(tx: &mut Transaction<'_>, name: &str) -> Result<()> {
    let kind: Option<i8> = tx
        .query_opt(
            "SELECT c.relkind::\"char\" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relname = $1",
            &[&name],
        )?
        .map(|r| r.get(0));
    let what = if kind == Some(b'v' as i8) {
        "VIEW"
    } else {
        "TABLE"
    };
    tx.batch_execute(&format!(
        "DROP {what} IF EXISTS {} CASCADE; DROP TABLE IF EXISTS {} CASCADE",
        quote(name),
        quote(&blocks_table(name))
    ))?;
    Ok(())
}

impl PgConn {
    /// The stream and view tables this tenant has, with the definitions they were built for.
    pub(crate) fn materialized(&mut self) -> Result<Materialized> {
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let streams = tx
            .query(
                "SELECT name, definition FROM tally_streams WHERE tenant_id = $1 ORDER BY name",
                &[&self.tenant],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let views = tx
            .query(
                "SELECT name, fingerprint, position, failed FROM tally_views WHERE tenant_id = $1 ORDER BY name",
                &[&self.tenant],
            )?
            .iter()
            .map(|r| MaterializedView {
                name: r.get(0),
                fingerprint: r.get(1),
                position: r.get::<_, i64>(2) as u64,
                failed: r.get::<_, i64>(3) as u64,
            })
            .collect();
        tx.commit()?;
        Ok(Materialized { streams, views })
    }

    /// Whether the shared table `name` exists for `definition`; when it exists for another one
    /// it is dropped (its rows belonged to the old definition) and `false` returned.
    fn table_matches(tx: &mut Transaction<'_>, name: &str, definition: &str) -> Result<bool> {
        // Table changes are serialized by a lock on the name, across nodes.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
            &[&name],
        )?;
        let stored: Option<String> = tx
            .query_opt(
                "SELECT definition FROM tally_tables WHERE name = $1",
                &[&name],
            )?
            .map(|r| r.get(0));
        if stored.as_deref() == Some(definition) {
            return Ok(true);
        }
        if stored.is_none() && relation_exists(tx, name)? {
            return Err(StoreError::Unsafe(format!(
                "the schema holds a table {name} that Tally did not create; Tally will not \
                 replace it: rename it, or give Tally a schema of its own with --database-schema"
            )));
        }
        drop_relations(tx, name)?;
        Ok(false)
    }

    pub(crate) fn create_stream(&mut self, def: &StreamDef) -> Result<()> {
        let sql = def.sql();
        let table = quote(&blocks_table(&def.name));
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        // The stream's row lock first, as an append takes it: an append of another node then
        // commits before the old events are deleted below, or waits and finds the stream new.
        tx.execute(
            "SELECT 1 FROM tally_streams WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
            &[&self.tenant, &def.name],
        )?;
        let keys = quote(&derived(&def.name, "keys"));
        if Self::table_matches(&mut tx, &def.name, &sql)? {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant_id = $1"),
                &[&self.tenant],
            )?;
            if def.has_dedupe_key() {
                tx.execute(
                    &format!("DELETE FROM {keys} WHERE tenant_id = $1"),
                    &[&self.tenant],
                )?;
            }
        } else {
            tx.batch_execute(&stream_ddl(def))?;
            tx.execute(
                "INSERT INTO tally_tables (name, kind, definition) VALUES ($1, 'stream', $2)
                 ON CONFLICT (name) DO UPDATE SET kind = 'stream', definition = excluded.definition",
                &[&def.name, &sql],
            )?;
        }
        // A new incarnation also when the old one had no events (migration 10's trigger gives
        // one whenever `last_seq` goes back).
        tx.execute(
            "INSERT INTO tally_streams (tenant_id, name, definition, last_seq) VALUES ($1, $2, $3, 0)
             ON CONFLICT (tenant_id, name) DO UPDATE SET definition = excluded.definition, last_seq = 0, applied_seq = 0,
                 incarnation = nextval('tally_stream_incarnations')",
            &[&self.tenant, &def.name, &sql],
        )?;
        tx.commit()?;
        self.partitions.remove(&def.name);
        self.key_filters.remove(&def.name);
        Ok(())
    }

    pub(crate) fn alter_stream(&mut self, old: &StreamDef, new: &StreamDef) -> Result<()> {
        let sql = new.sql();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
            &[&new.name],
        )?;
        // The table is shared: the first tenant to reconcile alters it, the others find it done
        // (and take no exclusive lock on it).
        let done = tx
            .query_opt(
                "SELECT 1 FROM tally_tables WHERE name = $1 AND definition = $2",
                &[&new.name, &sql],
            )?
            .is_some();
        if !done {
            for c in &new.columns[old.columns.len()..] {
                tx.batch_execute(&format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}",
                    quote(&blocks_table(&new.name)),
                    block_column(c)
                ))?;
            }
            tx.batch_execute(&events_view(new))?;
        }
        tx.execute(
            "UPDATE tally_tables SET definition = $2 WHERE name = $1",
            &[&new.name, &sql],
        )?;
        tx.execute(
            "UPDATE tally_streams SET definition = $3 WHERE tenant_id = $1 AND name = $2",
            &[&self.tenant, &new.name, &sql],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Drops a stream: the catalog dropped it for every tenant, so its table goes.
    pub(crate) fn drop_stream(&mut self, name: &str) -> Result<()> {
        self.drop_table(
            name,
            "DELETE FROM tally_streams WHERE tenant_id = $1 AND name = $2",
        )?;
        self.partitions.remove(name);
        self.key_filters.remove(name);
        Ok(())
    }

    fn drop_table(&mut self, name: &str, forget: &str) -> Result<()> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
            &[&name],
        )?;
        // Only a table Tally created goes.
        let kind: Option<String> = tx
            .query_opt("SELECT kind FROM tally_tables WHERE name = $1", &[&name])?
            .map(|r| r.get(0));
        if let Some(kind) = kind {
            drop_relations(&mut tx, name)?;
            if kind == "view" {
                forget_view_everywhere(&mut tx, &tenant, name)?;
            } else {
                tx.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}",
                    quote(&derived(name, "keys"))
                ))?;
            }
        }
        tx.execute("DELETE FROM tally_tables WHERE name = $1", &[&name])?;
        tx.execute(forget, &[&tenant, &name])?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn reset_view(&mut self, plan: &ViewPlan) -> Result<()> {
        let fingerprint = plan.fingerprint();
        let table = quote(&plan.name);
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        if Self::table_matches(&mut tx, &plan.name, &fingerprint)? {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant_id = $1"),
                &[&self.tenant],
            )?;
        } else {
            let mut cols = vec![
                "tenant_id text NOT NULL".to_owned(),
                "_key bytea NOT NULL".to_owned(),
            ];
            for c in &plan.columns {
                cols.push(format!("{} {}", quote(&c.name), raw_type(c.ty)));
            }
            cols.push("_state bytea NOT NULL".to_owned());
            cols.push("PRIMARY KEY (tenant_id, _key)".to_owned());
            let mut ddl = format!("CREATE TABLE {table} ({});", cols.join(", "));
            if let Some(b) = plan.bucket {
                ddl.push_str(&format!(
                    "CREATE INDEX {} ON {table} (tenant_id, {});",
                    quote(&derived(&plan.name, "bucket")),
                    quote(&plan.keys[b].name)
                ));
            }
            ddl.push_str(&isolate(&plan.name));
            tx.batch_execute(&ddl)?;
            tx.execute(
                "INSERT INTO tally_tables (name, kind, definition) VALUES ($1, 'view', $2)
                 ON CONFLICT (name) DO UPDATE SET kind = 'view', definition = excluded.definition",
                &[&plan.name, &fingerprint],
            )?;
            // The table is new for every tenant: every other tenant's position in it is void.
            forget_view_everywhere(&mut tx, &self.tenant, &plan.name)?;
        }
        tx.execute(
            "INSERT INTO tally_views (tenant_id, name, fingerprint, position) VALUES ($1, $2, $3, 0)
             ON CONFLICT (tenant_id, name) DO UPDATE SET fingerprint = excluded.fingerprint, position = 0, failed = 0",
            &[&self.tenant, &plan.name, &fingerprint],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn drop_view(&mut self, name: &str) -> Result<()> {
        self.drop_table(
            name,
            "DELETE FROM tally_views WHERE tenant_id = $1 AND name = $2",
        )
    }

    /// Creates the week partitions `rows` need, each in its own transaction so that a node
    /// racing to create the same one only has to notice it exists.
    pub(super) fn ensure_partitions(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
    ) -> Result<()> {
        if !self.partitions.contains_key(&stream.name) {
            let known = self.existing_partitions(&stream.name)?;
            self.partitions.insert(stream.name.clone(), known);
        }
        let mut needed = BTreeSet::new();
        for row in rows {
            if let Value::Timestamp(t) = row[stream.event_time] {
                let week = week_of(t);
                if !self.partitions[&stream.name].contains(&week) {
                    needed.insert(week);
                }
            }
        }
        for week in needed {
            let name = partition_name(&stream.name, week);
            let ddl = partition_ddl(
                &stream.name,
                &name,
                &format!(
                    "FOR VALUES FROM ({}) TO ({})",
                    week_start(week),
                    week_end(week)
                ),
            );
            let created = (|| -> Result<()> {
                let mut tx = self.client.transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
                    &[&stream.name],
                )?;
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = $1 AND c.relname = $2",
                        &[&self.schema, &name],
                    )?
                    .is_some();
                if !exists {
                    tx.batch_execute(&ddl)?;
                }
                tx.commit()?;
                Ok(())
            })();
            created?;
            if let Some(known) = self.partitions.get_mut(&stream.name) {
                known.insert(week);
            }
        }
        Ok(())
    }

    /// The week starts of the partitions `stream` has now.
    pub(super) fn existing_partitions(&mut self, stream: &str) -> Result<BTreeSet<i64>> {
        let rows = self.client.query(
            "SELECT c.relname::text FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
              WHERE n.nspname = $1 AND p.relname = $2",
            &[&self.schema, &blocks_table(stream)],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| partition_week(stream, r.get(0)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_name_their_partition() {
        let t = Timestamp::parse("2026-01-01T12:00:00Z").unwrap();
        let week = week_of(t);
        assert_eq!(Timestamp(week).to_string(), "2025-12-29T00:00:00Z");
        let name = partition_name("pay", week);
        assert_eq!(name, "pay#2025-12-29");
        assert_eq!(partition_week("pay", &name), Some(week));
        assert_eq!(partition_week("pay", "pay#default"), None);
        assert_eq!(partition_week("pay_x", &name), None);
        // Long names are cut and told apart by a hash; weeks stay apart.
        let long = "a".repeat(60);
        let a = partition_name(&long, week);
        let b = partition_name(&long, week + WEEK_MICROS);
        assert!(a.len() <= 63 && a != b, "{a} {b}");
        assert_eq!(partition_week(&long, &a), Some(week));
        assert_ne!(derived(&long, "seq"), derived(&format!("{long}b"), "seq"));
        let before = Timestamp::parse("1969-12-31T00:00:00Z").unwrap();
        assert_eq!(
            Timestamp(week_of(before)).to_string(),
            "1969-12-29T00:00:00Z"
        );
    }
}
