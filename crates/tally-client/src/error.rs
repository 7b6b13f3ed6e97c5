//! The client's errors: what a call refused at once, and what a flush could not deliver.

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL cannot be used.
    #[error("the server URL '{url}' is not valid: {reason}")]
    Url { url: String, reason: String },
    /// A message lacks something the server needs (say which) and was not queued.
    #[error("the message is not valid: {0}")]
    Invalid(String),
    /// A message is larger than 256 KB (`MAX_MESSAGE_BYTES`) and was not queued.
    #[error("the message is {bytes} bytes; a message may have at most {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    /// The buffer holds `capacity` messages already and the overflow policy is
    /// [`Overflow::Reject`](crate::Overflow::Reject): the message was not queued.
    #[error("the buffer is full ({capacity} messages waiting); the message was not queued")]
    BufferFull { capacity: usize },
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// Messages queued before a flush could not all be delivered: the server refused them (a
    /// 4xx other than 408 and 429), or retries ran out, or the buffer dropped them.
    #[error("{failed} message(s) were not delivered; last error: {last_error}")]
    Undelivered { failed: u64, last_error: String },
    /// `flush` or `close` gave up waiting.
    #[error("gave up after waiting {0:?} for the messages to be delivered")]
    Timeout(std::time::Duration),
    /// The background thread could not start.
    #[error("the client's background thread could not start: {0}")]
    Start(String),
}
