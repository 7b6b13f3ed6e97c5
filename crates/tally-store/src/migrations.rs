//! Versioned migrations of Tally's own tables.
//!
//! The catalog database has its migrations applied and reverted by `tally migrate up|down`
//! (every other command applies pending ones first). A tenant database migrates itself when it
//! is opened: its internal tables belong to its data. Each migration is a pair of SQL files under
//! `migrations/<backend>/`, applied in one transaction together with its row in
//! `tally_migrations`, so a crash leaves each migration either applied or not. On PostgreSQL
//! every table is in one database, so its catalog migrations also create the tenant tables, and
//! nodes starting together take turns under an advisory lock.

use crate::Store;
use crate::error::{Result, StoreError};

/// One migration step.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) up: &'static str,
    pub(crate) down: &'static str,
}

macro_rules! migration {
    ($version:expr, $dir:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            up: include_str!(concat!("../migrations/", $dir, "/", $name, ".up.sql")),
            down: include_str!(concat!("../migrations/", $dir, "/", $name, ".down.sql")),
        }
    };
}

/// The SQLite catalog's migrations, oldest first.
pub(crate) const CATALOG: &[Migration] = &[
    migration!(1, "sqlite/catalog", "0001_tenants_and_keys"),
    migration!(2, "sqlite/catalog", "0002_schema_objects"),
    migration!(3, "sqlite/catalog", "0003_manage_keys"),
];

/// A SQLite tenant database's migrations, oldest first.
pub(crate) const TENANT: &[Migration] = &[
    migration!(1, "sqlite/tenant", "0001_positions"),
    migration!(2, "sqlite/tenant", "0002_rejections"),
    migration!(3, "sqlite/tenant", "0003_keys_merged"),
    migration!(4, "sqlite/tenant", "0004_table_rows"),
    migration!(5, "sqlite/tenant", "0005_view_failures"),
    migration!(6, "sqlite/tenant", "0006_records"),
    migration!(7, "sqlite/tenant", "0007_time_spans"),
    migration!(8, "sqlite/tenant", "0008_key_blocks"),
    migration!(9, "sqlite/tenant", "0009_event_blocks"),
];

/// The PostgreSQL database's migrations, oldest first.
pub(crate) const POSTGRES: &[Migration] = &[
    migration!(1, "postgres/catalog", "0001_tenants_and_keys"),
    migration!(2, "postgres/catalog", "0002_tenant_tables"),
    migration!(3, "postgres/catalog", "0003_rejections"),
    migration!(4, "postgres/catalog", "0004_table_rows"),
    migration!(5, "postgres/catalog", "0005_view_failures"),
    migration!(6, "postgres/catalog", "0006_records"),
    migration!(7, "postgres/catalog", "0007_keys_by_hash"),
    migration!(8, "postgres/catalog", "0008_policy_setting_once"),
    migration!(9, "postgres/catalog", "0009_event_blocks"),
    migration!(10, "postgres/catalog", "0010_stream_incarnations"),
];

/// The table every database records its applied migrations in.
pub(crate) const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS tally_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

/// Whether a migration is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub name: String,
    pub applied: bool,
}

/// The catalog's migrations of a store.
pub struct Migrations<'a> {
    pub(crate) store: &'a Store,
}

impl Migrations<'_> {
    /// The migrations this store's backend knows.
    fn known(&self) -> &'static [Migration] {
        match self.store {
            Store::Postgres(_) => POSTGRES,
            Store::Sqlite(_) | Store::Memory(_) => CATALOG,
        }
    }

    /// Every known migration and whether it is applied.
    pub fn status(&self) -> Result<Vec<MigrationStatus>> {
        let applied = self.applied()?;
        let known = self.known().last().map_or(0, |m| m.version);
        if let Some(&newest) = applied.iter().max()
            && newest > known
        {
            return Err(StoreError::TooNew {
                found: newest,
                known,
            });
        }
        Ok(self
            .known()
            .iter()
            .map(|m| MigrationStatus {
                version: m.version,
                name: m.name.to_owned(),
                applied: applied.contains(&m.version),
            })
            .collect())
    }

    fn applied(&self) -> Result<Vec<i64>> {
        match self.store {
            Store::Sqlite(s) => s.applied_migrations(),
            Store::Postgres(p) => p.applied_migrations(),
            Store::Memory(m) => Ok(m.applied_migrations()),
        }
    }

    /// Applies every pending migration; returns those applied.
    pub fn up(&self) -> Result<Vec<MigrationStatus>> {
        let mut done = Vec::new();
        for status in self.status()? {
            if status.applied {
                continue;
            }
            let Some(m) = self.known().iter().find(|m| m.version == status.version) else {
                continue;
            };
            match self.store {
                Store::Sqlite(s) => s.run_migration(m, true)?,
                Store::Postgres(p) => p.run_migration(m, true)?,
                Store::Memory(mem) => mem.set_migration(m.version, true),
            }
            done.push(MigrationStatus {
                applied: true,
                ..status
            });
        }
        Ok(done)
    }

    /// Reverts the newest applied migration, if any.
    pub fn down(&self) -> Result<Option<MigrationStatus>> {
        let Some(status) = self.status()?.into_iter().rev().find(|s| s.applied) else {
            return Ok(None);
        };
        let Some(m) = self.known().iter().find(|m| m.version == status.version) else {
            return Ok(None);
        };
        match self.store {
            Store::Sqlite(s) => s.run_migration(m, false)?,
            Store::Postgres(p) => p.run_migration(m, false)?,
            Store::Memory(mem) => mem.set_migration(m.version, false),
        }
        Ok(Some(MigrationStatus {
            applied: false,
            ..status
        }))
    }

    /// Whether every known migration is applied.
    pub fn is_current(&self) -> Result<bool> {
        Ok(self.status()?.iter().all(|s| s.applied))
    }
}
