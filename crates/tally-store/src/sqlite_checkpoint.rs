//! Checkpoints of tenant databases off the writing thread.
//!
//! SQLite's default is to checkpoint on the connection that commits: after a commit leaves 1,000
//! or more pages in the WAL, that commit copies them into the database file and `fsync`s it
//! before it returns. On a tenant's writer that is the HTTP worker (or `tally ingest`'s
//! committing thread) stalled for the copy and the `fsync` while requests wait. Instead, each
//! tenant connection's WAL hook asks one background thread (`tally-checkpoint`, shared by every
//! tenant of the process) for a `PASSIVE` checkpoint from a connection of its own once
//! [`BACKGROUND_PAGES`] pages were added since the last request. A passive checkpoint never
//! blocks the writer or readers; when it has copied everything, the writer's next transaction
//! starts the WAL over, as after its own checkpoint.
//!
//! Invariants:
//! - Durability does not change: commits still `fsync` the WAL on the writer (`synchronous=FULL`)
//!   before they return; a checkpoint only moves committed pages into the database file, and
//!   SQLite makes that safe against a crash at any point, on any connection.
//! - The WAL stays bounded: if it reaches [`WRITER_PAGES`] (the background thread could not keep
//!   up, or a reader held an old snapshot), the writer checkpoints itself as SQLite would.
//! - No checkpoint connection outlives its tenant's writer: dropping a [`Checkpoints`] cancels a
//!   queued request and waits for a running one. (A connection that closes last deletes the WAL
//!   file by name; after a tenant is removed and created again, that name is the new tenant's.)
//! - The hook never fails a commit (an error from a WAL hook would be reported by the statement
//!   that committed, although the commit happened).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

/// Pages added to the WAL since the last request after which the writer asks for a background
/// checkpoint (SQLite's own default checkpoint threshold).
pub(crate) const BACKGROUND_PAGES: i32 = 1_000;

/// Pages in the WAL at which the writer checkpoints itself.
pub(crate) const WRITER_PAGES: i32 = 16_000;

/// Where a tenant's background checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Queued,
    Running,
}

/// One tenant database's checkpoint state, shared by its writer's WAL hook and the background
/// thread.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn set(&self, state: State) {
        *lock(&self.state) = state;
        self.changed.notify_all();
    }
}

/// A poisoned lock only means a panic elsewhere while holding it; the state is a plain value.
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                            let mut state = lock(&shared.state);
                            if *state != State::Queued {
                                // Cancelled: the tenant was closed.
                                continue;
                            }
                            *state = State::Running;
                        }
                        // A failed passive checkpoint changes nothing; the WAL keeps the pages
                        // and the next checkpoint (or the writer's, at its bound) copies them.
                        let _ = checkpoint(&shared.path);
                        shared.set(State::Idle);
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// A passive checkpoint of the database at `path`, from a connection of its own.
fn checkpoint(path: &Path) -> rusqlite::Result<()> {
    // Not created if it is gone (the tenant was removed).
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The database file is synced after the copy, as the writer's own checkpoint would.
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
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
            state: Mutex::new(State::Idle),
            changed: Condvar::new(),
        });
        let hook_shared = shared.clone();
        // The WAL's size in pages when the last background checkpoint was asked for.
        let mut asked_at = 0;
        conn.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
            if pages < asked_at {
                // The WAL started over.
                asked_at = 0;
            }
            if pages >= WRITER_PAGES {
                // As SQLite's own automatic checkpoint: its failure does not fail the commit.
                let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                asked_at = 0;
            } else if pages - asked_at >= BACKGROUND_PAGES {
                let mut state = lock(&hook_shared.state);
                if *state == State::Idle {
                    let sent = queue().is_some_and(|q| {
                        q.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .send(hook_shared.clone())
                            .is_ok()
                    });
                    if sent {
                        *state = State::Queued;
                        asked_at = pages;
                    } else {
                        drop(state);
                        // No background thread: checkpoint here, as SQLite would.
                        let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                    }
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
        let mut state = lock(&self.shared.state);
        if *state == State::Queued {
            *state = State::Idle;
        }
        while *state == State::Running {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Checkpoints {
        /// Waits until no background checkpoint is queued or running.
        fn wait_idle(&self) {
            let mut state = lock(&self.shared.state);
            while *state != State::Idle {
                state = self.shared.changed.wait(state).unwrap();
            }
        }
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
            let tx = conn.transaction().unwrap();
            for _ in 0..250 {
                tx.execute("INSERT INTO t VALUES (randomblob(3000))", [])
                    .unwrap();
            }
            tx.commit().unwrap();
            if let Some(c) = &checkpoints {
                c.wait_idle();
            }
        }
        drop(checkpoints);
        wal_frames(&path)
    }

    #[test]
    fn the_background_thread_checkpoints_and_the_wal_starts_over() {
        // 40 commits of ~250 pages: ~10,000 pages, under the writer's own bound.
        let without = frames_after(40, false);
        assert!(without > 9_000, "no checkpoint at all: {without} frames");
        let with = frames_after(40, true);
        assert!(
            with < 2 * BACKGROUND_PAGES,
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
            let tx = conn.transaction().unwrap();
            for _ in 0..250 {
                tx.execute("INSERT INTO t VALUES (randomblob(3000))", [])
                    .unwrap();
            }
            tx.commit().unwrap();
            checkpoints.wait_idle();
        }
        let most = wal_frames(&path);
        assert!(most > 2 * BACKGROUND_PAGES, "{most} frames");
        assert!(most < WRITER_PAGES + 1_000, "the WAL reached {most} frames");
    }
}
