//! Alerts (docs/alerts.md): a condition on a live view's value per group, evaluated the moment
//! an ingest changes the view and by a timer as time passes; each change of a group's state is
//! one notification, delivered to a webhook at least once under a stable id.
//!
//! - `spec.rs` — what a user sends (`POST`/`PATCH /v1/alerts`, `tally alert create`), read
//!   field by field with errors naming the field, and checked against the view;
//! - `eval.rs` — the pure evaluation: the buckets an alert looks at, the view query that reads
//!   them, each group's series of values, and whether the condition holds;
//! - `book.rs` — the tenant's alerts as the runtime keeps them (definitions, group states,
//!   deliveries in flight) and the records they are stored as;
//! - `webhook.rs` — Standard Webhooks signatures, webhook addresses refused, the retry schedule
//!   and one delivery attempt over HTTP.
//!
//! Everything an alert keeps is a tenant record (`TenantStore::write_records`): a state change
//! writes the group's new state, its history entry and its pending delivery in one transaction,
//! so a crash either loses the change (it is found again by the next evaluation) or keeps it
//! with its delivery, which is retried until it succeeds or its time runs out.

mod book;
mod eval;
mod spec;
pub mod webhook;

pub use book::{AlertOp, Attempt, Book, Dispatch};
pub use eval::{Series, Verdict, verdict};
pub use spec::{AlertSpec, Condition, WebhookSpec};

/// Record kinds (`tally_records.kind`).
pub(crate) const ALERT: &str = "alert";
pub(crate) const STATE: &str = "alert_state";
pub(crate) const HISTORY: &str = "alert_history";
pub(crate) const DELIVERY: &str = "alert_delivery";

/// A key above every key Tally makes (they are ASCII letters, digits, `_`, `-`, `/`).
pub(crate) const KEY_END: &str = "~";
