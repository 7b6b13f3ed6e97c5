//! The types the store's operations take and return, shared by [`Store`](crate::Store),
//! [`TenantStore`](crate::TenantStore) and every backend: tenants, keys, what a tenant has
//! materialized, view rows to write and view rows read back (decoded for callers, encoded as
//! the backends store them: a large flush's states on two threads, [`EncodedFlush::all`]).

use tally_views::codec::{decode_key, encode_key};
use tally_views::{AggState, Event, StreamDef, Timestamp, Value, ViewPlan};

/// A tenant of the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantInfo {
    pub name: String,
    pub time_zone: String,
    pub created_at: Timestamp,
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Read,
    Write,
    /// Manages the tenant's alerts, dashboards and erasures.
    Manage,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Read => "read",
            KeyKind::Write => "write",
            KeyKind::Manage => "manage",
        }
    }

    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "read" => Some(KeyKind::Read),
            "write" => Some(KeyKind::Write),
            "manage" => Some(KeyKind::Manage),
            _ => None,
        }
    }
}

/// A stored API key: only its hash is kept, with a short prefix to recognise it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub tenant: String,
    pub kind: KeyKind,
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked: bool,
}

/// A view as a tenant has materialized it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaterializedView {
    pub name: String,
    /// The plan fingerprint the table was built for: when it differs, the view is rebuilt.
    pub fingerprint: String,
    /// The sequence number of the last event of its stream folded into the table.
    pub position: u64,
    /// How many of the events up to `position` made an expression of the view fail.
    pub failed: u64,
}

/// What a tenant has materialized: its streams (with their definitions) and view tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Materialized {
    pub streams: Vec<(String, String)>,
    pub views: Vec<MaterializedView>,
}

/// A group row to write: its key, the value of every view column (in view order) and the
/// aggregate states.
#[derive(Clone, Debug)]
pub struct RowWrite {
    pub key: Vec<Value>,
    pub cells: Vec<Value>,
    pub states: Vec<AggState>,
}

impl RowWrite {
    /// What encoding or freeing the row costs, roughly: one, plus the members of its exact
    /// distinct sets held as sets (each is sorted and written, or freed). A set a flush merged
    /// in its encoding (`AggState::SortedDistinct`) is written with one copy and counts nothing.
    pub fn work(&self) -> usize {
        1 + self
            .states
            .iter()
            .map(|s| match s {
                AggState::Distinct(set) => set.len(),
                _ => 0,
            })
            .sum::<usize>()
    }
}

/// The rows of one view to commit together with its new position.
#[derive(Debug)]
pub struct ViewFlush<'a> {
    pub plan: &'a ViewPlan,
    pub rows: Vec<RowWrite>,
    pub position: u64,
    /// Events up to `position`, since the last flush, on which an expression of the view
    /// failed (and yielded NULL): added to the view's stored count.
    pub failed: u64,
}

/// What erasing a person changes, committed in one transaction by
/// [`TenantStore::erase`](crate::TenantStore::erase): the person's events go, the view groups
/// they touched are replaced by their recomputation from the events left, and the erasure log
/// gets its record. View positions do not move.
#[derive(Debug, Default)]
pub struct Erasure<'a> {
    /// Per stream: the sequence numbers of the events to delete (with their dedupe keys).
    pub events: Vec<(&'a StreamDef, Vec<u64>)>,
    pub views: Vec<Correction<'a>>,
    pub records: Vec<RecordWrite>,
}

/// The recomputed groups of one view: rows that replace the stored ones, and the keys of the
/// groups no event is left in (their rows are deleted).
#[derive(Debug)]
pub struct Correction<'a> {
    pub plan: &'a ViewPlan,
    pub rows: Vec<RowWrite>,
    pub removed: Vec<Vec<Value>>,
}

/// A stored group: its key and its aggregate states.
pub type StoredGroup = (Vec<Value>, Vec<AggState>);

/// Stored rows of a view as backends return them: encoded key and encoded states.
pub(crate) type RawRows = Vec<(Vec<u8>, Vec<u8>)>;

/// A view's stored state, read from one snapshot: see
/// [`TenantStore::snapshot_view`](crate::TenantStore::snapshot_view).
#[derive(Debug)]
pub struct ViewSnapshot {
    /// The position the rows hold (0 for a view not materialized).
    pub position: u64,
    /// The plan fingerprint the rows were built for (empty for a view not materialized).
    pub fingerprint: String,
    pub groups: Vec<StoredGroup>,
    /// The events of the view's stream after `position`, when asked for.
    pub tail: Vec<Event>,
}

/// [`ViewSnapshot`] as backends return it.
pub(crate) struct RawSnapshot {
    pub(crate) position: u64,
    pub(crate) fingerprint: String,
    pub(crate) rows: RawRows,
    pub(crate) tail: Vec<Event>,
}

/// A row with its key and states encoded, as backends store it.
pub(crate) struct EncodedRow<'a> {
    pub(crate) key: Vec<u8>,
    pub(crate) cells: &'a [Value],
    pub(crate) state: Vec<u8>,
}

impl<'a> EncodedRow<'a> {
    pub(crate) fn new(row: &'a RowWrite) -> EncodedRow<'a> {
        EncodedRow {
            key: encode_key(&row.key),
            cells: &row.cells,
            state: tally_views::agg::encode_states(&row.states),
        }
    }
}

pub(crate) struct EncodedFlush<'a> {
    pub(crate) plan: &'a ViewPlan,
    pub(crate) position: u64,
    pub(crate) failed: u64,
    pub(crate) rows: Vec<EncodedRow<'a>>,
}

/// Work ([`RowWrite::work`]) from which a flush's states are encoded on two threads: sorting
/// the members of exact distinct sets is most of it, and a thread costs tens of microseconds.
const PARALLEL_ENCODE_WORK: usize = 16_384;

impl<'a> EncodedFlush<'a> {
    /// Every row of `flushes` encoded, in order. With much to encode, each view's rows are cut
    /// where half of the view's work is done and the first parts are encoded on a second thread
    /// (here, if none can be started).
    pub(crate) fn all(flushes: &'a [ViewFlush<'a>]) -> Vec<EncodedFlush<'a>> {
        fn encode(rows: &[RowWrite]) -> Vec<EncodedRow<'_>> {
            rows.iter().map(EncodedRow::new).collect()
        }
        let work: Vec<Vec<usize>> = flushes
            .iter()
            .map(|f| f.rows.iter().map(RowWrite::work).collect())
            .collect();
        let total: usize = work.iter().flatten().sum();
        let split: Vec<(&[RowWrite], &[RowWrite])> = flushes
            .iter()
            .zip(&work)
            .map(|(f, work)| {
                if total < PARALLEL_ENCODE_WORK {
                    return (&f.rows[..], &[][..]);
                }
                let half = work.iter().sum::<usize>() / 2;
                let mut done = 0;
                let at = work
                    .iter()
                    .position(|w| {
                        done += w;
                        done > half
                    })
                    .unwrap_or(work.len());
                f.rows.split_at(at)
            })
            .collect();
        let halves: Vec<(Vec<EncodedRow<'a>>, Vec<EncodedRow<'a>>)> = std::thread::scope(|scope| {
            let first = (total >= PARALLEL_ENCODE_WORK)
                .then(|| {
                    std::thread::Builder::new()
                        .name("tally-encode".into())
                        .spawn_scoped(scope, || split.iter().map(|(a, _)| encode(a)).collect())
                        .ok()
                })
                .flatten();
            let second: Vec<Vec<EncodedRow<'a>>> = split.iter().map(|(_, b)| encode(b)).collect();
            let first: Vec<Vec<EncodedRow<'a>>> = match first {
                Some(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => split.iter().map(|(a, _)| encode(a)).collect(),
            };
            first.into_iter().zip(second).collect()
        });
        flushes
            .iter()
            .zip(halves)
            .map(|(f, (mut rows, rest))| {
                rows.extend(rest);
                EncodedFlush {
                    plan: f.plan,
                    position: f.position,
                    failed: f.failed,
                    rows,
                }
            })
            .collect()
    }
}

/// [`Erasure`] as backends write it.
pub(crate) struct EncodedErasure<'a> {
    pub(crate) events: &'a [(&'a StreamDef, Vec<u64>)],
    pub(crate) views: Vec<EncodedCorrection<'a>>,
    pub(crate) records: &'a [RecordWrite],
}

pub(crate) struct EncodedCorrection<'a> {
    pub(crate) plan: &'a ViewPlan,
    pub(crate) rows: Vec<EncodedRow<'a>>,
    pub(crate) removed: Vec<Vec<u8>>,
}

/// The value of the bucket column of a stored key, for range filters.
pub(crate) fn bucket_of(plan: &ViewPlan, key: &[u8]) -> Option<Timestamp> {
    let b = plan.bucket?;
    match decode_key(key, plan.keys.len()).ok()?.get(b)? {
        Value::Timestamp(t) => Some(*t),
        _ => None,
    }
}

/// A rejected event for the rejection log: when, where it was sent, why, and what was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub at: Timestamp,
    /// The stream it was sent to.
    pub stream: String,
    /// The route or command it came through (`streams`, `segment`, …).
    pub route: String,
    /// The kind of problem (`invalid_value`, `unknown_field`, …).
    pub reason: String,
    /// What was wrong, for people.
    pub message: String,
    /// What was sent, cut at 32 KB.
    pub payload: String,
}

/// A logged rejection with its id (increasing; pages start after one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRejection {
    pub id: u64,
    pub rejected: Rejected,
}

/// One change to a tenant's records (alert definitions, alert states, history, deliveries):
/// several are applied in one transaction by `TenantStore::write_records`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordWrite {
    /// Inserts or replaces the record of this kind and key.
    Put {
        kind: String,
        key: String,
        body: String,
    },
    /// Deletes the record of this kind and key, if any.
    Delete { kind: String, key: String },
}
