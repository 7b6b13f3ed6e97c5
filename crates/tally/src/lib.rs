//! `tally` is the app: the glue between the engine (`tally-views`), the store (`tally-store`)
//! and the outside world.
//!
//! - [`app::Tally`]: the catalog-level service (schema, tenants, keys);
//! - [`runtime::TenantRuntime`]: one tenant's ingest, flush, query and retention;
//! - [`decode`] and [`ingest`]: the ingest edge, where bad events are stopped with a reason;
//! - [`output`]: the result forms shared by the CLI and the HTTP API;
//! - `main.rs` and [`cli`]: the `tally` command.
//!
//! Invariant: only this crate knows about users' input formats and output forms; the engine
//! and the store see typed rows and values only.

pub mod alerts;
pub mod analyses;
pub mod app;
pub mod cli;
pub mod dashboards;
pub mod decode;
pub mod erase;
pub mod error;
pub mod export;
pub mod ingest;
pub mod output;
pub mod params;
pub mod runtime;
pub mod server;
#[cfg(feature = "sql")]
pub mod sql;
pub mod tables;

pub use app::{Clock, Config, DEFAULT_TENANT, Location, Tally};
pub use error::{Error, Result};
pub use runtime::TenantRuntime;

/// With the `mimalloc` feature, every program built on this crate (the `tally` binary, its
/// tests and benchmarks) allocates with mimalloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
