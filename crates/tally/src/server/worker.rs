//! One thread per active tenant: it owns the tenant's [`TenantRuntime`] and does all of its
//! ingest, queries and flushes, in the order requests arrive.
//!
//! Requests reach it through a bounded queue; a full queue is answered 503 by the caller rather
//! than growing. Ingest requests waiting in the queue are committed together (group commit):
//! one durable transaction acknowledges them all, so many small requests cost about as much as
//! one large one. The answers go out at the commit; the worker applies the events to the views
//! before it takes its next job other than an ingest. On SQLite (one process, a tenant without
//! alerts) a group of [`OVERLAP_ROWS`] records or more starts an ingest session
//! ([`ingest_session`], [`starts_session`]): a second (scoped) thread applies each group's
//! events while the worker decodes and commits the next, as the CLI's two threads do, a third
//! ([`Syncer`]) syncs the commits and only then answers their requests, so the worker writes
//! the next group while the disk syncs the last, and any other job ends the session once every
//! commit is synced and answered and every committed event applied. Where no session runs, a
//! group of that size is applied while its commit is written and synced, on a second thread,
//! and answered when both are done ([`TenantRuntime::commit_applying`]). A large request arrives
//! decoded already, its dedupe keys hashed on SQLite (by the thread that received it, see
//! [`Decoded`]), so the worker commits and applies one group while the next decodes; the
//! request frees its records after the answer, not the worker ([`Submission::records`]).
//! Queries go through the same queue, so a query sent after an acknowledged
//! ingest sees it (read your writes). Between requests the worker flushes the views at the
//! flush interval; the server's scheduler sends it `Tick` (alerts) and `Maintain` (retention)
//! jobs, which run in order with the rest. On a shared store (PostgreSQL) each tick
//! also lets a follower take the lead, or the leader apply what other nodes committed.
//!
//! A store error is fatal to the worker (an fsync failure must never be retried silently): it
//! answers the requests at hand with the error and ends; the next request opens the tenant
//! again, which replays whatever was committed but not yet flushed.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tally_store::{LoggedRejection, Rejected};
use tally_views::{Interval, QueryRequest, ResultSet, StreamDef, Value};
use tokio::sync::oneshot;

use crate::decode::{Reason, Rejection, RowDecoder};
use crate::error::{Error, Result};
use crate::runtime::{Appended, FlushJob, OVERLAP_ROWS, StoreSide, TenantRuntime};
use crate::server::metrics::Metrics;

/// Requests of at least this many records are decoded before they reach the worker ([`Decoded`]).
pub const EARLY_DECODE_RECORDS: usize = 64;
/// Most events committed in one group commit.
const GROUP_COMMIT_ROWS: usize = 20_000;
/// The most entries a tenant's rejection log keeps, whatever their age.
const MAX_LOGGED_REJECTIONS: usize = 100_000;
/// How long an idle tenant's thread sleeps when nothing is due (the scheduler's jobs wake it).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// One event of a request, as the edge left it.
#[derive(Clone, Debug)]
pub enum Record {
    /// The JSON text of one event, to decode against the stream.
    Json(String),
    /// Rejected at the edge already (a Segment message that is not an event), with the reason
    /// and what was sent.
    Rejected {
        rejection: Rejection,
        payload: String,
    },
}

impl Record {
    pub fn rejected(reason: Reason, message: impl Into<String>, payload: String) -> Record {
        Record::Rejected {
            rejection: Rejection::new(reason, message),
            payload,
        }
    }
}

/// The most of a rejected event's text the rejection log keeps.
const MAX_LOGGED_PAYLOAD: usize = 32 * 1024;

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What an ingest request did: counts, and the rejected events by their index in the request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<(usize, String)>,
}

pub struct Submission {
    pub stream: String,
    /// The route group it came through (`streams`, `segment`), for the rejection log.
    pub route: &'static str,
    /// Shared with the request that sent them, which frees them when it has the answer: the
    /// worker drops its share before it answers ([`Submission::answer`]), so that freeing a
    /// large request's strings (one a record) falls to the request's task (or, if the client
    /// went away, to whoever drops the last share), not to the worker every request waits for.
    /// A submission dropped unanswered drops `records` before `reply` (field order).
    pub records: Arc<Vec<Record>>,
    /// The records decoded by the request's own thread, if it could (see [`Decoded`]).
    pub decoded: Option<Decoded>,
    pub reply: oneshot::Sender<Result<Outcome>>,
}

impl Submission {
    /// Drops this share of the records, then sends the answer.
    pub fn answer(self, outcome: Result<Outcome>) {
        let Submission { records, reply, .. } = self;
        drop(records);
        let _ = reply.send(outcome);
    }
}

/// A submission's records decoded before they reached the worker, on the thread that received
/// the request, so that the worker's thread spends its time on the commit and the views while
/// the next request decodes. The worker uses them only if the stream's definition it holds is
/// the one they were decoded against; otherwise (a schema change in between) it decodes the
/// records again itself.
pub struct Decoded {
    /// The catalog whose stream definition the records were decoded against.
    pub catalog: Arc<tally_views::Catalog>,
    /// One outcome per record, in order.
    pub rows: Vec<std::result::Result<Vec<Value>, Rejection>>,
    /// The dedupe keys of the decoded rows (the `Ok` ones, in order) and their hashes, when the
    /// store indexes keys so ([`tally_store::KeyHashes`]): hashed here too, off the worker.
    pub hashes: Option<tally_store::KeyHashes>,
}

impl Decoded {
    /// Decodes `records` for `stream` of `catalog`, and with `hash_keys` (the store's appends of
    /// the stream take [`tally_store::KeyHashes`]) hashes the rows' dedupe keys; `None` if the
    /// catalog has no such stream (the worker then answers as it does for any unknown stream).
    pub fn new(
        catalog: Arc<tally_views::Catalog>,
        stream: &str,
        records: &[Record],
        now: tally_views::Timestamp,
        max_future: Interval,
        hash_keys: bool,
    ) -> Option<Decoded> {
        let def = catalog.stream(stream)?;
        let rows = decode_all(&RowDecoder::new(def, now, max_future), records);
        let hashes = (hash_keys && def.has_dedupe_key())
            .then(|| tally_store::KeyHashes::of(def, rows.iter().filter_map(|r| r.as_ref().ok())));
        Some(Decoded {
            catalog,
            rows,
            hashes,
        })
    }

    /// The rows and their keys' hashes, if they were decoded against `stream` as it is now
    /// defined.
    fn rows_for(self, stream: &tally_views::StreamDef) -> Option<Early> {
        let same = self
            .catalog
            .stream(&stream.name)
            .is_some_and(|s| **s == *stream);
        same.then_some((self.rows, self.hashes))
    }
}

/// What [`Decoded::rows_for`] gives the worker: each record's outcome, and the hashes of the
/// rows' keys if they were computed.
type Early = (
    Vec<std::result::Result<Vec<Value>, Rejection>>,
    Option<tally_store::KeyHashes>,
);

/// Each record's row, or why it is rejected (a record rejected at the edge keeps its reason).
fn decode_all(
    decoder: &RowDecoder<'_>,
    records: &[Record],
) -> Vec<std::result::Result<Vec<Value>, Rejection>> {
    records
        .iter()
        .map(|record| match record {
            Record::Json(text) => decoder.json(text),
            Record::Rejected { rejection, .. } => Err(rejection.clone()),
        })
        .collect()
}

pub enum Job {
    Ingest(Submission),
    /// Read a view; answers with the view's count of events whose expressions failed.
    Query {
        view: String,
        request: QueryRequest,
        reply: oneshot::Sender<Result<(ResultSet, u64)>>,
    },
    /// Gather the rows of the relations a query-time SQL query reads, with the tenant's time
    /// zone; the query itself runs off the worker.
    #[cfg(feature = "sql")]
    Relations {
        requests: Vec<tally_sql::RelationRequest>,
        limits: tally_sql::Limits,
        reply: oneshot::Sender<Result<(Vec<tally_sql::Relation>, String)>>,
    },
    /// Run a behavioural analysis: its kind and parameters, as of a time.
    Analyze {
        kind: String,
        params: Vec<(String, String)>,
        now: tally_views::Timestamp,
        reply: oneshot::Sender<Result<ResultSet>>,
    },
    /// Upsert rows of a table (JSON objects).
    UpsertRows {
        table: String,
        records: Vec<String>,
        reply: oneshot::Sender<Result<crate::tables::Upserted>>,
    },
    /// Delete a row of a table by key (text); answers whether it existed.
    DeleteRow {
        table: String,
        key: String,
        reply: oneshot::Sender<Result<bool>>,
    },
    /// Read the rejection log: entries after an id.
    Rejections {
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<LoggedRejection>>>,
    },
    /// An operation on the tenant's dashboards.
    Dashboards {
        op: crate::dashboards::DashboardOp,
        now: tally_views::Timestamp,
        reply: oneshot::Sender<Result<serde_json::Value>>,
    },
    /// The data of a dashboard's widget (or the SQL the hub runs for it).
    Widget {
        id: String,
        index: usize,
        from: Option<String>,
        to: Option<String>,
        if_none_match: Option<String>,
        now: tally_views::Timestamp,
        reply: oneshot::Sender<Result<crate::dashboards::WidgetData>>,
    },
    /// A view export's rows (all, or changed after a cursor) and its cursor.
    ExportView {
        view: String,
        request: QueryRequest,
        after: Option<u64>,
        reply: oneshot::Sender<Result<(ResultSet, u64)>>,
    },
    /// Erase a person (GDPR): their events, and every view corrected.
    Erase {
        person: String,
        now: tally_views::Timestamp,
        reply: oneshot::Sender<Result<crate::erase::Erased>>,
    },
    /// Read the erasure log, oldest first.
    Erasures {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<crate::erase::ErasureEntry>>>,
    },
    /// An operation on the tenant's alerts (manage key).
    Alerts {
        op: crate::alerts::AlertOp,
        now: tally_views::Timestamp,
        reply: oneshot::Sender<Result<serde_json::Value>>,
    },
    /// The scheduler's tick for a tenant with alerts: read the alerts again, evaluate them as
    /// time passes, hand out the deliveries due.
    Tick,
    /// A webhook attempt's outcome, from the sender.
    Attempted(crate::alerts::Attempt),
    /// The scheduler's periodic maintenance: stream and view retention, the rejection log,
    /// alert history.
    Maintain {
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Flush the views now and answer when done (graceful shutdown, schema changes).
    Stop {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Settings of a worker.
#[derive(Clone)]
pub struct WorkerConfig {
    pub flush_interval: Duration,
    /// How long the rejection log keeps an entry.
    pub rejection_retention: Interval,
    pub config: crate::Config,
    pub metrics: Arc<Metrics>,
    /// How long alert history is kept.
    pub alert_history_retention: Interval,
    /// Where deliveries due go (the server's sender); without one they wait in the store.
    pub dispatch: Option<tokio::sync::mpsc::UnboundedSender<crate::alerts::Dispatch>>,
}

/// Runs a tenant until its queue closes, a `Stop` arrives or a store error ends it.
pub fn run(mut runtime: TenantRuntime, jobs: Receiver<Job>, settings: WorkerConfig) {
    let tenant = runtime.name().to_owned();
    let mut last_flush = Instant::now();
    let mut pending_since: Option<Instant> = None;
    let mut carried: Option<Job> = None;
    loop {
        // With nothing to flush and no other node to follow, nothing is due until a job
        // arrives (the scheduler sends retention and alert ticks): an idle tenant's thread
        // sleeps instead of waking every flush interval.
        let wait = if runtime.has_pending() || runtime.is_shared() {
            settings.flush_interval.saturating_sub(last_flush.elapsed())
        } else {
            IDLE_WAIT
        }
        .max(Duration::from_millis(1));
        let job = match carried.take() {
            Some(job) => Some(job),
            None => match jobs.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = runtime.flush();
                    return;
                }
            },
        };
        let ok = match job {
            None => true,
            Some(Job::Ingest(first)) => {
                let started = Instant::now();
                let (batch, other) = gather(first, &jobs);
                carried = other;
                let until = last_flush + settings.flush_interval;
                let ok = if starts_session(&mut runtime, &batch, carried.is_some(), until) {
                    match ingest_session(&mut runtime, batch, &jobs, &settings, until) {
                        Ok((ok, other)) => {
                            carried = other;
                            ok
                        }
                        // No thread to apply on: this group the usual way.
                        Err(batch) => ingest_group(&mut runtime, batch, &settings, started),
                    }
                } else {
                    ingest_group(&mut runtime, batch, &settings, started)
                };
                if runtime.has_pending() && pending_since.is_none() {
                    pending_since = Some(started);
                }
                ok
            }
            Some(Job::Query {
                view,
                request,
                reply,
            }) => {
                let started = Instant::now();
                let result = runtime
                    .query(&view, &request)
                    .and_then(|answer| Ok((answer, runtime.expression_failures(&view)?)));
                settings.metrics.observe_query(started.elapsed());
                let _ = reply.send(result);
                true
            }
            #[cfg(feature = "sql")]
            Some(Job::Relations {
                requests,
                limits,
                reply,
            }) => {
                let result = runtime
                    .relations(&requests, &limits)
                    .map(|r| (r, runtime.info().time_zone.clone()));
                let _ = reply.send(result);
                true
            }
            Some(Job::Analyze {
                kind,
                params,
                now,
                reply,
            }) => {
                let started = Instant::now();
                let result = runtime.analyze(&kind, &params, now);
                settings.metrics.observe_query(started.elapsed());
                let _ = reply.send(result);
                true
            }
            Some(Job::UpsertRows {
                table,
                records,
                reply,
            }) => {
                let _ = reply.send(runtime.upsert_rows(&table, &records));
                true
            }
            Some(Job::DeleteRow { table, key, reply }) => {
                let _ = reply.send(runtime.delete_row(&table, &key));
                true
            }
            Some(Job::Rejections {
                after,
                limit,
                reply,
            }) => {
                let _ = reply.send(runtime.rejections(after, limit));
                true
            }
            Some(Job::Dashboards { op, now, reply }) => {
                let _ = reply.send(op.run(&mut runtime, now));
                true
            }
            Some(Job::Widget {
                id,
                index,
                from,
                to,
                if_none_match,
                now,
                reply,
            }) => {
                let started = Instant::now();
                let result = runtime.widget_data(
                    &id,
                    index,
                    from.as_deref(),
                    to.as_deref(),
                    if_none_match.as_deref(),
                    now,
                );
                settings.metrics.observe_query(started.elapsed());
                let _ = reply.send(result);
                true
            }
            Some(Job::ExportView {
                view,
                request,
                after,
                reply,
            }) => {
                let _ = reply.send(runtime.export_view(&view, &request, after));
                true
            }
            Some(Job::Erase { person, now, reply }) => {
                let _ = reply.send(runtime.erase_person(&person, now));
                true
            }
            Some(Job::Erasures { limit, reply }) => {
                let _ = reply.send(runtime.erasures(limit));
                true
            }
            Some(Job::Alerts { op, now, reply }) => {
                let _ = reply.send(op.run(&mut runtime, now));
                true
            }
            Some(Job::Tick) => {
                // On a shared store, first take in what other nodes committed (or the lead).
                let ok = match runtime.tick() {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(tenant, error = %e, "tick failed; the tenant will be reopened");
                        false
                    }
                };
                if ok {
                    match runtime.reload_alerts() {
                        Ok(()) => evaluate(&mut runtime, &settings, None),
                        Err(e) => tracing::error!(tenant, error = %e, "cannot read the alerts"),
                    }
                }
                ok
            }
            Some(Job::Attempted(attempt)) => {
                if let Err(e) = runtime.record_attempt(&attempt) {
                    tracing::error!(tenant, error = %e, "cannot record a webhook attempt");
                }
                true
            }
            Some(Job::Maintain { reply }) => {
                let result = maintain(&mut runtime, &settings);
                let ok = !matches!(&result, Err(Error::Store(_)));
                if let Err(e) = &result {
                    tracing::error!(tenant, error = %e, "maintenance failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                ok
            }
            Some(Job::Stop { reply }) => {
                // On a shared store, first take in what other nodes committed (or the lead).
                let _ = reply.send(runtime.tick().and_then(|_| runtime.flush()));
                settings.metrics.set_flush_lag(&tenant, 0.0);
                return;
            }
        };
        if !ok || runtime.is_poisoned() {
            // The next request opens the tenant again, which replays from the stored positions.
            settings.metrics.set_flush_lag(&tenant, 0.0);
            return;
        }
        if last_flush.elapsed() >= settings.flush_interval {
            last_flush = Instant::now();
            // On a shared store: take the lead if it is free, or apply other nodes' events.
            let pending = match runtime.tick() {
                Ok(pending) => pending,
                Err(e) => {
                    tracing::error!(tenant, error = %e, "tick failed; the tenant will be reopened");
                    settings.metrics.set_flush_lag(&tenant, 0.0);
                    return;
                }
            };
            if pending {
                if let Err(e) = runtime.flush() {
                    tracing::error!(tenant, error = %e, "flush failed; the tenant will be reopened");
                    settings.metrics.set_flush_lag(&tenant, 0.0);
                    return;
                }
                settings.metrics.flushes.inc();
            }
            pending_since = None;
        }
        for (view, n) in runtime.take_skipped() {
            settings.metrics.count_skipped(&tenant, &view, n);
        }
        for (view, n) in runtime.take_new_failures() {
            settings
                .metrics
                .count_expression_failures(&tenant, &view, n);
        }
        let lag = pending_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
        settings.metrics.set_flush_lag(&tenant, lag);
    }
}

/// Retention of streams and views, the rejection log and alert history.
fn maintain(runtime: &mut TenantRuntime, settings: &WorkerConfig) -> Result<()> {
    let now = settings.config.clock.now();
    runtime.enforce_retention(now)?;
    let before = settings.rejection_retention.before(now);
    runtime.trim_rejections(before, MAX_LOGGED_REJECTIONS)?;
    runtime.trim_alert_history(settings.alert_history_retention.before(now))?;
    Ok(())
}

/// Evaluates the tenant's alerts (on views of `stream`, or all) and hands the deliveries due
/// to the sender. A failure is logged: the next evaluation finds the same change again.
fn evaluate(runtime: &mut TenantRuntime, settings: &WorkerConfig, stream: Option<&str>) {
    let now = settings.config.clock.now();
    let mut due = match runtime.evaluate_alerts(now, stream) {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(tenant = runtime.name(), error = %e, "evaluating alerts failed");
            return;
        }
    };
    if stream.is_none() {
        match runtime.due_deliveries(now) {
            Ok(more) => due.extend(more),
            Err(e) => {
                tracing::error!(tenant = runtime.name(), error = %e, "reading deliveries failed")
            }
        }
    }
    for d in due {
        let id = d.id.clone();
        let sent = settings
            .dispatch
            .as_ref()
            .is_some_and(|s| s.send(d).is_ok());
        if !sent {
            // Nobody sends: it stays pending in the store for the next process that does.
            runtime.in_flight.remove(&id);
        }
    }
}

/// Where a group of ingest requests is committed ([`commit_group`]): the whole runtime, or the
/// store half of one split for an ingest session ([`ingest_session`]).
trait GroupStore {
    /// The tenant's catalog, whose stream definitions the rows are decoded against.
    fn catalog(&self) -> &tally_views::Catalog;
    /// The tenant's name (metrics, logs).
    fn tenant(&self) -> &str;
    /// Whether an earlier failure left the runtime to be reopened.
    fn is_poisoned(&self) -> bool;
    /// Commits a stream's rows: their sequence numbers and the committed events left to apply.
    fn commit(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
    ) -> Result<Appended>;
    /// Adds the group's rejected events to the tenant's rejection log.
    fn log_rejections(&mut self, logged: &[Rejected]) -> Result<()>;
}

impl GroupStore for TenantRuntime {
    fn catalog(&self) -> &tally_views::Catalog {
        TenantRuntime::catalog(self)
    }

    fn tenant(&self) -> &str {
        self.name()
    }

    fn is_poisoned(&self) -> bool {
        TenantRuntime::is_poisoned(self)
    }

    /// On SQLite a large group is applied while its commit is synced, on a second thread
    /// ([`TenantRuntime::commit_applying`]); the events of other groups are left to apply
    /// after the answers.
    fn commit(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
    ) -> Result<Appended> {
        if rows.len() >= OVERLAP_ROWS {
            self.commit_applying(stream, rows, hashed)
        } else {
            self.commit_hashed(stream, rows, hashed)
        }
    }

    fn log_rejections(&mut self, logged: &[Rejected]) -> Result<()> {
        TenantRuntime::log_rejections(self, logged)
    }
}

impl GroupStore for StoreSide<'_> {
    fn catalog(&self) -> &tally_views::Catalog {
        StoreSide::catalog(self)
    }

    fn tenant(&self) -> &str {
        StoreSide::tenant(self)
    }

    fn is_poisoned(&self) -> bool {
        StoreSide::is_poisoned(self)
    }

    fn commit(
        &mut self,
        stream: &StreamDef,
        rows: Vec<Vec<Value>>,
        hashed: Option<tally_store::KeyHashes>,
    ) -> Result<Appended> {
        self.append_hashed(stream, rows, hashed)
    }

    fn log_rejections(&mut self, logged: &[Rejected]) -> Result<()> {
        StoreSide::log_rejections(self, logged)
    }
}

/// What [`commit_group`] did: whether the store held (false when it failed and the worker must
/// end), and per stream the committed events left to apply.
struct Group {
    ok: bool,
    committed: Vec<(String, Vec<tally_views::Event>)>,
    /// With `defer_answers`, each request and its answer, to be sent once the commit is
    /// synced; otherwise empty (the requests were answered).
    answers: Vec<(Submission, Result<Outcome>)>,
}

/// Decodes and commits a group of ingest requests, logs their rejected events, and answers
/// each request (or, with `defer_answers`, returns the answers: the commit is not synced yet).
fn commit_group(
    store: &mut impl GroupStore,
    mut batch: Vec<Submission>,
    settings: &WorkerConfig,
    defer_answers: bool,
) -> Group {
    let now = settings.config.clock.now();
    // Requests for the same stream share one commit; streams go one after the other.
    let streams = streams_of(&batch);
    let mut outcomes: Vec<Option<Result<Outcome>>> = batch.iter().map(|_| None).collect();
    let mut failed = false;
    let mut logged: Vec<Rejected> = Vec::new();
    // Per stream, the events committed, applied once every request has its answer.
    let mut committed: Vec<(String, Vec<tally_views::Event>)> = Vec::new();
    for stream_name in &streams {
        let members: Vec<usize> = (0..batch.len())
            .filter(|&i| &batch[i].stream == stream_name)
            .collect();
        let Some(stream) = store.catalog().stream(stream_name).cloned() else {
            let names: Vec<&str> = store.catalog().streams().map(|s| s.name.as_str()).collect();
            for &i in &members {
                outcomes[i] = Some(Err(Error::NotFound(format!(
                    "there is no stream {stream_name}; the streams are {}",
                    names.join(", ")
                ))));
            }
            continue;
        };
        if failed {
            for &i in &members {
                outcomes[i] = Some(Err(Error::Failed(
                    "the store failed on an earlier part of this batch".into(),
                )));
            }
            continue;
        }
        if store.is_poisoned() {
            // An earlier stream of this group committed, then left the runtime poisoned: its
            // apply panicked, or reading other nodes' events on a shared store failed. Its
            // events stay acknowledged; the tenant is reopened after this group, which replays
            // them. These events were not committed, and a retry commits them.
            for &i in &members {
                outcomes[i] = Some(Err(Error::Unavailable(format!(
                    "tenant {} is being reopened after an internal error; retry",
                    store.tenant()
                ))));
            }
            continue;
        }
        // Decode every record of every member; remember which rows belong to whom. The keys'
        // hashes are used if every member's came with its early decode.
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut owners: Vec<usize> = Vec::new();
        let mut hashed: Option<tally_store::KeyHashes> = None;
        let mut all_hashed = true;
        {
            let decoder = RowDecoder::new(&stream, now, settings.config.max_future);
            for &i in &members {
                let mut outcome = Outcome::default();
                let (decoded, hashes) =
                    match batch[i].decoded.take().and_then(|d| d.rows_for(&stream)) {
                        Some(early) => early,
                        None => (decode_all(&decoder, &batch[i].records), None),
                    };
                all_hashed &= match (hashes, &mut hashed) {
                    (Some(h), None) => {
                        hashed = Some(h);
                        true
                    }
                    (Some(h), Some(all)) => all.append(h),
                    (None, _) => false,
                };
                for (index, (record, decoded)) in batch[i].records.iter().zip(decoded).enumerate() {
                    let payload = match record {
                        Record::Json(text) => text,
                        Record::Rejected { payload, .. } => payload,
                    };
                    match decoded {
                        Ok(row) => {
                            rows.push(row);
                            owners.push(i);
                        }
                        Err(rejection) => {
                            settings.metrics.count_rejected(
                                store.tenant(),
                                stream_name,
                                rejection.reason.as_str(),
                            );
                            logged.push(Rejected {
                                at: now,
                                stream: stream_name.clone(),
                                route: batch[i].route.to_owned(),
                                reason: rejection.reason.as_str().to_owned(),
                                message: rejection.message.clone(),
                                payload: cut(payload, MAX_LOGGED_PAYLOAD),
                            });
                            outcome.rejected.push((index, rejection.message));
                        }
                    }
                }
                outcomes[i] = Some(Ok(outcome));
            }
        }
        let hashed = hashed.filter(|_| all_hashed);
        let result = store.commit(&stream, rows, hashed);
        match result {
            Ok(Appended { seqs, events }) => {
                if !events.is_empty() {
                    committed.push((stream.name.clone(), events));
                }
                settings.metrics.store_ok();
                for (seq, &owner) in seqs.iter().zip(&owners) {
                    if let Some(Ok(outcome)) = &mut outcomes[owner] {
                        match seq {
                            Some(_) => outcome.accepted += 1,
                            None => outcome.duplicates += 1,
                        }
                    }
                }
                for &i in &members {
                    if let Some(Ok(o)) = &outcomes[i] {
                        settings.metrics.count_ingest(
                            store.tenant(),
                            stream_name,
                            o.accepted,
                            o.duplicates,
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!(tenant = store.tenant(), error = %e, "commit failed; the tenant will be reopened");
                let e = e.naming_exhaustion();
                settings.metrics.store_failed(match &e {
                    Error::Exhausted(what) => what,
                    _ => "a commit to the store failed; see the log",
                });
                failed = true;
                for &i in &members {
                    outcomes[i] = Some(Err(e.shared("commit failed")));
                }
            }
        }
    }
    // The rejected events of the committed streams go to the rejection log (a failure to log
    // them fails nothing else).
    if !failed && let Err(e) = store.log_rejections(&logged) {
        tracing::error!(tenant = store.tenant(), error = %e, "cannot log rejected events");
    }
    let mut answers = Vec::new();
    for (submission, outcome) in batch.into_iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|| Ok(Outcome::default()));
        if defer_answers {
            answers.push((submission, outcome));
        } else {
            submission.answer(outcome);
        }
    }
    Group {
        ok: !failed,
        committed,
        answers,
    }
}

/// The ingest requests waiting behind `first`, up to [`GROUP_COMMIT_ROWS`] events, as one group
/// (group commit); and the first other job met, which must wait for the group.
fn gather(first: Submission, jobs: &Receiver<Job>) -> (Vec<Submission>, Option<Job>) {
    let mut batch = vec![first];
    let mut rows = batch[0].records.len();
    while rows < GROUP_COMMIT_ROWS {
        match jobs.try_recv() {
            Ok(Job::Ingest(next)) => {
                rows += next.records.len();
                batch.push(next);
            }
            Ok(other) => return (batch, Some(other)),
            Err(_) => break,
        }
    }
    (batch, None)
}

/// The streams of a group's requests, each once, in the order they first come.
fn streams_of(batch: &[Submission]) -> Vec<String> {
    let mut streams: Vec<String> = Vec::new();
    for s in batch {
        if !streams.contains(&s.stream) {
            streams.push(s.stream.clone());
        }
    }
    streams
}

/// A group outside a session ([`ingest`]), then the alerts on the views its events changed;
/// the group's time (from `started`) observed.
fn ingest_group(
    runtime: &mut TenantRuntime,
    batch: Vec<Submission>,
    settings: &WorkerConfig,
    started: Instant,
) -> bool {
    let (requests, streams) = (batch.len(), streams_of(&batch));
    let ok = ingest(runtime, batch, settings);
    // A flush that failed while applying poisoned the runtime: its views miss groups until it
    // is reopened, so no alert looks at them.
    if ok && !runtime.is_poisoned() {
        // Alerts on the views these events changed, the moment they are acknowledged.
        for stream in &streams {
            evaluate(runtime, settings, Some(stream));
        }
    }
    settings.metrics.observe_group(requests, started.elapsed());
    ok
}

/// Whether a group starts an ingest session ([`ingest_session`]): it holds [`OVERLAP_ROWS`]
/// records or more and no other job waits behind it, the store commits on SQLite for this
/// process alone ([`TenantRuntime::pipelines_commits`]; an `fsync` is what the apply overlaps),
/// the tenant has no alerts (they are evaluated after each group, on the views it changed,
/// which a session would put off to its end), and the next flush by the clock (`until`) is not
/// due yet (the first group after an idle spell goes the usual way, and the flush follows it).
fn starts_session(
    runtime: &mut TenantRuntime,
    batch: &[Submission],
    other_waiting: bool,
    until: Instant,
) -> bool {
    let records: usize = batch.iter().map(|s| s.records.len()).sum();
    !other_waiting
        && records >= OVERLAP_ROWS
        && Instant::now() < until
        && runtime.pipelines_commits()
        && !runtime.has_alerts().unwrap_or(true)
}

/// How long an ingest session waits for the next request before it ends ([`ingest_session`]).
const SESSION_WAIT: Duration = Duration::from_millis(5);

/// Commits (a group's events of one stream each) an ingest session's applier may have waiting
/// beside the one it applies: the worker waits to hand over more, which bounds the memory of
/// events committed and not yet applied.
const APPLY_QUEUE: usize = 2;

/// Ingests groups of requests for as long as they keep coming, the events of each applied on a
/// second thread while this one decodes and commits the next (when [`starts_session`] says so):
/// the worker's serial path is then the commits alone, as the CLI's committing thread's is
/// ([`crate::ingest`]). On SQLite a third thread syncs the commits ([`tally_store::WalSync`]):
/// the worker commits without waiting for the `fsync` and hands the group's answers over; the
/// syncing thread answers them after an `fdatasync` of the WAL that began after their commit
/// (one sync for every group handed over meanwhile), so an answer still means a durable commit,
/// and the worker writes the next group while the disk syncs the last. A query that arrives
/// meanwhile waits for the commit at hand, the apply of what is queued (at most
/// [`APPLY_QUEUE`] commits beside the one being applied) and the last sync.
///
/// The session ends at any other job, which is handed back and waits until every committed
/// event is synced, answered and applied (a query sent after an answer sees its events, and no
/// job reads an event that is not durable yet); when no request has come for
/// [`SESSION_WAIT`]; or at `until` (the next flush by the clock is due). The flushes the applier
/// asks for are written between groups. A failed commit or flush ends it (the runtime is
/// poisoned and the worker ends); so does a failed sync, which answers its groups and every
/// later one with the error. A panic of the applier poisons the runtime: what was committed
/// stays acknowledged, and reopening the tenant replays what was not applied.
///
/// Returns false if a commit failed (the worker must end), else true, and the job that ended the
/// session; or the first group back if no thread could be started to apply. A failed flush or
/// sync, or a panic of the applier or the syncing thread, leaves the runtime poisoned, which the
/// caller checks.
fn ingest_session(
    runtime: &mut TenantRuntime,
    first: Vec<Submission>,
    jobs: &Receiver<Job>,
    settings: &WorkerConfig,
    until: Instant,
) -> std::result::Result<(bool, Option<Job>), Vec<Submission>> {
    let (mut store, mut apply) = runtime.split();
    let (work_tx, work_rx) =
        std::sync::mpsc::sync_channel::<(String, Vec<tally_views::Event>)>(APPLY_QUEUE);
    let (flush_tx, flush_rx) = std::sync::mpsc::channel::<FlushJob>();
    std::thread::scope(|scope| {
        let applier = std::thread::Builder::new()
            .name("tally-apply".into())
            .spawn_scoped(scope, move || {
                // Each group's events are dropped here, off the worker.
                for (stream, events) in work_rx {
                    apply.apply(&stream, &events);
                    if apply.needs_flush() && flush_tx.send(apply.take_flush()).is_err() {
                        return;
                    }
                }
            });
        let applier = match applier {
            Ok(applier) => applier,
            Err(e) => {
                tracing::warn!(tenant = store.tenant(), error = %e, "cannot start a thread to apply events");
                return Err(first);
            }
        };
        let syncer = Syncer::start(scope, &mut store, &settings.metrics);
        let (mut batch, mut carried) = (first, None);
        let ok = loop {
            let (requests, started) = (batch.len(), Instant::now());
            let group = commit_group(&mut store, batch, settings, syncer.is_some());
            let ok = group.ok;
            let mut go_on = ok && !store.is_poisoned();
            if let Some(syncer) = &syncer {
                go_on &= syncer.hand_over(group.answers);
            }
            // Nothing goes to the applier after a failed commit (the worker ends, and reopening
            // the tenant replays). The applier gone (it panicked) leaves committed events that
            // nobody applies: the runtime is poisoned, and reopening replays them.
            for work in group.committed {
                if !go_on {
                    break;
                }
                if work_tx.send(work).is_err() {
                    store.poison();
                    go_on = false;
                }
            }
            while go_on && let Ok(job) = flush_rx.try_recv() {
                go_on = write_flush(&mut store, job);
            }
            settings.metrics.observe_group(requests, started.elapsed());
            if !go_on || carried.is_some() || Instant::now() >= until || applier.is_finished() {
                break ok;
            }
            match jobs.recv_timeout(SESSION_WAIT) {
                Ok(Job::Ingest(next)) => (batch, carried) = gather(next, jobs),
                Ok(other) => {
                    carried = Some(other);
                    break ok;
                }
                Err(_) => break ok,
            }
        };
        drop(work_tx);
        if applier.join().is_err() {
            tracing::error!(
                tenant = store.tenant(),
                "applying committed events panicked; the tenant will be reopened"
            );
            store.poison();
        }
        if let Some(syncer) = syncer
            && !syncer.finish(&mut store)
        {
            store.poison();
        }
        for job in flush_rx.try_iter() {
            if store.is_poisoned() || !write_flush(&mut store, job) {
                break;
            }
        }
        Ok((ok, carried))
    })
}

/// The answers of an ingest session's groups, waiting for the sync of their commits.
type Answers = Vec<(Submission, Result<Outcome>)>;

/// Groups an ingest session's worker may have committed and handed over beside the one being
/// synced: it waits to hand over more, so a slow disk still fills the tenant's queue (503).
const SYNC_QUEUE: usize = 2;

/// An ingest session's syncing thread ([`ingest_session`]): it answers the groups handed over
/// once an `fdatasync` of the WAL that began after their commit returned.
struct Syncer<'scope> {
    answers: std::sync::mpsc::SyncSender<Answers>,
    thread: std::thread::ScopedJoinHandle<'scope, ()>,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl<'scope> Syncer<'scope> {
    /// Defers the store's syncs to a thread of `scope`; `None` (commits stay synced where they
    /// are made) where the store cannot, or no thread could be started.
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        store: &mut StoreSide<'_>,
        metrics: &Arc<Metrics>,
    ) -> Option<Syncer<'scope>> {
        let wal = match store.defer_sync() {
            Ok(wal) => wal?,
            Err(e) => {
                tracing::warn!(tenant = store.tenant(), error = %e, "cannot defer the commits' sync");
                return None;
            }
        };
        let (answers, queue) = std::sync::mpsc::sync_channel::<Answers>(SYNC_QUEUE);
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (failed_here, metrics) = (failed.clone(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name("tally-sync".into())
            .spawn_scoped(scope, move || {
                sync_and_answer(&wal, &queue, &failed_here, &metrics);
            });
        match thread {
            Ok(thread) => Some(Syncer {
                answers,
                thread,
                failed,
            }),
            Err(e) => {
                tracing::warn!(tenant = store.tenant(), error = %e, "cannot start a thread to sync commits");
                // Nothing was committed unsynced yet; commits that could not be synced again
                // where they are made must not be answered at all.
                if !end_deferred_sync(store) {
                    store.poison();
                }
                None
            }
        }
    }

    /// Hands a committed group's answers over; false if the sync failed (or its thread is gone),
    /// and the session must end.
    fn hand_over(&self, answers: Answers) -> bool {
        if let Err(std::sync::mpsc::SendError(answers)) = self.answers.send(answers) {
            let stopped = Error::Failed("the thread syncing commits stopped".into());
            for (submission, _) in answers {
                submission.answer(Err(unsynced(&stopped)));
            }
            return false;
        }
        !self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes commits synced again where they are made, then waits until every group handed
    /// over is synced and answered; false if a sync failed or the thread panicked.
    fn finish(self, store: &mut StoreSide<'_>) -> bool {
        let restored = end_deferred_sync(store);
        drop(self.answers);
        let joined = self.thread.join().is_ok();
        restored && joined && !self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Sets the store's commits back to synced; false (logged) if it could not.
fn end_deferred_sync(store: &mut StoreSide<'_>) -> bool {
    match store.end_deferred_sync() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(tenant = store.tenant(), error = %e, "cannot make commits synced again; the tenant will be reopened");
            false
        }
    }
}

/// The syncing thread: takes every group queued, syncs the WAL, answers them; after a failed
/// sync answers every group with the error and syncs no more (after a failed `fsync` a later
/// success proves nothing).
fn sync_and_answer(
    wal: &tally_store::WalSync,
    queue: &Receiver<Answers>,
    failed: &std::sync::atomic::AtomicBool,
    metrics: &Metrics,
) {
    let mut error: Option<Error> = None;
    while let Ok(mut answers) = queue.recv() {
        while let Ok(more) = queue.try_recv() {
            answers.extend(more);
        }
        if error.is_none()
            && let Err(e) = wal.sync()
        {
            tracing::error!(error = %e, "syncing commits failed; the tenant will be reopened");
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
            let e = Error::from(e).naming_exhaustion();
            metrics.store_failed(match &e {
                Error::Exhausted(what) => what,
                _ => "syncing commits to the disk failed; see the log",
            });
            error = Some(e);
        }
        for (submission, outcome) in answers {
            submission.answer(match &error {
                None => outcome,
                Some(e) => Err(unsynced(e)),
            });
        }
    }
}

/// The answer of a request whose commit could not be synced: not a retryable one, since the
/// events are committed and may well survive (a retry counts them twice, unless the stream has
/// a dedupe key). A full disk is named as such.
fn unsynced(why: &Error) -> Error {
    match why {
        Error::Exhausted(what) => Error::Exhausted(what.clone()),
        _ => Error::Failed(format!(
            "the events were committed but could not be synced to the disk, so whether they survive a power loss is unknown ({why})"
        )),
    }
}

/// Writes a flush of an ingest session's applier; false if it failed (the runtime is poisoned:
/// the events are committed, and reopening the tenant replays what the flush lost).
fn write_flush(store: &mut StoreSide<'_>, job: FlushJob) -> bool {
    match store.write(job) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(tenant = store.tenant(), error = %e, "flush failed after a commit");
            false
        }
    }
}

/// Decodes, commits and applies a group of ingest requests; answers each. False when the store
/// failed and the worker must end.
fn ingest(runtime: &mut TenantRuntime, batch: Vec<Submission>, settings: &WorkerConfig) -> bool {
    let Group { ok, committed, .. } = commit_group(runtime, batch, settings, false);
    // The answers go out at the commit: the clients' next requests arrive and decode on their
    // own threads while this one applies. Nothing reads the views before this returns, so a
    // query sent after an answer still sees its events. Nothing is applied after a failed
    // commit, nor after an apply that panicked (a poisoned runtime): the worker ends, and
    // reopening the tenant replays everything.
    if ok && !runtime.is_poisoned() {
        for (stream, events) in committed {
            runtime.apply_committed(&stream, &events);
        }
        // After an overlapped apply the delta may be full too.
        runtime.flush_if_full();
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_views::Catalog;

    fn catalog(schema: &str) -> Arc<Catalog> {
        Arc::new(
            tally_views::sql::apply(&Catalog::new(), schema)
                .unwrap()
                .catalog,
        )
    }

    const V1: &str =
        "CREATE STREAM clicks (ts TIMESTAMP NOT NULL, page TEXT) WITH (event_time = 'ts');";
    const V2: &str =
        "CREATE STREAM clicks (ts TIMESTAMP NOT NULL, page BIGINT) WITH (event_time = 'ts');";

    fn records() -> Vec<Record> {
        vec![
            Record::Json(r#"{"ts": "2026-12-01T00:00:00Z", "page": "7"}"#.into()),
            Record::rejected(Reason::InvalidMessage, "not an event", "{}".into()),
            Record::Json(r#"{"ts": "2026-12-01T00:00:01Z", "page": 7}"#.into()),
        ]
    }

    fn now() -> tally_views::Timestamp {
        tally_views::Timestamp::parse("2026-12-02T00:00:00Z").unwrap()
    }

    #[test]
    fn early_rows_are_what_the_worker_would_decode_and_only_for_the_same_definition() {
        let v1 = catalog(V1);
        let max_future = Interval::parse("1 day").unwrap();
        let early =
            Decoded::new(v1.clone(), "clicks", &records(), now(), max_future, true).unwrap();
        // Decoded by the worker for the same definition: the same outcomes, record by record.
        let stream = v1.stream("clicks").unwrap();
        let decoder = RowDecoder::new(stream, now(), max_future);
        let by_worker: Vec<_> = records()
            .iter()
            .map(|r| match r {
                Record::Json(text) => decoder.json(text),
                Record::Rejected { rejection, .. } => Err(rejection.clone()),
            })
            .collect();
        assert_eq!(early.rows, by_worker);
        assert!(early.rows[0].is_ok() && early.rows[1].is_err());
        // The stream redefined before the worker took them: they are not used.
        let v2 = catalog(V2);
        let early = Decoded::new(v1, "clicks", &records(), now(), max_future, true).unwrap();
        assert!(early.rows_for(v2.stream("clicks").unwrap()).is_none());
        let early =
            Decoded::new(v2.clone(), "clicks", &records(), now(), max_future, true).unwrap();
        assert!(early.rows_for(v2.stream("clicks").unwrap()).is_some());
        // An unknown stream is left to the worker.
        assert!(Decoded::new(v2, "views", &records(), now(), max_future, true).is_none());
    }

    /// The default tenant of an in-memory Tally with `schema`, at a fixed clock, and worker
    /// settings reporting to `metrics`.
    fn memory_tenant(schema: &str, metrics: Arc<Metrics>) -> (TenantRuntime, WorkerConfig) {
        tenant_at(&crate::app::Location::Memory, schema, metrics)
    }

    /// [`memory_tenant`] of a Tally at `location`.
    fn tenant_at(
        location: &crate::app::Location,
        schema: &str,
        metrics: Arc<Metrics>,
    ) -> (TenantRuntime, WorkerConfig) {
        use crate::app::{Clock, Config, DEFAULT_TENANT, Tally};
        let config = || Config {
            clock: Clock::fixed(now()),
            ..Config::default()
        };
        let mut tally = Tally::open(location, config()).unwrap();
        tally.apply_schema(schema).unwrap();
        let runtime = tally.open_tenant(DEFAULT_TENANT).unwrap();
        let settings = WorkerConfig {
            flush_interval: Duration::from_secs(1),
            rejection_retention: Interval::parse("1 day").unwrap(),
            config: config(),
            metrics,
            alert_history_retention: Interval::parse("1 day").unwrap(),
            dispatch: None,
        };
        (runtime, settings)
    }

    /// An ingest request for `stream` of `records`, and where its answer arrives.
    fn submission(
        stream: &str,
        records: Vec<Record>,
    ) -> (Submission, oneshot::Receiver<Result<Outcome>>) {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            stream: stream.into(),
            route: "streams",
            records: Arc::new(records),
            decoded: None,
            reply,
        };
        (submission, answer)
    }

    const SESSION_SCHEMA: &str = "
        CREATE STREAM s (id TEXT, k TEXT, n BIGINT, ts TIMESTAMP NOT NULL)
            WITH (event_time = 'ts', dedupe_key = 'id');
        CREATE MATERIALIZED VIEW per_k AS
        SELECT time_bucket('1 hour', ts) AS hour, k, count(*) AS c, sum(n) AS total
        FROM s GROUP BY 1, 2;";

    /// Events `from..to` of stream `s`: ids (after `prefix`) repeat every 700 (duplicates), 50
    /// keys over three hours; the first record is one the stream rejects.
    fn session_records(prefix: &str, from: i64, to: i64) -> Vec<Record> {
        let mut records = vec![Record::Json(r#"{"id": "bad", "n": 1}"#.into())];
        records.extend((from..to).map(|i| {
            Record::Json(format!(
                r#"{{"id": "{prefix}{}", "k": "k{}", "n": {i}, "ts": "2026-12-01T{:02}:{:02}:00Z"}}"#,
                i % 700,
                i % 50,
                (i / 60) % 3,
                i % 60
            ))
        }));
        records
    }

    /// The view's rows, sorted.
    fn per_k(runtime: &TenantRuntime) -> Vec<Vec<Value>> {
        let mut rows = runtime
            .query("per_k", &QueryRequest::default())
            .unwrap()
            .rows;
        rows.sort();
        rows
    }

    /// An ingest session (each group committed while the previous group's events are applied
    /// on a second thread, the flushes that asks for written between groups) answers each
    /// request as committing and applying one group after another does, and leaves the same
    /// views; it ends at the first other job and hands it back, every event applied by then.
    #[test]
    fn an_ingest_session_matches_ingesting_group_by_group() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let at = |name: &str| crate::app::Location::Directory(dir.path().join(name));
        let (mut piped, settings) = tenant_at(&at("piped"), SESSION_SCHEMA, metrics.clone());
        let (mut plain, _) = tenant_at(&at("plain"), SESSION_SCHEMA, metrics);
        assert!(piped.pipelines_commits());
        // Flushes of at least 20 groups: the session writes some (between its groups or at its
        // end, as the applier gets to them).
        piped.flush_groups = 20;
        plain.flush_groups = 20;
        let parts = [(0, 600), (500, 1_400), (1_400, 1_500)];
        assert!(parts[0].1 - parts[0].0 >= OVERLAP_ROWS as i64);

        let mut piped_answers = Vec::new();
        let (first, answer) = submission("s", session_records("e", parts[0].0, parts[0].1));
        piped_answers.push(answer);
        let (jobs, queue) = std::sync::mpsc::sync_channel(8);
        for &(from, to) in &parts[1..] {
            let (next, answer) = submission("s", session_records("e", from, to));
            piped_answers.push(answer);
            jobs.send(Job::Ingest(next)).unwrap();
        }
        let (reply, _rejections) = oneshot::channel();
        jobs.send(Job::Rejections {
            after: 0,
            limit: 1,
            reply,
        })
        .unwrap();
        let until = Instant::now() + Duration::from_secs(600);
        let (ok, carried) = ingest_session(&mut piped, vec![first], &queue, &settings, until)
            .unwrap_or_else(|_| panic!("no thread to apply on"));
        assert!(ok);
        assert!(matches!(carried, Some(Job::Rejections { .. })));
        assert!(!piped.is_poisoned());
        assert!(piped.positions()[0] > 0, "the session wrote no flush");

        // The same groups (the first request, then the two queued ones together), one by one.
        let mut plain_answers = Vec::new();
        let mut groups = vec![Vec::new(), Vec::new()];
        for (i, &(from, to)) in parts.iter().enumerate() {
            let (next, answer) = submission("s", session_records("e", from, to));
            plain_answers.push(answer);
            groups[i.min(1)].push(next);
        }
        for group in groups {
            assert!(ingest(&mut plain, group, &settings));
        }
        for (mut p, mut q) in piped_answers.into_iter().zip(plain_answers) {
            let (p, q) = (
                p.try_recv().unwrap().unwrap(),
                q.try_recv().unwrap().unwrap(),
            );
            assert_eq!(p, q);
            assert_eq!(p.rejected.len(), 1);
        }
        assert_eq!(per_k(&piped), per_k(&plain));
        let counted: i64 = per_k(&piped)
            .iter()
            .map(|r| match r[2] {
                Value::Int(c) => c,
                ref other => panic!("count {other:?}"),
            })
            .sum();
        // 600 new ids, then 100 more (e600..e699); the rest repeat earlier ones.
        assert_eq!(counted, 700);
        piped.flush().unwrap();
        plain.flush().unwrap();
        assert_eq!(piped.positions(), plain.positions());
        assert_eq!(per_k(&piped), per_k(&plain));
    }

    /// A session on SQLite answers its groups only after the WAL is synced: when the sync fails
    /// (another file took the WAL's place), the requests get the error and the runtime is
    /// poisoned (the worker ends and the tenant is reopened).
    #[test]
    fn a_session_answers_after_the_sync_and_a_failed_sync_fails_its_requests() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let location = crate::app::Location::Directory(dir.path().join("t"));
        let (mut runtime, settings) = tenant_at(&location, SESSION_SCHEMA, metrics);
        let until = Instant::now() + Duration::from_secs(600);
        let (_, jobs) = std::sync::mpsc::sync_channel::<Job>(1);
        let (first, mut answer) = submission("s", session_records("e", 0, 300));
        let (ok, carried) = ingest_session(&mut runtime, vec![first], &jobs, &settings, until)
            .unwrap_or_else(|_| panic!("no thread to apply on"));
        assert!(ok && carried.is_none() && !runtime.is_poisoned());
        assert_eq!(answer.try_recv().unwrap().unwrap().accepted, 300);

        let tenants = dir.path().join("t").join("tenants");
        let wal = (std::fs::read_dir(&tenants).unwrap())
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".db-wal"))
            .expect("the tenant's WAL");
        std::fs::rename(&wal, tenants.join("moved")).unwrap();
        std::fs::write(&wal, b"").unwrap();
        let (next, mut answer) = submission("s", session_records("f", 0, 300));
        let (ok, _) = ingest_session(&mut runtime, vec![next], &jobs, &settings, until)
            .unwrap_or_else(|_| panic!("no thread to apply on"));
        assert!(ok, "the commit itself held");
        assert!(runtime.is_poisoned());
        let e = answer.try_recv().unwrap().unwrap_err().to_string();
        assert!(
            e.contains("could not be synced") && e.contains("replaced"),
            "{e}"
        );
    }

    /// A session starts for a group of 256 records or more on a SQLite tenant without alerts,
    /// with nothing else queued and the next flush not due; not otherwise.
    #[test]
    fn what_starts_an_ingest_session() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let at = |name: &str| crate::app::Location::Directory(dir.path().join(name));
        let (mut sqlite, _) = tenant_at(&at("sqlite"), SESSION_SCHEMA, metrics.clone());
        let (mut memory, _) = memory_tenant(SESSION_SCHEMA, metrics.clone());
        let (mut alerted, _) = tenant_at(&at("alerted"), SESSION_SCHEMA, metrics);
        let alert = serde_json::json!({
            "name": "any", "view": "per_k", "value": "c", "grain": "1 hour",
            "condition": "above", "threshold": 0,
            "webhook": {"url": "http://127.0.0.1:9/", "secret": "s3cret"}
        });
        alerted.create_alert(&alert, now()).unwrap();
        let group = |n: usize| {
            let records = session_records("e", 0, n as i64 - 1);
            assert_eq!(records.len(), n);
            vec![submission("s", records).0]
        };
        let starts = |runtime: &mut TenantRuntime, n: usize, other_waiting: bool, until| {
            starts_session(runtime, &group(n), other_waiting, until)
        };
        let later = Instant::now() + Duration::from_secs(600);
        assert!(starts(&mut sqlite, OVERLAP_ROWS, false, later));
        assert!(!starts(&mut sqlite, OVERLAP_ROWS - 1, false, later));
        assert!(!starts(&mut sqlite, OVERLAP_ROWS, true, later));
        let due = Instant::now();
        assert!(!starts(&mut sqlite, OVERLAP_ROWS, false, due));
        assert!(!starts(&mut memory, OVERLAP_ROWS, false, later));
        assert!(!starts(&mut alerted, OVERLAP_ROWS, false, later));
    }

    /// Through the worker's loop: a query sent right after an ingest request's answer (while an
    /// ingest session may still be applying) sees that request's events.
    #[test]
    fn a_query_after_an_answer_sees_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let (runtime, settings) = tenant_at(
            &crate::app::Location::Directory(dir.path().to_owned()),
            SESSION_SCHEMA,
            Arc::new(Metrics::new()),
        );
        let (jobs, queue) = std::sync::mpsc::sync_channel(8);
        let worker = std::thread::spawn(move || run(runtime, queue, settings));
        let mut seen = 0i64;
        for round in 0..5 {
            // New ids each round: 300 events, 6 of each of the 50 keys.
            let ids = format!("r{round}-");
            let (request, answer) = submission("s", session_records(&ids, 0, 300));
            jobs.send(Job::Ingest(request)).unwrap();
            let outcome = answer.blocking_recv().unwrap().unwrap();
            assert_eq!(outcome.accepted, 300, "{outcome:?}");
            seen += 300;
            let (reply, rows) = oneshot::channel();
            jobs.send(Job::Query {
                view: "per_k".into(),
                request: QueryRequest::default(),
                reply,
            })
            .unwrap();
            let (rows, _) = rows.blocking_recv().unwrap().unwrap();
            let counted: i64 = rows
                .rows
                .iter()
                .map(|r| match r[2] {
                    Value::Int(c) => c,
                    ref other => panic!("count {other:?}"),
                })
                .sum();
            assert_eq!(counted, seen, "round {round}");
        }
        drop(jobs);
        worker.join().unwrap();
    }

    /// A group whose first stream's apply panicked after its commit (the runtime poisoned):
    /// that stream's requests keep their answers and their rejected events are logged; the
    /// later streams' requests are answered "retry" (503), not a failed store (500), nothing
    /// of them is committed, the store is not reported failed, and nothing more is applied.
    #[test]
    fn a_poisoned_group_answers_the_rest_retry() {
        let metrics = Arc::new(Metrics::new());
        let (mut runtime, settings) = memory_tenant(
            "CREATE STREAM a (ts TIMESTAMP NOT NULL, page TEXT) WITH (event_time = 'ts');
             CREATE STREAM b (ts TIMESTAMP NOT NULL, page TEXT) WITH (event_time = 'ts');
             CREATE MATERIALIZED VIEW pages AS SELECT page, count(*) AS n FROM a GROUP BY page;",
            metrics.clone(),
        );
        runtime.poison_after_commit = true;
        let event = r#"{"ts": "2026-12-01T00:00:00Z", "page": "x"}"#;
        let submit = |stream: &str| {
            let (reply, answer) = oneshot::channel();
            let records = vec![
                Record::Json(event.into()),
                Record::Json(r#"{"page": "no time"}"#.into()),
            ];
            let submission = Submission {
                stream: stream.into(),
                route: "streams",
                records: Arc::new(records),
                decoded: None,
                reply,
            };
            (submission, answer)
        };
        let (first, mut first_answer) = submit("a");
        let (second, mut second_answer) = submit("b");
        let (third, mut third_answer) = submit("a");
        assert!(ingest(&mut runtime, vec![first, second, third], &settings));
        for answer in [&mut first_answer, &mut third_answer] {
            let outcome = answer.try_recv().unwrap().unwrap();
            assert_eq!((outcome.accepted, outcome.rejected.len()), (1, 1));
        }
        let refused = second_answer.try_recv().unwrap().unwrap_err();
        assert!(
            matches!(&refused, Error::Unavailable(m) if m.contains("retry")),
            "{refused:?}"
        );
        assert_eq!(
            crate::server::error::ApiError::from(refused).status,
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(metrics.store_failure(), None);
        assert!(runtime.is_poisoned());
        // Nothing more was applied: reopening replays the committed events.
        assert!(!runtime.has_pending());
        // Stream a's two rejections are in the log; b's events were neither committed nor logged.
        let logged = runtime.rejections(0, 10).unwrap();
        assert_eq!(logged.len(), 2);
        assert!(
            logged.iter().all(|r| r.rejected.stream == "a"),
            "{logged:?}"
        );
        let stored = |s: &str| {
            let stream = runtime.catalog().stream(s).unwrap();
            runtime.store().last_seq(stream).unwrap()
        };
        assert_eq!((stored("a"), stored("b")), (2, 0));
    }

    /// The worker drops its share of a submission's records before it answers, so that the
    /// request, which holds the other, frees them: the answer's waker, which the answer's
    /// sending calls, sees the request's share as the only one.
    #[test]
    fn the_worker_lets_go_of_the_records_before_it_answers() {
        use std::sync::{Mutex, Weak};
        use std::task::{Context, Poll, Wake, Waker};

        /// Counts the records' shares when the answer wakes it.
        struct Probe {
            records: Weak<Vec<Record>>,
            shares: Mutex<Option<usize>>,
        }
        impl Wake for Probe {
            fn wake(self: Arc<Self>) {
                *self.shares.lock().unwrap() = Some(self.records.strong_count());
            }
        }

        let (mut runtime, settings) = memory_tenant(
            "CREATE STREAM a (ts TIMESTAMP NOT NULL, page TEXT) WITH (event_time = 'ts');",
            Arc::new(Metrics::new()),
        );
        let records = Arc::new(vec![Record::Json(
            r#"{"ts": "2026-12-01T00:00:00Z", "page": "x"}"#.into(),
        )]);
        let (reply, mut answer) = oneshot::channel();
        let probe = Arc::new(Probe {
            records: Arc::downgrade(&records),
            shares: Mutex::new(None),
        });
        let waker = Waker::from(probe.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(std::pin::Pin::new(&mut answer).poll(&mut cx).is_pending());
        let submission = Submission {
            stream: "a".into(),
            route: "streams",
            records: records.clone(),
            decoded: None,
            reply,
        };
        assert!(ingest(&mut runtime, vec![submission], &settings));
        assert_eq!(*probe.shares.lock().unwrap(), Some(1));
        let Poll::Ready(outcome) = std::pin::Pin::new(&mut answer).poll(&mut cx) else {
            panic!("no answer");
        };
        assert_eq!(outcome.unwrap().unwrap().accepted, 1);
    }

    /// Early decodes hash the keys of their decoded rows, in order, when asked to and the
    /// stream has a dedupe key.
    #[test]
    fn early_decodes_hash_the_keys_of_their_rows() {
        let keyed = catalog(
            "CREATE STREAM clicks (id TEXT, ts TIMESTAMP NOT NULL) WITH (event_time = 'ts', dedupe_key = 'id');",
        );
        let max_future = Interval::parse("1 day").unwrap();
        let keyed_records = vec![
            Record::Json(r#"{"id": "a", "ts": "2026-12-01T00:00:00Z"}"#.into()),
            Record::Json(r#"{"id": "b"}"#.into()),
            Record::Json(r#"{"ts": "2026-12-01T00:00:01Z"}"#.into()),
            Record::Json(r#"{"id": "c", "ts": "2026-12-01T00:00:02Z"}"#.into()),
        ];
        let early = Decoded::new(
            keyed.clone(),
            "clicks",
            &keyed_records,
            now(),
            max_future,
            true,
        )
        .unwrap();
        let rows: Vec<Vec<Value>> = early.rows.iter().filter_map(|r| r.clone().ok()).collect();
        assert_eq!(rows.len(), 3);
        let stream = keyed.stream("clicks").unwrap();
        let hashes = early.hashes.expect("hashed");
        assert_eq!(hashes, tally_store::KeyHashes::new(stream, &rows));
        // In order: the same rows in another order are described otherwise.
        assert_ne!(
            hashes,
            tally_store::KeyHashes::of(stream, rows.iter().rev())
        );
        // Not asked (PostgreSQL), or no key to hash.
        let early =
            Decoded::new(keyed, "clicks", &keyed_records, now(), max_future, false).unwrap();
        assert!(early.hashes.is_none());
        let early =
            Decoded::new(catalog(V1), "clicks", &records(), now(), max_future, true).unwrap();
        assert!(early.hashes.is_none());
    }
}
