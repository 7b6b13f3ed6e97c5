//! The buffer and the background thread behind both flavours of the client.
//!
//! Calls put encoded messages into a bounded queue (`Shared::enqueue`); one thread with its
//! own tokio runtime takes them in batches — when a batch is full, when the flush interval
//! passes, or when asked to flush — and posts each batch (gzipped) with retries. Messages are
//! numbered as they are queued; the thread handles them in order, so "everything queued
//! before this flush is handled" is one number (`done`) reaching another.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::message::{Encoded, Route};
use crate::transport::{Attempt, Transport};
use crate::{Config, Error, Overflow, Stats};

/// The longest `Retry-After` the client waits for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// One queued message.
struct Queued {
    seq: u64,
    route: Route,
    json: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// The number of the last message queued.
    last: u64,
    /// Every message numbered up to this one is handled (delivered, refused or dropped).
    done: u64,
    /// Flushes waiting for `done` to reach their number.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// A flush (or close) asked for everything now, not at the next interval.
    urgent: bool,
    closed: bool,
    /// Retries stop at this instant (set by close).
    give_up_at: Option<Instant>,
    stats: Stats,
    last_error: Option<String>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Notify,
    config: Config,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one message, or says why not.
    pub(crate) fn enqueue(&self, message: Encoded) -> Result<(), Error> {
        if message.json.len() > crate::MAX_MESSAGE_BYTES {
            return Err(Error::TooLarge {
                bytes: message.json.len(),
                limit: crate::MAX_MESSAGE_BYTES,
            });
        }
        let mut state = self.lock();
        if state.closed {
            return Err(Error::Closed);
        }
        if state.queue.len() >= self.config.max_buffer {
            match self.config.overflow {
                Overflow::Reject => {
                    return Err(Error::BufferFull {
                        capacity: self.config.max_buffer,
                    });
                }
                Overflow::DropOldest => {
                    state.queue.pop_front();
                    state.stats.dropped += 1;
                    state.last_error =
                        Some("the buffer was full; the oldest message was dropped".into());
                }
            }
        }
        state.last += 1;
        let seq = state.last;
        state.queue.push_back(Queued {
            seq,
            route: message.route,
            json: message.json,
        });
        state.stats.queued = state.queue.len() as u64;
        let full = state.queue.len() >= self.config.batch_size;
        drop(state);
        if full {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks for everything queued so far to be sent now; the receiver fires once it is
    /// handled. Also returns the count of undelivered messages before, to report new ones.
    pub(crate) fn request_flush(&self) -> (oneshot::Receiver<()>, u64) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        let before = state.stats.failed + state.stats.dropped;
        if state.done >= state.last {
            let _ = tx.send(());
        } else {
            let target = state.last;
            state.waiters.push((target, tx));
            state.urgent = true;
        }
        drop(state);
        self.wake.notify_one();
        (rx, before)
    }

    /// What a flush that started with `before` undelivered messages reports.
    pub(crate) fn flush_result(&self, before: u64) -> Result<(), Error> {
        let state = self.lock();
        let now = state.stats.failed + state.stats.dropped;
        if now > before {
            return Err(Error::Undelivered {
                failed: now - before,
                last_error: state.last_error.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Refuses new messages; retries stop after `wait`.
    pub(crate) fn close(&self, wait: Duration) {
        let mut state = self.lock();
        state.closed = true;
        state.urgent = true;
        state.give_up_at = Some(Instant::now() + wait);
        drop(state);
        self.wake.notify_one();
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The next batch: messages of one route, at most `batch_size` and under the body limit.
    /// `None` when the queue is empty (everything queued is then handled).
    fn next_batch(&self) -> Option<(Route, Vec<Queued>)> {
        let mut state = self.lock();
        let Some(first) = state.queue.front() else {
            state.done = state.last;
            let done = state.done;
            release(&mut state, done);
            state.urgent = false;
            return None;
        };
        let route = first.route;
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = state.queue.front() {
            if next.route != route
                || batch.len() >= self.config.batch_size
                || (bytes + next.json.len() > crate::MAX_BATCH_BYTES && !batch.is_empty())
            {
                break;
            }
            bytes += next.json.len() + 1;
            batch.extend(state.queue.pop_front());
        }
        state.stats.queued = state.queue.len() as u64;
        Some((route, batch))
    }

    /// Records how a batch ended and wakes the flushes it completes.
    fn finish(&self, batch: &[Queued], outcome: Result<(u64, u64, u64), String>) {
        let mut state = self.lock();
        let n = batch.len() as u64;
        match outcome {
            Ok((accepted, duplicates, rejected)) => {
                state.stats.sent += accepted;
                state.stats.duplicates += duplicates;
                state.stats.rejected += rejected;
                if rejected > 0 {
                    state.last_error = Some(format!(
                        "the server rejected {rejected} message(s); see GET /v1/rejections"
                    ));
                }
            }
            Err(error) => {
                state.stats.failed += n;
                state.last_error = Some(error);
            }
        }
        if let Some(last) = batch.last() {
            state.done = state.done.max(last.seq);
        }
        let done = state.done;
        release(&mut state, done);
    }
}

/// Fires the flushes whose messages are all handled.
fn release(state: &mut State, done: u64) {
    let waiters = std::mem::take(&mut state.waiters);
    for (target, tx) in waiters {
        if target <= done {
            let _ = tx.send(());
        } else {
            state.waiters.push((target, tx));
        }
    }
}

/// Starts the background thread; it ends once the client is closed and its queue handled.
pub(crate) fn start(
    config: Config,
    transport: Transport,
) -> Result<(Arc<Shared>, std::thread::JoinHandle<()>), Error> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Notify::new(),
        config,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Start(e.to_string()))?;
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("tally-client".into())
        .spawn(move || runtime.block_on(run(worker, transport)))
        .map_err(|e| Error::Start(e.to_string()))?;
    Ok((shared, thread))
}

/// The background loop.
async fn run(shared: Arc<Shared>, transport: Transport) {
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(shared.config.flush_interval) => {}
        }
        loop {
            while let Some((route, batch)) = shared.next_batch() {
                let outcome = deliver(&shared, &transport, route, &batch).await;
                shared.finish(&batch, outcome);
            }
            let mut state = shared.lock();
            if !state.closed {
                break;
            }
            // Closed. Messages queued while the last batch was out are still sent, until the
            // shutdown timeout; what is left then is undelivered.
            let expired = state.give_up_at.is_none_or(|at| Instant::now() >= at);
            if !state.queue.is_empty() && !expired {
                continue;
            }
            let left = state.queue.len() as u64;
            state.stats.failed += left;
            state.queue.clear();
            state.done = state.last;
            let done = state.done;
            release(&mut state, done);
            return;
        }
    }
}

/// Sends one batch until it is delivered, refused, or its retries run out; the server's
/// counts (accepted, duplicates, rejected) or why it was not delivered.
async fn deliver(
    shared: &Shared,
    transport: &Transport,
    route: Route,
    batch: &[Queued],
) -> Result<(u64, u64, u64), String> {
    let body = transport.body(route, batch.iter().map(|q| q.json.as_str()));
    let config = &shared.config;
    let mut attempt = 0u32;
    loop {
        let (error, after) = match transport.post(route, body.clone()).await {
            Attempt::Delivered {
                accepted,
                duplicates,
                rejected,
            } => return Ok((accepted, duplicates, rejected)),
            Attempt::Refused(error) => return Err(error),
            Attempt::Retry { error, after } => (error, after),
        };
        attempt += 1;
        if attempt > config.max_retries {
            return Err(format!(
                "gave up after {} retries: {error}",
                config.max_retries
            ));
        }
        // The server's Retry-After is honoured up to a bound: a wrong header must not stall
        // the client for hours.
        let delay = backoff(config.initial_backoff, config.max_backoff, attempt)
            .max(after.unwrap_or_default().min(MAX_RETRY_AFTER));
        let Some(retry_at) = Instant::now().checked_add(delay) else {
            return Err(format!("cannot wait {delay:?} to retry: {error}"));
        };
        let give_up_at = shared.lock().give_up_at;
        if give_up_at.is_some_and(|at| retry_at > at) {
            return Err(format!("the client closed while retrying: {error}"));
        }
        shared.lock().stats.retries += 1;
        // A close wakes the wait: it may not wait that long.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(retry_at.into()) => break,
                () = shared.wake.notified() => {
                    let give_up_at = shared.lock().give_up_at;
                    if give_up_at.is_some_and(|at| retry_at > at) {
                        return Err(format!("the client closed while retrying: {error}"));
                    }
                }
            }
        }
    }
}

/// Exponential backoff with jitter: attempt `n` (from 1) waits between half and all of
/// `initial · 2^(n-1)`, capped at `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, n: u32) -> Duration {
    let full = initial.saturating_mul(1u32 << (n - 1).min(20)).min(max);
    let half = full / 2;
    half + full.mul_f64(rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for n in 1..12 {
            let full = (initial * (1 << (n - 1))).min(max);
            let d = backoff(initial, max, n);
            assert!(d >= full / 2 && d <= full, "attempt {n}: {d:?} vs {full:?}");
        }
    }
}
