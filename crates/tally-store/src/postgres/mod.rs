//! The PostgreSQL backend: every tenant in one database, isolated by row-level security.
//!
//! All tables live in one schema (`tally` unless configured). Stream and view tables are shared
//! by the tenants: `tenant_id` is the first column of each, and every one has row-level security
//! enabled and forced with the same policy, `tenant_id = (SELECT
//! current_setting('tally.tenant_id'))` (the subquery: read once per statement, not per row).
//! Each transaction sets that with `set_config(…, true)` (the function form of `SET LOCAL`), so
//! a query can only ever see the tenant it runs for, and a transaction that forgot to set it
//! sees nothing.
//!
//! Raw events are stored in blocks (`<stream>#blocks`: one row per append and week, each column
//! an array), partitioned by event time, one partition per week (Monday to Monday, UTC),
//! created on demand; retention drops whole partitions once every tenant's views have applied
//! them. An append takes the tenant's `tally_streams` row lock, looks its dedupe keys up (those
//! its connection's key filter does not rule out), and writes each week's block as binary array
//! parameters of one `INSERT` and its keys by `unnest`, with sequence numbers handed out under
//! that lock, so appends of one stream commit in sequence order on every node.
//!
//! Several nodes may serve one tenant: each holds its own connection per tenant, and the
//! advisory lock taken by [`Lease::try_lead`] elects the one node that writes the tenant's view
//! tables.
//!
//! The files of this module:
//! - `mod.rs` — [`PgConfig`], [`PgStore`] (the catalog connection: migrations, the applied
//!   schema, tenants, keys, reader roles, the isolation check) and [`PgTenant`];
//! - `conn.rs` — connecting (TLS, the role and schema checks), [`Conn`], tenant transactions and
//!   error text;
//! - `wire.rs` — how values, types and names travel: binary parameters, timestamps, column
//!   types, cells read back;
//! - `ddl.rs` — the tenant tables: derived names, stream and view DDL, week partitions;
//! - `keys.rs` — the dedupe keys: the key table's probe and insert, the connections' key filters;
//! - `data.rs` — the data path: append, read, load, flush, snapshot, erasure, retention;
//! - `lead.rs` — leadership, behind [`Lease`]: the tenant's lead and the schema lock held shared.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tally_views::Timestamp;

use crate::error::{Result, StoreError};
use crate::migrations::Migration;
use crate::types::{KeyKind, KeyRecord, TenantInfo};

mod conn;
mod data;
mod ddl;
mod keys;
mod lead;
mod wire;

use conn::{Conn, catalog_error, connect, tenant_tx};
use wire::{literal, quote};

pub(crate) use conn::pg_message;

/// Whether a PostgreSQL tenant filters the keys of `stream` (its appends use
/// [`crate::KeyHashes`]).
pub(crate) fn filters_keys(stream: &tally_views::StreamDef) -> bool {
    keys::KeyFilter::applies(stream)
}
pub use lead::Lease;

/// The advisory lock key that serializes migrations across nodes.
const MIGRATION_LOCK: i64 = 0x7461_6c6c_796d_6967;
/// The advisory lock key that orders schema changes against tenants' reconciles.
const SCHEMA_LOCK: i64 = 0x7461_6c6c_7973_6368;

/// Where the PostgreSQL store lives.
#[derive(Clone, Debug)]
pub struct PgConfig {
    pub url: String,
    pub schema: String,
}

/// The PostgreSQL catalog connection.
pub struct PgStore {
    config: PgConfig,
    catalog: Mutex<Conn>,
}

/// One tenant's view of the shared tables, on its own connection.
pub struct PgTenant(Mutex<PgConn>);

impl PgTenant {
    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, PgConn> {
        // A poisoned lock left at most an open transaction, rolled back when its guard dropped.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection of a [`PgTenant`] and what it has created.
pub(crate) struct PgConn {
    client: Conn,
    tenant: String,
    schema: String,
    /// Staging tables created on this connection, by name, with the definition they match.
    stages: HashMap<String, String>,
    /// Week partitions known to exist, per stream (week start in microseconds).
    partitions: HashMap<String, BTreeSet<i64>>,
    /// Whether this connection holds the tenant's lead.
    leading: bool,
    /// Per stream whose keys are filtered: the filter of its stored keys, as of this
    /// connection's last append (see `keys.rs`).
    key_filters: HashMap<String, keys::KeyFilter>,
}

/// The current time as the catalog stores it (RFC 3339 text).
fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

impl PgStore {
    /// Connects, creating the schema when missing, and refuses roles that bypass row-level
    /// security.
    pub(crate) fn open(config: PgConfig) -> Result<PgStore> {
        let mut client = connect(&config)?;
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS tally_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at text NOT NULL)",
        )?;
        Ok(PgStore {
            config,
            catalog: Mutex::new(client),
        })
    }

    pub(crate) fn config(&self) -> &PgConfig {
        &self.config
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves at most an open transaction, which the next
        // `transaction()` call cannot reuse; PostgreSQL rolls it back when the client drops it.
        let mut conn = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_closed() {
            // The server restarted or dropped the connection: the failed call reported it;
            // this one connects again (or fails the same way, and the next one tries again).
            if let Ok(fresh) = connect(&self.config) {
                *conn = fresh;
            }
        }
        conn
    }

    pub(crate) fn applied_migrations(&self) -> Result<Vec<i64>> {
        let rows = self
            .conn()
            .query("SELECT version FROM tally_migrations ORDER BY version", &[])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) fn run_migration(&self, m: &Migration, up: bool) -> Result<()> {
        let mut conn = self.conn();
        let mut tx = conn.transaction()?;
        // Nodes starting together migrate one at a time; the later ones find the work done.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        let applied = tx
            .query_opt(
                "SELECT 1 FROM tally_migrations WHERE version = $1",
                &[&m.version],
            )?
            .is_some();
        if applied == up {
            return Ok(());
        }
        let sql = if up { m.up } else { m.down };
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Migration(format!(
                "{} {}: {}",
                if up { "applying" } else { "reverting" },
                m.name,
                pg_message(&e)
            ))
        })?;
        if up {
            tx.execute(
                "INSERT INTO tally_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[&m.version, &m.name, &now_text()],
            )?;
        } else {
            tx.execute(
                "DELETE FROM tally_migrations WHERE version = $1",
                &[&m.version],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Checks that every table with a `tenant_id` column has row-level security enabled and
    /// forced, so that no tenant table was created or altered around Tally's policy.
    pub(crate) fn check_isolation(&self) -> Result<()> {
        let rows = self.conn().query(
            "SELECT c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
                AND c.relname NOT IN ('tenants', 'api_keys', 'scheduled_tenants')
                AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
              ORDER BY c.relname",
            &[&self.config.schema],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let fixes: Vec<String> = tables
            .iter()
            .map(|t| {
                let t = format!("{}.{}", quote(&self.config.schema), quote(t));
                format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY;")
            })
            .collect();
        Err(StoreError::Unsafe(format!(
            "tenant tables without forced row-level security in schema {}: {}. Tally refuses to \
             serve tenants that could see each other's rows. Fix it as the tables' owner:\n  {}",
            self.config.schema,
            tables.join(", "),
            fixes.join("\n  ")
        )))
    }

    pub(crate) fn schema(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .conn()
            .query(
                "SELECT name, definition FROM schema_objects ORDER BY position",
                &[],
            )
            .map_err(catalog_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(crate) fn save_schema(&self, definitions: &[(String, String)]) -> Result<()> {
        let mut conn = self.conn();
        let mut tx = conn.transaction()?;
        tx.execute("DELETE FROM schema_objects", &[])
            .map_err(catalog_error)?;
        for (i, (name, def)) in definitions.iter().enumerate() {
            tx.execute(
                "INSERT INTO schema_objects (position, name, definition) VALUES ($1, $2, $3)",
                &[&(i as i64), name, def],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces the stored schema if it still is `expected`, under the schema lock: a node
    /// taking a tenant's lead holds it shared while it checks its schema and reconciles.
    pub(crate) fn replace_schema(
        &self,
        expected: &[(String, String)],
        definitions: &[(String, String)],
    ) -> Result<()> {
        let mut conn = self.conn();
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        let current: Vec<(String, String)> = tx
            .query(
                "SELECT name, definition FROM schema_objects ORDER BY position",
                &[],
            )
            .map_err(catalog_error)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if current != expected {
            return Err(StoreError::SchemaChanged);
        }
        tx.execute("DELETE FROM schema_objects", &[])?;
        for (i, (name, def)) in definitions.iter().enumerate() {
            tx.execute(
                "INSERT INTO schema_objects (position, name, definition) VALUES ($1, $2, $3)",
                &[&(i as i64), name, def],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn create_tenant(&self, name: &str, time_zone: &str, now: Timestamp) -> Result<()> {
        let inserted = self
            .conn()
            .execute(
                "INSERT INTO tenants (tenant_id, time_zone, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&name, &time_zone, &now.to_string()],
            )
            .map_err(catalog_error)?;
        if inserted == 0 {
            return Err(StoreError::TenantExists(name.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn forget_tenant(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let mut tx = tenant_tx(&mut conn, name)?;
        // The tenant's rows in the shared tables (under row-level security, only its own).
        // A stream's rows are in its blocks and its key table; a view's in its table.
        let mut tables: Vec<String> = Vec::new();
        for r in tx
            .query("SELECT name, kind FROM tally_tables", &[])
            .map_err(catalog_error)?
        {
            let (name, kind): (String, String) = (r.get(0), r.get(1));
            if kind == "stream" {
                let keys = ddl::derived(&name, "keys");
                let has_keys = tx
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote(&keys)])?
                    .get(0);
                tables.push(ddl::blocks_table(&name));
                if has_keys {
                    tables.push(keys);
                }
            } else {
                tables.push(name);
            }
        }
        for table in tables.iter().map(String::as_str).chain([
            "tally_streams",
            "tally_views",
            "tally_rejections",
            "tally_table_rows",
            "tally_records",
        ]) {
            tx.execute(&format!("DELETE FROM {}", quote(table)), &[])?;
        }
        tx.execute("DELETE FROM api_keys WHERE tenant_id = $1", &[&name])?;
        tx.execute(
            "DELETE FROM scheduled_tenants WHERE tenant_id = $1",
            &[&name],
        )?;
        tx.execute("DELETE FROM tenants WHERE tenant_id = $1", &[&name])?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn set_scheduled(&self, tenant: &str, scheduled: bool) -> Result<()> {
        let mut conn = self.conn();
        if scheduled {
            conn.execute(
                "INSERT INTO scheduled_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&tenant],
            )
        } else {
            conn.execute(
                "DELETE FROM scheduled_tenants WHERE tenant_id = $1",
                &[&tenant],
            )
        }
        .map_err(catalog_error)?;
        Ok(())
    }

    pub(crate) fn scheduled_tenants(&self) -> Result<Vec<String>> {
        let rows = self
            .conn()
            .query(
                "SELECT tenant_id FROM scheduled_tenants ORDER BY tenant_id",
                &[],
            )
            .map_err(catalog_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) fn tenants(&self) -> Result<Vec<TenantInfo>> {
        let rows = self
            .conn()
            .query(
                "SELECT tenant_id, time_zone, created_at FROM tenants ORDER BY tenant_id",
                &[],
            )
            .map_err(catalog_error)?;
        Ok(rows
            .iter()
            .map(|r| TenantInfo {
                name: r.get(0),
                time_zone: r.get(1),
                created_at: Timestamp::parse(r.get(2)).unwrap_or(Timestamp(0)),
            })
            .collect())
    }

    pub(crate) fn create_key(&self, hash: &[u8], record: &KeyRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO api_keys (tenant_id, hash, kind, prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&record.tenant, &hash, &record.kind.as_str(), &record.prefix, &record.created_at.to_string()],
            )
            .map_err(catalog_error)?;
        Ok(())
    }

    pub(crate) fn find_key(&self, hash: &[u8]) -> Result<Option<KeyRecord>> {
        let row = self
            .conn()
            .query_opt(
                "SELECT tenant_id, kind, prefix, created_at, revoked_at IS NOT NULL FROM api_keys WHERE hash = $1",
                &[&hash],
            )
            .map_err(catalog_error)?;
        Ok(row.map(|r| KeyRecord {
            tenant: r.get(0),
            kind: KeyKind::parse(r.get(1)).unwrap_or(KeyKind::Read),
            prefix: r.get(2),
            created_at: Timestamp::parse(r.get(3)).unwrap_or(Timestamp(0)),
            revoked: r.get(4),
        }))
    }

    pub(crate) fn revoke_key(&self, tenant: &str, prefix: &str) -> Result<usize> {
        let n = self
            .conn()
            .execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND prefix = $3 AND revoked_at IS NULL",
                &[&now_text(), &tenant, &prefix],
            )
            .map_err(catalog_error)?;
        Ok(n as usize)
    }

    /// Gives `role` read access to one tenant: a schema `<schema>_<tenant>` with a
    /// security-barrier view of every tenant table, filtered to the tenant, and `SELECT` on them
    /// (and nothing else). Row-level security still applies under the views, so the role also
    /// needs `tally.tenant_id` set to the tenant (`ALTER ROLE … SET`); setting it to another
    /// tenant shows nothing. Run again after a schema change. Returns the schema's name.
    pub(crate) fn grant_reader(&self, tenant: &str, role: &str) -> Result<String> {
        let reader = reader_schema(&self.config.schema, tenant);
        let mut conn = self.conn();
        let mut tx = conn.transaction()?;
        let mut tables: Vec<String> = tx
            .query("SELECT name FROM tally_tables ORDER BY name", &[])
            .map_err(catalog_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tables.extend(["tally_streams", "tally_views", "tally_rejections"].map(String::from));
        // Rebuild only a schema this role made: never drop someone else's.
        let foreign = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1 AND nspowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
                &[&reader],
            )?
            .is_some();
        if foreign {
            return Err(StoreError::Unsafe(format!(
                "schema {reader} exists and belongs to another role; drop or rename it first"
            )));
        }
        let (schema, target) = (quote(&reader), quote(&self.config.schema));
        let mut sql = format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};              GRANT USAGE ON SCHEMA {schema} TO {role};",
            role = quote(role)
        );
        for t in &tables {
            sql.push_str(&format!(
                "CREATE VIEW {schema}.{t} WITH (security_barrier) AS                  SELECT * FROM {target}.{t} WHERE tenant_id = {tenant};                  GRANT SELECT ON {schema}.{t} TO {role};",
                t = quote(t),
                tenant = literal(tenant),
                role = quote(role)
            ));
        }
        tx.batch_execute(&sql)?;
        tx.commit()?;
        Ok(reader)
    }

    pub(crate) fn tenant(&self, name: &str) -> Result<PgTenant> {
        Ok(PgTenant(Mutex::new(PgConn {
            client: connect(&self.config)?,
            tenant: name.to_owned(),
            schema: self.config.schema.clone(),
            stages: HashMap::new(),
            partitions: HashMap::new(),
            leading: false,
            key_filters: HashMap::new(),
        })))
    }
}

/// The schema of a tenant's reader views: `<schema>_<tenant>`, or, when that is longer than
/// PostgreSQL's 63 bytes, cut and told apart by a hash of the whole name.
fn reader_schema(schema: &str, tenant: &str) -> String {
    let name = format!("{schema}_{tenant}");
    if name.len() <= 63 {
        return name;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut keep = 63 - 9;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{:08x}", &name[..keep], hash as u32)
}
