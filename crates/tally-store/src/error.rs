//! The store's error type, [`StoreError`], and its [`Result`] alias.

use tally_views::codec::CodecError;

/// A failure of the store. Messages say what failed and, where the user can act, how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {}", crate::postgres::pg_message(.0))]
    Postgres(#[from] ::postgres::Error),
    /// The database would not keep tenants apart; the message says how to fix it.
    #[error("{0}")]
    Unsafe(String),
    /// Another node is changing the tenant's tables; retrying shortly succeeds.
    #[error("{0}")]
    Busy(String),
    /// The stored schema is not the one a change was made against.
    #[error("the schema changed in another process while this change was prepared; apply it again")]
    SchemaChanged,
    /// What this backend cannot do, and what to do instead.
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot use data directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(#[from] CodecError),
    #[error("tenant {0} already exists")]
    TenantExists(String),
    #[error("there is no tenant {0}")]
    NoTenant(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error(
        "the store's schema is at migration {found}, newer than this version of Tally knows ({known}); upgrade Tally"
    )]
    TooNew { found: i64, known: i64 },
    #[error("the catalog is not migrated: run `tally migrate up`")]
    NotMigrated,
}

impl StoreError {
    /// Whether retrying later may succeed: the database was unreachable or another node was
    /// busy with the tenant's tables, as opposed to a failure of the request itself.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::Postgres(e) => match e.code() {
                // Connection exceptions, insufficient resources, operator intervention (a
                // restart, a terminated backend), transaction rollbacks (serialization, deadlock).
                Some(code) => ["08", "53", "57", "40"]
                    .iter()
                    .any(|class| code.code().starts_with(class)),
                None => true,
            },
            _ => false,
        }
    }

    /// The resource the database ran out of, when that is what failed: a message for users.
    pub fn exhausted(&self) -> Option<&'static str> {
        match self {
            StoreError::Postgres(e) => match e.code().map(|c| c.code()) {
                Some("53300") => Some(
                    "the database accepts no more connections (its max_connections): lower --max-open-tenants or raise max_connections",
                ),
                Some("53100") => Some("the database server's disk is full"),
                Some("53200") => Some("the database server is out of memory"),
                _ => None,
            },
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                Some(DATA_DISK_FULL)
            }
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                Some(DATA_DISK_FULL)
            }
            _ => None,
        }
    }
}

/// What [`StoreError::exhausted`] says when the data directory's disk is full, however it
/// surfaced (SQLite's `SQLITE_FULL`, an I/O error of the directory).
const DATA_DISK_FULL: &str = "the disk holding the data directory is full";

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
