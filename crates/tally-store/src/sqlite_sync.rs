//! Commits synced by another thread: a SQLite tenant's appends in an ingest session commit with
//! `synchronous=NORMAL` (their WAL frames written, not synced), and a thread of the caller's
//! makes them durable with [`WalSync::sync`] (`fdatasync` of the WAL through a descriptor of
//! its own) before their requests are answered, while the committing thread writes the next.
//!
//! Why an answer after a sync is as durable as a commit with `synchronous=FULL`: in WAL mode the
//! two differ in that `NORMAL` does not sync the WAL at each commit (nor pad a commit to a
//! sector, which `FULL` does only where SQLite does not assume power-safe overwrite, its
//! default); SQLite still syncs the WAL before a checkpoint copies it, and its header when it
//! starts over. An `fdatasync` that begins after a commit returned covers that commit's frames,
//! and the WAL recovers as a prefix (its frames form a checksum chain), so no later transaction
//! (a view's flush) survives a power loss without the events before it.

use std::fs::File;
use std::path::PathBuf;

use crate::error::Result;
use crate::sqlite::io_error;

/// The WAL of a tenant's database, opened to be synced by another thread
/// ([`crate::TenantStore::defer_sync`]).
pub struct WalSync {
    file: File,
    path: PathBuf,
}

impl WalSync {
    /// Opens the WAL at `path`, and syncs its directory (SQLite syncs it at the WAL's first
    /// sync, which `synchronous=NORMAL` puts off to a checkpoint); `None` if there is no WAL
    /// yet.
    pub(crate) fn open(path: PathBuf) -> Result<Option<WalSync>> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(&path, source)),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let synced = File::open(dir).and_then(|d| d.sync_all());
            synced.map_err(|e| io_error(dir, e))?;
        }
        Ok(Some(WalSync { file, path }))
    }

    /// Makes every commit that returned before this call durable. Fails if another file took
    /// the WAL's place (the writer would be writing that one).
    pub fn sync(&self) -> Result<()> {
        let (ours, named) = (
            self.file.metadata().map_err(|e| io_error(&self.path, e))?,
            std::fs::metadata(&self.path).map_err(|e| io_error(&self.path, e))?,
        );
        if !same_file(&ours, &named) {
            return Err(io_error(
                &self.path,
                std::io::Error::other("the write-ahead log was replaced by another file"),
            ));
        }
        self.file.sync_data().map_err(|e| io_error(&self.path, e))
    }
}

/// Whether two files' metadata are of one file (on Unix, its device and inode; elsewhere not
/// known, so assumed).
#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use tally_views::sql::apply;
    use tally_views::{Catalog, Timestamp, Value};

    use crate::{Store, TenantStore};

    fn synchronous(tenant: &TenantStore) -> i64 {
        match tenant {
            TenantStore::Sqlite(s) => s.synchronous(),
            _ => unreachable!("a SQLite tenant"),
        }
    }

    /// Commits go unsynced between `defer_sync` and `end_deferred_sync` only; the handle syncs
    /// the WAL, and fails, naming it, once another file has taken the WAL's place (the
    /// connection still writes the one it opened), in this deferral and the next.
    #[test]
    fn a_deferred_sync_is_set_restored_and_checks_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).unwrap();
        store.migrations().up().unwrap();
        let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        store.create_tenant("acme", "UTC", at).unwrap();
        let schema = "CREATE STREAM s (id TEXT, at TIMESTAMP NOT NULL) \
                      WITH (event_time = 'at', dedupe_key = 'id');";
        let catalog = apply(&Catalog::new(), schema).unwrap().catalog;
        let stream = catalog.stream("s").unwrap().clone();
        let mut tenant = store.tenant("acme").unwrap();
        tenant.create_stream(&stream).unwrap();
        let row = |id: &str| vec![Value::text(id), Value::Timestamp(at)];
        tenant.append(&stream, &[row("a")]).unwrap();
        assert_eq!(synchronous(&tenant), 2);

        let wal = tenant.defer_sync().unwrap().expect("a WAL after a write");
        assert_eq!(synchronous(&tenant), 1);
        tenant.append(&stream, &[row("b")]).unwrap();
        wal.sync().unwrap();

        let path = dir.path().join("tenants").join("acme.db-wal");
        std::fs::rename(&path, path.with_extension("db-wal-moved")).unwrap();
        std::fs::write(&path, b"").unwrap();
        let e = wal.sync().unwrap_err().to_string();
        assert!(e.contains("acme.db-wal") && e.contains("replaced"), "{e}");

        tenant.end_deferred_sync().unwrap();
        assert_eq!(synchronous(&tenant), 2);
        // The next deferral keeps the handle of the file SQLite writes, not the one named now.
        let again = tenant.defer_sync().unwrap().expect("the WAL kept");
        assert!(std::sync::Arc::ptr_eq(&wal, &again) && again.sync().is_err());
        tenant.end_deferred_sync().unwrap();
        assert_eq!(
            tenant.append(&stream, &[row("b"), row("c")]).unwrap(),
            [None, Some(3)]
        );
    }
}
