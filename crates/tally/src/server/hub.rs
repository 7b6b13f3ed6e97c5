//! The server's shared state: the catalog-level [`Tally`], the tenant workers, key lookup,
//! rate limits and metrics.
//!
//! Tenant workers are started on a tenant's first request and stopped (after a final flush) on
//! shutdown, around schema changes, when idle for the tenant idle time, and, least recently
//! used first, when the number of open tenants reaches its limit: an idle tenant holds no
//! thread, file or database connection. The map of workers is behind an async lock that schema
//! changes hold for their whole run, so no request reaches a tenant while its tables change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tally_store::{KeyKind, KeyRecord};
use tally_views::{Catalog, QueryRequest, ResultSet};
use tokio::sync::oneshot;

use crate::app::{ChangeReport, Tally, hash_key};
use crate::error::Error;
use crate::server::error::ApiError;
use crate::server::metrics::Metrics;
use crate::server::worker::{self, Decoded, Job, Outcome, Record, Submission, WorkerConfig};

/// How long a key lookup is remembered; a key revoked elsewhere stops working within this.
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// The most key lookups remembered: past it, expired ones go, then unknown keys.
const KEY_CACHE_MAX: usize = 10_000;
/// Failed authentications allowed per client address: a burst, then this many per second.
const AUTH_FAILURE_BURST: f64 = 100.0;
const AUTH_FAILURES_PER_SECOND: f64 = 10.0;
/// The most client addresses whose failures are tracked; past it, those back at a full
/// burst are forgotten.
const AUTH_FAILURE_ADDRESSES: usize = 100_000;

/// How often the scheduler ticks the tenants with alerts.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// How often the scheduler reads the list of tenants with alerts again.
const SCHEDULED_REFRESH: Duration = Duration::from_secs(10);
/// How often every tenant's retention and trimming run.
const MAINTAIN_EVERY: Duration = Duration::from_secs(600);
/// Webhook attempts in flight at once.
const SENDS_AT_ONCE: usize = 64;

/// How long a query-time SQL query waits for a free slot before answering 503.
#[cfg(feature = "sql")]
const SQL_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Settings of `tally serve`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `TALLY_ADMIN_TOKEN`; without it the admin routes answer 403.
    pub admin_token: Option<String>,
    /// How often unflushed view changes are written to the view tables.
    pub flush_interval: Duration,
    /// Requests waiting per tenant before ingest answers 503.
    pub queue_depth: usize,
    /// Requests per second per key, and the burst above it.
    pub rate_limit: f64,
    pub rate_burst: f64,
    /// Time allowed for a client to send the request headers.
    pub header_timeout: Duration,
    /// Time allowed for a client to send the whole body.
    pub body_timeout: Duration,
    /// Time allowed to answer a request.
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Connections open at once; at the limit new ones wait in the listen backlog.
    pub max_connections: usize,
    /// A connection that moves no byte for this long is closed (after its request in flight).
    pub idle_timeout: Duration,
    /// A tenant no request reached for this long releases its worker, files and connection.
    pub tenant_idle: Duration,
    /// Tenants open at once; past it the least recently used one is closed first.
    pub max_open_tenants: usize,
    /// How long the rejection log keeps a rejected event.
    pub rejection_retention: tally_views::Interval,
    /// Time, memory and answer size of a query-time SQL query (`POST /v1/sql`).
    #[cfg(feature = "sql")]
    pub sql_limits: tally_sql::Limits,
    /// Query-time SQL queries running at once; others wait up to `SQL_QUEUE_WAIT` for their
    /// turn, then answer 503.
    pub sql_concurrency: usize,
    /// Whether webhooks may reach loopback, private, link-local and metadata addresses.
    pub allow_private_webhooks: bool,
    /// How long alert history is kept (`--alert-history-retention`).
    pub alert_history_retention: tally_views::Interval,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            admin_token: None,
            flush_interval: Duration::from_secs(1),
            queue_depth: 256,
            rate_limit: 1000.0,
            rate_burst: 2000.0,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
            tenant_idle: Duration::from_secs(300),
            max_open_tenants: 1_000,
            rejection_retention: tally_views::Interval::Days(7),
            #[cfg(feature = "sql")]
            sql_limits: tally_sql::Limits::default(),
            sql_concurrency: 1,
            allow_private_webhooks: false,
            alert_history_retention: tally_views::Interval::Days(90),
        }
    }
}

/// Who a request is: a tenant's key of a kind.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant: String,
    pub kind: KeyKind,
    hash: [u8; 32],
}

/// A running tenant worker: its queue and when a request last reached it.
struct Worker {
    sender: SyncSender<Job>,
    used: Instant,
}

/// A key lookup (`None`: no such key) and when it was made.
type CachedKey = (Option<KeyRecord>, Instant);

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Hub {
    tally: Mutex<Tally>,
    /// A handle of its own on the catalog for key lookups, so that they never wait for the
    /// catalog lock that tenant creation and schema changes hold; opened (off the async
    /// threads) by the first lookup (`None`: use the `Tally`'s).
    key_store: std::sync::OnceLock<Option<tally_store::Store>>,
    catalog: RwLock<Arc<Catalog>>,
    workers: tokio::sync::Mutex<HashMap<String, Worker>>,
    keys: Mutex<HashMap<[u8; 32], CachedKey>>,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
    /// Failed authentications per client address.
    failures: Mutex<HashMap<IpAddr, Bucket>>,
    admin_hash: Option<[u8; 32]>,
    pub metrics: Arc<Metrics>,
    pub settings: ServerConfig,
    worker: WorkerConfig,
    /// Query-time SQL queries running at once. DataFusion runs on the async threads; on two
    /// cores, unbounded heavy queries would starve every tenant's ingest.
    #[cfg(feature = "sql")]
    sql_slots: tokio::sync::Semaphore,
    /// Webhook deliveries handed out by the workers, until `start_background` takes them.
    deliveries: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::alerts::Dispatch>>>,
    /// Set when a tenant gained its first alert or lost its last: the scheduler reads its list
    /// of tenants again at its next tick.
    scheduled_changed: std::sync::atomic::AtomicBool,
}

fn digest(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&hash_key(text));
    out
}

impl Hub {
    pub fn new(tally: Tally, settings: ServerConfig) -> Hub {
        let metrics = Arc::new(Metrics::new());
        let (dispatch, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let worker = WorkerConfig {
            flush_interval: settings.flush_interval,
            rejection_retention: settings.rejection_retention,
            config: tally.config().clone(),
            metrics: metrics.clone(),
            alert_history_retention: settings.alert_history_retention,
            dispatch: Some(dispatch),
        };
        Hub {
            deliveries: Mutex::new(Some(deliveries)),
            scheduled_changed: std::sync::atomic::AtomicBool::new(false),
            key_store: std::sync::OnceLock::new(),
            catalog: RwLock::new(Arc::new(tally.catalog().clone())),
            tally: Mutex::new(tally),
            workers: tokio::sync::Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            admin_hash: settings
                .admin_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(digest),
            metrics,
            #[cfg(feature = "sql")]
            sql_slots: tokio::sync::Semaphore::new(settings.sql_concurrency.max(1)),
            settings,
            worker,
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the catalog lock: while the guard lives, no tenant worker can start, no schema can
    /// change and uncached keys cannot be looked up. For maintenance, and for tests that need a
    /// busy server.
    pub fn catalog_lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally()
    }

    /// The current schema.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn admin_enabled(&self) -> bool {
        self.admin_hash.is_some()
    }

    /// Checks the admin token in constant time.
    pub fn is_admin(&self, token: &str) -> bool {
        match &self.admin_hash {
            Some(expected) => bool::from(digest(token).ct_eq(expected)),
            None => false,
        }
    }

    /// Looks a key up by its hash (cached for a few seconds).
    pub async fn principal(self: &Arc<Self>, key: &str) -> Result<Option<Principal>, ApiError> {
        // Keys are found by their SHA-256: no secret is compared byte by byte, so the lookup's
        // timing tells nothing about a stored key.
        let hash = digest(key);
        let cached = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(record, _)| record.clone());
        let record = match cached {
            Some(record) => record,
            None => {
                let hub = self.clone();
                let record = tokio::task::spawn_blocking(move || {
                    let own = hub.key_store.get_or_init(|| {
                        let reopened = hub.tally().store().reopen();
                        reopened
                            .inspect_err(|e| {
                                tracing::warn!(error = %e, "key lookups share the catalog's connection");
                            })
                            .ok()
                    });
                    let find = || match own {
                        Some(store) => store.find_key(&hash),
                        None => hub.tally().store().find_key(&hash),
                    };
                    // A lookup is a read: after a dropped connection (which the failed call
                    // discovers), the second call connects again.
                    match find() {
                        Err(e) if e.is_transient() => find(),
                        found => found,
                    }
                })
                .await
                .map_err(|_| ApiError::internal())?
                .map_err(|e| ApiError::from(Error::from(e)))?;
                let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                if keys.len() >= KEY_CACHE_MAX {
                    keys.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
                }
                if keys.len() >= KEY_CACHE_MAX {
                    keys.retain(|_, (record, _)| record.is_some());
                }
                if keys.len() >= KEY_CACHE_MAX {
                    keys.clear();
                }
                keys.insert(hash, (record.clone(), Instant::now()));
                record
            }
        };
        Ok(record.filter(|r| !r.revoked).map(|r| Principal {
            tenant: r.tenant,
            kind: r.kind,
            hash,
        }))
    }

    /// The time on the server's clock.
    pub fn now(&self) -> tally_views::Timestamp {
        self.worker.config.clock.now()
    }

    /// Whether a client address may try to authenticate, or how many seconds until it may:
    /// each address has a budget of failed authentications that refills over time.
    pub fn may_authenticate(&self, addr: IpAddr) -> Result<(), u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = failures.get_mut(&addr) else {
            return Ok(());
        };
        refill(bucket, AUTH_FAILURES_PER_SECOND, AUTH_FAILURE_BURST);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / AUTH_FAILURES_PER_SECOND)
                .ceil()
                .max(1.0) as u64)
        }
    }

    /// Counts a failed authentication from a client address.
    pub fn failed_authentication(&self, addr: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= AUTH_FAILURE_ADDRESSES && !failures.contains_key(&addr) {
            failures.retain(|_, b| {
                refill(b, AUTH_FAILURES_PER_SECOND, AUTH_FAILURE_BURST);
                b.tokens < AUTH_FAILURE_BURST
            });
            if failures.len() >= AUTH_FAILURE_ADDRESSES {
                failures.clear();
            }
        }
        let bucket = failures.entry(addr).or_insert(Bucket {
            tokens: AUTH_FAILURE_BURST,
            at: Instant::now(),
        });
        refill(bucket, AUTH_FAILURES_PER_SECOND, AUTH_FAILURE_BURST);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Takes a token from the key's bucket, or says how many seconds until one is there.
    pub fn rate_limit(&self, principal: &Principal) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let rate = self.settings.rate_limit;
        let burst = self.settings.rate_burst.max(1.0);
        let bucket = buckets.entry(principal.hash).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        refill(bucket, rate, burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = if rate > 0.0 {
                ((1.0 - bucket.tokens) / rate).ceil()
            } else {
                60.0
            };
            Err((wait as u64).max(1))
        }
    }

    /// Hands a job to the tenant's worker, starting it when needed.
    async fn submit(self: &Arc<Self>, tenant: &str, mut job: Job) -> Result<(), ApiError> {
        let mut workers = self.workers.lock().await;
        for _ in 0..2 {
            let sender = match workers.get_mut(tenant) {
                Some(w) => {
                    w.used = Instant::now();
                    w.sender.clone()
                }
                None => {
                    if workers.len() >= self.settings.max_open_tenants.max(1) {
                        // Make room: the least recently used tenant stops (after a flush).
                        let oldest = workers
                            .iter()
                            .min_by_key(|(_, w)| w.used)
                            .map(|(name, _)| name.clone());
                        if let Some(name) = oldest
                            && let Some(w) = workers.remove(&name)
                        {
                            stop_worker(name, w).await;
                        }
                    }
                    let s = self.spawn(tenant);
                    workers.insert(
                        tenant.to_owned(),
                        Worker {
                            sender: s.clone(),
                            used: Instant::now(),
                        },
                    );
                    s
                }
            };
            match sender.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => {
                    self.metrics.count_refused("overloaded");
                    return Err(ApiError::overloaded(format!(
                        "tenant {tenant} has {} requests waiting; retry after a second",
                        self.settings.queue_depth
                    )));
                }
                Err(TrySendError::Disconnected(back)) => {
                    // The worker ended (a store error); start a new one, which replays.
                    workers.remove(tenant);
                    job = back;
                }
            }
        }
        // Twice a worker ended before it took the job: opening the tenant fails right now (the
        // database is unreachable, say); the error went to the log.
        Err(ApiError::overloaded(format!(
            "tenant {tenant} cannot be opened right now; retry shortly"
        )))
    }

    /// Stops (after a final flush) the workers of tenants that no request reached for `idle`:
    /// their thread, files and database connection are released until the next request.
    pub async fn release_idle(self: &Arc<Self>, idle: Duration) {
        let idle_tenants: Vec<String> = {
            let workers = self.workers.lock().await;
            workers
                .iter()
                .filter(|(_, w)| w.used.elapsed() >= idle)
                .map(|(name, _)| name.clone())
                .collect()
        };
        // One at a time, taking the lock for each: requests to other tenants wait for at most
        // one closing (an idle tenant has nothing to flush), never for all of them.
        for name in idle_tenants {
            let mut workers = self.workers.lock().await;
            let still_idle = workers.get(&name).is_some_and(|w| w.used.elapsed() >= idle);
            if still_idle && let Some(w) = workers.remove(&name) {
                stop_worker(name, w).await;
            }
        }
    }

    /// How many tenants have a running worker.
    pub async fn open_tenants(&self) -> usize {
        self.workers.lock().await.len()
    }

    /// Starts a tenant's worker thread: it opens the tenant (reconcile and replay), then serves.
    fn spawn(self: &Arc<Self>, tenant: &str) -> SyncSender<Job> {
        let (tx, rx) = sync_channel(self.settings.queue_depth);
        let hub = self.clone();
        let name = tenant.to_owned();
        let settings = self.worker.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tenant-{name}"))
            .stack_size(crate::app::THREAD_STACK)
            .spawn(move || {
                let opened = hub.tally().open_tenant(&name);
                match opened {
                    Ok(runtime) => worker::run(runtime, rx, settings),
                    Err(e) => {
                        tracing::error!(tenant = name, error = %e, "cannot open tenant");
                        // Answer what is queued, then end; the next request tries again.
                        // What is queued now; a request sent after the channel closes starts a
                        // new worker, which tries to open the tenant again.
                        let shared = e.shared(&format!("cannot open tenant {name}"));
                        while let Ok(job) = rx.try_recv() {
                            fail(job, &shared);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a tenant worker");
        }
        tx
    }

    /// Hands the tenant's worker a job made around a reply channel, and waits for the answer.
    async fn ask<T>(
        self: &Arc<Self>,
        tenant: &str,
        job: impl FnOnce(oneshot::Sender<crate::Result<T>>) -> Job,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(tenant, job(reply)).await?;
        answer
            .await
            // The worker ended with the job still queued (its store failed): a new one starts
            // with the next request.
            .map_err(|_| ApiError::overloaded(format!("tenant {tenant} is reopening; retry")))?
            .map_err(ApiError::from)
    }

    /// Ingests records into a stream of a tenant and waits for the durable acknowledgement.
    /// `route` names where they came from (`streams`, `segment`) in the rejection log.
    pub async fn ingest(
        self: &Arc<Self>,
        tenant: &str,
        stream: &str,
        route: &'static str,
        records: Vec<Record>,
    ) -> Result<Outcome, ApiError> {
        // A large request is decoded here, on the request's thread, so that the tenant's worker
        // does not: it commits and applies one group while the next request decodes. Small ones
        // are left to the worker, where a group of them shares one decoder (its column names,
        // lists of checked columns and date cache are built once a group, not once a request).
        // Decoding each on its own cost single-event ingest a fifth of its rate when that was
        // measured, while the decoder still interned text; not measured since.
        let records = Arc::new(records);
        let decoded = if records.len() >= worker::EARLY_DECODE_RECORDS {
            let max_future = self.worker.config.max_future;
            // SQLite indexes keys by hashes computed in the process, PostgreSQL filters them
            // by those hashes (for most key types) before it looks them up.
            let catalog = self.catalog();
            let hash_keys = catalog
                .stream(stream)
                .is_some_and(|def| self.tally().hashes_keys(def));
            Decoded::new(catalog, stream, &records, self.now(), max_future, hash_keys)
        } else {
            None
        };
        self.ask(tenant, |reply| {
            Job::Ingest(Submission {
                stream: stream.to_owned(),
                route,
                records: records.clone(),
                decoded,
                reply,
            })
        })
        .await
        // `records` is freed here, by the request's task: the worker dropped its share before
        // it answered.
    }

    /// A page of the tenant's rejection log: entries with ids above `after`.
    pub async fn rejections(
        self: &Arc<Self>,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<tally_store::LoggedRejection>, ApiError> {
        self.ask(tenant, |reply| Job::Rejections {
            after,
            limit,
            reply,
        })
        .await
    }

    /// Queries a view of a tenant: stored rows ⊕ what the worker has not flushed yet.
    pub async fn query(
        self: &Arc<Self>,
        tenant: &str,
        view: &str,
        request: QueryRequest,
    ) -> Result<(ResultSet, u64), ApiError> {
        self.ask(tenant, |reply| Job::Query {
            view: view.to_owned(),
            request,
            reply,
        })
        .await
    }

    /// Runs a behavioural analysis of a tenant's `events`.
    pub async fn analyze(
        self: &Arc<Self>,
        tenant: &str,
        kind: &str,
        params: Vec<(String, String)>,
    ) -> Result<ResultSet, ApiError> {
        let now = self.now();
        self.ask(tenant, |reply| Job::Analyze {
            kind: kind.to_owned(),
            params,
            now,
            reply,
        })
        .await
    }

    /// Upserts rows of a tenant's table.
    pub async fn upsert_rows(
        self: &Arc<Self>,
        tenant: &str,
        table: &str,
        records: Vec<String>,
    ) -> Result<crate::tables::Upserted, ApiError> {
        self.ask(tenant, |reply| Job::UpsertRows {
            table: table.to_owned(),
            records,
            reply,
        })
        .await
    }

    /// Deletes a row of a tenant's table by key; whether it existed.
    pub async fn delete_row(
        self: &Arc<Self>,
        tenant: &str,
        table: &str,
        key: &str,
    ) -> Result<bool, ApiError> {
        self.ask(tenant, |reply| Job::DeleteRow {
            table: table.to_owned(),
            key: key.to_owned(),
            reply,
        })
        .await
    }

    #[cfg(feature = "sql")]
    /// Runs a read-only SQL query for a tenant: the worker gathers the relations it names (views
    /// with every acknowledged event), and the query runs here, off the worker.
    pub async fn sql(
        self: &Arc<Self>,
        tenant: &str,
        sql: &str,
        params: std::collections::BTreeMap<String, tally_sql::ParamValue>,
    ) -> Result<ResultSet, ApiError> {
        let prepared = crate::sql::prepare_in(&self.catalog(), sql)?;
        let _slot = tokio::time::timeout(SQL_QUEUE_WAIT, self.sql_slots.acquire())
            .await
            .map_err(|_| {
                self.metrics.count_refused("sql_busy");
                ApiError::overloaded(format!(
                    "{} SQL queries are running; retry after a second",
                    self.settings.sql_concurrency.max(1)
                ))
            })?
            .map_err(|_| ApiError::internal())?;
        let limits = self.settings.sql_limits;
        let requests = prepared.relations.clone();
        let (relations, time_zone) = self
            .ask(tenant, |reply| Job::Relations {
                requests,
                limits,
                reply,
            })
            .await?;
        let context = crate::sql::context(&time_zone, self.now(), limits);
        Ok(tally_sql::execute(prepared, relations, &params, &context)
            .await
            .map_err(Error::Sql)?)
    }

    /// Flushes and stops every worker (blocking; call off the async threads).
    fn stop_workers(&self, workers: &mut HashMap<String, Worker>) {
        let mut waiting = Vec::new();
        for (tenant, Worker { sender, .. }) in workers.drain() {
            let (reply, answer) = oneshot::channel();
            if sender.send(Job::Stop { reply }).is_ok() {
                waiting.push((tenant, answer));
            }
        }
        for (tenant, answer) in waiting {
            match answer.blocking_recv() {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => tracing::error!(tenant, error = %e, "final flush failed"),
            }
        }
    }

    /// Flushes every tenant and stops the workers: the end of a graceful shutdown.
    pub async fn shutdown(self: &Arc<Self>) {
        let hub = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut workers = hub.workers.blocking_lock();
            hub.stop_workers(&mut workers);
        })
        .await;
    }

    /// Applies schema text: workers are stopped (flushed) first and restart on demand.
    pub async fn apply_schema(
        self: &Arc<Self>,
        sql: String,
    ) -> Result<Vec<ChangeReport>, ApiError> {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut workers = hub.workers.blocking_lock();
            hub.stop_workers(&mut workers);
            let mut tally = hub.tally();
            let reports = tally.apply_schema(&sql)?;
            *hub.catalog.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(tally.catalog().clone());
            Ok::<_, Error>(reports)
        })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
    }

    /// Picks up a schema another node applied: the workers stop (flushed) and restart on
    /// demand with it. Returns whether the schema changed.
    pub async fn refresh_catalog(self: &Arc<Self>) -> Result<bool, ApiError> {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || {
            // The common case (nothing changed) takes no lock the workers need.
            if !hub.tally().schema_changed()? {
                return Ok(false);
            }
            let mut workers = hub.workers.blocking_lock();
            let mut tally = hub.tally();
            if !tally.reload_catalog()? {
                return Ok(false);
            }
            *hub.catalog.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(tally.catalog().clone());
            drop(tally);
            hub.stop_workers(&mut workers);
            Ok::<_, Error>(true)
        })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
    }

    /// Whether other nodes may serve the same tenants (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.tally().is_shared()
    }

    /// Runs a blocking catalog operation on the `Tally`.
    pub async fn with_tally<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Tally) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || f(&hub.tally()))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(ApiError::from)
    }

    /// How many key lookups are remembered (bounded by a constant; for tests and metrics).
    pub fn cached_keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Forgets cached key lookups (after a revocation).
    pub fn forget_keys(&self) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Hub {
    /// Runs an operation on a tenant's alerts; creating the first alert or deleting the last
    /// one adds the tenant to the scheduler's list or takes it off.
    pub async fn alerts(
        self: &Arc<Self>,
        tenant: &str,
        op: crate::alerts::AlertOp,
    ) -> Result<serde_json::Value, ApiError> {
        let now = self.now();
        let changes = op.changes_count();
        let created = matches!(op, crate::alerts::AlertOp::Create(_));
        let answer = self
            .ask(tenant, |reply| Job::Alerts { op, now, reply })
            .await?;
        if changes {
            let scheduled = created || answer["alerts_left"].as_u64().unwrap_or(1) > 0;
            let name = tenant.to_owned();
            self.with_tally(move |t| Ok(t.store().set_scheduled(&name, scheduled)?))
                .await?;
            self.scheduled_changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// An operation on a tenant's dashboards.
    pub async fn dashboards(
        self: &Arc<Self>,
        tenant: &str,
        op: crate::dashboards::DashboardOp,
    ) -> Result<serde_json::Value, ApiError> {
        let now = self.now();
        self.ask(tenant, |reply| Job::Dashboards { op, now, reply })
            .await
    }

    /// The data of widget `index` of dashboard `id` and its `ETag`; `None` when it is the
    /// one `if_none_match` names.
    pub async fn widget_data(
        self: &Arc<Self>,
        tenant: &str,
        id: String,
        index: usize,
        range: (Option<String>, Option<String>),
        if_none_match: Option<String>,
    ) -> Result<(String, Option<serde_json::Value>), ApiError> {
        use crate::dashboards::WidgetData;
        let now = self.now();
        let (from, to) = range;
        let data = self
            .ask(tenant, |reply| Job::Widget {
                id,
                index,
                from,
                to,
                if_none_match: if_none_match.clone(),
                now,
                reply,
            })
            .await?;
        match data {
            WidgetData::Done { etag, body } => Ok((etag, body)),
            WidgetData::Sql { kind, sql, range } => {
                self.sql_widget(tenant, kind, &sql, range, if_none_match)
                    .await
            }
        }
    }

    /// A SQL widget's data: the query with `:from`/`:to` bound to the range (and, for a
    /// `number` widget, to the previous range), hashed for its `ETag`.
    #[cfg(feature = "sql")]
    async fn sql_widget(
        self: &Arc<Self>,
        tenant: &str,
        kind: crate::dashboards::WidgetKind,
        sql: &str,
        range: crate::dashboards::Range,
        if_none_match: Option<String>,
    ) -> Result<(String, Option<serde_json::Value>), ApiError> {
        use crate::dashboards::{names_range, sql_params};
        use std::hash::{Hash, Hasher};
        let names = crate::sql::prepare_in(&self.catalog(), sql)?.params;
        let answer = self.sql(tenant, sql, sql_params(&names, range)).await?;
        let body = if kind == crate::dashboards::WidgetKind::Number {
            let previous = match range.previous() {
                Some(p) if names_range(&names) => {
                    Some(self.sql(tenant, sql, sql_params(&names, p)).await?)
                }
                _ => None,
            };
            crate::dashboards::number(&answer, previous.as_ref(), Some("value"))
        } else {
            crate::output::result_json(&answer)
        };
        let mut h = std::hash::DefaultHasher::new();
        body.to_string().hash(&mut h);
        let etag = format!("\"{:016x}\"", h.finish());
        let body = (if_none_match.as_deref() != Some(etag.as_str())).then_some(body);
        Ok((etag, body))
    }

    #[cfg(not(feature = "sql"))]
    async fn sql_widget(
        self: &Arc<Self>,
        _tenant: &str,
        _kind: crate::dashboards::WidgetKind,
        _sql: &str,
        _range: crate::dashboards::Range,
        _if_none_match: Option<String>,
    ) -> Result<(String, Option<serde_json::Value>), ApiError> {
        Err(ApiError::bad_request(
            "this build of Tally has no query-time SQL (the sql feature)",
        ))
    }

    /// A view export's rows and cursor (see [`crate::export`]).
    pub async fn export_view(
        self: &Arc<Self>,
        tenant: &str,
        view: &str,
        request: QueryRequest,
        after: Option<u64>,
    ) -> Result<(ResultSet, u64), ApiError> {
        self.ask(tenant, |reply| Job::ExportView {
            view: view.to_owned(),
            request,
            after,
            reply,
        })
        .await
    }

    /// Erases a person of a tenant (see [`crate::erase`]).
    pub async fn erase(
        self: &Arc<Self>,
        tenant: &str,
        person: String,
    ) -> Result<crate::erase::Erased, ApiError> {
        let now = self.now();
        self.ask(tenant, |reply| Job::Erase { person, now, reply })
            .await
    }

    /// A tenant's erasure log, oldest first.
    pub async fn erasures(
        self: &Arc<Self>,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<crate::erase::ErasureEntry>, ApiError> {
        self.ask(tenant, |reply| Job::Erasures { limit, reply })
            .await
    }

    /// Starts the background work of `tally serve`: the scheduler (each second, a tick for
    /// every tenant with alerts; every `MAINTAIN_EVERY`, maintenance of every tenant) and the
    /// webhook sender; their tasks, to stop at shutdown. Called once; later calls start nothing.
    pub fn start_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(mut deliveries) = self
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Vec::new();
        };
        let hub = self.clone();
        let sender = tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(SENDS_AT_ONCE));
            while let Some(d) = deliveries.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let hub = hub.clone();
                tokio::spawn(async move {
                    let at = hub.now();
                    let (url, secret, id, body) = (
                        d.url.clone(),
                        d.secret.clone(),
                        d.id.clone(),
                        d.body.clone(),
                    );
                    let allow = hub.settings.allow_private_webhooks;
                    // Its own task: should an attempt panic, the delivery is still answered.
                    let outcome = tokio::spawn(async move {
                        crate::alerts::webhook::attempt(
                            &url,
                            &secret,
                            &id,
                            &body,
                            at.0.div_euclid(1_000_000),
                            allow,
                        )
                        .await
                    })
                    .await
                    .unwrap_or_else(|_| crate::alerts::webhook::Outcome {
                        status: None,
                        error: Some("the attempt failed inside Tally; see the log".into()),
                    });
                    drop(permit);
                    hub.metrics.count_webhook(outcome.ok());
                    let attempt = crate::alerts::Attempt {
                        id: d.id,
                        at,
                        outcome,
                    };
                    // A full queue or a closed worker: the delivery stays pending in the store
                    // and the next process to read it retries it.
                    let _ = hub.submit(&d.tenant, Job::Attempted(attempt)).await;
                });
            }
        });
        let hub = self.clone();
        let scheduler = tokio::spawn(async move {
            let mut scheduled: Vec<String> = Vec::new();
            let mut listed: Option<Instant> = None;
            let mut maintained = Instant::now();
            let mut tick = tokio::time::interval(SCHEDULER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let changed = hub
                    .scheduled_changed
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
                if changed || listed.is_none_or(|t| t.elapsed() >= SCHEDULED_REFRESH) {
                    if let Ok(names) = hub.with_tally(|t| Ok(t.store().scheduled_tenants()?)).await
                    {
                        scheduled = names;
                    }
                    listed = Some(Instant::now());
                }
                for tenant in &scheduled {
                    let _ = hub.submit(tenant, Job::Tick).await;
                }
                if maintained.elapsed() >= MAINTAIN_EVERY {
                    maintained = Instant::now();
                    hub.maintain_all().await;
                }
            }
        });
        vec![sender, scheduler]
    }

    /// Maintenance of every tenant, one after the other (retention, the rejection log, alert
    /// history); a tenant's failure is logged and the others go on.
    pub async fn maintain_all(self: &Arc<Self>) {
        let Ok(tenants) = self.with_tally(|t| t.tenants()).await else {
            return;
        };
        for t in tenants {
            if let Err(e) = self
                .ask(&t.name, |reply| Job::Maintain { reply: Some(reply) })
                .await
            {
                tracing::warn!(tenant = t.name, error = %e.message, "maintenance failed");
            }
        }
    }
}

/// Stops one worker after a final flush, and waits until it has.
async fn stop_worker(tenant: String, worker: Worker) {
    let (reply, answer) = oneshot::channel();
    // A busy worker's queue may be full: wait for room off the async threads.
    let sent = tokio::task::spawn_blocking(move || worker.sender.send(Job::Stop { reply }).is_ok())
        .await
        .unwrap_or(false);
    if sent {
        match answer.await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => tracing::error!(tenant, error = %e, "final flush failed"),
        }
    }
}

/// Adds what a token bucket earned since it was last looked at.
fn refill(bucket: &mut Bucket, rate: f64, burst: f64) {
    let now = Instant::now();
    bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
    bucket.at = now;
}

fn fail(job: Job, error: &Error) {
    match job {
        Job::Ingest(s) => s.answer(Err(error.copy())),
        Job::Query { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Rejections { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Analyze { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        #[cfg(feature = "sql")]
        Job::Relations { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::UpsertRows { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::DeleteRow { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Alerts { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Erase { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::ExportView { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Dashboards { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Widget { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Erasures { reply, .. } => {
            let _ = reply.send(Err(error.copy()));
        }
        Job::Maintain { reply } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error.copy()));
            }
        }
        Job::Tick | Job::Attempted(_) => {}
        Job::Stop { reply } => {
            let _ = reply.send(Ok(()));
        }
    }
}
