//! Connections: the accept loop's limits and each connection's timeouts.
//!
//! - At most [`ServerConfig::max_connections`] connections are open at once. At the limit the
//!   server stops accepting (new connections wait in the listen backlog) and keeps serving the
//!   ones it has; accept errors (out of file descriptors) pause accepting briefly.
//! - A connection that sends nothing within the header timeout is closed: hyper's own header
//!   timer only starts once protocol detection has read its first bytes.
//! - A connection idle for [`ServerConfig::idle_timeout`] (no byte read or written) is shut down
//!   gracefully: a request in flight finishes first.
//! - On shutdown every connection is shut down gracefully, and [`Connections::drain`] waits for
//!   them all (up to the shutdown timeout).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::server::hub::ServerConfig;
use crate::server::metrics::Metrics;

/// The open connections of a server, and what they share.
pub(crate) struct Connections {
    limit: Arc<Semaphore>,
    max: usize,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    header_timeout: Duration,
    idle_timeout: Duration,
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub(crate) fn new(router: Router, settings: &ServerConfig, metrics: Arc<Metrics>) -> Self {
        let max = settings.max_connections.max(1);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout);
        Connections {
            limit: Arc::new(Semaphore::new(max)),
            max,
            builder,
            router,
            header_timeout: settings.header_timeout,
            idle_timeout: settings.idle_timeout,
            closing: watch::channel(false).0,
            metrics,
        }
    }

    /// Waits for room for one more connection.
    pub(crate) async fn room(&self) -> OwnedSemaphorePermit {
        match self.limit.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Serves an accepted connection on a task of its own; `permit` is its place.
    pub(crate) fn serve(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let builder = self.builder.clone();
        let router = self.router.clone();
        let closing = self.closing.subscribe();
        let (header_timeout, idle_timeout) = (self.header_timeout, self.idle_timeout);
        let metrics = self.metrics.clone();
        metrics.connections.inc();
        tokio::spawn(async move {
            connection(
                builder,
                router,
                stream,
                peer,
                closing,
                header_timeout,
                idle_timeout,
            )
            .await;
            metrics.connections.dec();
            drop(permit);
        });
    }

    /// Shuts every connection down gracefully and waits until they are closed, up to `timeout`.
    /// Returns whether they all closed.
    pub(crate) async fn drain(&self, timeout: Duration) -> bool {
        let _ = self.closing.send(true);
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.limit.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Serves one connection until it ends, is idle too long, or the server closes.
async fn connection(
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    stream: TcpStream,
    peer: SocketAddr,
    mut closing: watch::Receiver<bool>,
    header_timeout: Duration,
    idle_timeout: Duration,
) {
    // A client must start sending within the header timeout (`peek` waits for a byte, where
    // `readable` may report readiness spuriously).
    let mut first = [0u8; 1];
    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) | Err(_) => return,
    }
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = Tracked {
        inner: stream,
        started,
        last: activity.clone(),
    };
    let service =
        tower::util::MapRequest::new(router, move |mut request: axum::extract::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
    let service = TowerToHyperService::new(service);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let idle_deadline = tokio::time::Instant::from_std(started + last + idle_timeout);
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = closing.changed(), if !shutting_down => {
                if changed.is_err() || *closing.borrow() {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(idle_deadline), if !shutting_down => {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                if started.elapsed() >= last + idle_timeout {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A stream that remembers when it last moved a byte (milliseconds after `started`).
struct Tracked {
    inner: TcpStream,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises this process's soft limit of open files to the hard limit, and returns the soft limit
/// it ends with (`None` where it cannot be read).
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}
