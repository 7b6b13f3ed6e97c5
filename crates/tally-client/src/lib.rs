//! A client for Tally: send events (Segment's `track`, `identify`, `page`, `screen`, `group`,
//! `alias`) and metrics (counters, gauges, histograms, timers, distributions, sets) from Rust.
//!
//! ```no_run
//! use tally_client::{Client, EventBuilder, MetricBuilder};
//!
//! # async fn run() -> Result<(), tally_client::Error> {
//! let client = Client::new("http://127.0.0.1:8420", "tk_write_…")?;
//! client.track(EventBuilder::new("Signed Up").user_id("u-1").property("plan", "pro"))?;
//! client.metric(MetricBuilder::counter("jobs").value(1.0).tag("queue", "mail"))?;
//! client.flush().await?; // everything queued so far is delivered (or the error says why not)
//! # Ok(()) }
//! ```
//!
//! Calls never wait for the network: a message is checked, given an id (a UUID the server
//! deduplicates by, so a retried batch is never counted twice) and queued. A background
//! thread sends the queue in batches — when `batch_size` messages wait, every
//! `flush_interval`, and on `flush()` — gzipped, retrying 429, 408, 5xx and network errors
//! with exponential backoff and jitter (at least the server's `Retry-After`). The queue is
//! bounded (`max_buffer`); when it is full, [`Overflow`] decides: refuse the new message
//! (the default) or drop the oldest. Dropping the last handle of a client flushes it, waiting
//! up to `shutdown_timeout`. [`blocking::Client`] is the same client for programs without an
//! async runtime.

mod core;
mod error;
mod message;
mod transport;

use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
pub use message::{
    AliasBuilder, EventBuilder, GroupBuilder, IdentifyBuilder, Message, MetricBuilder, PageBuilder,
};

/// The largest message, as JSON (the server takes bodies up to 512 KB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The largest batch body before compression.
pub(crate) const MAX_BATCH_BYTES: usize = 480 * 1024;

/// What to do with a message when the buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse it: the call returns [`Error::BufferFull`] and the caller decides.
    #[default]
    Reject,
    /// Queue it and drop the oldest message waiting (counted in [`Stats::dropped`]).
    DropOldest,
}

/// Counts since the client started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages waiting now.
    pub queued: u64,
    /// Messages the server accepted.
    pub sent: u64,
    /// Messages the server had already (a retry of a batch it had committed).
    pub duplicates: u64,
    /// Messages the server rejected one by one (see its `GET /v1/rejections`).
    pub rejected: u64,
    /// Messages not delivered: refused requests, retries run out, or left at close.
    pub failed: u64,
    /// Messages dropped from a full buffer ([`Overflow::DropOldest`]).
    pub dropped: u64,
    /// Requests retried.
    pub retries: u64,
}

/// The client's settings; [`Client::builder`] sets them.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_buffer: usize,
    pub(crate) overflow: Overflow,
    pub(crate) max_retries: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) gzip: bool,
}

/// Settings of a client, with their defaults.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: String,
    write_key: String,
    config: Config,
}

impl ClientBuilder {
    /// Messages per request (default 100; at most 2,000).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n.clamp(1, 2_000);
        self
    }
    /// The longest a message waits before its batch is sent (default 1 s).
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.config.flush_interval = every.max(Duration::from_millis(1));
        self
    }
    /// Messages the buffer holds (default 10,000).
    pub fn max_buffer(mut self, n: usize) -> Self {
        self.config.max_buffer = n.max(1);
        self
    }
    /// What a full buffer does with a new message (default [`Overflow::Reject`]).
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.config.overflow = policy;
        self
    }
    /// Retries of one request before its messages count as failed (default 10).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.config.max_retries = n;
        self
    }
    /// The first retry's wait and the longest one (default 100 ms and 30 s); each retry
    /// doubles the wait, with jitter, never shorter than the server's `Retry-After`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.initial_backoff = initial.max(Duration::from_millis(1));
        self.config.max_backoff = max.max(self.config.initial_backoff);
        self
    }
    /// How long one request may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }
    /// How long closing (or dropping) the client waits for the queue (default 5 s).
    pub fn shutdown_timeout(mut self, wait: Duration) -> Self {
        self.config.shutdown_timeout = wait;
        self
    }
    /// Gzip request bodies (default on).
    pub fn gzip(mut self, on: bool) -> Self {
        self.config.gzip = on;
        self
    }
    /// The client, with its background thread started.
    pub fn build(self) -> Result<Client, Error> {
        let transport = transport::Transport::new(
            &self.url,
            &self.write_key,
            self.config.gzip,
            self.config.timeout,
        )?;
        let wait = self.config.shutdown_timeout;
        let (shared, thread) = core::start(self.config, transport)?;
        Ok(Client {
            handle: Arc::new(Handle {
                shared,
                thread: std::sync::Mutex::new(Some(thread)),
                wait,
            }),
        })
    }
    /// The blocking flavour of the client.
    pub fn build_blocking(self) -> Result<blocking::Client, Error> {
        Ok(blocking::Client {
            inner: self.build()?,
        })
    }
}

/// What every clone of a client shares; the last one dropped closes it.
struct Handle {
    shared: Arc<core::Shared>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    wait: Duration,
}

impl Handle {
    /// Closes the client and waits (blocking) for the background thread, up to the shutdown
    /// timeout plus a second; whether it ended.
    fn close_blocking(&self) -> bool {
        self.shared.close(self.wait);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let deadline = std::time::Instant::now() + self.wait + Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
                return true;
            }
            return false;
        }
        true
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.close_blocking();
    }
}

/// A Tally client for async programs (its calls never block; `flush` and `close` are async).
/// Clones share one buffer and background thread.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl Client {
    /// A client of the server at `url` (`http://127.0.0.1:8420`) with a tenant's write key,
    /// with the default settings.
    pub fn new(url: &str, write_key: &str) -> Result<Client, Error> {
        Client::builder(url, write_key).build()
    }

    /// Settings for a client of the server at `url` with a tenant's write key.
    pub fn builder(url: &str, write_key: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            write_key: write_key.to_owned(),
            config: Config {
                batch_size: 100,
                flush_interval: Duration::from_secs(1),
                max_buffer: 10_000,
                overflow: Overflow::Reject,
                max_retries: 10,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(30),
                timeout: Duration::from_secs(10),
                shutdown_timeout: Duration::from_secs(5),
                gzip: true,
            },
        }
    }

    /// Queues any message.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.handle.shared.enqueue(message.into().encode()?)
    }
    /// Queues a `track`.
    pub fn track(&self, event: EventBuilder) -> Result<(), Error> {
        self.handle.shared.enqueue(event.encode()?)
    }
    /// Queues an `identify`.
    pub fn identify(&self, identify: IdentifyBuilder) -> Result<(), Error> {
        self.handle.shared.enqueue(identify.encode()?)
    }
    /// Queues a `page` (or a `screen`, built with [`PageBuilder::screen`]).
    pub fn page(&self, page: PageBuilder) -> Result<(), Error> {
        self.handle.shared.enqueue(page.encode()?)
    }
    /// Queues a `screen` view of the screen `name`: [`PageBuilder::screen`].
    pub fn screen(&self, screen: PageBuilder) -> Result<(), Error> {
        self.page(screen)
    }
    /// Queues a `group`.
    pub fn group(&self, group: GroupBuilder) -> Result<(), Error> {
        self.handle.shared.enqueue(group.encode()?)
    }
    /// Queues an `alias`.
    pub fn alias(&self, alias: AliasBuilder) -> Result<(), Error> {
        self.handle.shared.enqueue(alias.encode()?)
    }
    /// Queues a metric.
    pub fn metric(&self, metric: MetricBuilder) -> Result<(), Error> {
        self.handle.shared.enqueue(metric.encode()?)
    }

    /// Sends everything queued so far and waits until it is handled; an error counts what was
    /// not delivered since the flush began (and the last reason).
    pub async fn flush(&self) -> Result<(), Error> {
        let (done, before) = self.handle.shared.request_flush();
        let _ = done.await;
        self.handle.shared.flush_result(before)
    }

    /// Flushes, then refuses new messages and stops the background thread. Retries stop
    /// after the shutdown timeout; what is left then counts as failed. A request still in
    /// flight then (up to the request timeout) makes it [`Error::Timeout`].
    pub async fn close(&self) -> Result<(), Error> {
        let (done, before) = self.handle.shared.request_flush();
        self.handle.shared.close(self.handle.wait);
        let wait = self.handle.wait + Duration::from_secs(1);
        if tokio::time::timeout(wait, done).await.is_err() {
            return Err(Error::Timeout(wait));
        }
        self.handle.shared.flush_result(before)
    }

    /// Counts since the client started.
    pub fn stats(&self) -> Stats {
        self.handle.shared.stats()
    }
}

/// The client for programs without an async runtime: the same calls, with `flush` and
/// `close` blocking the calling thread. Do not call them from inside an async runtime.
pub mod blocking {
    use super::{Error, Stats};

    /// A Tally client whose `flush` and `close` block.
    #[derive(Clone)]
    pub struct Client {
        pub(crate) inner: super::Client,
    }

    impl Client {
        /// A blocking client of the server at `url` with a tenant's write key.
        pub fn new(url: &str, write_key: &str) -> Result<Client, Error> {
            super::Client::builder(url, write_key).build_blocking()
        }
        /// Queues any message (never blocks).
        pub fn send(&self, message: impl Into<super::Message>) -> Result<(), Error> {
            self.inner.send(message)
        }
        pub fn track(&self, event: super::EventBuilder) -> Result<(), Error> {
            self.inner.track(event)
        }
        pub fn identify(&self, identify: super::IdentifyBuilder) -> Result<(), Error> {
            self.inner.identify(identify)
        }
        pub fn page(&self, page: super::PageBuilder) -> Result<(), Error> {
            self.inner.page(page)
        }
        pub fn screen(&self, screen: super::PageBuilder) -> Result<(), Error> {
            self.inner.screen(screen)
        }
        pub fn group(&self, group: super::GroupBuilder) -> Result<(), Error> {
            self.inner.group(group)
        }
        pub fn alias(&self, alias: super::AliasBuilder) -> Result<(), Error> {
            self.inner.alias(alias)
        }
        pub fn metric(&self, metric: super::MetricBuilder) -> Result<(), Error> {
            self.inner.metric(metric)
        }
        /// Sends everything queued so far and blocks until it is handled.
        pub fn flush(&self) -> Result<(), Error> {
            let shared = &self.inner.handle.shared;
            let (done, before) = shared.request_flush();
            let _ = done.blocking_recv();
            shared.flush_result(before)
        }
        /// Flushes, refuses new messages and stops the background thread (blocking, up to the
        /// shutdown timeout plus a second; past it, [`Error::Timeout`]).
        pub fn close(&self) -> Result<(), Error> {
            let handle = &self.inner.handle;
            let (_done, before) = handle.shared.request_flush();
            if !handle.close_blocking() {
                return Err(Error::Timeout(
                    handle.wait + std::time::Duration::from_secs(1),
                ));
            }
            handle.shared.flush_result(before)
        }
        pub fn stats(&self) -> Stats {
            self.inner.stats()
        }
    }
}
