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
//!   makes all of the file's written data durable.
//! - Every other transaction (view flushes, erasures, keys, tables) still commits with
//!   `synchronous=FULL`; its `fsync` also covers the unsynced appends before it in the log.
//! - What power loss can take is a suffix of the log: SQLite's recovery stops at the first
//!   frame whose checksum fails, so a view flush never survives without the events before it.
//!   A checkpoint syncs the log before it copies frames into the database (it runs with
//!   `synchronous=FULL`), so the log restarts only over frames already durable.
//! - The descriptor is the log file's own: if the file was replaced (a new inode at the same
//!   path), `sync` opens the new one and syncs it too.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Makes a tenant database's write-ahead log durable; `Send`, for a thread of its own.
#[derive(Debug)]
pub struct WalSync {
    path: PathBuf,
    /// The log, opened at the first sync; with its device and inode.
    file: Option<(File, u64, u64)>,
}

impl WalSync {
    /// A handle on the log at `path` (the database's path with `-wal` appended).
    pub(crate) fn new(path: PathBuf) -> Self {
        WalSync { path, file: None }
    }

    /// The log's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `fdatasync`s the log: every frame written before this call began is durable when it
    /// returns `Ok`. After an error nothing written since the last success may be assumed
    /// durable, even by a later success (the kernel may have dropped the failed pages).
    pub fn sync(&mut self) -> io::Result<()> {
        loop {
            let (file, dev, ino) = match self.file.take() {
                Some(open) => open,
                None => {
                    let file = File::open(&self.path)?;
                    let meta = file.metadata()?;
                    (file, meta.dev(), meta.ino())
                }
            };
            file.sync_data()?;
            // The file at the path now: the same one, or a replacement whose frames the next
            // pass syncs.
            let now = std::fs::metadata(&self.path)?;
            let same = now.dev() == dev && now.ino() == ino;
            self.file = Some((file, dev, ino));
            if same {
                return Ok(());
            }
            self.file = None;
        }
    }

    /// The inode of the log last synced (for tests).
    #[cfg(test)]
    fn inode(&self) -> Option<u64> {
        self.file.as_ref().map(|f| f.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_replaced_log_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db-wal");
        std::fs::write(&path, b"first").unwrap();
        let mut sync = WalSync::new(path.clone());
        sync.sync().unwrap();
        let first = sync.inode().unwrap();
        assert_eq!(first, std::fs::metadata(&path).unwrap().ino());
        // Replaced: a new file (a new inode) at the same path, while the old one is still open
        // here (so its inode cannot be reused).
        let moved = dir.path().join("old");
        std::fs::rename(&path, &moved).unwrap();
        File::create(&path).unwrap().write_all(b"second").unwrap();
        sync.sync().unwrap();
        let second = sync.inode().unwrap();
        assert_ne!(first, second);
        assert_eq!(second, std::fs::metadata(&path).unwrap().ino());
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut sync = WalSync::new(dir.path().join("none-wal"));
        assert_eq!(sync.sync().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
