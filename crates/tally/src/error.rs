//! The app's error type: what can go wrong in a command or a request, phrased for the user.
//!
//! Each variant says what was wrong and where; the CLI prints it on one line (`Display`, which
//! spells query parameters as flags) and the HTTP layer maps the variant to a status code and
//! spells them as URL parameters. Store failures are the only ones a user cannot fix by
//! changing the request; they carry the store's own message.

use tally_store::StoreError;
use tally_views::{CompileError, QueryError};

use crate::params::Spelling;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad schema SQL or a bad `--where` condition.
    #[error("{0}")]
    Compile(#[from] CompileError),
    /// A query that does not fit its view.
    #[error("{}", Spelling::Flags.message(.0))]
    Query(#[from] QueryError),
    /// A behavioural analysis that does not exist, or a bad parameter of one (named).
    #[error("{0}")]
    Analysis(#[from] tally_views::analysis::AnalysisError),
    /// A request body or argument that is not acceptable, naming the field and what is wrong
    /// (an alert's definition).
    #[error("{0}")]
    Request(String),
    /// A stream, view or tenant that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that conflicts with what exists (a tenant created twice).
    #[error("{0}")]
    Conflict(String),
    /// An argument that is not acceptable, with what to do instead.
    #[error("{0}")]
    Invalid(String),
    /// Reading an input file failed.
    #[error("cannot read {path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A failure of the store reported to several waiters (the original went to the log).
    #[error("{0}")]
    Failed(String),
    /// Like `Failed`, for a failure that retrying later may get past (the database was
    /// unreachable, another node was rebuilding the tenant's tables).
    #[error("{0}")]
    Unavailable(String),
    /// A resource ran out (file descriptors, database connections, disk), named for users;
    /// retrying later may succeed.
    #[error("{0}")]
    Exhausted(String),
    /// A query-time SQL query that cannot be answered (bad SQL, a parameter, a limit).
    #[cfg(feature = "sql")]
    #[error("{0}")]
    Sql(#[from] tally_sql::SqlError),
}

impl Error {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store(e) => e.is_transient() || e.exhausted().is_some(),
            Error::Unavailable(_) | Error::Exhausted(_) => true,
            _ => false,
        }
    }

    /// The error with the resource that ran out named, when one did: the store's own word, or
    /// the process's file descriptors (probed, since the store reports only that it could not
    /// open a file).
    pub fn naming_exhaustion(self) -> Error {
        if let Error::Store(e) = &self
            && let Some(what) = e.exhausted()
        {
            return Error::Exhausted(what.to_owned());
        }
        if matches!(self, Error::Store(_))
            && let Err(probe) = std::fs::File::open("/dev/null")
            && probe.raw_os_error() == Some(24)
        {
            return Error::Exhausted(
                "the process has no file descriptors left (its open-file limit): lower --max-open-tenants or --max-connections, or raise the limit".into(),
            );
        }
        self
    }

    /// The failure as reported to each of several waiters, keeping whether it is transient.
    pub fn shared(&self, context: &str) -> Error {
        if let Error::Exhausted(m) = self {
            return Error::Exhausted(m.clone());
        }
        if let Error::Store(e) = self
            && let Some(what) = e.exhausted()
        {
            return Error::Exhausted(what.to_owned());
        }
        let message = format!("{context}: {self}");
        if self.is_transient() {
            Error::Unavailable(message)
        } else {
            Error::Failed(message)
        }
    }

    /// Another copy of a shared failure, for the next waiter.
    pub fn copy(&self) -> Error {
        match self {
            Error::Exhausted(m) => Error::Exhausted(m.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            other if other.is_transient() => Error::Unavailable(other.to_string()),
            other => Error::Failed(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
