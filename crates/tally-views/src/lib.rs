//! `tally-views` is the brain of Tally: it compiles SQL into view plans and applies events to
//! them incrementally.
//!
//! - [`sql`] compiles schema text (`CREATE STREAM`, `CREATE MATERIALIZED VIEW`) into a
//!   [`Catalog`] of [`StreamDef`]s and [`ViewPlan`]s; it is the only module that uses
//!   `sqlparser`. [`ViewPlan`] also merges and finalizes view rows.
//! - [`engine`] applies batches of events to the plans, producing a [`Delta`] of mergeable
//!   aggregate states ([`agg`]) per group.
//! - [`query`] reads stored and pending states of a view, re-groups them and finalizes results.
//! - [`reference`] recomputes a view from raw events: the oracle of the differential tests.
//!
//! Invariant: this crate does no IO, spawns nothing, blocks on nothing and knows nothing of
//! HTTP, JSON APIs or databases. `Engine::apply` is synchronous and has no error path: an
//! event whose expressions fail is left out of that view and counted.

pub mod agg;
pub mod analysis;
pub mod builtin;
pub mod codec;
pub mod decimal;
pub mod engine;
pub mod expr;
pub mod hll;
pub mod plan;
pub mod query;
pub mod reference;
pub mod sketch;
pub mod sql;
pub mod time;
pub mod value;

pub use agg::{AggKind, AggState};
pub use engine::{Delta, Engine, Event, GroupKey, ViewDelta};
pub use plan::{
    Catalog, CellError, ColumnDef, ColumnDefault, ColumnSource, SavedQuery, StreamDef, TableDef,
    ViewColumn, ViewPlan,
};
pub use query::{OrderBy, Param, QueryError, QueryPlan, QueryRequest, ResultSet};
pub use sql::{Applied, Change, CompileError};
pub use time::Interval;
pub use value::{DateCache, SmolStr, Timestamp, Type, Value};

pub use jiff::tz::TimeZone;

#[cfg(test)]
mod tests;
