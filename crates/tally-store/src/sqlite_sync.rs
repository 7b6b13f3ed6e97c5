//! Appends whose `fsync` runs on another thread: [`WalSync`], the handle that makes a tenant
//! database's write-ahead log durable.
//!
//! A SQLite tenant commits with `synchronous=FULL`: the committing thread writes the WAL frames
//! and then waits for their `fsync`. Under single-event HTTP ingest that wait was most of a
//! group commit (0.2–0.3 ms of 0.3 ms), and the tenant's one committing thread could not
//! start the next group meanwhile. After [`crate::TenantStore::wal_sync`], the store's
//! appends commit with `synchronous=NORMAL` (frames written, not synced) and the caller makes
//! them durable with [`WalSync::sync`], from any thread, before it acknowledges them: one
//! `fsync` then covers every append committed before it began, while the committing thread
//! already writes the next.
//!
//! Why this keeps the guarantees:
//! - An append is acknowledged only after a `sync` that began after its commit returned (the
//!   caller's part): its frames were written by then, and `fsync` on any descriptor of a file
//!   makes all of the file's written data durable. The descriptor is opened when the deferral
//!   begins, before the first unsynced commit, so a write-back error of those frames is
//!   reported to it.
//! - Every other transaction (view flushes, erasures, keys, tables) still commits with
//!   `synchronous=FULL`; its `fsync` also covers the unsynced appends before it in the log.
//! - What power loss can take is a suffix of the log: SQLite's recovery stops at the first
//!   frame whose checksum fails, so a view flush never survives without the events before it.
//!   Every checkpoint syncs the log before it copies frames into the database (at `NORMAL` as
//!   at `FULL`), so the log restarts only over frames already durable.
//! - The writer keeps writing the file it opened: if another file now stands at the log's path
//!   (a new inode), `sync` fails rather than sync the wrong one.
//!
//! What it does not change: after a failed sync, as after a failed `fsync` in a commit, what
//! was written may or may not be on disk; the events are answered as not stored (503), and a
//! retry may find them stored (a duplicate) when the tenant is opened again.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::{Result, StoreError};

/// Makes a tenant database's write-ahead log durable; `Send`, for a thread of its own.
#[derive(Debug)]
pub struct WalSync {
    path: PathBuf,
    /// The log, with its device and inode.
    file: File,
    dev: u64,
    ino: u64,
}

impl WalSync {
    /// Opens the log at `path` (the database's path with `-wal` appended).
    pub(crate) fn open(path: PathBuf) -> Result<Self> {
        let error = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(error)?;
        let meta = file.metadata().map_err(error)?;
        Ok(WalSync {
            dev: meta.dev(),
            ino: meta.ino(),
            file,
            path,
        })
    }

    /// The log's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `fdatasync`s the log: every frame written before this call began is durable when it
    /// returns `Ok`. After an error nothing written since the last success may be assumed
    /// durable, even by a later success (the kernel may have dropped the failed pages).
    pub fn sync(&self) -> Result<()> {
        let error = |source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.sync_data().map_err(error)?;
        let now = std::fs::metadata(&self.path).map_err(error)?;
        if now.dev() != self.dev || now.ino() != self.ino {
            return Err(error(io::Error::other(
                "another file replaced the write-ahead log while the database was open",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_log_fails_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db-wal");
        std::fs::write(&path, b"first").unwrap();
        let sync = WalSync::open(path.clone()).unwrap();
        sync.sync().unwrap();
        // Replaced: a new file (a new inode) at the same path, while the old one is still open
        // here (so its inode cannot be reused).
        std::fs::rename(&path, dir.path().join("old")).unwrap();
        std::fs::write(&path, b"second").unwrap();
        let e = sync.sync().unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = WalSync::open(dir.path().join("none-wal")).unwrap_err();
        assert!(
            matches!(&e, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(e.to_string().contains("none-wal"), "names the file: {e}");
    }
}
