//! GDPR erasure (`DELETE /v1/persons/{id}`, `tally erase --person ID`): a person's events
//! deleted from every stream with a person column, and every live view corrected exactly.
//!
//! The person is the analyses' person (docs/analyses.md): the id given, the user id an
//! anonymous id was linked to, and every anonymous id linked to that user. The events to delete
//! are those whose person column (`user_id` or `anonymous_id` in `events`; the column named by
//! `WITH (person = …)` elsewhere) holds one of those ids.
//!
//! The plan, per stream, once the delta is flushed (so every view's rows hold exactly the events
//! up to its position):
//! 1. the person's events are found by the store; those at or below a view's position are in
//!    its rows, and applying them alone to an empty delta names the groups they touched;
//! 2. those groups are recomputed from the stream's other events up to the position (read in
//!    batches, only the touched groups kept); a group no event is left in is deleted;
//! 3. events, their dedupe keys, the recomputed rows and the erasure's log record are written
//!    in one transaction ([`tally_store::TenantStore::erase`]): a crash leaves the erasure whole
//!    or not begun, and running it again finds nothing left to erase.
//!
//! A group whose raw events may have gone by the stream's retention cannot be recomputed from
//! what is left: its bucket starts before the retention's cut-off, or the view has no time
//! bucket of the event time. Such groups are left as they are and the view is reported as not
//! correctable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tally_store::{Correction, Erasure, RecordWrite, RowWrite, TenantStore};
use tally_views::engine::GroupKey;
use tally_views::expr::Expr;
use tally_views::{AggState, Engine, Event, StreamDef, Timestamp, Value, ViewPlan};

use crate::error::{Error, Result};
use crate::runtime::TenantRuntime;

/// The record kind of the erasure log.
pub const ERASURE: &str = "erasure";
/// Events read from the log per round trip while recomputing.
const BATCH: usize = 20_000;
/// The longest person id accepted.
const MAX_ID: usize = 1024;

/// What an erasure did: the answer of `DELETE /v1/persons/{id}`, and its log record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Erased {
    /// Per stream with a person column: how many of the person's events were deleted.
    pub events_deleted: BTreeMap<String, u64>,
    /// Per view of those streams: how many groups were recomputed (rows replaced or deleted).
    pub groups_recomputed: BTreeMap<String, u64>,
    /// Views with groups the erased events touched that could not be recomputed, because raw
    /// events they hold are past their stream's retention.
    pub not_correctable: Vec<String>,
}

/// One entry of the erasure log: the person's id hashed, never the id.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ErasureEntry {
    /// Hex SHA-256 of the person id as given.
    pub person_sha256: String,
    /// When the erasure ran (RFC 3339, UTC).
    pub at: String,
    /// How many ids the person had (the id and the ids linked to it).
    pub ids: usize,
    #[serde(flatten)]
    pub erased: Erased,
}

/// The hex SHA-256 of a person id, as the erasure log keeps it.
pub fn person_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TenantRuntime {
    /// Erases person `id` as of `now`: see the module documentation. On a shared store only
    /// the tenant's leader erases; another node answers busy.
    pub fn erase_person(&mut self, id: &str, now: Timestamp) -> Result<Erased> {
        if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
            return Err(Error::Request(format!(
                "person id must be 1 to {MAX_ID} bytes of text without control characters"
            )));
        }
        if !self.lead()? {
            return Err(Error::Store(tally_store::StoreError::Busy(format!(
                "another node leads tenant {}; retry the erasure shortly",
                self.name()
            ))));
        }
        // Every committed event applied and flushed: each view's rows hold exactly the events
        // up to its position.
        self.tick()?;
        self.flush()?;
        let ids = self.catch_up_activity()?.person_ids(id);
        let ids: Vec<&str> = ids.iter().map(|s| &**s).collect();
        let engine = self.engine().clone();
        let streams: Vec<Arc<StreamDef>> = self
            .catalog()
            .streams()
            .filter(|s| !s.person.is_empty())
            .cloned()
            .collect();
        let positions = self.positions().to_vec();
        let mut erased = Erased::default();
        let mut events = Vec::new();
        let mut corrections = Vec::new();
        for stream in &streams {
            let doomed = self.store().events_of(stream, &stream.person, &ids)?;
            erased
                .events_deleted
                .insert(stream.name.clone(), doomed.len() as u64);
            let fixed = correct(self.store(), &engine, stream, &positions, &doomed, now)?;
            for fix in fixed {
                let n = fix.rows.len() + fix.removed.len();
                erased
                    .groups_recomputed
                    .insert(fix.plan.name.clone(), n as u64);
                if !fix.correctable {
                    erased.not_correctable.push(fix.plan.name.clone());
                }
                if n > 0 {
                    corrections.push(Correction {
                        plan: fix.plan,
                        rows: fix.rows,
                        removed: fix.removed,
                    });
                }
            }
            events.push((
                stream.clone(),
                doomed.iter().map(|e| e.seq).collect::<Vec<u64>>(),
            ));
        }
        let entry = ErasureEntry {
            person_sha256: person_hash(id),
            at: now.to_string(),
            ids: ids.len(),
            erased: erased.clone(),
        };
        let record = RecordWrite::Put {
            kind: ERASURE.into(),
            // Ordered by time; a v7 UUID keeps two erasures of one instant apart.
            key: format!("{:020}.{}", now.0.max(0), uuid::Uuid::now_v7()),
            body: serde_json::to_string(&entry).map_err(|e| Error::Invalid(e.to_string()))?,
        };
        let erasure = Erasure {
            events: events
                .iter()
                .map(|(s, seqs)| (&**s, seqs.clone()))
                .collect(),
            views: corrections,
            records: vec![record],
        };
        self.store_mut().erase(&erasure)?;
        self.rows_changed();
        Ok(erased)
    }

    /// The erasure log, oldest first, at most `limit` entries.
    pub fn erasures(&self, limit: usize) -> Result<Vec<ErasureEntry>> {
        self.store()
            .records(ERASURE, "", "~", limit)?
            .into_iter()
            .map(|(key, body)| {
                serde_json::from_str(&body).map_err(|e| {
                    Error::Invalid(format!("erasure log entry {key} cannot be read: {e}"))
                })
            })
            .collect()
    }
}

/// What erasing does to one view: the recomputed rows, the keys of the groups no event is left
/// in, and whether every touched group could be recomputed (see the module documentation).
struct ViewFix<'e> {
    plan: &'e ViewPlan,
    rows: Vec<RowWrite>,
    removed: Vec<Vec<Value>>,
    correctable: bool,
}

/// The touched groups of every view of `stream`, recomputed without the `doomed` events.
/// `positions` are the views' stored positions, in engine order.
fn correct<'e>(
    store: &TenantStore,
    engine: &'e Engine,
    stream: &StreamDef,
    positions: &[u64],
    doomed: &[Event],
    now: Timestamp,
) -> Result<Vec<ViewFix<'e>>> {
    let views: Vec<usize> = (0..engine.views().len())
        .filter(|&i| engine.views()[i].stream == stream.name)
        .collect();
    let cutoff = stream.retention.map(|r| r.before(now));
    let mut out = Vec::new();
    // Views at one position are recomputed together (after a flush, all of a stream's are).
    let mut by_position: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for &i in &views {
        by_position.entry(positions[i]).or_default().push(i);
    }
    for (position, group) in by_position {
        // 1. The groups the person's applied events touched.
        let applied: Vec<Event> = doomed
            .iter()
            .filter(|e| e.seq <= position)
            .cloned()
            .collect();
        let mut touched = scratch(engine, &group);
        engine.apply(&stream.name, &applied, &mut touched);
        let mut wanted: Vec<HashMap<GroupKey, Option<Vec<AggState>>>> = Vec::new();
        let mut fixable = Vec::new();
        for &i in &group {
            let plan = &engine.views()[i];
            let keep_from = plan.retention.map(|r| r.before(now));
            let time_bucket = event_time_bucket(plan, stream);
            let mut keys = HashMap::new();
            let mut ok = true;
            for key in std::mem::take(&mut touched.views[i].groups).into_keys() {
                let start = time_bucket.and_then(|b| match key[b] {
                    Value::Timestamp(t) => Some(t),
                    _ => None,
                });
                // Rows past the view's own retention are gone, or go at its next pass.
                if let (Some(keep), Some(b)) = (keep_from, plan.bucket)
                    && matches!(key[b], Value::Timestamp(t) if t < keep)
                {
                    continue;
                }
                if let Some(cut) = cutoff
                    && start.is_none_or(|s| s < cut)
                {
                    ok = false;
                    continue;
                }
                keys.insert(key, None);
            }
            fixable.push(ok);
            wanted.push(keys);
        }
        // 2. Those groups from every other event up to the position.
        if wanted.iter().any(|w| !w.is_empty()) {
            let skip: std::collections::HashSet<u64> = applied.iter().map(|e| e.seq).collect();
            let mut after = 0;
            while after < position {
                let batch = store.read_events(stream, after, BATCH)?;
                let Some(last) = batch.last() else { break };
                after = last.seq;
                let kept: Vec<Event> = batch
                    .into_iter()
                    .filter(|e| e.seq <= position && !skip.contains(&e.seq))
                    .collect();
                let mut delta = scratch(engine, &group);
                engine.apply(&stream.name, &kept, &mut delta);
                for (slot, &i) in group.iter().enumerate() {
                    if wanted[slot].is_empty() {
                        continue;
                    }
                    let plan = &engine.views()[i];
                    for (key, states) in std::mem::take(&mut delta.views[i].groups) {
                        match wanted[slot].get_mut(&key) {
                            Some(Some(acc)) => plan.merge_row(acc, &states),
                            Some(empty) => *empty = Some(states),
                            None => {}
                        }
                    }
                }
            }
        }
        // 3. Rows to write.
        for ((&i, keys), ok) in group.iter().zip(wanted).zip(fixable) {
            let plan = &engine.views()[i];
            let mut rows = Vec::new();
            let mut removed = Vec::new();
            for (key, states) in keys {
                match states {
                    Some(mut states) => {
                        plan.settle_row(&mut states);
                        let key = key.into_vec();
                        rows.push(RowWrite {
                            cells: plan.stored_row(&key, &states, engine.tz()),
                            key,
                            states,
                        });
                    }
                    None => removed.push(key.into_vec()),
                }
            }
            // A view with groups that cannot be corrected is reported; its other touched
            // groups are still recomputed.
            out.push(ViewFix {
                plan,
                rows,
                removed,
                correctable: ok,
            });
        }
    }
    Ok(out)
}

/// An empty delta in which only the views in `only` take events.
fn scratch(engine: &Engine, only: &[usize]) -> tally_views::Delta {
    let mut delta = engine.delta(|_| u64::MAX);
    for &i in only {
        delta.views[i].position = 0;
    }
    delta
}

/// The key index of the view's time bucket when it buckets the stream's event time itself:
/// only then does a bucket's start bound the times of the events in it.
fn event_time_bucket(plan: &ViewPlan, stream: &StreamDef) -> Option<usize> {
    let b = plan.bucket?;
    match &plan.keys[b].expr {
        Expr::Bucket { expr, .. } if matches!(&**expr, Expr::Column { index, .. } if *index == stream.event_time) => {
            Some(b)
        }
        _ => None,
    }
}
