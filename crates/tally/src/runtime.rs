//! One tenant at work: its store, the engine for its time zone and the unflushed delta.
//!
//! Opening a runtime reconciles the tenant's tables with the catalog (creates missing stream
//! and view tables, rebuilds views whose definition changed, drops what the catalog dropped) and
//! then replays every event after each view's stored position. That one step serves a fresh
//! view (backfilled from the retained raw events), a changed view (rebuilt) and a crash
//! (finishing what was acknowledged but not yet flushed).
//!
//! The ingest path is: [`TenantRuntime::append`] commits the rows (the acknowledgement point),
//! applies them to the delta, and [`TenantRuntime::flush`] merges the delta into the view tables
//! and advances the positions in one transaction. Queries read stored rows ⊕ the delta, so they
//! see every acknowledged event at once.
//!
//! On a shared store (PostgreSQL) several processes may serve one tenant. One of them, the
//! *leader* (it holds the tenant's lock, [`tally_store::Lease`]), reconciles tables, applies
//! events and writes view tables, exactly as a lone process does, and also applies the events
//! the others commit: the log orders every event, so it reads the gaps between its own commits
//! and, at each tick, the log's tail. The others are *followers*: they only commit events, and
//! answer queries from the stored rows plus the events after the position those rows hold, read
//! from the same log. A follower tries to take the lead at every tick, so when a leader dies
//! another one takes over and replays from the stored positions: no event is applied twice or
//! lost.

use std::collections::HashMap;

use tally_store::{Lease, Store, TenantInfo, TenantStore, ViewFlush};
use tally_views::{
    Catalog, Delta, Engine, QueryPlan, QueryRequest, ResultSet, StreamDef, TimeZone, Timestamp,
    Value, ViewPlan,
};

use crate::error::{Error, Result};

/// How many events replay reads at a time.
const REPLAY_BATCH: usize = 10_000;
/// Flush when the delta holds this many groups, to bound memory (a few hundred bytes per group
/// for plain aggregates; sketches and exact sets more). Fewer flushes mean fewer rewrites of
/// the same group rows during a bulk load.
const FLUSH_GROUPS: usize = 250_000;

/// Rows of an append from which [`StoreSide::append_applying`] applies the events on a second
/// thread while the commit is synced: below, starting the thread costs about what it saves
/// (a group of single events applies in a few microseconds).
pub const OVERLAP_ROWS: usize = 256;
/// Work ([`tally_store::RowWrite::work`]: rows plus members of exact distinct sets) from which
/// a flush's rows are freed on a thread of their own: freeing the million members of the
/// rollups workload's final flush took the committing thread 34 ms (about 4 %) of a
/// 500,000-event `tally ingest`, with the other core idle.
const BACKGROUND_DROP_WORK: usize = 65_536;

/// A tenant's store, engine and pending delta.
pub struct TenantRuntime {
    info: TenantInfo,
    store: TenantStore,
    catalog: Catalog,
    engine: Engine,
    delta: Delta,
    /// The positions last committed to the store, in engine view order.
    stored: Vec<u64>,
    /// Per view, the stored count of events on which an expression failed (up to `stored`).
    stored_failed: Vec<u64>,
    /// Per view, the count of failed events last reported to the metrics.
    reported_failed: Vec<u64>,
    /// Set when a write to the store failed: the runtime must be reopened (and replay).
    poisoned: bool,
    /// Events applied by replay when the runtime opened, per view.
    replayed: HashMap<String, u64>,
    /// Whether this process writes the tenant's view tables (always, unless the store is shared).
    leader: bool,
    /// Whether other processes may commit events of this tenant (a shared store).
    shared: bool,
    /// On a shared store, the last sequence number handed to the delta, per stream with views.
    heads: HashMap<String, u64>,
    /// Recent query answers, valid while what they read is unchanged (see [`Answers`]).
    answers: std::cell::RefCell<Answers>,
    /// Per view, its stored groups decoded as of a version (`None`: too many to keep).
    decoded: std::cell::RefCell<HashMap<usize, Option<Decoded>>>,
    /// Bumped whenever stored view rows change other than by a flush (retention, a new lead).
    epoch: u64,
    /// The analyses' state, built by the first analysis (see `crate::analyses`).
    activity: Option<tally_views::analysis::Activity>,
    /// Tests: poison the runtime after each successful commit, as a panic of the overlapped
    /// apply does (no input is known to make the apply panic).
    #[cfg(test)]
    pub(crate) poison_after_commit: bool,
    /// The groups from which the delta is flushed ([`FLUSH_GROUPS`]; fewer in tests).
    pub(crate) flush_groups: usize,
    /// The tenant's alerts as last read from the store (see `crate::alerts`).
    pub(crate) alerts: Option<crate::alerts::Book>,
    /// Webhook deliveries handed out and not yet answered, by notification id: kept apart from
    /// the alerts, which are read again from the store now and then.
    pub(crate) in_flight: std::collections::HashSet<String>,
    /// Per view, its stored groups finalized, as query-time SQL reads them: built by the first
    /// SQL query that reads the view, then kept current by every flush (see [`Finalized`]).
    finalized: std::sync::Mutex<HashMap<usize, Finalized>>,
}

impl TenantRuntime {
    /// Opens a tenant: reconcile its tables with `catalog`, then replay.
    pub(crate) fn open(
        store: &Store,
        catalog: &Catalog,
        info: TenantInfo,
    ) -> Result<TenantRuntime> {
        let tz = TimeZone::get(&info.time_zone).map_err(|e| {
            Error::Invalid(format!(
                "tenant {} has time zone {}: {e}",
                info.name, info.time_zone
            ))
        })?;
        let tenant = store.tenant(&info.name)?;
        let engine = Engine::new(catalog, tz);
        let delta = engine.delta(|_| 0);
        let mut runtime = TenantRuntime {
            info,
            store: tenant,
            catalog: catalog.clone(),
            engine,
            delta,
            stored: Vec::new(),
            stored_failed: Vec::new(),
            reported_failed: Vec::new(),
            poisoned: false,
            replayed: HashMap::new(),
            leader: false,
            shared: store.is_shared(),
            heads: HashMap::new(),
            answers: Default::default(),
            decoded: Default::default(),
            epoch: 0,
            activity: None,
            #[cfg(test)]
            poison_after_commit: false,
            flush_groups: FLUSH_GROUPS,
            alerts: None,
            in_flight: Default::default(),
            finalized: Default::default(),
        };
        if !runtime.lead()? {
            runtime.check_followable()?;
        }
        Ok(runtime)
    }

    /// Takes the lead when no other process holds it: reconciles the tables with the catalog and
    /// replays every event after the stored positions. Returns whether this process leads.
    pub fn lead(&mut self) -> Result<bool> {
        if self.leader {
            return Ok(true);
        }
        if self.on_lease(|l| l.try_lead())? == Some(false) {
            return Ok(false);
        }
        // A leader reconciles the tables with its catalog: it must not be an old one, or it
        // would undo another node's schema change. The schema lock, held shared from the check
        // to the end of the reconcile, keeps a change from committing in between.
        self.on_lease(|l| l.hold_schema(true))?;
        let reconciled = self.reconcile_current();
        self.on_lease(|l| l.hold_schema(false))?;
        let positions = match reconciled {
            Ok(positions) => positions,
            Err(e) => {
                self.on_lease(|l| l.release_lead())?;
                return Err(e);
            }
        };
        self.delta = self
            .engine
            .delta(|name| positions.get(name).map_or(0, |p| p.0));
        self.stored = self.delta.views.iter().map(|v| v.position).collect();
        self.stored_failed = self
            .engine
            .views()
            .iter()
            .map(|v| positions.get(&v.name).map_or(0, |p| p.1))
            .collect();
        self.reported_failed = self.stored_failed.clone();
        self.heads.clear();
        self.leader = true;
        self.epoch += 1;
        self.replay()?;
        Ok(true)
    }

    /// Runs `f` on the store's lease when other processes share the store (PostgreSQL);
    /// `None` when this process is the store's only user.
    fn on_lease<T>(
        &mut self,
        f: impl FnOnce(&mut Lease<'_>) -> tally_store::Result<T>,
    ) -> Result<Option<T>> {
        Ok(match self.store.shared() {
            Some(mut lease) => Some(f(&mut lease)?),
            None => None,
        })
    }

    /// Reconciles the tables with the catalog, if the catalog is the stored schema.
    fn reconcile_current(&mut self) -> Result<HashMap<String, (u64, u64)>> {
        if let Some(stored) = self.on_lease(|l| l.stored_schema())?
            && stored != self.catalog.definitions()
        {
            return Err(Error::Store(tally_store::StoreError::Busy(format!(
                "the schema changed on another node; tenant {} reopens with it shortly",
                self.info.name
            ))));
        }
        reconcile(&mut self.store, &self.catalog)
    }

    /// A follower reads the leader's tables: they must be built for this catalog.
    fn check_followable(&self) -> Result<()> {
        let materialized = self.store.materialized()?;
        for view in self.catalog.views() {
            let built = materialized
                .views
                .iter()
                .any(|m| m.name == view.name && m.fingerprint == view.fingerprint());
            if !built {
                return Err(Error::Store(tally_store::StoreError::Busy(format!(
                    "view {} of tenant {} is being built by another node; retry shortly",
                    view.name, self.info.name
                ))));
            }
        }
        for stream in self.catalog.streams() {
            let sql = stream.sql();
            if !materialized
                .streams
                .iter()
                .any(|(n, d)| *n == stream.name && *d == sql)
            {
                return Err(Error::Store(tally_store::StoreError::Busy(format!(
                    "stream {} of tenant {} is being created by another node; retry shortly",
                    stream.name, self.info.name
                ))));
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn info(&self) -> &TenantInfo {
        &self.info
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// How many events replay applied to `view` when the runtime opened.
    pub fn replayed(&self, view: &str) -> u64 {
        self.replayed.get(view).copied().unwrap_or(0)
    }

    /// The store beside the analyses' state, to catch the state up from the log.
    pub(crate) fn store_and_activity(
        &mut self,
    ) -> (&TenantStore, &mut Option<tally_views::analysis::Activity>) {
        (&self.store, &mut self.activity)
    }

    /// Direct access to the tenant's store, for reading raw events.
    pub fn store(&self) -> &TenantStore {
        &self.store
    }

    /// Changes whenever what a view query could answer changes: an event applied, a flush,
    /// stored rows changed otherwise (retention, an erasure, a new lead). For `ETag`s.
    pub fn data_version(&self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        for v in &self.delta.views {
            v.position.hash(&mut h);
        }
        self.stored.hash(&mut h);
        (h.finish(), self.epoch)
    }

    /// The positions last committed to the store, in engine view order.
    pub(crate) fn positions(&self) -> &[u64] {
        &self.stored
    }

    /// Stored view rows and raw events changed other than by a flush (an erasure): kept
    /// answers, decoded groups and finalized rows are read again, and the analyses' state is
    /// built again from the log.
    pub(crate) fn rows_changed(&mut self) {
        self.epoch += 1;
        self.activity = None;
    }

    /// The tenant's store, for writes outside streams and views (table rows).
    pub(crate) fn store_mut(&mut self) -> &mut TenantStore {
        &mut self.store
    }

    fn replay(&mut self) -> Result<()> {
        let streams: Vec<std::sync::Arc<StreamDef>> = self.catalog.streams().cloned().collect();
        for stream in streams {
            let Some(mut after) = self.engine.min_position(&stream.name, &self.delta) else {
                continue;
            };
            loop {
                let events = self.store.read_events(&stream, after, REPLAY_BATCH)?;
                let Some(last) = events.last() else {
                    if self.shared {
                        self.heads.insert(stream.name.clone(), after);
                    }
                    break;
                };
                after = last.seq;
                for (i, view) in self.engine.views().iter().enumerate() {
                    if view.stream == stream.name {
                        let fresh = events
                            .iter()
                            .filter(|e| e.seq > self.delta.views[i].position)
                            .count();
                        *self.replayed.entry(view.name.clone()).or_default() += fresh as u64;
                    }
                }
                self.engine.apply(&stream.name, &events, &mut self.delta);
                if self.delta.group_count() >= self.flush_groups {
                    self.flush()?;
                }
            }
        }
        self.flush()
    }

    /// Commits rows durably, then applies them. For each row, its sequence number, or `None` for
    /// a duplicate. Rows must have passed ingest validation.
    pub fn append(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
    ) -> Result<Vec<Option<u64>>> {
        let appended = self.commit(stream, rows)?;
        self.apply_committed(&stream.name, &appended.events);
        Ok(appended.seqs)
    }

    /// Commits rows durably without applying them: the caller acknowledges them, then hands
    /// the events to [`TenantRuntime::apply_committed`] before the runtime does anything else
    /// (a query in between would not see them). Rows must have passed ingest validation.
    pub fn commit(&mut self, stream: &StreamDef, rows: Vec<Vec<Value>>) -> Result<Appended> {
        self.commit_hashed(stream, rows, None)
    }

    /// [`TenantRuntime::commit`] with the rows' dedupe keys hashed beforehand, on another thread
    /// ([`StoreSide::append_hashed`]).
    pub fn commit_hashed(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
    ) -> Result<Appended> {
        let appended = self.split().0.append_hashed(stream, rows, hashed)?;
        self.poison_for_tests();
        Ok(appended)
    }

    /// [`TenantRuntime::commit_hashed`] followed by [`TenantRuntime::apply_committed`]'s apply,
    /// the two overlapped: on SQLite the events are applied on a second thread while this one
    /// writes and syncs the commit ([`StoreSide::append_applying`]). The flush a full delta
    /// needs is left to [`TenantRuntime::flush_if_full`]. Returns what
    /// [`StoreSide::append_applying`] does: the events it did not apply go to
    /// [`TenantRuntime::apply_committed`], as after [`TenantRuntime::commit_hashed`].
    pub fn commit_applying(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
    ) -> Result<Appended> {
        let (mut store, mut apply) = self.split();
        let appended = store.append_applying(stream, rows, hashed, &mut apply)?;
        self.poison_for_tests();
        Ok(appended)
    }

    /// Tests only: what a panic of the overlapped apply leaves, when they ask for it.
    fn poison_for_tests(&mut self) {
        #[cfg(test)]
        if self.poison_after_commit {
            self.poisoned = true;
        }
    }

    /// Applies events [`TenantRuntime::commit`] returned, flushing when the delta is full.
    pub fn apply_committed(&mut self, stream: &str, events: &[tally_views::Event]) {
        self.split().1.apply(stream, events);
        self.flush_if_full();
    }

    /// Flushes the delta if it has grown enough ([`ApplySide::needs_flush`]). A failed flush
    /// poisons the runtime (the events are committed; reopening replays what it lost).
    pub fn flush_if_full(&mut self) {
        if self.poisoned {
            // Nothing may be flushed (`StoreSide::write` refuses): the runtime is reopened.
            return;
        }
        let (mut store, mut apply) = self.split();
        if apply.needs_flush() {
            let job = apply.take_flush();
            if let Err(e) = store.write(job) {
                // The rows are committed: acknowledge them. The runtime is poisoned and must be
                // reopened, which replays what the failed flush lost.
                tracing::error!(tenant = %self.info.name, error = %e, "flush failed after a commit");
            }
        }
    }

    /// Merges the delta into the view tables and stores the positions, in one transaction.
    pub fn flush(&mut self) -> Result<()> {
        let (mut store, mut apply) = self.split();
        let job = apply.take_flush();
        store.write(job)
    }

    /// The periodic work of a shared store: a follower tries to take the lead; the leader
    /// applies the events other processes committed since its last look. Returns whether the
    /// delta holds groups to flush.
    pub fn tick(&mut self) -> Result<bool> {
        if self.shared {
            if !self.lead()? {
                return Ok(false);
            }
            let streams: Vec<String> = self.heads.keys().cloned().collect();
            for name in streams {
                let Some(stream) = self.catalog.stream(&name).cloned() else {
                    continue;
                };
                loop {
                    let after = self.heads[&name];
                    let events = self.store.read_events(&stream, after, REPLAY_BATCH)?;
                    let Some(last) = events.last() else { break };
                    self.heads.insert(name.clone(), last.seq);
                    self.engine.apply(&name, &events, &mut self.delta);
                    if self.delta.group_count() >= self.flush_groups {
                        self.flush()?;
                    }
                }
            }
        }
        Ok(self.has_pending())
    }

    /// The two halves of the ingest path, so that two threads can share the work: one commits
    /// rows and writes flushes, the other applies committed rows and prepares flushes.
    pub fn split(&mut self) -> (StoreSide<'_>, ApplySide<'_>) {
        (
            StoreSide {
                store: &mut self.store,
                catalog: &self.catalog,
                engine: &self.engine,
                stored: &mut self.stored,
                stored_failed: &mut self.stored_failed,
                poisoned: &mut self.poisoned,
                tenant: &self.info.name,
                leader: self.leader,
                heads: &mut self.heads,
                finalized: &self.finalized,
                epoch: self.epoch,
            },
            ApplySide {
                engine: &self.engine,
                delta: &mut self.delta,
                flush_groups: self.flush_groups,
            },
        )
    }

    /// Reads a view: stored rows merged with the unflushed delta. On a shared store, also the
    /// events other processes committed that the rows and the delta do not hold yet.
    pub fn query(&self, view: &str, req: &QueryRequest) -> Result<ResultSet> {
        let (index, plan) = self.view(view)?;
        // The only process writing a tenant that no other process shares knows when a view's
        // rows change: an answer stays good while the view's applied and stored positions and
        // the epoch are those it was computed at (dashboards ask the same again and again).
        // A follower keeps no stored positions (`stored` is empty): it never caches.
        if !self.leader || self.shared {
            return self.compute(index, plan, req);
        }
        let version = (
            self.delta.views[index].position,
            self.stored[index],
            self.epoch,
        );
        let key = format!("{view}\u{1}{req:?}");
        if let Some(hit) = self.answers.borrow_mut().get(&key, version) {
            return Ok(hit);
        }
        let result = self.compute(index, plan, req)?;
        self.answers.borrow_mut().put(key, version, &result);
        Ok(result)
    }

    /// The stored groups of view `index`, decoded, as kept since the view's rows last changed;
    /// `None` when the view is too large to keep (decoding sketch states costs more than the
    /// rest of a query, so a view within the tenant's budget is decoded once per change).
    fn kept_groups(
        &self,
        index: usize,
        plan: &ViewPlan,
    ) -> Result<Option<std::cell::Ref<'_, Decoded>>> {
        let version = (self.stored[index], self.epoch);
        {
            let mut kept = self.decoded.borrow_mut();
            let fresh = kept
                .get(&index)
                .is_some_and(|k| k.as_ref().is_none_or(|k| k.version == version));
            if !fresh {
                let mut all = self.store.scan_view(plan, None, None)?;
                // Kept rows are finalized query after query: settle their deferred merges once.
                for (_, states) in all.iter_mut() {
                    plan.settle_row(states);
                }
                let bytes: usize = all
                    .iter()
                    .map(|(key, states)| {
                        key.len() * 32
                            + states
                                .iter()
                                .map(tally_views::AggState::memory)
                                .sum::<usize>()
                    })
                    .sum();
                // Within the tenant's budget, counting what other views keep.
                let others: usize = kept
                    .iter()
                    .filter(|(i, _)| **i != index)
                    .filter_map(|(_, k)| k.as_ref().map(|k| k.bytes))
                    .sum();
                let keep = (others + bytes <= KEPT_BYTES).then_some(Decoded {
                    version,
                    groups: all,
                    bytes,
                });
                kept.insert(index, keep);
            }
        }
        Ok(std::cell::Ref::filter_map(self.decoded.borrow(), |kept| {
            kept.get(&index).and_then(Option::as_ref)
        })
        .ok())
    }

    /// Computes a query's answer: stored rows ⊕ delta (⊕ the log's tail on a shared store).
    /// Rows are lent to the query, which copies only what its answer keeps.
    fn compute(&self, index: usize, plan: &ViewPlan, req: &QueryRequest) -> Result<ResultSet> {
        let qp = QueryPlan::new(plan, req)?;
        let (from, to) = match qp.time_range() {
            Some((_, from, to)) => (from, to),
            None => (None, None),
        };
        let tz = self.engine.tz();
        let stream = self.catalog.stream(&plan.stream);
        if !self.leader {
            // Rows, their position and the events after it, from one snapshot: the leader may
            // flush (and retention delete what it flushed) at any moment.
            let snapshot = self
                .store
                .snapshot_view(plan, from, to, stream.map(|s| &**s))?;
            if snapshot.fingerprint != plan.fingerprint() {
                return Err(Error::Store(tally_store::StoreError::Busy(format!(
                    "view {} of tenant {} is being rebuilt; retry shortly",
                    plan.name, self.info.name
                ))));
            }
            let tail = self.tail_groups(index, &snapshot.tail);
            let rows = snapshot
                .groups
                .iter()
                .map(lend)
                .chain(tail.iter().map(lend));
            return Ok(qp.run(rows, tz)?);
        }
        // The only writer: the stored rows hold exactly `stored`, the delta the rest of what
        // this process applied, and the log what other processes committed since.
        let mut tail = Vec::new();
        if let (true, Some(stream)) = (self.shared, stream) {
            let mut after = self.delta.views[index].position;
            let mut events = Vec::new();
            loop {
                let batch = self.store.read_events(stream, after, REPLAY_BATCH)?;
                let Some(last) = batch.last() else { break };
                after = last.seq;
                events.extend(batch);
            }
            tail = self.tail_groups(index, &events);
        }
        let pending = self.delta.views[index]
            .groups
            .iter()
            .map(|(key, states)| (&key[..], &states[..]))
            .chain(tail.iter().map(lend));
        if !self.shared
            && let Some(kept) = self.kept_groups(index, plan)?
        {
            // The query's own time range check skips the kept groups outside it.
            let rows = kept.groups.iter().map(lend).chain(pending);
            return Ok(qp.run(rows, tz)?);
        }
        let scanned = self.store.scan_view(plan, from, to)?;
        Ok(qp.run(scanned.iter().map(lend).chain(pending), tz)?)
    }

    /// The groups of view `index` that `events` (of its stream, after what the stored rows
    /// hold) make, applied to that view alone.
    fn tail_groups(
        &self,
        index: usize,
        events: &[tally_views::Event],
    ) -> Vec<tally_store::StoredGroup> {
        let Some(first) = events.first() else {
            return Vec::new();
        };
        let plan = &self.engine.views()[index];
        let mut delta = self.engine.delta(|name| {
            if name == plan.name {
                first.seq - 1
            } else {
                u64::MAX
            }
        });
        self.engine.apply(&plan.stream, events, &mut delta);
        std::mem::take(&mut delta.views[index].groups)
            .into_iter()
            .map(|(key, states)| (key.into_vec(), states))
            .collect()
    }

    /// A view's rows as query-time SQL reads them: every column, in no particular order, the
    /// same values as `query(name, default)` gives (stored rows ⊕ the delta). The sole writer
    /// of an unshared store reads the stored part from its kept [`Finalized`] rows (built
    /// on first use, kept current by flushes) and finalizes only the delta's groups; anything
    /// else, or a view with a cell that cannot be computed, goes through [`Self::query`].
    #[cfg(feature = "sql")]
    pub(crate) fn sql_view_rows(&self, name: &str) -> Result<ResultSet> {
        let (index, plan) = self.view(name)?;
        let slow = || self.query(name, &QueryRequest::default());
        if !self.leader || self.shared {
            return slow();
        }
        let tz = self.engine.tz();
        let version = (self.stored[index], self.epoch);
        let mut finalized = self.finalized.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = finalized.get(&index).is_some_and(|f| f.version == version);
        let built;
        let kept = if fresh {
            &finalized[&index]
        } else {
            finalized.remove(&index);
            let mut rows = HashMap::new();
            let mut bytes = 0;
            for (key, mut states) in self.store.scan_view(plan, None, None)? {
                plan.settle_row(&mut states);
                let Ok(full) = plan.finalize_row(&key, &states, tz) else {
                    drop(finalized);
                    return slow();
                };
                bytes += Finalized::row_bytes(&key, &full);
                rows.insert(tally_views::GroupKey::new(key), full);
            }
            let f = Finalized {
                version,
                rows,
                bytes,
            };
            if f.bytes <= FINALIZED_BYTES {
                finalized.insert(index, f);
                &finalized[&index]
            } else {
                built = f;
                &built
            }
        };
        let pending = &self.delta.views[index].groups;
        let mut out = Vec::with_capacity(kept.rows.len() + pending.len());
        out.extend(
            kept.rows
                .iter()
                .filter(|(key, _)| !pending.contains_key(*key))
                .map(|(_, row)| row.clone()),
        );
        if !pending.is_empty() {
            // As a view query merges them: the stored states, then the delta's, into empty ones.
            let keys: Vec<&[Value]> = pending.keys().map(|k| &k[..]).collect();
            let stored = self.store.load_states(plan, &keys)?;
            for ((key, delta), old) in pending.iter().zip(stored) {
                let mut states: Vec<tally_views::AggState> =
                    plan.aggs.iter().map(|a| a.kind.new_state()).collect();
                if let Some(old) = old {
                    plan.merge_row_owned(&mut states, old);
                }
                plan.merge_row(&mut states, delta);
                plan.settle_row(&mut states);
                match plan.finalize_row(key, &states, tz) {
                    Ok(full) => out.push(full),
                    Err(_) => {
                        drop(finalized);
                        return slow();
                    }
                }
            }
        }
        Ok(ResultSet {
            columns: plan
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty))
                .collect(),
            rows: out,
        })
    }

    /// The view called `name` and its index in the engine.
    pub fn view(&self, name: &str) -> Result<(usize, &ViewPlan)> {
        match self.engine.view_index(name) {
            Some(i) => Ok((i, &self.engine.views()[i])),
            None => {
                let names: Vec<&str> = self
                    .engine
                    .views()
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect();
                let known = if names.is_empty() {
                    "no views are defined yet".to_owned()
                } else {
                    format!("the views are {}", names.join(", "))
                };
                Err(Error::NotFound(format!("there is no view {name}; {known}")))
            }
        }
    }

    /// Deletes raw events older than their stream's retention (only events every view has
    /// applied) and view rows older than their view's retention. Flushes first.
    pub fn enforce_retention(&mut self, now: Timestamp) -> Result<(u64, u64)> {
        if !self.leader {
            // The leader enforces it.
            return Ok((0, 0));
        }
        self.flush()?;
        let mut events = 0;
        let mut rows = 0;
        let streams: Vec<std::sync::Arc<StreamDef>> = self.catalog.streams().cloned().collect();
        for stream in streams {
            let Some(retention) = stream.retention else {
                continue;
            };
            let applied = self
                .engine
                .min_position(&stream.name, &self.delta)
                .unwrap_or(u64::MAX);
            events += self
                .store
                .delete_events_before(&stream, retention.before(now), applied)?;
        }
        for plan in self.engine.views() {
            if let Some(retention) = plan.retention {
                rows += self
                    .store
                    .delete_view_rows_before(plan, retention.before(now))?;
            }
        }
        if rows > 0 {
            self.epoch += 1;
        }
        Ok((events, rows))
    }

    /// How many events made an expression of view `name` fail (each yielded NULL there and
    /// was kept): the stored count plus what the unflushed delta applied. A follower reads the
    /// leader's stored count.
    pub fn expression_failures(&self, name: &str) -> Result<u64> {
        let (index, _) = self.view(name)?;
        if self.stored_failed.is_empty() {
            let materialized = self.store.materialized()?;
            return Ok(materialized
                .views
                .iter()
                .find(|v| v.name == name)
                .map_or(0, |v| v.failed));
        }
        Ok(self.stored_failed[index] + self.delta.views[index].failed)
    }

    /// Per view, the events whose expressions failed since the last call, for `/metrics`.
    pub fn take_new_failures(&mut self) -> Vec<(String, u64)> {
        if self.stored_failed.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, plan) in self.engine.views().iter().enumerate() {
            let total = self.stored_failed[i] + self.delta.views[i].failed;
            let new = total.saturating_sub(self.reported_failed[i]);
            if new > 0 {
                out.push((plan.name.clone(), new));
            }
            self.reported_failed[i] = total;
        }
        out
    }

    /// Per view, the events left out since the last call because an expression failed on them
    /// (events stored before a view that cannot evaluate them existed): the engine skips them
    /// rather than fail, and the server counts them in `/metrics`.
    pub fn take_skipped(&mut self) -> Vec<(String, u64)> {
        self.delta
            .views
            .iter_mut()
            .zip(self.engine.views())
            .filter_map(|(delta, plan)| {
                let n = std::mem::take(&mut delta.skipped);
                (n > 0).then(|| (plan.name.clone(), n))
            })
            .collect()
    }

    /// Adds rejected events to the tenant's rejection log.
    pub fn log_rejections(&mut self, rejected: &[tally_store::Rejected]) -> Result<()> {
        Ok(self.store.log_rejections(rejected)?)
    }

    /// A page of the rejection log: up to `limit` entries with ids above `after`.
    pub fn rejections(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<tally_store::LoggedRejection>> {
        Ok(self.store.rejections(after, limit)?)
    }

    /// Deletes rejection log entries older than `before`, and the oldest beyond `keep`.
    pub fn trim_rejections(&mut self, before: Timestamp, keep: usize) -> Result<u64> {
        Ok(self.store.trim_rejections(before, keep)?)
    }

    /// Whether a store failure left the runtime unusable: it must be reopened (which replays).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether the events of one commit may be applied while the next is written and synced:
    /// no other process commits this tenant's events (a commit would first have to read what
    /// they committed in between), and the store is SQLite, whose commit waits for an `fsync`
    /// (on this thread, or in an ingest session on a syncing thread of the worker's; a
    /// PostgreSQL commit waits for its server; the memory store's costs nothing to overlap).
    pub fn pipelines_commits(&self) -> bool {
        self.leader && !self.shared && matches!(self.store, TenantStore::Sqlite(_))
    }

    /// Whether this process writes the tenant's views (always, unless another process leads a
    /// shared store).
    pub fn leads(&self) -> bool {
        self.leader
    }

    /// Whether other processes may commit this tenant's events (a shared store).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether any view holds unflushed groups.
    pub fn has_pending(&self) -> bool {
        !self.delta.is_empty()
    }
}

/// The events among `rows` that were committed (not duplicates), with their sequence numbers.
fn committed(seqs: &[Option<u64>], rows: Vec<Vec<Value>>) -> Vec<tally_views::Event> {
    seqs.iter()
        .zip(rows)
        .filter_map(|(seq, row)| seq.map(|seq| tally_views::Event { seq, row }))
        .collect()
}

/// Rows committed by [`StoreSide::append`] or [`StoreSide::append_hashed`]: each row's sequence
/// number (`None` for a duplicate) and the events to apply, in order: on a shared store, first
/// those other processes committed since this one's previous commit; none on a follower.
pub struct Appended {
    pub seqs: Vec<Option<u64>>,
    pub events: Vec<tally_views::Event>,
}

/// What a flush writes: per view, the groups applied since the last flush and the position.
pub struct FlushJob {
    /// Per view: its index, groups, position and events with failed expressions.
    views: Vec<(usize, tally_views::engine::GroupMap, u64, u64)>,
}

/// The store half of a runtime: commits rows, writes flushes.
pub struct StoreSide<'r> {
    store: &'r mut TenantStore,
    catalog: &'r Catalog,
    engine: &'r Engine,
    stored: &'r mut Vec<u64>,
    stored_failed: &'r mut Vec<u64>,
    poisoned: &'r mut bool,
    tenant: &'r str,
    leader: bool,
    heads: &'r mut HashMap<String, u64>,
    finalized: &'r std::sync::Mutex<HashMap<usize, Finalized>>,
    epoch: u64,
}

impl StoreSide<'_> {
    fn check_usable(&self) -> Result<()> {
        if *self.poisoned {
            return Err(Error::Invalid(format!(
                "tenant {} hit a storage error earlier; reopen it to recover from its log",
                self.tenant
            )));
        }
        Ok(())
    }

    /// Appends rows in one durable transaction: the acknowledgement point. The rows become
    /// the committed events, without a copy.
    pub fn append(&mut self, stream: &StreamDef, rows: Vec<Vec<Value>>) -> Result<Appended> {
        self.append_hashed(stream, rows, None)
    }

    /// The tenant's name.
    pub fn tenant(&self) -> &str {
        self.tenant
    }

    /// The tenant's catalog.
    pub fn catalog(&self) -> &Catalog {
        self.catalog
    }

    /// Whether a store failure (or a panic of an apply) left the runtime unusable.
    pub fn is_poisoned(&self) -> bool {
        *self.poisoned
    }

    /// Marks the runtime unusable: the thread applying committed events panicked, so the delta
    /// may hold part of them or none, and reopening the tenant replays them.
    pub fn poison(&mut self) {
        *self.poisoned = true;
    }

    /// Adds rejected events to the tenant's rejection log.
    pub fn log_rejections(&mut self, rejected: &[tally_store::Rejected]) -> Result<()> {
        Ok(self.store.log_rejections(rejected)?)
    }

    /// Leaves the sync of the commits from now on to the returned WAL handle, on another thread
    /// (see [`tally_store::TenantStore::defer_sync`]); `None` where the store cannot.
    pub fn defer_sync(&mut self) -> Result<Option<std::sync::Arc<tally_store::WalSync>>> {
        Ok(self.store.defer_sync()?)
    }

    /// Commits are durable when they return again.
    pub fn end_deferred_sync(&mut self) -> Result<()> {
        Ok(self.store.end_deferred_sync()?)
    }

    /// Whether [`StoreSide::append_hashed`] uses keys hashed beforehand for `stream`.
    pub fn hashes_keys(&self, stream: &StreamDef) -> bool {
        self.store.hashes_keys(stream)
    }

    /// [`StoreSide::append`] with the rows' dedupe keys hashed beforehand, on another thread
    /// ([`tally_store::KeyHashes::new`] of the same rows).
    pub fn append_hashed(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
    ) -> Result<Appended> {
        self.check_usable()?;
        let seqs = self
            .store
            .append_hashed(stream, &rows, hashed)
            .map_err(|e| {
                // A failed commit (an fsync error, a full disk) is never retried silently.
                *self.poisoned = true;
                Error::from(e)
            })?;
        if !self.leader {
            return Ok(Appended {
                seqs,
                events: Vec::new(),
            });
        }
        let mine = committed(&seqs, rows);
        let mut events = Vec::new();
        if let (Some(head), Some(first)) = (self.heads.get(&stream.name).copied(), mine.first()) {
            // Appends of a stream commit in sequence order, so everything between this
            // process's previous commit and this one is committed: read it.
            let mut after = head;
            while after + 1 < first.seq {
                let gap = match self.store.read_events(stream, after, REPLAY_BATCH) {
                    Ok(gap) => gap,
                    Err(e) => {
                        // The rows are committed and must be acknowledged; the delta would now
                        // miss the gap, so the runtime is poisoned: reopening replays it all.
                        tracing::error!(tenant = %self.tenant, error = %e, "reading other nodes' events failed after a commit");
                        *self.poisoned = true;
                        return Ok(Appended {
                            seqs,
                            events: Vec::new(),
                        });
                    }
                };
                let Some(last) = gap.last() else { break };
                after = last.seq;
                events.extend(gap.into_iter().filter(|e| e.seq < first.seq));
            }
        }
        if let (Some(head), Some(last)) = (self.heads.get_mut(&stream.name), mine.last()) {
            *head = last.seq;
        }
        events.extend(mine);
        Ok(Appended { seqs, events })
    }

    /// [`StoreSide::append_hashed`], with the committed events applied by `apply` while the
    /// commit is written and synced: on a store whose commit comes in a second step
    /// ([`tally_store::Staged`], SQLite) the rows are written, then the events are applied on
    /// a scoped thread (and dropped there) while this one commits. Returns the rows' sequence
    /// numbers and the events left for the caller to apply, as `append_hashed` does: none
    /// after an overlapped apply; all of them where nothing was overlapped — a store that
    /// commits in one step (PostgreSQL, memory), a shared store (another process may have
    /// committed in between), a batch below [`OVERLAP_ROWS`] (a thread costs more than it
    /// saves), or a thread that could not start. A failed commit poisons the runtime, as in
    /// `append_hashed`: the delta then holds events that were not committed, and is never
    /// flushed. A panic of the apply poisons it too (the delta may hold part of the events),
    /// and the commit is still acknowledged.
    pub fn append_applying(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
        apply: &mut ApplySide<'_>,
    ) -> Result<Appended> {
        if rows.len() < OVERLAP_ROWS || !self.leader || self.heads.contains_key(&stream.name) {
            return self.append_hashed(stream, rows, hashed);
        }
        self.check_usable()?;
        let staged = match self.store.stage_hashed(stream, &rows, hashed) {
            Ok(staged) => staged,
            Err(e) => {
                // A failed append is never retried silently.
                *self.poisoned = true;
                return Err(e.into());
            }
        };
        let seqs = staged.seqs.clone();
        let events = committed(&seqs, rows);
        if !staged.is_pending() {
            // Committed already (not SQLite): nothing to overlap.
            return Ok(Appended { seqs, events });
        }
        let name = stream.name.as_str();
        let mut unapplied = Some(events);
        let (outcome, panicked) = std::thread::scope(|scope| {
            let (slot, apply) = (&mut unapplied, &mut *apply);
            let applier = std::thread::Builder::new()
                .name("tally-apply".into())
                .spawn_scoped(scope, move || {
                    if let Some(events) = slot.take() {
                        apply.apply(name, &events);
                    }
                });
            let outcome = staged.commit();
            let panicked = match applier {
                Ok(handle) => handle.join().is_err(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a thread to apply events");
                    false
                }
            };
            (outcome, panicked)
        });
        if panicked {
            // The delta may hold part of the events: the runtime must be reopened, which
            // replays them. The commit's outcome is still what the requests are answered.
            tracing::error!(tenant = %self.tenant, "applying committed events panicked; the tenant will be reopened");
            *self.poisoned = true;
        }
        if let Err(e) = outcome {
            // A failed commit (an fsync error, a full disk) is never retried silently.
            *self.poisoned = true;
            return Err(e.into());
        }
        // The thread could not start: the caller applies the events, as after any append.
        Ok(Appended {
            seqs,
            events: unapplied.unwrap_or_default(),
        })
    }

    /// Merges the job's groups into the stored rows and stores the positions, in one
    /// transaction. On failure the groups are lost from memory, but the stored positions still
    /// mark where replay must start: reopening the tenant restores them.
    pub fn write(&mut self, job: FlushJob) -> Result<()> {
        self.check_usable()?;
        if !self.leader {
            // A follower's delta stays empty; the leader writes the views.
            return Ok(());
        }
        let result = self.write_inner(job);
        if result.is_err() {
            *self.poisoned = true;
        }
        result
    }

    fn write_inner(&mut self, job: FlushJob) -> Result<()> {
        let unchanged = job
            .views
            .iter()
            .all(|(i, groups, position, _)| groups.is_empty() && *position == self.stored[*i]);
        if unchanged {
            return Ok(());
        }
        let views = self.engine.views();
        let mut flushes = Vec::with_capacity(job.views.len());
        let mut positions = Vec::with_capacity(job.views.len());
        let mut finalized = self.finalized.lock().unwrap_or_else(|e| e.into_inner());
        // Per view whose finalized rows are kept: the rows this flush changes.
        let mut changed: Vec<(usize, FinalizedRows)> = Vec::new();
        for (i, groups, position, failed) in job.views {
            let plan = &views[i];
            let kept = finalized
                .get(&i)
                .is_some_and(|f| f.version == (self.stored[i], self.epoch));
            if !kept {
                finalized.remove(&i);
            }
            let mut updates = kept.then(Vec::new);
            let keys: Vec<&[Value]> = groups.keys().map(|k| &k[..]).collect();
            let stored = self.store.load_encoded_states(plan, &keys)?;
            let mut rows = Vec::with_capacity(groups.len());
            for ((key, mut states), old) in groups.into_iter().zip(stored) {
                if let Some(old) = old {
                    plan.merge_row_encoded(&mut states, &old)
                        .map_err(tally_store::StoreError::from)?;
                    plan.settle_row(&mut states);
                }
                let cells = match &mut updates {
                    Some(list) => match plan.finalize_row(&key, &states, self.engine.tz()) {
                        Ok(full) => {
                            list.push((key.clone(), full.clone()));
                            full
                        }
                        Err(_) => {
                            // A cell that cannot be computed: SQL reads this view the slow
                            // way, which reports it.
                            updates = None;
                            plan.stored_row(&key, &states, self.engine.tz())
                        }
                    },
                    None => plan.stored_row(&key, &states, self.engine.tz()),
                };
                rows.push(tally_store::RowWrite {
                    key: key.into_vec(),
                    cells,
                    states,
                });
            }
            match updates {
                Some(list) => changed.push((i, list)),
                None => {
                    finalized.remove(&i);
                }
            }
            flushes.push(ViewFlush {
                plan,
                rows,
                position,
                failed,
            });
            positions.push((i, position, failed));
        }
        let written = self.store.flush(&flushes);
        drop_rows(flushes.into_iter().map(|f| f.rows).collect());
        if let Err(e) = written {
            finalized.clear();
            return Err(e.into());
        }
        for (i, position, failed) in positions {
            self.stored[i] = position;
            self.stored_failed[i] += failed;
        }
        for (i, list) in changed {
            if let Some(f) = finalized.get_mut(&i) {
                for (key, row) in list {
                    f.bytes += Finalized::row_bytes(&key, &row);
                    f.rows.insert(key, row);
                }
                f.version = (self.stored[i], self.epoch);
                if f.bytes > FINALIZED_BYTES {
                    finalized.remove(&i);
                }
            }
        }
        Ok(())
    }
}

/// Frees the rows of a flush: on a thread of its own when they hold much
/// ([`BACKGROUND_DROP_WORK`]), so that the writer goes on meanwhile; here otherwise, or if no
/// thread can be started.
fn drop_rows(rows: Vec<Vec<tally_store::RowWrite>>) {
    let work: usize = rows.iter().flatten().map(tally_store::RowWrite::work).sum();
    if work >= BACKGROUND_DROP_WORK {
        // A failed spawn drops the closure, and with it the rows, here.
        let _ = std::thread::Builder::new()
            .name("tally-free".into())
            .spawn(move || drop(rows));
    }
}

/// The engine half of a runtime: applies committed events to the delta.
pub struct ApplySide<'r> {
    engine: &'r Engine,
    delta: &'r mut Delta,
    flush_groups: usize,
}

impl ApplySide<'_> {
    pub fn apply(&mut self, stream: &str, events: &[tally_views::Event]) {
        self.engine.apply(stream, events, self.delta);
    }

    /// Whether the delta has grown enough to be flushed.
    pub fn needs_flush(&self) -> bool {
        self.delta.group_count() >= self.flush_groups
    }

    /// Takes the delta's groups, with the positions they reach, for a flush.
    pub fn take_flush(&mut self) -> FlushJob {
        FlushJob {
            views: self
                .delta
                .views
                .iter_mut()
                .enumerate()
                .map(|(i, v)| {
                    (
                        i,
                        std::mem::take(&mut v.groups),
                        v.position,
                        std::mem::take(&mut v.failed),
                    )
                })
                .collect(),
        }
    }
}

/// Brings a tenant's tables in line with the catalog; returns the stored position of each view
/// and its count of events with failed expressions.
fn reconcile(tenant: &mut TenantStore, catalog: &Catalog) -> Result<HashMap<String, (u64, u64)>> {
    let materialized = tenant.materialized()?;
    let stored_streams: HashMap<&str, &str> = materialized
        .streams
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_str()))
        .collect();
    for stream in catalog.streams() {
        match stored_streams.get(stream.name.as_str()) {
            None => tenant.create_stream(stream)?,
            Some(&old) if old == stream.sql() => {}
            Some(&old) => {
                let old = tally_views::sql::parse_stream(old)?;
                tenant.alter_stream(&old, stream)?;
            }
        }
    }
    let mut positions = HashMap::new();
    let stored_views: HashMap<&str, &tally_store::MaterializedView> = materialized
        .views
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for view in catalog.views() {
        match stored_views.get(view.name.as_str()) {
            Some(m) if m.fingerprint == view.fingerprint() => {
                positions.insert(view.name.clone(), (m.position, m.failed));
            }
            _ => {
                tenant.reset_view(view)?;
                positions.insert(view.name.clone(), (0, 0));
            }
        }
    }
    for m in &materialized.views {
        if catalog.view(&m.name).is_none() {
            tenant.drop_view(&m.name)?;
        }
    }
    for (name, _) in &materialized.streams {
        if catalog.stream(name).is_none() {
            tenant.drop_stream(name)?;
        }
    }
    for name in tenant.tables_with_rows()? {
        if catalog.table(&name).is_none() {
            tenant.drop_table_rows(&name)?;
        }
    }
    Ok(positions)
}

/// A stored group lent to a query.
fn lend((key, states): &tally_store::StoredGroup) -> (&[Value], &[tally_views::AggState]) {
    (key, states)
}

/// The memory a tenant spends keeping its views' stored groups decoded for queries: 100 busy
/// tenants keep at most 400 MB.
const KEPT_BYTES: usize = 4 * 1024 * 1024;

/// A view's stored groups, decoded, as of the stored position and epoch in `version`.
struct Decoded {
    version: (u64, u64),
    groups: Vec<tally_store::StoredGroup>,
    /// What they hold in memory, approximately.
    bytes: usize,
}

/// Finalized rows of a view by group, as a flush replaces them.
type FinalizedRows = Vec<(tally_views::GroupKey, Vec<Value>)>;

/// The memory a tenant spends keeping views' finalized rows for query-time SQL.
const FINALIZED_BYTES: usize = 48 * 1024 * 1024;

/// A view's stored groups finalized (every column, in the view's order), as of a stored
/// position and epoch: the rows query-time SQL reads for groups the delta has not touched. A
/// flush replaces the rows it writes and moves the version; retention and a new lead change
/// the epoch, so the rows are read again. Views with a cell that cannot be computed are not
/// kept (SQL then reads them as view queries do, and reports the cell).
pub struct Finalized {
    version: (u64, u64),
    rows: HashMap<tally_views::GroupKey, Vec<Value>>,
    /// What the rows hold in memory, approximately (counted up as rows are replaced).
    bytes: usize,
}

impl Finalized {
    fn row_bytes(key: &[Value], row: &[Value]) -> usize {
        64 + (key.len() + row.len()) * std::mem::size_of::<Value>()
            + key.iter().chain(row).map(Value::heap_bytes).sum::<usize>()
    }
}

/// A few recent query answers with the version of the data each was computed from.
#[derive(Default)]
struct Answers {
    /// Most recent first.
    entries: Vec<(String, (u64, u64, u64), ResultSet)>,
}

impl Answers {
    /// How many answers are kept, and the largest kept.
    const ENTRIES: usize = 32;
    const MAX_ROWS: usize = 10_000;

    fn get(&mut self, key: &str, version: (u64, u64, u64)) -> Option<ResultSet> {
        let i = self.entries.iter().position(|(k, _, _)| k == key)?;
        if self.entries[i].1 != version {
            self.entries.remove(i);
            return None;
        }
        let entry = self.entries.remove(i);
        let answer = entry.2.clone();
        self.entries.insert(0, entry);
        Some(answer)
    }

    fn put(&mut self, key: String, version: (u64, u64, u64), answer: &ResultSet) {
        if answer.rows.len() > Answers::MAX_ROWS {
            return;
        }
        self.entries.retain(|(k, _, _)| *k != key);
        self.entries.insert(0, (key, version, answer.clone()));
        self.entries.truncate(Answers::ENTRIES);
    }
}

#[cfg(test)]
mod tests {
    use tally_views::{Timestamp, Value};

    use crate::app::{Config, DEFAULT_TENANT, Location, Tally};

    /// Events on which a view's expression fails are applied with NULL there, and counted once
    /// for the view: in its stored count after a flush, and in the metrics.
    #[test]
    fn events_a_view_cannot_evaluate_are_counted() {
        let mut tally = Tally::open(&Location::Memory, Config::default()).unwrap();
        tally
            .apply_schema(
                "CREATE STREAM readings (raw TEXT, at TIMESTAMP NOT NULL) WITH (event_time = 'at');
                 CREATE MATERIALIZED VIEW parsed AS
                 SELECT count(*) AS n, sum(CAST(raw AS BIGINT)) AS total FROM readings;",
            )
            .unwrap();
        let mut runtime = tally.open_tenant(DEFAULT_TENANT).unwrap();
        let stream = runtime.catalog().stream("readings").unwrap().clone();
        let at = Value::Timestamp(Timestamp::parse("2026-03-30T10:00:00Z").unwrap());
        let rows = vec![
            vec![Value::text("5s"), at.clone()],
            vec![Value::text("7"), at],
        ];
        runtime.append(&stream, rows).unwrap();
        assert_eq!(runtime.take_skipped(), vec![]);
        assert_eq!(runtime.expression_failures("parsed").unwrap(), 1);
        assert_eq!(runtime.take_new_failures(), vec![("parsed".to_owned(), 1)]);
        assert_eq!(runtime.take_new_failures(), vec![]);
        runtime.flush().unwrap();
        assert_eq!(runtime.expression_failures("parsed").unwrap(), 1);
        assert_eq!(runtime.take_new_failures(), vec![]);
        let result = runtime
            .query("parsed", &tally_views::QueryRequest::default())
            .unwrap();
        assert_eq!(result.rows, vec![vec![Value::Int(2), Value::Int(7)]]);
    }

    /// Committing with the apply overlapped (a second thread applies while the commit is
    /// synced) gives what committing then applying gives: the same sequence numbers and
    /// duplicates, the same view rows before and after a flush, and after reopening (replay).
    #[test]
    fn overlapped_apply_matches_commit_then_apply() {
        let dir = tempfile::tempdir().unwrap();
        let schema = "CREATE STREAM s (id TEXT, k TEXT, n BIGINT, at TIMESTAMP NOT NULL)
                        WITH (event_time = 'at', dedupe_key = 'id');
                      CREATE MATERIALIZED VIEW per_k AS
                      SELECT time_bucket('1 hour', at) AS hour, k, count(*) AS c, sum(n) AS total,
                             approx_count_distinct(n) AS d
                      FROM s GROUP BY 1, 2;";
        let open = |name: &str| {
            let mut tally = Tally::open(
                &Location::Directory(dir.path().join(name)),
                Config::default(),
            )
            .unwrap();
            tally.apply_schema(schema).unwrap();
            tally
        };
        let at = |m: i64| Value::Timestamp(Timestamp(1_774_864_800_000_000 + m * 60_000_000));
        // Two batches over the overlap threshold, the second repeating part of the first and
        // itself (ids repeat every 700), then a small one of new ids (applied by the caller).
        let batch = |from: i64, to: i64, prefix: &str| -> Vec<Vec<Value>> {
            (from..to)
                .map(|i| {
                    vec![
                        Value::text(&format!("{prefix}{}", i % 700)),
                        Value::text(&format!("k{}", i % 7)),
                        Value::Int(i),
                        at(i % 180),
                    ]
                })
                .collect()
        };
        let batches = [
            batch(0, 600, "e"),
            batch(500, 1_400, "e"),
            batch(0, 10, "x"),
        ];
        assert!(batches[0].len() >= super::OVERLAP_ROWS);
        let rows = |r: &super::TenantRuntime| {
            let mut rows = r
                .query("per_k", &tally_views::QueryRequest::default())
                .unwrap()
                .rows;
            rows.sort();
            rows
        };
        let plain_tally = open("plain");
        let overlapped_tally = open("overlapped");
        let mut plain = plain_tally.open_tenant(DEFAULT_TENANT).unwrap();
        let mut overlapped = overlapped_tally.open_tenant(DEFAULT_TENANT).unwrap();
        let stream = plain.catalog().stream("s").unwrap().clone();
        for (rows_in, stored) in batches.iter().zip([600, 100, 10]) {
            let a = plain.append(&stream, rows_in.clone()).unwrap();
            assert_eq!(a.iter().flatten().count(), stored);
            let b = overlapped
                .commit_applying(&stream, rows_in.clone(), None)
                .unwrap();
            assert_eq!(a, b.seqs);
            // A large batch is applied during its commit; a small one is left to the caller.
            assert_eq!(
                b.events.is_empty(),
                rows_in.len() >= super::OVERLAP_ROWS,
                "{} rows",
                rows_in.len()
            );
            overlapped.apply_committed(&stream.name, &b.events);
            assert_eq!(rows(&plain), rows(&overlapped));
        }
        assert_eq!(rows(&plain).len(), 21, "3 hours × 7 keys");
        plain.flush().unwrap();
        overlapped.flush_if_full();
        assert_eq!(rows(&plain), rows(&overlapped));
        overlapped.flush().unwrap();
        let expected = rows(&plain);
        drop((plain, overlapped));
        let reopened = overlapped_tally.open_tenant(DEFAULT_TENANT).unwrap();
        assert_eq!(rows(&reopened), expected);
    }

    /// The rows query-time SQL reads are exactly a view query's, whatever happened since
    /// they were first kept: new events (new groups and changed ones), flushes, retention.
    #[cfg(feature = "sql")]
    #[test]
    fn sql_rows_follow_every_change() {
        let mut tally = Tally::open(&Location::Memory, Config::default()).unwrap();
        tally
            .apply_schema(
                "CREATE STREAM s (k TEXT, n BIGINT, at TIMESTAMP NOT NULL) WITH (event_time = 'at');
                 CREATE MATERIALIZED VIEW per_k AS
                 SELECT k, count(*) AS c, sum(n) AS total, approx_count_distinct(n) AS d,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY n) AS p50
                 FROM s GROUP BY k;
                 CREATE MATERIALIZED VIEW daily WITH (retention = '10 days') AS
                 SELECT time_bucket('1 day', at) AS day, k, count(*) AS c FROM s GROUP BY 1, 2;",
            )
            .unwrap();
        let mut runtime = tally.open_tenant(DEFAULT_TENANT).unwrap();
        let stream = runtime.catalog().stream("s").unwrap().clone();
        let at = |s: &str| Value::Timestamp(Timestamp::parse(s).unwrap());
        let same = |r: &super::TenantRuntime| {
            for view in ["per_k", "daily"] {
                let mut sql = r.sql_view_rows(view).unwrap();
                let mut query = r
                    .query(view, &tally_views::QueryRequest::default())
                    .unwrap();
                sql.rows.sort();
                query.rows.sort();
                assert_eq!(sql.columns, query.columns);
                assert_eq!(sql.rows, query.rows, "{view}");
            }
        };
        let batch = |r: &mut super::TenantRuntime, first: i64, day: &str| {
            let rows = (first..first + 50)
                .map(|i| vec![Value::text(&format!("k{}", i % 7)), Value::Int(i), at(day)])
                .collect();
            r.append(&stream, rows).unwrap();
        };
        same(&runtime);
        batch(&mut runtime, 0, "2026-03-01T10:00:00Z");
        same(&runtime);
        runtime.flush().unwrap();
        same(&runtime);
        // Changed groups and a new one, before and after the next flush.
        batch(&mut runtime, 40, "2026-03-20T10:00:00Z");
        runtime
            .append(
                &stream,
                vec![vec![
                    Value::text("new"),
                    Value::Int(1),
                    at("2026-03-20T11:00:00Z"),
                ]],
            )
            .unwrap();
        same(&runtime);
        runtime.flush().unwrap();
        same(&runtime);
        runtime
            .enforce_retention(Timestamp::parse("2026-03-25T00:00:00Z").unwrap())
            .unwrap();
        same(&runtime);
        batch(&mut runtime, 1_000, "2026-03-21T10:00:00Z");
        runtime.flush().unwrap();
        same(&runtime);
    }

    /// Kept answers and kept decoded rows never outlive a change: new events, a flush and
    /// view retention all show at once, on every store.
    #[test]
    fn kept_answers_and_rows_follow_every_change() {
        let mut tally = Tally::open(&Location::Memory, Config::default()).unwrap();
        tally
            .apply_schema(
                "CREATE STREAM s (n BIGINT, at TIMESTAMP NOT NULL) WITH (event_time = 'at');
                 CREATE MATERIALIZED VIEW daily WITH (retention = '10 days') AS
                 SELECT time_bucket('1 day', at) AS day, count(*) AS c, sum(n) AS total
                 FROM s GROUP BY 1;",
            )
            .unwrap();
        let mut runtime = tally.open_tenant(DEFAULT_TENANT).unwrap();
        let stream = runtime.catalog().stream("s").unwrap().clone();
        let at = |s: &str| Value::Timestamp(Timestamp::parse(s).unwrap());
        let all = tally_views::QueryRequest::default();
        let totals =
            |r: &super::TenantRuntime| -> Vec<Vec<Value>> { r.query("daily", &all).unwrap().rows };
        runtime
            .append(
                &stream,
                vec![vec![Value::Int(1), at("2026-03-01T10:00:00Z")]],
            )
            .unwrap();
        assert_eq!(totals(&runtime).len(), 1);
        runtime
            .append(
                &stream,
                vec![vec![Value::Int(2), at("2026-03-20T10:00:00Z")]],
            )
            .unwrap();
        assert_eq!(totals(&runtime).len(), 2);
        runtime.flush().unwrap();
        let flushed = totals(&runtime);
        assert_eq!(flushed.len(), 2);
        // Kept rows after the flush, then more events on a kept day.
        runtime
            .append(
                &stream,
                vec![vec![Value::Int(5), at("2026-03-20T11:00:00Z")]],
            )
            .unwrap();
        let after = totals(&runtime);
        assert_eq!(after[1][1], Value::Int(2));
        assert_eq!(after[1][2], Value::Int(7));
        // Retention removes the old day from the view.
        runtime
            .enforce_retention(Timestamp::parse("2026-03-25T00:00:00Z").unwrap())
            .unwrap();
        let kept = totals(&runtime);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0][2], Value::Int(7));
    }
}
