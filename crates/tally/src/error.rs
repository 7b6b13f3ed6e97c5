//! The app's error type: what can go wrong in a command or a request, phrased for the user.
//!
//! Each variant says what was wrong and where; the CLI prints it on one line and the HTTP layer
//! maps the variant to a status code. Store failures are the only ones a user cannot fix by
//! changing the request; they carry the store's own message.

use tally_store::StoreError;
use tally_views::{CompileError, QueryError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad schema SQL or a bad `--where` condition.
    #[error("{0}")]
    Compile(#[from] CompileError),
    /// A query that does not fit its view.
    #[error("{0}")]
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
