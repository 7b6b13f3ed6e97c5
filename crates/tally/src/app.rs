//! `Tally`: the catalog-level service every command and route goes through.
//!
//! It owns the [`Store`] and the compiled [`Catalog`], applies schema changes to every tenant,
//! creates tenants and keys, and opens [`TenantRuntime`]s. Opening a data directory migrates the
//! catalog and creates the `default` tenant, so every command works on a fresh machine.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tally_store::{KeyKind, KeyRecord, Store, TenantInfo};
use tally_views::{Catalog, Change, Interval, StreamDef, TimeZone, Timestamp};

use crate::error::{Error, Result};
use crate::runtime::TenantRuntime;

/// The name of the tenant every command uses unless told otherwise.
pub const DEFAULT_TENANT: &str = "default";

/// Where "now" comes from: the system clock, or a settable instant for tests.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Fixed(Arc<Mutex<Timestamp>>),
}

impl Clock {
    /// A clock stopped at `t`.
    pub fn fixed(t: Timestamp) -> Clock {
        Clock::Fixed(Arc::new(Mutex::new(t)))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::from_jiff(jiff::Timestamp::now()),
            Clock::Fixed(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a fixed clock; no effect on the system clock.
    pub fn set(&self, t: Timestamp) {
        if let Clock::Fixed(cell) = self {
            *cell.lock().unwrap_or_else(|p| p.into_inner()) = t;
        }
    }
}

/// The stack of every thread that compiles SQL or evaluates expressions (tenant workers, the
/// server's threads): SQL text is bounded ([`tally_views::sql::MAX_DEPTH`],
/// [`tally_views::sql::MAX_TOKENS`]) so that its recursive walks fit in 2 MiB even unoptimized;
/// this leaves four times that.
pub const THREAD_STACK: usize = 8 * 1024 * 1024;

/// Rows per durable commit of a bulk ingest, by default.
pub const BATCH_ROWS: usize = 10_000;

/// Settings shared by every command.
#[derive(Clone, Debug)]
pub struct Config {
    /// How far in the future an event time may be.
    pub max_future: Interval,
    /// Rows per durable commit of a bulk ingest.
    pub batch_rows: usize,
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_future: Interval::Days(1),
            batch_rows: BATCH_ROWS,
            clock: Clock::System,
        }
    }
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub enum Location {
    /// A directory holding `catalog.db` and `tenants/*.db`.
    Directory(PathBuf),
    /// A PostgreSQL database: a URL and the schema Tally's tables live in.
    Postgres(tally_store::PgConfig),
    /// Nothing on disk (tests).
    Memory,
}

impl Location {
    /// Opens the store, without migrating it.
    pub fn open_store(&self) -> Result<Store> {
        Ok(match self {
            Location::Directory(dir) => Store::open_sqlite(dir)?,
            Location::Postgres(config) => Store::open_postgres(config.clone())?,
            Location::Memory => Store::memory(),
        })
    }
}

/// What applying a schema did to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeReport {
    pub change: Change,
    /// For created and replaced views: the events replayed into it, over all tenants.
    pub backfilled: Option<u64>,
    /// What the definition may not mean as written (an integer division).
    pub warnings: Vec<String>,
}

impl fmt::Display for ChangeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.change)?;
        if let Some(n) = self.backfilled {
            write!(
                f,
                " (backfilled {n} event{})",
                if n == 1 { "" } else { "s" }
            )?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// The service: store, catalog and configuration.
pub struct Tally {
    store: Store,
    catalog: Catalog,
    config: Config,
}

impl Tally {
    /// Opens (creating when missing) the data at `location`, migrates the catalog, ensures the
    /// `default` tenant and loads the schema.
    pub fn open(location: &Location, config: Config) -> Result<Tally> {
        Tally::with_store(location.open_store()?, config)
    }

    /// Like [`Tally::open`], over an already opened store.
    pub fn with_store(store: Store, config: Config) -> Result<Tally> {
        store.migrations().up()?;
        store.check_isolation()?;
        let catalog = load_catalog(&store)?;
        let tally = Tally {
            store,
            catalog,
            config,
        };
        if tally.store.tenant_info(DEFAULT_TENANT)?.is_none() {
            match tally
                .store
                .create_tenant(DEFAULT_TENANT, "UTC", tally.now())
            {
                // Another process created it first.
                Ok(()) | Err(tally_store::StoreError::TenantExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(tally)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn now(&self) -> Timestamp {
        self.config.clock.now()
    }

    /// The stream called `name`.
    pub fn stream(&self, name: &str) -> Result<Arc<StreamDef>> {
        self.catalog.stream(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = self.catalog.streams().map(|s| s.name.as_str()).collect();
            Error::NotFound(format!(
                "there is no stream {name}; the streams are {}",
                names.join(", ")
            ))
        })
    }

    /// Applies schema text: compiles it against the current catalog, checks new views against
    /// the retained events, stores the new schema and brings every tenant up to it (creating
    /// tables, backfilling new views and rebuilding changed ones).
    pub fn apply_schema(&mut self, sql: &str) -> Result<Vec<ChangeReport>> {
        if self.store.is_shared() {
            // Another node may have changed the schema since this one loaded it.
            self.reload_catalog()?;
        }
        let applied = tally_views::sql::apply(&self.catalog, sql)?;
        let new_views: Vec<String> = applied
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::CreatedView(n) | Change::ReplacedView(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        if applied.changes.iter().any(Change::is_change) {
            // Every saved query must still plan: a change may drop or reshape what one reads.
            #[cfg(feature = "sql")]
            for query in applied.catalog.saved_queries() {
                crate::sql::check_saved_query(&applied.catalog, query)
                    .map_err(|e| Error::Invalid(format!("saved query {}: {e}", query.name)))?;
            }
            match self
                .store
                .replace_schema(&self.catalog.definitions(), &applied.catalog.definitions())
            {
                Ok(()) => {}
                Err(tally_store::StoreError::SchemaChanged) => {
                    return Err(Error::Conflict(
                        "the schema changed on another node while this change was applied; apply it again".into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // An unchanged schema keeps the definitions as stored (the new text may spell them
        // differently).
        let previous = if applied.changes.iter().any(Change::is_change) {
            std::mem::replace(&mut self.catalog, applied.catalog)
        } else {
            self.catalog.clone()
        };
        let mut backfilled: HashMap<String, u64> =
            new_views.iter().map(|v| (v.clone(), 0)).collect();
        if let Err(e) = self.reconcile_tenants(&mut backfilled) {
            // A change that fails half-way leaves the stored schema as it was, and the tenants'
            // tables with it (best effort: the store failed once already).
            tracing::error!(error = %e, "the schema change failed; restoring the previous schema");
            let failed = std::mem::replace(&mut self.catalog, previous);
            let restored = self
                .store
                .replace_schema(&failed.definitions(), &self.catalog.definitions())
                .map_err(Error::from)
                .and_then(|()| self.reconcile_tenants(&mut HashMap::new()));
            if let Err(again) = restored {
                tracing::error!(error = %again, "restoring the previous schema failed too");
            }
            return Err(e);
        }
        Ok(applied
            .changes
            .into_iter()
            .map(|change| {
                let (backfilled, warnings) = match &change {
                    Change::CreatedView(n) | Change::ReplacedView(n) => (
                        backfilled.get(n).copied(),
                        self.catalog
                            .view(n)
                            .map(|v| v.warnings.clone())
                            .unwrap_or_default(),
                    ),
                    _ => (None, Vec::new()),
                };
                ChangeReport {
                    change,
                    backfilled,
                    warnings,
                }
            })
            .collect())
    }

    /// Opens every tenant with the current catalog, which reconciles its tables and replays
    /// (backfills) its views; adds what each view replayed to `backfilled`.
    fn reconcile_tenants(&self, backfilled: &mut HashMap<String, u64>) -> Result<()> {
        for info in self.store.tenants()? {
            let runtime = match TenantRuntime::open(&self.store, &self.catalog, info) {
                Ok(runtime) => runtime,
                // Another node leads this tenant: it rebuilds the tables when it loads the
                // new schema (it checks for one every few seconds).
                Err(Error::Store(tally_store::StoreError::Busy(_))) => continue,
                Err(e) => return Err(e),
            };
            for (view, count) in backfilled.iter_mut() {
                *count += runtime.replayed(view);
            }
        }
        Ok(())
    }

    /// Creates a tenant with its time zone.
    pub fn create_tenant(&self, name: &str, time_zone: &str) -> Result<TenantInfo> {
        validate_tenant_name(name)?;
        let tz = TimeZone::get(time_zone).map_err(|_| {
            Error::Invalid(format!("unknown time zone {time_zone}; use an IANA name such as Europe/Berlin or America/New_York"))
        })?;
        let canonical = tz.iana_name().unwrap_or(time_zone).to_owned();
        match self.store.create_tenant(name, &canonical, self.now()) {
            Ok(()) => {}
            Err(tally_store::StoreError::TenantExists(_)) => {
                return Err(Error::Conflict(format!("tenant {name} already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        // Create its tables now, so the tenant is complete even before its first event. A
        // creation that fails half-way is undone, so that trying again works.
        let created = self.tenant_info(name).and_then(|info| {
            TenantRuntime::open(&self.store, &self.catalog, info.clone())
                .map(|_| info)
                .map_err(Error::naming_exhaustion)
        });
        self.undo_on_error(name, created)
    }

    /// Creates a tenant with a key of each kind given, all or nothing: keys are shown once, so
    /// a tenant whose keys could not be made is not left behind.
    pub fn create_tenant_with_keys(
        &self,
        name: &str,
        time_zone: &str,
        kinds: &[KeyKind],
    ) -> Result<(TenantInfo, Vec<String>)> {
        let info = self.create_tenant(name, time_zone)?;
        let keys = kinds
            .iter()
            .map(|&kind| self.create_key(name, kind))
            .collect::<Result<Vec<_>>>();
        let keys = self.undo_on_error(name, keys)?;
        Ok((info, keys))
    }

    /// Forgets tenant `name` when `result` is an error (its creation did not complete).
    fn undo_on_error<T>(&self, name: &str, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            tracing::error!(tenant = name, error = %e, "creating the tenant failed; undoing it");
            if let Err(undo) = self.store.forget_tenant(name) {
                tracing::error!(tenant = name, error = %undo, "undoing the tenant failed");
            }
        }
        result
    }

    pub fn tenants(&self) -> Result<Vec<TenantInfo>> {
        Ok(self.store.tenants()?)
    }

    pub fn tenant_info(&self, name: &str) -> Result<TenantInfo> {
        self.store.tenant_info(name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "there is no tenant {name}; create it with `tally tenant create {name}`"
            ))
        })
    }

    /// Opens a tenant for ingest and queries.
    pub fn open_tenant(&self, name: &str) -> Result<TenantRuntime> {
        let info = self.tenant_info(name)?;
        TenantRuntime::open(&self.store, &self.catalog, info).map_err(Error::naming_exhaustion)
    }

    /// Creates a key for a tenant and returns it; only its hash is stored.
    pub fn create_key(&self, tenant: &str, kind: KeyKind) -> Result<String> {
        self.tenant_info(tenant)?;
        let key = new_key(kind);
        let record = KeyRecord {
            tenant: tenant.to_owned(),
            kind,
            prefix: key[..14].to_owned(),
            created_at: self.now(),
            revoked: false,
        };
        self.store.create_key(&hash_key(&key), &record)?;
        Ok(key)
    }
}

/// Loads and compiles the stored schema.
impl Tally {
    /// Loads the schema again from the store, where another process may have changed it.
    /// Returns whether it changed.
    pub fn reload_catalog(&mut self) -> Result<bool> {
        if !self.schema_changed()? {
            return Ok(false);
        }
        self.catalog = load_catalog(&self.store)?;
        Ok(true)
    }

    /// Whether the stored schema differs from the loaded one (another process changed it).
    pub fn schema_changed(&self) -> Result<bool> {
        Ok(self.store.schema()? != self.catalog.definitions())
    }

    /// Whether other processes may serve the same tenants (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Whether the store's appends of `stream` take dedupe keys hashed beforehand (SQLite;
    /// PostgreSQL for keys it filters).
    pub fn hashes_keys(&self, stream: &tally_views::StreamDef) -> bool {
        self.store.hashes_keys(stream)
    }
}

fn load_catalog(store: &Store) -> Result<Catalog> {
    let definitions = store.schema()?;
    let mut catalog = Catalog::new();
    for (name, sql) in definitions {
        catalog = tally_views::sql::apply(&catalog, &sql)
            .map_err(|e| {
                Error::Invalid(format!(
                    "the stored definition of {name} no longer compiles: {e}"
                ))
            })?
            .catalog;
    }
    Ok(catalog)
}

fn validate_tenant_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(Error::Invalid(format!(
            "'{name}' is not a valid tenant name; use lower-case letters, digits, - and _, at most 63 characters"
        )));
    }
    Ok(())
}

/// A new random key: a kind prefix and 256 random bits in hex.
fn new_key(kind: KeyKind) -> String {
    use rand::Rng;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let prefix = match kind {
        KeyKind::Read => "tly_r_",
        KeyKind::Write => "tly_w_",
        KeyKind::Manage => "tly_m_",
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The stored form of a key: its SHA-256.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}
