//! Checkpoints of tenant databases, mostly off the writing thread.
//!
//! SQLite's default is to checkpoint on the connection that commits: after a commit leaves 1,000
//! or more frames in the WAL, that commit copies them into the database file and `fsync`s it
//! before it returns. On a tenant's writer that is the HTTP worker (or `tally ingest`'s
//! committing thread) stalled for the copy and the `fsync` while requests wait. Instead, each
//! tenant connection's WAL hook (which replaces SQLite's automatic checkpoint) asks one
//! background thread (`tally-checkpoint`, shared by every tenant of the process) for a `PASSIVE`
//! checkpoint from a connection of its own once [`BACKGROUND_FRAMES`] frames were added since
//! its last request (or since the WAL started over). A passive checkpoint never blocks the writer or readers.
//!
//! The WAL starts over (is written again from its start) only in a write transaction that
//! begins when every frame has been copied, and a busy writer commits while the background
//! checkpoint copies, so the background thread alone seldom gets there. When it has reported
//! how far it copied, the writer's next commit therefore finishes the job itself if what is left
//! is under [`BACKGROUND_FRAMES`] (its own passive checkpoint copies the frames committed since
//! and syncs the database file), and its next transaction starts the WAL over; with more left it
//! asks the background thread again. The writer's share is the frames committed while the
//! background thread copied, typically a few commits' worth instead of 1,000 frames. (SQLite
//! syncs the database file only in a checkpoint that completes the WAL, so when the writer
//! committed during the background copy, the writer's finishing checkpoint still syncs what the
//! background thread copied.) A reader's old snapshot also keeps the WAL from starting over.
//!
//! Invariants:
//! - Durability does not change: commits still `fsync` the WAL on the writer (`synchronous=FULL`)
//!   before they return, or, deferred ([`crate::sqlite_sync`]), before they are acknowledged
//!   (SQLite syncs the WAL before a checkpoint copies it in either mode); a checkpoint only
//!   moves committed pages into the database file and syncs it before the WAL can start over,
//!   and SQLite makes that safe against a crash at any point, on any connection.
//! - The WAL stays bounded, at most [`WRITER_FRAMES`] plus a commit where SQLite's own
//!   checkpoints keep it near 1,000: from there (the background thread cannot keep up) the
//!   writer checkpoints itself after each commit, first waiting for a running background
//!   checkpoint (which holds SQLite's checkpoint lock). Readers' snapshots limit both, as they
//!   limit SQLite's own checkpoints.
//!   Like SQLite's, a passive checkpoint cannot copy frames a reader's snapshot still needs,
//!   and does nothing while another checkpoint runs.
//! - No checkpoint connection outlives its tenant's writer: dropping a [`Checkpoints`] cancels a
//!   queued request and waits for a running one. (A connection that closes last deletes the WAL
//!   file by name; after a tenant is removed and created again, that name is the new tenant's.)
//! - The hook never fails a commit (an error from a WAL hook would be reported by the statement
//!   that committed, although the commit happened).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

/// Frames added to the WAL since the last request after which the writer asks for a background
/// checkpoint (SQLite's own default checkpoint threshold); also the most the writer copies to
/// finish one.
pub(crate) const BACKGROUND_FRAMES: i32 = 1_000;

/// Frames in the WAL at which the writer checkpoints itself after every commit.
pub(crate) const WRITER_FRAMES: i32 = 4_000;

/// Where a tenant's background checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Queued,
    Running,
}

/// A tenant's background checkpoint: its state, and what the last one reported.
#[derive(Debug)]
struct Progress {
    state: State,
    /// The WAL's generation (how often the writer saw it start over) when the request was made.
    generation: u64,
    /// Frames of the WAL known to be copied into the database by the last background
    /// checkpoint of `generation`, until the writer's hook reads it.
    copied: Option<i32>,
}

/// One tenant database's checkpoint state, shared by its writer's WAL hook and the background
/// thread.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A poisoned lock only means a panic elsewhere while holding it; the state stays usable.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The background thread's queue, started with the first request; `None` if it cannot start.
fn queue() -> Option<&'static Mutex<Sender<Arc<Shared>>>> {
    static QUEUE: OnceLock<Option<Mutex<Sender<Arc<Shared>>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = channel::<Arc<Shared>>();
            std::thread::Builder::new()
                .name("tally-checkpoint".into())
                .spawn(move || {
                    for shared in rx {
                        {
                            let mut progress = shared.lock();
                            if progress.state != State::Queued {
                                // Cancelled: the tenant was closed.
                                continue;
                            }
                            progress.state = State::Running;
                        }
                        // A failed passive checkpoint changes nothing: the WAL keeps the frames
                        // and a later checkpoint copies them. A panic must not leave the tenant's
                        // writer waiting for `Running` to end when it closes.
                        let copied = std::panic::catch_unwind(|| checkpoint(&shared.path))
                            .ok()
                            .and_then(Result::ok)
                            .flatten();
                        let mut progress = shared.lock();
                        progress.state = State::Idle;
                        progress.copied = copied;
                        drop(progress);
                        shared.changed.notify_all();
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// A passive checkpoint of the database at `path`, from a connection of its own: how many
/// frames of the WAL are copied into the database now (`None` if it could not run).
///
/// SQLite syncs the database file at the end of a checkpoint only if the WAL did not grow while
/// it copied; when the writer committed meanwhile, that sync is left to whoever completes the
/// WAL next — the writer, when it finishes. (Syncing the file here through a descriptor of our
/// own is not an option: closing any descriptor of a database file releases the POSIX locks
/// every SQLite connection of the process holds on it.)
fn checkpoint(path: &Path) -> rusqlite::Result<Option<i32>> {
    // Not created if it is gone (the tenant was removed).
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The database file is synced after the copy, as the writer's own checkpoint would.
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    // `copied` counts frames of the WAL as it was when the checkpoint began.
    let (busy, _log, copied): (i32, i32, i32) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((busy == 0 && copied >= 0).then_some(copied))
}

/// What the writer's hook does after a commit.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Nothing,
    /// Ask the background thread for a checkpoint.
    Ask,
    /// Checkpoint on the writer (to finish what the background thread copied, or at the bound).
    Checkpoint,
}

/// The hook's memory between commits.
#[derive(Debug, Default)]
struct Hook {
    /// The WAL's size after the previous commit: it only grows until the WAL starts over.
    last: i32,
    /// How often the WAL started over.
    generation: u64,
    /// The WAL's size when the background checkpoint was last asked for (0 after a restart).
    asked_at: i32,
}

impl Hook {
    /// Decides after a commit that left `frames` in the WAL. `state` is the background
    /// checkpoint's state; `report`, when it has finished since, the generation of the WAL it
    /// was asked for and how many frames it copied (taken: each report is used once).
    fn decide(&mut self, frames: i32, state: State, report: Option<(u64, i32)>) -> Action {
        if frames < self.last {
            self.generation += 1;
            self.asked_at = 0;
        }
        self.last = frames;
        if frames >= WRITER_FRAMES {
            return Action::Checkpoint;
        }
        if state != State::Idle {
            return Action::Nothing;
        }
        match report {
            Some((generation, copied))
                if generation == self.generation
                    && copied > 0
                    && copied <= frames
                    && frames - copied < BACKGROUND_FRAMES =>
            {
                Action::Checkpoint
            }
            // The background thread fell behind: ask again.
            Some((generation, copied)) if generation == self.generation && copied > 0 => {
                Action::Ask
            }
            _ if frames - self.asked_at >= BACKGROUND_FRAMES => Action::Ask,
            _ => Action::Nothing,
        }
    }
}

/// The background checkpoints of one tenant database; installed on its writing connection.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    shared: Arc<Shared>,
}

impl Checkpoints {
    /// Replaces `conn`'s automatic checkpoints (SQLite's WAL hook) with background ones.
    pub(crate) fn install(conn: &mut Connection, path: &Path) -> rusqlite::Result<Checkpoints> {
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            progress: Mutex::new(Progress {
                state: State::Idle,
                generation: 0,
                copied: None,
            }),
            changed: Condvar::new(),
        });
        let hook_shared = shared.clone();
        let mut hook = Hook::default();
        conn.wal_hook(Some(move |wal: &mut Wal, frames: i32| {
            let mut progress = hook_shared.lock();
            let report = progress.copied.take().map(|c| (progress.generation, c));
            match hook.decide(frames, progress.state, report) {
                Action::Nothing => {}
                Action::Ask => {
                    let sent = queue().is_some_and(|q| {
                        q.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .send(hook_shared.clone())
                            .is_ok()
                    });
                    if sent {
                        progress.state = State::Queued;
                        progress.generation = hook.generation;
                        hook.asked_at = frames;
                    } else {
                        drop(progress);
                        // No background thread: checkpoint here, as SQLite would.
                        let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                    }
                }
                Action::Checkpoint => {
                    if frames >= WRITER_FRAMES {
                        // At the bound: a running background checkpoint holds SQLite's
                        // checkpoint lock, and the writer's would do nothing. Wait for it.
                        while progress.state == State::Running {
                            progress = hook_shared
                                .changed
                                .wait(progress)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                    drop(progress);
                    // As SQLite's own automatic checkpoint: its failure does not fail the commit.
                    let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                }
            }
            Ok(())
        }))?;
        Ok(Checkpoints { shared })
    }
}

impl Drop for Checkpoints {
    /// Cancels a queued checkpoint and waits for a running one.
    fn drop(&mut self) {
        let mut progress = self.shared.lock();
        if progress.state == State::Queued {
            progress.state = State::Idle;
        }
        while progress.state == State::Running {
            progress = self
                .shared
                .changed
                .wait(progress)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Checkpoints {
        /// Waits until no background checkpoint is queued or running.
        fn wait_idle(&self) {
            let mut progress = self.shared.lock();
            while progress.state != State::Idle {
                progress = self.shared.changed.wait(progress).unwrap();
            }
        }
    }

    /// Commits one transaction of about 250 pages.
    fn commit_pages(conn: &mut Connection) {
        let tx = conn.transaction().unwrap();
        for _ in 0..250 {
            tx.execute("INSERT INTO t VALUES (randomblob(3000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
    }

    /// The most frames the WAL of the database at `path` ever held: the WAL file is reused from
    /// its start, not shrunk, when it starts over.
    fn wal_frames(path: &Path) -> i32 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let bytes = std::fs::metadata(wal).unwrap().len();
        // A 32-byte header, then frames of a 24-byte header and a 4,096-byte page.
        ((bytes.saturating_sub(32)) / (24 + 4_096)) as i32
    }

    /// Commits `commits` transactions of about 250 pages each to a fresh WAL database,
    /// waiting for background checkpoints between commits if `background`; returns the most
    /// frames its WAL held.
    fn frames_after(commits: usize, background: bool) -> i32 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (b BLOB);",
        )
        .unwrap();
        let checkpoints = background.then(|| Checkpoints::install(&mut conn, &path).unwrap());
        for _ in 0..commits {
            commit_pages(&mut conn);
            if let Some(c) = &checkpoints {
                c.wait_idle();
            }
        }
        drop(checkpoints);
        wal_frames(&path)
    }

    #[test]
    fn the_background_thread_checkpoints_and_the_wal_starts_over() {
        // 40 commits of ~250 pages: ~10,000 frames without checkpoints.
        let without = frames_after(40, false);
        assert!(without > 9_000, "no checkpoint at all: {without} frames");
        let with = frames_after(40, true);
        assert!(
            with < 2 * BACKGROUND_FRAMES,
            "background checkpoints: the WAL started over, {with} frames"
        );
    }

    #[test]
    fn the_writer_checkpoints_itself_at_its_bound_and_a_commit_never_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (b BLOB);")
            .unwrap();
        // The path names no database the background connection can open: its checkpoints fail.
        let checkpoints = Checkpoints::install(&mut conn, &dir.path().join("gone.db")).unwrap();
        for _ in 0..100 {
            commit_pages(&mut conn);
            checkpoints.wait_idle();
        }
        let most = wal_frames(&path);
        assert!(most > 2 * BACKGROUND_FRAMES, "{most} frames");
        assert!(
            most < WRITER_FRAMES + 1_000,
            "the WAL reached {most} frames"
        );
    }

    /// Commits `commits` transactions of about 250 pages each, one right after the other, to a
    /// fresh WAL database with background checkpoints; returns the most frames its WAL held
    /// and the rows stored.
    fn back_to_back(commits: usize) -> (i32, i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (b BLOB);")
            .unwrap();
        let checkpoints = Checkpoints::install(&mut conn, &path).unwrap();
        for _ in 0..commits {
            commit_pages(&mut conn);
        }
        drop(checkpoints);
        let rows = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        (wal_frames(&path), rows)
    }

    #[test]
    fn commits_during_background_checkpoints_are_kept_and_the_wal_stays_bounded() {
        let (most, rows) = back_to_back(120);
        assert_eq!(rows, 120 * 250);
        // 30,000 frames were written; the WAL never held more than the writer's bound and
        // what one commit adds to it.
        assert!(most < WRITER_FRAMES + 500, "the WAL reached {most} frames");
    }

    #[test]
    fn the_writer_finishes_what_the_background_copied_once_little_is_left() {
        let mut hook = Hook::default();
        // Under the threshold: nothing; at it: ask.
        assert_eq!(hook.decide(600, State::Idle, None), Action::Nothing);
        assert_eq!(hook.decide(1_100, State::Idle, None), Action::Ask);
        hook.asked_at = 1_100;
        // While the background checkpoint is queued or runs: nothing.
        assert_eq!(hook.decide(1_400, State::Queued, None), Action::Nothing);
        assert_eq!(hook.decide(1_700, State::Running, None), Action::Nothing);
        // It copied 1,100 frames; 800 are left: the writer finishes.
        assert_eq!(
            hook.decide(1_900, State::Idle, Some((0, 1_100))),
            Action::Checkpoint
        );
        // Had it fallen behind (1,000 or more left), the writer asks again.
        assert_eq!(
            hook.decide(2_100, State::Idle, Some((0, 1_100))),
            Action::Ask
        );
        // It copied nothing (a reader's snapshot): ask again only after 1,000 more frames.
        hook.asked_at = 2_100;
        assert_eq!(
            hook.decide(2_500, State::Idle, Some((0, 0))),
            Action::Nothing
        );
        assert_eq!(hook.decide(3_100, State::Idle, None), Action::Ask);
        // At the bound the writer checkpoints, whatever the background thread does.
        assert_eq!(
            hook.decide(WRITER_FRAMES, State::Running, None),
            Action::Checkpoint
        );
        // The WAL started over: a report about the previous one is not used, and the
        // threshold counts from the start again.
        assert_eq!(
            hook.decide(300, State::Idle, Some((0, 3_000))),
            Action::Nothing
        );
        assert_eq!(hook.generation, 1);
        assert_eq!(hook.decide(1_000, State::Idle, None), Action::Ask);
        hook.asked_at = 1_000;
        assert_eq!(
            hook.decide(1_200, State::Idle, Some((1, 1_000))),
            Action::Checkpoint
        );
    }
}
