//! The StatsD listener of `tally serve --statsd ADDR`: UDP and TCP on the same address, the
//! StatsD line protocol with DogStatsD tags (`parse`), aggregated in memory per tenant for one
//! flush interval (`aggregate`) and committed as one batch into the tenant's built-in `metrics`
//! stream through the same worker as HTTP ingest.
//!
//! A listener serves one tenant (`--statsd-tenant`), or, with `--statsd-tenant-tag`, the
//! tenant each line names in its `tenant:` tag (the listener's tenant, if any, for lines
//! without one). Guarantees are StatsD's: a datagram the kernel drops, or lines aggregated but
//! not yet committed when the process is killed, are lost; on SIGTERM the last interval is
//! committed before the server exits. Malformed lines are counted in `/metrics`
//! (`tally_statsd_lines_total{outcome="malformed"}`).
//!
//! UDP is read by one thread per socket (a blocking `recv` loop, with a large receive buffer);
//! TCP connections are tokio tasks reading newline-separated lines. Memory is bounded: rows held
//! for commit, tenants aggregated at once and batches waiting for the store each have a limit,
//! past which lines are counted as `overflow` (or batches as dropped) rather than kept. Every
//! row carries its own id, so a commit offered again after an unclear failure counts once.

pub mod aggregate;
pub mod parse;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, Semaphore};

use aggregate::Aggregates;
use parse::{Line, Malformed};

use crate::server::hub::Hub;
use crate::server::metrics::Metrics;
use crate::server::worker::Record;

/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;
/// The longest TCP line; a longer one closes the connection.
const MAX_LINE: usize = 65_536;
/// TCP connections open at once per listener.
const MAX_TCP_CONNECTIONS: usize = 256;
/// Rows aggregated for all tenants beyond which the interval ends early (when timers arrive
/// faster than one interval can hold).
const MAX_PENDING_ROWS: usize = 200_000;
/// Rows held for all tenants beyond which new lines are refused (`overflow`) until a commit
/// takes them: the store is slower than the lines arrive.
const MAX_HELD_ROWS: usize = 2 * MAX_PENDING_ROWS;
/// Tenants aggregated at once (with `--statsd-tenant-tag`, any sender names any tenant).
const MAX_TENANTS: usize = 1_000;
/// Times a batch the store could not take (503) is offered again, at the next intervals.
const MAX_ATTEMPTS: u32 = 10;
/// Batches waiting to be offered again; past it the oldest is dropped.
const MAX_WAITING: usize = 10;
/// How long stopping waits for TCP connections to hand over their last lines.
const TCP_STOP_WAIT: Duration = Duration::from_secs(2);
/// The receive buffer asked of the kernel for each UDP socket (it caps it at `rmem_max`).
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// One `--statsd` address and the tenant it serves.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// The tenant of every line (`--statsd-tenant`); with the tenant tag, of lines without one.
    pub tenant: Option<String>,
}

/// The StatsD settings of `tally serve`.
#[derive(Clone, Debug)]
pub struct StatsdConfig {
    pub listeners: Vec<ListenerConfig>,
    /// Lines name their tenant in the DogStatsD tag `tenant:` (`--statsd-tenant-tag`).
    pub tenant_tag: bool,
    /// How long metrics are aggregated before one commit (`--statsd-flush-interval`).
    pub flush_interval: Duration,
}

impl Default for StatsdConfig {
    fn default() -> StatsdConfig {
        StatsdConfig {
            listeners: Vec::new(),
            tenant_tag: false,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// Each tenant's aggregates, and the rows they hold.
#[derive(Default)]
struct Pending {
    tenants: HashMap<String, Aggregates>,
    rows: usize,
}

/// What the receivers share with the flusher.
struct Shared {
    pending: Mutex<Pending>,
    tenant_tag: bool,
    metrics: Arc<Metrics>,
    /// Set to stop the UDP receivers.
    stop: AtomicBool,
    /// Set to stop the TCP connections.
    stop_tcp: tokio::sync::watch::Sender<bool>,
    /// Ends an interval early (too many rows pending).
    full: Notify,
}

/// Counts of one packet's lines, added to the metrics once.
#[derive(Default)]
struct Tally {
    accepted: u64,
    malformed: u64,
    unsupported: u64,
    no_tenant: u64,
    overflow: u64,
}

impl Shared {
    /// Aggregates the lines of one packet (or of a run of complete TCP lines).
    fn receive(&self, packet: &[u8], tenant: Option<&str>, key: &mut String) {
        let now = tally_views::Timestamp::from_jiff(jiff::Timestamp::now()).0;
        let mut counts = Tally::default();
        let skip = self.tenant_tag.then_some("tenant");
        let rows;
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for line in packet.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(text) = std::str::from_utf8(line) else {
                    counts.malformed += 1;
                    continue;
                };
                let parsed = match Line::parse(text.trim()) {
                    Ok(l) => l,
                    Err(Malformed::Unsupported) => {
                        counts.unsupported += 1;
                        continue;
                    }
                    Err(Malformed::Invalid(why)) => {
                        counts.malformed += 1;
                        tracing::debug!(line = text, why, "malformed StatsD line");
                        continue;
                    }
                };
                let tagged = if self.tenant_tag {
                    parsed
                        .tag_pairs()
                        .find(|(k, _)| *k == "tenant")
                        .map(|(_, v)| v)
                } else {
                    None
                };
                let Some(tenant) = tagged.or(tenant).filter(|t| !t.is_empty()) else {
                    counts.no_tenant += 1;
                    continue;
                };
                if pending.rows >= MAX_HELD_ROWS
                    || (pending.tenants.len() >= MAX_TENANTS
                        && !pending.tenants.contains_key(tenant))
                {
                    counts.overflow += 1;
                    continue;
                }
                let aggregates = match pending.tenants.get_mut(tenant) {
                    Some(a) => a,
                    None => pending.tenants.entry(tenant.to_owned()).or_default(),
                };
                let added = aggregates.add(&parsed, now, skip, key);
                pending.rows += added;
                counts.accepted += 1;
            }
            rows = pending.rows;
        }
        if rows >= MAX_PENDING_ROWS {
            self.full.notify_one();
        }
        self.metrics.count_statsd_lines("accepted", counts.accepted);
        self.metrics
            .count_statsd_lines("malformed", counts.malformed);
        self.metrics
            .count_statsd_lines("unsupported", counts.unsupported);
        self.metrics
            .count_statsd_lines("no_tenant", counts.no_tenant);
        self.metrics.count_statsd_lines("overflow", counts.overflow);
    }

    /// Ends the interval: each tenant's rows. Tenants with nothing left to remember are
    /// forgotten.
    fn take(&self) -> Vec<(String, Vec<Record>)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.rows = 0;
        let taken = pending
            .tenants
            .iter_mut()
            .filter(|(_, a)| a.lines() > 0)
            .map(|(tenant, a)| (tenant.clone(), a.take()))
            .collect();
        pending.tenants.retain(|_, a| !a.is_idle());
        taken
    }

    /// Forgets a tenant that does not exist.
    fn forget(&self, tenant: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = pending.tenants.remove(tenant) {
            pending.rows = pending.rows.saturating_sub(a.rows());
        }
    }
}

/// The bound sockets of every `--statsd` address, before the server runs.
pub struct Bound {
    config: StatsdConfig,
    sockets: Vec<(std::net::UdpSocket, tokio::net::TcpListener, Option<String>)>,
}

impl Bound {
    /// Binds UDP and TCP on every address of `config`.
    pub async fn bind(config: StatsdConfig) -> std::io::Result<Bound> {
        let mut sockets = Vec::new();
        for listener in &config.listeners {
            let (udp, tcp) = bind_pair(listener.addr).await?;
            sockets.push((udp, tcp, listener.tenant.clone()));
        }
        Ok(Bound { config, sockets })
    }

    /// The bound addresses with their tenant, for the start-up message.
    pub fn addresses(&self) -> Vec<(SocketAddr, Option<String>)> {
        self.sockets
            .iter()
            .filter_map(|(udp, _, tenant)| Some((udp.local_addr().ok()?, tenant.clone())))
            .collect()
    }

    /// Whether no address was given.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Starts receiving and committing.
    pub fn start(self, hub: Arc<Hub>) -> Statsd {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            tenant_tag: self.config.tenant_tag,
            metrics: hub.metrics.clone(),
            stop: AtomicBool::new(false),
            stop_tcp: tokio::sync::watch::channel(false).0,
            full: Notify::new(),
        });
        let mut threads = Vec::new();
        let mut tasks = Vec::new();
        let mut rooms = Vec::new();
        for (udp, tcp, tenant) in self.sockets {
            let shared_udp = shared.clone();
            let tenant_udp = tenant.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("tally-statsd-udp".into())
                    .spawn(move || receive_udp(&shared_udp, &udp, tenant_udp.as_deref()))
                    .expect("a thread starts"),
            );
            let room = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
            rooms.push(room.clone());
            tasks.push(tokio::spawn(accept_tcp(shared.clone(), tcp, tenant, room)));
        }
        let stop_flusher = Arc::new(Notify::new());
        let flusher = tokio::spawn(flush_loop(
            hub.clone(),
            shared.clone(),
            self.config.flush_interval,
            stop_flusher.clone(),
        ));
        Statsd {
            hub,
            shared,
            threads,
            tasks,
            rooms,
            flusher,
            stop_flusher,
        }
    }
}

/// Binds UDP and TCP on one port. With port 0, TCP takes the port UDP was given; another
/// program may hold that TCP port, so the pair is tried again on a new port a few times.
async fn bind_pair(
    addr: SocketAddr,
) -> std::io::Result<(std::net::UdpSocket, tokio::net::TcpListener)> {
    const TRIES: usize = 32;
    let mut tries = 0;
    loop {
        let udp = bind_udp(addr)?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tries + 1 < TRIES =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(socket)
}

/// The running listener.
pub struct Statsd {
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each listener's TCP connection permits: all back means every connection has ended.
    rooms: Vec<Arc<Semaphore>>,
    flusher: tokio::task::JoinHandle<Vec<Retry>>,
    stop_flusher: Arc<Notify>,
}

impl Statsd {
    /// Stops receiving and commits what was aggregated (on SIGTERM, before the views flush).
    pub async fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        // TCP connections hand over what they have read, then close.
        self.shared.stop_tcp.send_replace(true);
        for room in &self.rooms {
            let all = u32::try_from(MAX_TCP_CONNECTIONS).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(TCP_STOP_WAIT, room.acquire_many(all)).await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        self.stop_flusher.notify_one();
        let retries = self.flusher.await.unwrap_or_default();
        // The last interval, and batches still waiting for the store: one attempt each.
        let mut last: Vec<Retry> = retries;
        last.extend(self.shared.take().into_iter().map(|(tenant, rows)| Retry {
            tenant,
            rows,
            attempts: 0,
        }));
        let mut known = std::collections::HashSet::new();
        for retry in last {
            let _ = commit(&self.hub, &self.shared, &mut known, retry, 1).await;
        }
    }
}

/// A batch waiting to be committed.
struct Retry {
    tenant: String,
    rows: Vec<Record>,
    attempts: u32,
}

/// Commits each interval's rows; returns the batches still waiting when stopped.
async fn flush_loop(
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    every: Duration,
    stop: Arc<Notify>,
) -> Vec<Retry> {
    let mut waiting: Vec<Retry> = Vec::new();
    // Tenants known to exist (checked once, when first seen).
    let mut known = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shared.full.notified() => {}
            () = stop.notified() => return waiting,
        }
        let mut batches = std::mem::take(&mut waiting);
        batches.extend(shared.take().into_iter().map(|(tenant, rows)| Retry {
            tenant,
            rows,
            attempts: 0,
        }));
        for batch in batches {
            if let Some(again) = commit(&hub, &shared, &mut known, batch, MAX_ATTEMPTS).await {
                waiting.push(again);
            }
        }
        if waiting.len() > MAX_WAITING {
            for dropped in waiting.drain(..waiting.len() - MAX_WAITING) {
                hub.metrics.count_statsd_dropped(
                    &dropped.tenant,
                    "store_unavailable",
                    dropped.rows.len() as u64,
                );
            }
        }
    }
}

/// Commits one tenant's rows; a batch the store could not take (503: its queue is full, or
/// it is failing) comes back to be offered at the next interval, until its attempts run out.
/// The rows carry their ids, so a batch offered again after a commit whose answer was lost
/// counts once. Rows of a tenant that does not exist are dropped and the tenant forgotten.
async fn commit(
    hub: &Arc<Hub>,
    shared: &Shared,
    known: &mut std::collections::HashSet<String>,
    mut batch: Retry,
    max_attempts: u32,
) -> Option<Retry> {
    if batch.rows.is_empty() {
        return None;
    }
    let n = batch.rows.len() as u64;
    if !known.contains(&batch.tenant) {
        let name = batch.tenant.clone();
        match hub
            .with_tally(move |t| t.tenant_info(&name).map(|_| ()))
            .await
        {
            Ok(()) => {
                known.insert(batch.tenant.clone());
            }
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                tracing::warn!(
                    tenant = batch.tenant,
                    rows = n,
                    "StatsD lines for a tenant that does not exist; dropped"
                );
                // Not the tenant's name as a label: any sender may name any tenant.
                hub.metrics
                    .count_statsd_dropped("(unknown)", "unknown_tenant", n);
                shared.forget(&batch.tenant);
                return None;
            }
            // Cannot tell now: the commit below decides.
            Err(_) => {}
        }
    }
    let last = batch.attempts + 1 >= max_attempts;
    // The request owns its rows; a copy stays for another attempt.
    let rows = if last {
        std::mem::take(&mut batch.rows)
    } else {
        batch.rows.clone()
    };
    match hub.ingest(&batch.tenant, "metrics", "statsd", rows).await {
        Ok(outcome) => {
            if let Some((_, first)) = outcome.rejected.first() {
                tracing::warn!(
                    tenant = batch.tenant,
                    rejected = outcome.rejected.len(),
                    first,
                    "StatsD rows rejected by the metrics stream"
                );
            }
            None
        }
        Err(e) if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE && !last => {
            tracing::warn!(tenant = batch.tenant, rows = n, error = %e.message, "StatsD commit refused; offered again at the next interval");
            batch.attempts += 1;
            Some(batch)
        }
        Err(e) => {
            tracing::warn!(tenant = batch.tenant, rows = n, error = %e.message, "StatsD rows dropped");
            hub.metrics
                .count_statsd_dropped(&batch.tenant, "store_unavailable", n);
            None
        }
    }
}

/// One UDP socket's receive loop, until stopped.
fn receive_udp(shared: &Shared, socket: &std::net::UdpSocket, tenant: Option<&str>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut key = String::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => shared.receive(&buf[..n], tenant, &mut key),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "StatsD UDP receive failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // Stopping: the datagrams already in the socket's buffer were received too.
    if socket.set_nonblocking(true).is_ok() {
        while let Ok(n) = socket.recv(&mut buf) {
            shared.receive(&buf[..n], tenant, &mut key);
        }
    }
}

/// Accepts TCP connections, each read line by line.
async fn accept_tcp(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tenant: Option<String>,
    room: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = room.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let tenant = tenant.clone();
                tokio::spawn(async move {
                    read_tcp(&shared, stream, tenant.as_deref()).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "StatsD TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one TCP connection's lines until it closes, sends a line over the limit, or the
/// listener stops (what was read is aggregated first).
async fn read_tcp(shared: &Shared, mut stream: tokio::net::TcpStream, tenant: Option<&str>) {
    let mut buf = Vec::with_capacity(MAX_LINE);
    let mut key = String::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stopping = shared.stop_tcp.subscribe();
    loop {
        let read = if *stopping.borrow_and_update() {
            Ok(0)
        } else {
            tokio::select! {
                r = stream.read(&mut chunk) => r,
                _ = stopping.changed() => Ok(0),
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    shared.receive(&buf, tenant, &mut key);
                }
                return;
            }
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
            shared.receive(&buf[..end], tenant, &mut key);
            buf.drain(..=end);
        }
        if buf.len() > MAX_LINE {
            shared.metrics.count_statsd_lines("malformed", 1);
            tracing::debug!("StatsD TCP line over 64 KB; closing the connection");
            return;
        }
    }
}
