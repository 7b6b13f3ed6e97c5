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

/// mimalloc 3's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h; libmimalloc-sys
/// names no constant for it). A test checks it against the option's default of 1,000 ms.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For work that streams (exports): with mimalloc, freed memory goes back to the system at once
/// instead of after a second (`MIMALLOC_PURGE_DELAY`, if set, wins). The delay kept an
/// export's peak RSS a third above glibc's; for ingest it is worth its memory (7–9 % of the
/// rate; docs/performance.md, eighth round), so only exports call this. Without the feature it
/// does nothing.
#[allow(unsafe_code)]
pub fn return_freed_memory_promptly() {
    #[cfg(feature = "mimalloc")]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's option values; any thread may, at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[cfg(all(test, feature = "mimalloc"))]
#[allow(unsafe_code)]
mod allocator_tests {
    #[test]
    fn the_purge_delay_option_is_the_one_exports_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads and sets one of mimalloc's option values.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            get(),
            1000,
            "not mimalloc 3's purge delay (default 1,000 ms)"
        );
        super::return_freed_memory_promptly();
        assert_eq!(get(), 0);
    }
}
