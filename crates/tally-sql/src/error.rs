//! What can go wrong with a query-time SQL query, phrased for the person who wrote it.

use std::time::Duration;

/// A query that cannot be answered. Every variant is the caller's to fix (a 4xx over HTTP).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The text is not one SQL statement DataFusion can parse.
    #[error("cannot parse the query: {0}")]
    Parse(String),
    /// A statement other than a read-only query.
    #[error("{0}")]
    NotReadOnly(String),
    /// The query names something that does not exist or does not fit (a column, a function,
    /// a type), as the planner reports it.
    #[error("{0}")]
    Plan(String),
    /// A parameter that is missing, unknown or of the wrong type.
    #[error("parameter {name}: {message}")]
    Param { name: String, message: String },
    /// A `view_at(…)` call that is not well formed.
    #[error("view_at: {0}")]
    ViewAt(String),
    /// The query ran longer than its time limit.
    #[error("the query ran longer than its time limit of {} s; narrow it or raise the limit", .0.as_secs_f64())]
    Timeout(Duration),
    /// The query needed more memory than its limit.
    #[error("the query needed more than its memory limit of {limit_mb} MB: {detail}")]
    Memory { limit_mb: usize, detail: String },
    /// The answer has more rows than the limit.
    #[error("the answer has more than {0} rows; add a LIMIT or aggregate further")]
    TooManyRows(usize),
    /// The relations a query reads hold more than the memory limit allows.
    #[error(
        "relation {name} holds more than the query's memory limit of {limit_mb} MB; query a view of it instead, or narrow it"
    )]
    RelationTooLarge { name: String, limit_mb: usize },
    /// Evaluating the query failed on the data (a division by zero, a bad cast).
    #[error("{0}")]
    Execution(String),
}
