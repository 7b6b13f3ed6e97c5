//! A tenant worker's syncing thread: it makes the worker's commits durable and only then
//! sends their answers, while the worker goes on with other work.
//!
//! On SQLite the worker's appends commit without their `fsync` ([`tally_store::WalSync`]);
//! their answers come here instead of going out at the commit. The thread takes every group
//! waiting, syncs the log once — an `fsync` begun after each group's commit returned — and
//! answers them. Meanwhile the worker applies the group to the views, evaluates alerts and
//! answers queries; before it commits the next group it waits for the sync
//! ([`Syncer::wait_synced`]), so the requests that arrived during the sync join that group and
//! each `fsync` covers one commit (several small commits per sync wrote the same pages again
//! and made the sync longer: no faster than syncing on the worker).
//!
//! A failed sync fails its groups (503, or the full disk named) and every later one without
//! trying again (after a failed `fsync` the kernel may have dropped the pages, so a later
//! success proves nothing); the worker sees [`Syncer::failed`], reports the store failing
//! (`/healthz`) and ends, and the tenant is opened again on the next request. As after a failed
//! `fsync` inside a commit, the events answered 503 may or may not be stored: a retry may find
//! them stored (duplicates), and a stream without a dedupe key may count them twice. Dropping
//! the syncer answers what is queued and joins the thread.
//!
//! Queries and alerts read the views as the worker applied them, which may include events whose
//! answers still wait for the sync: a power loss in between takes those events back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::server::worker::Outcome;

/// An ingest request's answer, held until its commit is durable.
pub(super) type Answer = (oneshot::Sender<Result<Outcome>>, Result<Outcome>);

/// The syncing thread of one tenant's worker.
pub(super) struct Syncer {
    groups: Option<Sender<Vec<Answer>>>,
    failed: Arc<AtomicBool>,
    /// Groups handed over and not yet answered.
    unsynced: Arc<(Mutex<usize>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; `sync` makes everything committed before it began durable.
    pub(super) fn start(
        tenant: &str,
        mut sync: impl FnMut() -> tally_store::Result<()> + Send + 'static,
    ) -> std::io::Result<Syncer> {
        let (groups, waiting) = channel::<Vec<Answer>>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let unsynced = Arc::new((Mutex::new(0), Condvar::new()));
        let counted = unsynced.clone();
        let name = tenant.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("sync-{tenant}"))
            .stack_size(256 * 1024)
            .spawn(move || run(&name, &waiting, &mut sync, &flag, &counted))?;
        Ok(Syncer {
            groups: Some(groups),
            failed,
            unsynced,
            thread: Some(thread),
        })
    }

    /// Answers a group once everything committed so far is durable.
    pub(super) fn answer(&self, group: Vec<Answer>) {
        if let Some(groups) = &self.groups {
            *self.unsynced.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            // The thread ends only when this sender is dropped: the send cannot fail.
            let _ = groups.send(group);
        }
    }

    /// Waits until every group handed over has been answered; false when a sync failed (or
    /// the thread is gone): nothing more may be committed.
    pub(super) fn wait_synced(&self) -> bool {
        let (count, changed) = &*self.unsynced;
        let mut count = count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                self.failed.store(true, Ordering::Release);
                break;
            }
            count = changed
                .wait_timeout(count, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        !self.failed()
    }

    /// Whether a sync failed: the worker must end.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after it has answered what is queued.
        self.groups = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    tenant: &str,
    waiting: &Receiver<Vec<Answer>>,
    sync: &mut dyn FnMut() -> tally_store::Result<()>,
    failed: &AtomicBool,
    unsynced: &(Mutex<usize>, Condvar),
) {
    while let Ok(mut answers) = waiting.recv() {
        let mut groups = 1;
        while let Ok(more) = waiting.try_recv() {
            answers.extend(more);
            groups += 1;
        }
        let synced = if failed.load(Ordering::Acquire) {
            Err(Error::Unavailable(
                "an earlier sync of the write-ahead log failed; send the events again".into(),
            ))
        } else {
            sync().map_err(|e| {
                if !failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(tenant, error = %e, "cannot sync the write-ahead log");
                }
                match e.exhausted() {
                    Some(what) => Error::Exhausted(what.to_owned()),
                    None => Error::Unavailable(format!(
                        "the events may not be stored (syncing the log failed: {e}); send them again"
                    )),
                }
            })
        };
        for (reply, outcome) in answers {
            let outcome = match (&synced, outcome) {
                (Ok(()), outcome) | (Err(_), outcome @ Err(_)) => outcome,
                (Err(e), Ok(_)) => Err(e.copy()),
            };
            let _ = reply.send(outcome);
        }
        let (count, changed) = unsynced;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= groups;
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;
    use tokio::sync::oneshot::error::TryRecvError;

    fn answer(accepted: u64) -> (Answer, oneshot::Receiver<Result<Outcome>>) {
        let (reply, answer) = oneshot::channel();
        let outcome = Outcome {
            accepted,
            ..Outcome::default()
        };
        ((reply, Ok(outcome)), answer)
    }

    #[test]
    fn answers_wait_for_the_sync_that_follows_them() {
        // The sync reports that it began, then waits for the test to let it finish.
        let (began, began_rx) = sync_channel::<()>(0);
        let (finish, finish_rx) = sync_channel::<()>(0);
        let syncer = Syncer::start("t", move || {
            began.send(()).unwrap();
            finish_rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
        let (a, mut a_rx) = answer(1);
        syncer.answer(vec![a]);
        began_rx.recv().unwrap();
        assert!(matches!(a_rx.try_recv(), Err(TryRecvError::Empty)));
        finish.send(()).unwrap();
        assert_eq!(a_rx.blocking_recv().unwrap().unwrap().accepted, 1);
        // A group queued while a sync runs waits for the next one.
        let (b, mut b_rx) = answer(2);
        let (c, mut c_rx) = answer(3);
        syncer.answer(vec![b]);
        began_rx.recv().unwrap();
        syncer.answer(vec![c]);
        assert!(matches!(b_rx.try_recv(), Err(TryRecvError::Empty)));
        finish.send(()).unwrap();
        assert_eq!(b_rx.blocking_recv().unwrap().unwrap().accepted, 2);
        began_rx.recv().unwrap();
        assert!(matches!(c_rx.try_recv(), Err(TryRecvError::Empty)));
        finish.send(()).unwrap();
        assert_eq!(c_rx.blocking_recv().unwrap().unwrap().accepted, 3);
        assert!(!syncer.failed());
    }

    #[test]
    fn waiting_for_the_syncs_ends_when_every_group_is_answered() {
        let (began, began_rx) = sync_channel::<()>(0);
        let (finish, finish_rx) = sync_channel::<()>(0);
        let syncer = Arc::new(
            Syncer::start("t", move || {
                began.send(()).unwrap();
                finish_rx.recv().unwrap();
                Ok(())
            })
            .unwrap(),
        );
        assert!(syncer.wait_synced()); // nothing handed over: returns at once
        let (a, mut a_rx) = answer(1);
        syncer.answer(vec![a]);
        began_rx.recv().unwrap();
        let (waited, waited_rx) = sync_channel::<bool>(1);
        let waiter = {
            let syncer = syncer.clone();
            std::thread::spawn(move || waited.send(syncer.wait_synced()).unwrap())
        };
        // The sync has not finished: neither the answer nor the waiter can have gone on (given
        // time to: a waiter that did not wait would have answered by then).
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(matches!(a_rx.try_recv(), Err(TryRecvError::Empty)));
        assert!(waited_rx.try_recv().is_err());
        finish.send(()).unwrap();
        assert!(waited_rx.recv().unwrap(), "no sync failed");
        // Answered before the wait ended.
        assert_eq!(a_rx.try_recv().unwrap().unwrap().accepted, 1);
        waiter.join().unwrap();
        assert!(!syncer.failed());
    }

    #[test]
    fn a_failed_sync_fails_its_answers_and_every_later_one() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let syncer = Syncer::start("t", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Err(tally_store::StoreError::Io {
                path: "t.db-wal".into(),
                source: std::io::Error::other("disk gone"),
            })
        })
        .unwrap();
        let (a, a_rx) = answer(1);
        let (refused, refused_rx) = oneshot::channel();
        syncer.answer(vec![a, (refused, Err(Error::NotFound("no stream".into())))]);
        let e = a_rx.blocking_recv().unwrap().unwrap_err();
        assert!(
            matches!(&e, Error::Unavailable(m) if m.contains("disk gone")),
            "{e}"
        );
        // An answer that was an error already stays what it was.
        assert!(matches!(
            refused_rx.blocking_recv().unwrap(),
            Err(Error::NotFound(_))
        ));
        assert!(syncer.failed());
        assert!(!syncer.wait_synced(), "nothing more may be committed");
        let (b, b_rx) = answer(2);
        syncer.answer(vec![b]);
        assert!(matches!(
            b_rx.blocking_recv().unwrap(),
            Err(Error::Unavailable(_))
        ));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no sync after a failed one"
        );
    }

    #[test]
    fn dropping_the_syncer_answers_what_is_queued() {
        let (finish, finish_rx) = sync_channel::<()>(1);
        let syncer = Syncer::start("t", move || {
            finish_rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
        let (a, mut a_rx) = answer(1);
        syncer.answer(vec![a]);
        finish.send(()).unwrap();
        drop(syncer);
        // Joined: answered by the time the drop returned.
        assert_eq!(a_rx.try_recv().unwrap().unwrap().accepted, 1);
    }

    #[test]
    fn a_full_disk_is_named() {
        let syncer = Syncer::start("t", || {
            Err(tally_store::StoreError::Io {
                path: "t.db-wal".into(),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            })
        })
        .unwrap();
        let (a, a_rx) = answer(1);
        syncer.answer(vec![a]);
        let e = a_rx.blocking_recv().unwrap().unwrap_err();
        assert!(
            matches!(&e, Error::Exhausted(m) if m.contains("disk")),
            "{e}"
        );
    }

    #[test]
    fn a_syncing_thread_that_died_fails_the_wait() {
        let syncer = Syncer::start("t", || panic!("the sync panicked")).unwrap();
        let (a, a_rx) = answer(1);
        syncer.answer(vec![a]);
        // Its answer was dropped with the thread: the caller sees "reopening; retry".
        assert!(a_rx.blocking_recv().is_err());
        assert!(!syncer.wait_synced());
        assert!(syncer.failed());
    }
}
