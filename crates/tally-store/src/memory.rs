//! The in-memory backend, for tests: the same operations over maps.
//!
//! It keeps states as encoded bytes, exactly as the database backends do, so a test on memory
//! also exercises the state encoding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tally_views::{Event, StreamDef, Timestamp, Value, ViewPlan};

use crate::error::{Result, StoreError};
use crate::types::{
    EncodedErasure, EncodedFlush, KeyRecord, LoggedRejection, Materialized, MaterializedView,
    RawSnapshot, RecordWrite, Rejected, TenantInfo, bucket_of,
};

#[derive(Default)]
struct Catalog {
    migrations: Vec<i64>,
    schema: Vec<(String, String)>,
    tenants: Vec<TenantInfo>,
    keys: HashMap<Vec<u8>, KeyRecord>,
    scheduled: std::collections::BTreeSet<String>,
    data: HashMap<String, Arc<Mutex<TenantData>>>,
}

/// An in-memory catalog; clones share it.
#[derive(Clone, Default)]
pub struct MemoryStore {
    catalog: Arc<Mutex<Catalog>>,
}

/// An in-memory tenant; handles to the same tenant share its data.
pub struct MemoryTenant {
    data: Arc<Mutex<TenantData>>,
}

#[derive(Default)]
struct TenantData {
    streams: BTreeMap<String, MemStream>,
    views: BTreeMap<String, MemView>,
    rejections: Vec<LoggedRejection>,
    last_rejection: u64,
    /// Table rows by table, then encoded key.
    tables: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Records by (kind, key).
    records: BTreeMap<(String, String), String>,
}

#[derive(Default)]
struct MemStream {
    definition: String,
    /// The last sequence number handed out; never reused.
    last_seq: u64,
    events: BTreeMap<u64, Vec<Value>>,
    dedupe: HashMap<Value, u64>,
}

#[derive(Default)]
struct MemView {
    fingerprint: String,
    position: u64,
    failed: u64,
    rows: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    pub(crate) fn applied_migrations(&self) -> Vec<i64> {
        lock(&self.catalog).migrations.clone()
    }

    pub(crate) fn set_migration(&self, version: i64, applied: bool) {
        let mut c = lock(&self.catalog);
        c.migrations.retain(|&v| v != version);
        if applied {
            c.migrations.push(version);
            c.migrations.sort_unstable();
        }
    }

    pub(crate) fn schema(&self) -> Vec<(String, String)> {
        lock(&self.catalog).schema.clone()
    }

    pub(crate) fn save_schema(&self, definitions: &[(String, String)]) {
        lock(&self.catalog).schema = definitions.to_vec();
    }

    pub(crate) fn create_tenant(&self, name: &str, time_zone: &str, now: Timestamp) -> Result<()> {
        let mut c = lock(&self.catalog);
        if c.tenants.iter().any(|t| t.name == name) {
            return Err(StoreError::TenantExists(name.to_owned()));
        }
        c.tenants.push(TenantInfo {
            name: name.to_owned(),
            time_zone: time_zone.to_owned(),
            created_at: now,
        });
        c.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    pub(crate) fn forget_tenant(&self, name: &str) {
        let mut c = lock(&self.catalog);
        c.tenants.retain(|t| t.name != name);
        c.keys.retain(|_, k| k.tenant != name);
        c.scheduled.remove(name);
        c.data.remove(name);
    }

    pub(crate) fn tenants(&self) -> Vec<TenantInfo> {
        lock(&self.catalog).tenants.clone()
    }

    pub(crate) fn create_key(&self, hash: &[u8], record: &KeyRecord) -> Result<()> {
        lock(&self.catalog)
            .keys
            .insert(hash.to_vec(), record.clone());
        Ok(())
    }

    pub(crate) fn find_key(&self, hash: &[u8]) -> Option<KeyRecord> {
        lock(&self.catalog).keys.get(hash).cloned()
    }

    pub(crate) fn revoke_key(&self, tenant: &str, prefix: &str) -> usize {
        let mut c = lock(&self.catalog);
        let mut n = 0;
        for k in c.keys.values_mut() {
            if k.tenant == tenant && k.prefix == prefix && !k.revoked {
                k.revoked = true;
                n += 1;
            }
        }
        n
    }

    pub(crate) fn set_scheduled(&self, tenant: &str, scheduled: bool) {
        let mut c = lock(&self.catalog);
        if scheduled {
            c.scheduled.insert(tenant.to_owned());
        } else {
            c.scheduled.remove(tenant);
        }
    }

    pub(crate) fn scheduled_tenants(&self) -> Vec<String> {
        lock(&self.catalog).scheduled.iter().cloned().collect()
    }

    pub(crate) fn tenant(&self, name: &str) -> MemoryTenant {
        let mut c = lock(&self.catalog);
        let data = c.data.entry(name.to_owned()).or_default().clone();
        MemoryTenant { data }
    }
}

impl MemoryTenant {
    pub(crate) fn write_records(&self, writes: &[RecordWrite]) {
        let mut d = self.data();
        for w in writes {
            match w {
                RecordWrite::Put { kind, key, body } => {
                    d.records.insert((kind.clone(), key.clone()), body.clone());
                }
                RecordWrite::Delete { kind, key } => {
                    d.records.remove(&(kind.clone(), key.clone()));
                }
            }
        }
    }

    fn record_range(kind: &str, from: &str, to: &str) -> std::ops::Range<(String, String)> {
        (kind.to_owned(), from.to_owned())..(kind.to_owned(), to.to_owned())
    }

    pub(crate) fn records(
        &self,
        kind: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Vec<(String, String)> {
        if from >= to {
            return Vec::new();
        }
        self.data()
            .records
            .range(Self::record_range(kind, from, to))
            .take(limit)
            .map(|((_, k), b)| (k.clone(), b.clone()))
            .collect()
    }

    pub(crate) fn delete_records(&self, kind: &str, from: &str, to: &str) -> u64 {
        if from >= to {
            return 0;
        }
        let mut d = self.data();
        let keys: Vec<(String, String)> = d
            .records
            .range(Self::record_range(kind, from, to))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            d.records.remove(k);
        }
        keys.len() as u64
    }

    pub(crate) fn upsert_rows(&self, table: &str, rows: &[(Vec<u8>, Vec<u8>)]) {
        let mut d = self.data();
        let t = d.tables.entry(table.to_owned()).or_default();
        for (key, row) in rows {
            t.insert(key.clone(), row.clone());
        }
    }

    pub(crate) fn delete_row(&self, table: &str, key: &[u8]) -> bool {
        let mut d = self.data();
        let Some(t) = d.tables.get_mut(table) else {
            return false;
        };
        let found = t.remove(key).is_some();
        if t.is_empty() {
            d.tables.remove(table);
        }
        found
    }

    pub(crate) fn table_rows(&self, table: &str) -> Vec<Vec<u8>> {
        self.data()
            .tables
            .get(table)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn tables_with_rows(&self) -> Vec<String> {
        self.data().tables.keys().cloned().collect()
    }

    pub(crate) fn drop_table_rows(&self, table: &str) {
        self.data().tables.remove(table);
    }

    pub(crate) fn log_rejections(&self, rejected: &[Rejected]) {
        let mut d = self.data();
        for r in rejected {
            d.last_rejection += 1;
            let id = d.last_rejection;
            d.rejections.push(LoggedRejection {
                id,
                rejected: r.clone(),
            });
        }
    }

    pub(crate) fn rejections(&self, after: u64, limit: usize) -> Vec<LoggedRejection> {
        self.data()
            .rejections
            .iter()
            .filter(|r| r.id > after)
            .take(limit)
            .cloned()
            .collect()
    }

    pub(crate) fn trim_rejections(&self, before: Timestamp, keep: usize) -> u64 {
        let mut d = self.data();
        let n = d.rejections.len();
        d.rejections.retain(|r| r.rejected.at >= before);
        let over = d.rejections.len().saturating_sub(keep);
        d.rejections.drain(..over);
        (n - d.rejections.len()) as u64
    }

    fn data(&self) -> MutexGuard<'_, TenantData> {
        lock(&self.data)
    }

    pub(crate) fn materialized(&self) -> Materialized {
        let d = self.data();
        Materialized {
            streams: d
                .streams
                .iter()
                .map(|(n, s)| (n.clone(), s.definition.clone()))
                .collect(),
            views: d
                .views
                .iter()
                .map(|(n, v)| MaterializedView {
                    name: n.clone(),
                    fingerprint: v.fingerprint.clone(),
                    position: v.position,
                    failed: v.failed,
                })
                .collect(),
        }
    }

    pub(crate) fn create_stream(&mut self, def: &StreamDef) {
        self.data().streams.insert(
            def.name.clone(),
            MemStream {
                definition: def.sql(),
                ..MemStream::default()
            },
        );
    }

    pub(crate) fn alter_stream(&mut self, new: &StreamDef) {
        let mut d = self.data();
        if let Some(s) = d.streams.get_mut(&new.name) {
            s.definition = new.sql();
            let added = new.columns.len();
            for row in s.events.values_mut() {
                row.resize(added, Value::Null);
            }
        }
    }

    pub(crate) fn drop_stream(&mut self, name: &str) {
        self.data().streams.remove(name);
    }

    pub(crate) fn reset_view(&mut self, plan: &ViewPlan) {
        self.data().views.insert(
            plan.name.clone(),
            MemView {
                fingerprint: plan.fingerprint(),
                ..MemView::default()
            },
        );
    }

    pub(crate) fn drop_view(&mut self, name: &str) {
        self.data().views.remove(name);
    }

    pub(crate) fn append(&mut self, stream: &StreamDef, rows: &[Vec<Value>]) -> Vec<Option<u64>> {
        let mut d = self.data();
        let s = d.streams.entry(stream.name.clone()).or_default();
        rows.iter()
            .map(|row| {
                let key = stream.dedupe_value(row);
                if let Some(k) = &key
                    && s.dedupe.contains_key(k)
                {
                    return None;
                }
                s.last_seq += 1;
                let seq = s.last_seq;
                s.events.insert(seq, row.clone());
                if let Some(k) = key {
                    s.dedupe.insert(k, seq);
                }
                Some(seq)
            })
            .collect()
    }

    pub(crate) fn read_events(&self, stream: &str, after: u64, limit: usize) -> Vec<Event> {
        let d = self.data();
        let Some(s) = d.streams.get(stream) else {
            return Vec::new();
        };
        s.events
            .range(after + 1..)
            .take(limit)
            .map(|(&seq, row)| Event {
                seq,
                row: row.clone(),
            })
            .collect()
    }

    pub(crate) fn load_states(&self, view: &str, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let d = self.data();
        let rows = d.views.get(view).map(|v| &v.rows);
        keys.iter()
            .map(|k| rows.and_then(|r| r.get(k).cloned()))
            .collect()
    }

    pub(crate) fn flush(&mut self, flushes: &[EncodedFlush<'_>]) {
        let mut d = self.data();
        for f in flushes {
            let v = d.views.entry(f.plan.name.clone()).or_default();
            for row in &f.rows {
                v.rows.insert(row.key.clone(), row.state.clone());
            }
            v.position = f.position;
            v.failed += f.failed;
        }
    }

    pub(crate) fn snapshot_view(
        &self,
        plan: &ViewPlan,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        tail: Option<&StreamDef>,
    ) -> RawSnapshot {
        let d = self.data();
        let Some(v) = d.views.get(&plan.name) else {
            return RawSnapshot {
                position: 0,
                fingerprint: String::new(),
                rows: Vec::new(),
                tail: Vec::new(),
            };
        };
        let rows = v
            .rows
            .iter()
            .filter(|(k, _)| match bucket_of(plan, k) {
                Some(t) => from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e),
                None => true,
            })
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let tail = match tail.and_then(|s| d.streams.get(&s.name)) {
            Some(s) => s
                .events
                .range(v.position + 1..)
                .map(|(&seq, row)| Event {
                    seq,
                    row: row.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        RawSnapshot {
            position: v.position,
            fingerprint: v.fingerprint.clone(),
            rows,
            tail,
        }
    }

    pub(crate) fn delete_events_before(
        &mut self,
        stream: &StreamDef,
        before: Timestamp,
        max_seq: u64,
    ) -> u64 {
        let mut d = self.data();
        let Some(s) = d.streams.get_mut(&stream.name) else {
            return 0;
        };
        let doomed: Vec<u64> = s
            .events
            .range(..=max_seq)
            .filter(|(_, row)| matches!(row[stream.event_time], Value::Timestamp(t) if t < before))
            .map(|(&seq, _)| seq)
            .collect();
        for seq in &doomed {
            if let Some(row) = s.events.remove(seq)
                && let Some(key) = stream.dedupe_value(&row)
            {
                s.dedupe.remove(&key);
            }
        }
        doomed.len() as u64
    }

    pub(crate) fn last_seq(&self, stream: &str) -> u64 {
        self.data().streams.get(stream).map_or(0, |s| s.last_seq)
    }

    pub(crate) fn events_of(
        &self,
        stream: &StreamDef,
        columns: &[usize],
        ids: &[&str],
    ) -> Vec<Event> {
        let d = self.data();
        let Some(s) = d.streams.get(&stream.name) else {
            return Vec::new();
        };
        s.events
            .iter()
            .filter(|(_, row)| {
                columns
                    .iter()
                    .any(|&c| matches!(&row[c], Value::Text(t) if ids.contains(&&**t)))
            })
            .map(|(&seq, row)| Event {
                seq,
                row: row.clone(),
            })
            .collect()
    }

    pub(crate) fn erase(&mut self, erasure: &EncodedErasure<'_>) {
        {
            let mut d = self.data();
            for (stream, seqs) in erasure.events {
                let Some(s) = d.streams.get_mut(&stream.name) else {
                    continue;
                };
                for seq in seqs {
                    if let Some(row) = s.events.remove(seq)
                        && let Some(key) = stream.dedupe_value(&row)
                    {
                        s.dedupe.remove(&key);
                    }
                }
            }
            for c in &erasure.views {
                let v = d.views.entry(c.plan.name.clone()).or_default();
                for row in &c.rows {
                    v.rows.insert(row.key.clone(), row.state.clone());
                }
                for key in &c.removed {
                    v.rows.remove(key);
                }
            }
        }
        self.write_records(erasure.records);
    }

    pub(crate) fn delete_view_rows_before(&mut self, plan: &ViewPlan, before: Timestamp) -> u64 {
        let mut d = self.data();
        let Some(v) = d.views.get_mut(&plan.name) else {
            return 0;
        };
        let before_len = v.rows.len();
        v.rows
            .retain(|k, _| bucket_of(plan, k).is_none_or(|t| t >= before));
        (before_len - v.rows.len()) as u64
    }
}
