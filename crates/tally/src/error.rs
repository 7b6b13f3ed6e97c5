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
}

impl Error {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store(e) => e.is_transient(),
            Error::Unavailable(_) => true,
            _ => false,
        }
    }

    /// The failure as reported to each of several waiters, keeping whether it is transient.
    pub fn shared(&self, context: &str) -> Error {
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
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            other if other.is_transient() => Error::Unavailable(other.to_string()),
            other => Error::Failed(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
