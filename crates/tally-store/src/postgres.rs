//! The PostgreSQL backend: every tenant in one database, isolated by row-level security.
//!
//! All tables live in one schema (`tally` unless configured). Stream and view tables are shared
//! by the tenants: `tenant_id` is the first column of each, and every one has row-level security
//! enabled and forced with the same policy, `tenant_id = current_setting('tally.tenant_id')`.
//! Each transaction sets that with `set_config(…, true)` (the function form of `SET LOCAL`), so
//! a query can only ever see the tenant it runs for, and a transaction that forgot to set it
//! sees nothing.
//!
//! Raw event tables are partitioned by event time, one partition per week (Monday to Monday,
//! UTC), created on demand; retention drops whole partitions once every tenant's views have
//! applied them. An append looks its dedupe keys up, then COPYs (binary) the new rows into a
//! temporary staging table and inserts them from there in one statement (PostgreSQL refuses COPY
//! into a table under row-level security), with sequence numbers handed out under a row lock on
//! the tenant's `tally_streams` row, so appends of one stream commit in sequence order on every
//! node.
//!
//! Several nodes may serve one tenant: each holds its own connection per tenant, and the
//! advisory lock [`PgConn::try_lead`] elects the one node that writes the tenant's view tables.

use std::collections::{BTreeSet, HashMap};
use std::error::Error as StdError;
use std::sync::Mutex;

use bytes::{BufMut, BytesMut};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{FromSql, IsNull, ToSql, Type as PgType, to_sql_checked};
use postgres::{Client, Transaction};

use tally_views::{Event, StreamDef, Timestamp, Type, Value, ViewPlan};

use crate::error::{Result, StoreError};
use crate::migrations::Migration;
use crate::types::{
    EncodedFlush, KeyKind, KeyRecord, Materialized, MaterializedView, RawSnapshot, TenantInfo,
};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const DAY_MICROS: i64 = 86_400_000_000;
const WEEK_MICROS: i64 = 7 * DAY_MICROS;
/// 1970-01-05, the first Monday after the Unix epoch: weeks start on Mondays.
const FIRST_MONDAY: i64 = 4 * DAY_MICROS;
/// The advisory lock key that serializes migrations across nodes.
const MIGRATION_LOCK: i64 = 0x7461_6c6c_796d_6967;
/// The advisory lock key that orders schema changes against tenants' reconciles.
const SCHEMA_LOCK: i64 = 0x7461_6c6c_7973_6368;
/// How many keys one `load_states` query looks up.
const LOAD_CHUNK: usize = 5_000;

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
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Release the lead at once: the server would only notice the closed connection a moment
        // later, and another handle of this process may want it now.
        // (Inside an async runtime the connection closes on another thread, which releases it.)
        if self.leading && !in_async_runtime() {
            let _ = self.client.batch_execute("SELECT pg_advisory_unlock_all()");
        }
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A client that may be dropped anywhere. Closing a `postgres::Client` blocks on its own
/// runtime, which panics inside an async runtime (the server's last handle on the store may go
/// there): there, the client is closed on a thread of its own.
pub(crate) struct Conn(Option<Client>);

impl std::ops::Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.0.as_ref().expect("a connection is open until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("a connection is open until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take()
            && in_async_runtime()
        {
            std::thread::spawn(move || drop(client));
        }
    }
}

fn in_async_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

fn connect(config: &PgConfig) -> Result<Conn> {
    let mut client = crate::pg_tls::connect(&config.url)?;
    check_role(&mut client)?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&config.schema],
        )?
        .is_some();
    if !exists {
        client.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote(&config.schema)
        ))?;
    }
    client.batch_execute(&format!("SET search_path TO {}", quote(&config.schema)))?;
    // The server drops this session about 25 s after this process dies or its host goes away,
    // releasing the advisory locks it holds (a tenant's lead).
    client.batch_execute(
        "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3",
    )?;
    let can_create: bool = client
        .query_one(
            "SELECT has_schema_privilege($1, 'CREATE') AND has_schema_privilege($1, 'USAGE')",
            &[&config.schema],
        )?
        .get(0);
    if !can_create {
        let role: String = client.query_one("SELECT current_user::text", &[])?.get(0);
        return Err(StoreError::Unsafe(format!(
            "role {role} cannot create tables in schema {schema}; as the schema's owner run \
             GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}, or choose another schema with \
             --database-schema",
            schema = quote(&config.schema)
        )));
    }
    Ok(Conn(Some(client)))
}

/// Maps "relation does not exist" on the catalog to the actionable error.
fn catalog_error(e: postgres::Error) -> StoreError {
    if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) {
        StoreError::NotMigrated
    } else {
        StoreError::Postgres(e)
    }
}

fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

/// Starts a transaction for `tenant`: row-level security shows it only that tenant's rows.
fn tenant_tx<'c>(client: &'c mut Client, tenant: &str) -> Result<Transaction<'c>> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[&tenant])?;
    Ok(tx)
}

/// Voids every other tenant's position in view `view`, whose table was just created or dropped
/// for all: a tenant whose stored fingerprint no longer matches rebuilds the view when it
/// reconciles. Row-level security hides other tenants' rows, so each is visited under its own
/// setting, within this transaction; the setting returns to `tenant` at the end.
fn forget_view_everywhere(tx: &mut Transaction<'_>, tenant: &str, view: &str) -> Result<()> {
    let tenants: Vec<String> = tx
        .query(
            "SELECT tenant_id FROM tenants WHERE tenant_id <> $1",
            &[&tenant],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for other in &tenants {
        tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[other])?;
        tx.execute(
            "UPDATE tally_views SET fingerprint = '', position = 0 WHERE tenant_id = $1 AND name = $2",
            &[other, &view],
        )?;
    }
    tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[&tenant])?;
    Ok(())
}

/// Whether the current schema has a relation called `name`.
fn relation_exists(tx: &mut Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relname = $1",
            &[&name],
        )?
        .is_some())
}

/// The statements that put a table under the tenant policy.
fn isolate(table: &str) -> String {
    let t = quote(table);
    format!(
        "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY; \
         CREATE POLICY tally_tenant ON {t} \
         USING (tenant_id = current_setting('tally.tenant_id', true)) \
         WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));"
    )
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
                AND c.relname NOT IN ('tenants', 'api_keys')
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
        let reader = format!("{}_{tenant}", self.config.schema);
        let mut conn = self.conn();
        let mut tx = conn.transaction()?;
        let mut tables: Vec<String> = tx
            .query("SELECT name FROM tally_tables ORDER BY name", &[])
            .map_err(catalog_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tables.extend(["tally_streams".to_owned(), "tally_views".to_owned()]);
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
        })))
    }
}

/// Refuses superusers and `BYPASSRLS` roles: row-level security would not apply to them.
fn check_role(client: &mut Client) -> Result<()> {
    let row = client.query_one(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        &[],
    )?;
    let (role, superuser, bypass): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if !superuser && !bypass {
        return Ok(());
    }
    let what = if superuser {
        "a superuser"
    } else {
        "a BYPASSRLS role"
    };
    let db: String = client
        .query_one("SELECT current_database()::text", &[])?
        .get(0);
    Err(StoreError::Unsafe(format!(
        "Tally connects to PostgreSQL as {role}, {what}: row-level security does not apply to it, \
         so one tenant's bug could read another's rows. Connect as a role of its own, e.g. as a \
         superuser run\n  CREATE ROLE tally LOGIN PASSWORD 'change-me' NOSUPERUSER NOBYPASSRLS;\n  \
         GRANT CREATE ON DATABASE {db} TO tally;\nand use postgres://tally:change-me@host/{db} \
         (see docs/postgres.md)"
    )))
}

/// The text of a PostgreSQL error, with its detail and hint when the server sent them.
pub(crate) fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => match e.source() {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// The column type of a raw event table.
fn raw_type(ty: Type) -> &'static str {
    match ty {
        Type::Text => "text",
        Type::Decimal { .. } => "numeric",
        Type::Json => "json",
        Type::Boolean => "boolean",
        Type::BigInt => "bigint",
        Type::Double => "double precision",
        Type::Timestamp => "timestamptz",
    }
}

/// How a column travels in binary COPY: decimals and JSON as text, cast on insert.
fn stage_type(ty: Type) -> (&'static str, PgType) {
    match ty {
        Type::Text | Type::Decimal { .. } | Type::Json => ("text", PgType::TEXT),
        Type::Boolean => ("boolean", PgType::BOOL),
        Type::BigInt => ("bigint", PgType::INT8),
        Type::Double => ("double precision", PgType::FLOAT8),
        Type::Timestamp => ("timestamptz", PgType::TIMESTAMPTZ),
    }
}

/// A staged column as the target column's type.
fn from_stage(column: &str, ty: Type) -> String {
    match ty {
        Type::Decimal { .. } => format!("{column}::numeric"),
        Type::Json => format!("{column}::json"),
        _ => column.to_owned(),
    }
}

/// For an `INSERT … SELECT` from a staging table `s`: the quoted target columns, and the staged
/// values cast to their types.
fn insert_columns<'a>(
    columns: impl Iterator<Item = (&'a str, Type)>,
) -> (Vec<String>, Vec<String>) {
    columns
        .map(|(name, ty)| {
            let name = quote(name);
            let cast = from_stage(&format!("s.{name}"), ty);
            (name, cast)
        })
        .unzip()
}

/// A column read back in a form [`read_cell`] understands.
fn to_read(column: &str, ty: Type) -> String {
    match ty {
        Type::Decimal { .. } | Type::Json => format!("{column}::text"),
        _ => column.to_owned(),
    }
}

/// Which of `rows` to store: not a duplicate of an earlier row of the batch, nor of a stored
/// event of the tenant, by the dedupe column `d` (NULL keys are never duplicates, as in a unique
/// index). Stored keys are looked up in the stream's key table, one primary-key probe per
/// distinct key of the batch (`LATERAL … LIMIT 1`, so no plan reads the tenant's whole table),
/// compared by PostgreSQL as the column's type.
fn fresh_rows(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    d: usize,
    rows: &[Vec<Value>],
) -> Result<Vec<bool>> {
    let mut seen: std::collections::HashSet<&Value> =
        std::collections::HashSet::with_capacity(rows.len());
    let mut fresh = vec![true; rows.len()];
    let mut keys: Vec<(usize, String)> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let key = &row[d];
        if key.is_null() {
            continue;
        }
        if seen.insert(key) {
            keys.push((i, key_text(key)));
        } else {
            fresh[i] = false;
        }
    }
    if keys.is_empty() {
        return Ok(fresh);
    }
    let column = &stream.columns[d];
    let texts: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    let probe = match column.ty {
        Type::Text => "u.k".to_owned(),
        other => format!("u.k::{}", raw_type(other)),
    };
    let sql = format!(
        "SELECT u.i FROM unnest($2::text[]) WITH ORDINALITY AS u(k, i)
           CROSS JOIN LATERAL (SELECT 1 FROM {} t WHERE t.tenant_id = $1 AND t.key = {probe} LIMIT 1) stored",
        quote(&derived(&stream.name, "keys")),
    );
    for row in tx.query(&sql, &[&tenant, &texts])? {
        let ordinal: i64 = row.get(0);
        if let Some(&(i, _)) = keys.get(ordinal as usize - 1) {
            fresh[i] = false;
        }
    }
    Ok(fresh)
}

/// A dedupe key as text, for PostgreSQL to read back as the column's type.
fn key_text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// A value on the wire: binary encodings of what the staging and view columns hold.
#[derive(Debug)]
struct Wire<'a>(&'a Value);

impl ToSql for Wire<'_> {
    fn to_sql(
        &self,
        ty: &PgType,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match (self.0, ty) {
            (Value::Null, _) => return Ok(IsNull::Yes),
            (Value::Text(s) | Value::Json(s), &PgType::TEXT) => out.put_slice(s.as_bytes()),
            (Value::Decimal(d), &PgType::TEXT) => out.put_slice(d.to_string().as_bytes()),
            (Value::Bool(b), &PgType::BOOL) => out.put_u8(u8::from(*b)),
            (Value::Int(i), &PgType::INT8) => out.put_i64(*i),
            (Value::Double(d), &PgType::FLOAT8) => out.put_f64(*d),
            (Value::Int(i), &PgType::FLOAT8) => out.put_f64(*i as f64),
            (Value::Timestamp(t), &PgType::TIMESTAMPTZ) => out.put_i64(t.0 - PG_EPOCH_MICROS),
            (v, ty) => return Err(format!("cannot send {v:?} as {ty}").into()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &PgType) -> bool {
        true
    }

    to_sql_checked!();
}

/// A timestamp as PostgreSQL sends it.
#[derive(Debug)]
struct PgTime(i64);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(
        _: &PgType,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "a timestamp is 8 bytes")?;
        Ok(PgTime(i64::from_be_bytes(bytes) + PG_EPOCH_MICROS))
    }

    fn accepts(ty: &PgType) -> bool {
        *ty == PgType::TIMESTAMPTZ || *ty == PgType::TIMESTAMP
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(tally_views::codec::CodecError(what.to_owned()))
}

/// Reads cell `i` of a row written by [`to_read`] as a value of type `ty`.
fn read_cell(row: &postgres::Row, i: usize, ty: Type) -> Result<Value> {
    use std::sync::Arc;
    Ok(match ty {
        Type::Text | Type::Json | Type::Decimal { .. } => {
            let Some(s) = row.try_get::<_, Option<&str>>(i)? else {
                return Ok(Value::Null);
            };
            match ty {
                Type::Text => Value::Text(Arc::from(s)),
                Type::Json => Value::Json(Arc::from(s)),
                _ => Value::Decimal(
                    tally_views::decimal::Decimal::parse(s).map_err(|_| corrupt("decimal"))?,
                ),
            }
        }
        Type::Boolean => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Bool),
        Type::BigInt => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int),
        Type::Double => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Double),
        Type::Timestamp => row
            .try_get::<_, Option<PgTime>>(i)?
            .map_or(Value::Null, |t| Value::Timestamp(Timestamp(t.0))),
    })
}

/// Up to `limit` events of `stream` after `after`, in order, within `tx`.
fn read_events_in(
    tx: &mut Transaction<'_>,
    tenant: &str,
    stream: &StreamDef,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    let cols: Vec<String> = stream
        .columns
        .iter()
        .map(|c| to_read(&quote(&c.name), c.ty))
        .collect();
    let sql = format!(
        "SELECT _seq, {} FROM {} WHERE tenant_id = $1 AND _seq > $2 ORDER BY _seq LIMIT $3",
        cols.join(", "),
        quote(&stream.name)
    );
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = tx.query(&sql, &[&tenant, &(after as i64), &limit])?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let row = stream
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| read_cell(r, i + 1, c.ty))
                .collect::<Result<Vec<_>>>()?;
            Ok(Event {
                seq: seq as u64,
                row,
            })
        })
        .collect()
}

/// The Monday 00:00 UTC that starts the week of `t`.
fn week_of(t: Timestamp) -> i64 {
    FIRST_MONDAY + (t.0 - FIRST_MONDAY).div_euclid(WEEK_MICROS) * WEEK_MICROS
}

/// The name of a table or index Tally derives from a stream or view name: `name#suffix`. User
/// names are `[a-z][a-z0-9_]*`, so a derived name can never be one; a name too long for
/// PostgreSQL's 63 bytes is cut and told apart by a hash of the whole.
fn derived(name: &str, suffix: &str) -> String {
    if name.len() + 1 + suffix.len() <= 63 {
        return format!("{name}#{suffix}");
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = 63 - 1 - 8 - 1 - suffix.len();
    format!("{}#{:08x}#{suffix}", &name[..keep], hash as u32)
}

fn partition_name(stream: &str, week: i64) -> String {
    let date = Timestamp(week).to_string();
    derived(stream, &date[..10])
}

/// The week start a partition name stands for, if it is one of `stream`'s.
fn partition_week(stream: &str, name: &str) -> Option<i64> {
    let date = name.get(name.len().checked_sub(10)?..)?;
    let week = Timestamp::parse(&format!("{date}T00:00:00Z"))?.0;
    (partition_name(stream, week) == name).then_some(week)
}

fn pg_time_literal(micros: i64) -> String {
    literal(&Timestamp(micros).to_string())
}

impl PgConn {
    /// Takes the tenant's leadership for this connection's life, if no other node holds it: the
    /// leader alone writes the tenant's view tables.
    pub(crate) fn try_lead(&mut self) -> Result<bool> {
        if self.leading {
            return Ok(true);
        }
        let key = format!("tally/{}/{}", self.schema, self.tenant);
        self.leading = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )?
            .get(0);
        Ok(self.leading)
    }

    pub(crate) fn materialized(&mut self) -> Result<Materialized> {
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let streams = tx
            .query(
                "SELECT name, definition FROM tally_streams WHERE tenant_id = $1 ORDER BY name",
                &[&self.tenant],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let views = tx
            .query(
                "SELECT name, fingerprint, position FROM tally_views WHERE tenant_id = $1 ORDER BY name",
                &[&self.tenant],
            )?
            .iter()
            .map(|r| MaterializedView {
                name: r.get(0),
                fingerprint: r.get(1),
                position: r.get::<_, i64>(2) as u64,
            })
            .collect();
        tx.commit()?;
        Ok(Materialized { streams, views })
    }

    /// Whether the shared table `name` exists for `definition`; when it exists for another one
    /// it is dropped (its rows belonged to the old definition) and `false` returned.
    fn table_matches(tx: &mut Transaction<'_>, name: &str, definition: &str) -> Result<bool> {
        // Table changes are serialized by a lock on the name, across nodes.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
            &[&name],
        )?;
        let stored: Option<String> = tx
            .query_opt(
                "SELECT definition FROM tally_tables WHERE name = $1",
                &[&name],
            )?
            .map(|r| r.get(0));
        if stored.as_deref() == Some(definition) {
            return Ok(true);
        }
        if stored.is_none() && relation_exists(tx, name)? {
            return Err(StoreError::Unsafe(format!(
                "the schema holds a table {name} that Tally did not create; Tally will not \
                 replace it: rename it, or give Tally a schema of its own with --database-schema"
            )));
        }
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {} CASCADE", quote(name)))?;
        Ok(false)
    }

    pub(crate) fn create_stream(&mut self, def: &StreamDef) -> Result<()> {
        let sql = def.sql();
        let table = quote(&def.name);
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let keys = quote(&derived(&def.name, "keys"));
        if Self::table_matches(&mut tx, &def.name, &sql)? {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant_id = $1"),
                &[&self.tenant],
            )?;
            if def.dedupe_key.is_some() {
                tx.execute(
                    &format!("DELETE FROM {keys} WHERE tenant_id = $1"),
                    &[&self.tenant],
                )?;
            }
        } else {
            let mut cols = vec![
                "tenant_id text NOT NULL".to_owned(),
                "_seq bigint NOT NULL".to_owned(),
            ];
            for c in &def.columns {
                cols.push(format!(
                    "{} {}{}",
                    quote(&c.name),
                    raw_type(c.ty),
                    if c.not_null { " NOT NULL" } else { "" }
                ));
            }
            let time = quote(&def.columns[def.event_time].name);
            let mut ddl = format!(
                "CREATE TABLE {table} ({}) PARTITION BY RANGE ({time});\
                 CREATE INDEX {} ON {table} (tenant_id, _seq);",
                cols.join(", "),
                quote(&derived(&def.name, "seq")),
            );
            // The dedupe keys live in a table of their own, not partitioned: one probe finds a
            // key whatever its week (a partitioned index would cost one probe per week). Its
            // rows go when retention removes their events.
            ddl.push_str(&format!("DROP TABLE IF EXISTS {keys};"));
            if let Some(d) = def.dedupe_key {
                ddl.push_str(&format!(
                    "CREATE TABLE {keys} (tenant_id text NOT NULL, key {} NOT NULL, _seq bigint NOT NULL, \
                     at timestamptz, PRIMARY KEY (tenant_id, key));\
                     CREATE INDEX {} ON {keys} USING brin (at);",
                    raw_type(def.columns[d].ty),
                    quote(&derived(&def.name, "keys_at")),
                ));
                ddl.push_str(&isolate(&derived(&def.name, "keys")));
            }
            // Rows without an event time land in the default partition.
            let default = derived(&def.name, "default");
            ddl.push_str(&format!(
                "CREATE TABLE {} PARTITION OF {table} DEFAULT;",
                quote(&default)
            ));
            ddl.push_str(&isolate(&def.name));
            ddl.push_str(&isolate(&default));
            tx.batch_execute(&ddl)?;
            tx.execute(
                "INSERT INTO tally_tables (name, kind, definition) VALUES ($1, 'stream', $2)
                 ON CONFLICT (name) DO UPDATE SET kind = 'stream', definition = excluded.definition",
                &[&def.name, &sql],
            )?;
        }
        tx.execute(
            "INSERT INTO tally_streams (tenant_id, name, definition, last_seq) VALUES ($1, $2, $3, 0)
             ON CONFLICT (tenant_id, name) DO UPDATE SET definition = excluded.definition, last_seq = 0, applied_seq = 0",
            &[&self.tenant, &def.name, &sql],
        )?;
        tx.commit()?;
        self.partitions.remove(&def.name);
        Ok(())
    }

    pub(crate) fn alter_stream(&mut self, old: &StreamDef, new: &StreamDef) -> Result<()> {
        let sql = new.sql();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
            &[&new.name],
        )?;
        // The table is shared: the first tenant to reconcile alters it, the others find it done
        // (and take no exclusive lock on it).
        let done = tx
            .query_opt(
                "SELECT 1 FROM tally_tables WHERE name = $1 AND definition = $2",
                &[&new.name, &sql],
            )?
            .is_some();
        if !done {
            for c in &new.columns[old.columns.len()..] {
                tx.batch_execute(&format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                    quote(&new.name),
                    quote(&c.name),
                    raw_type(c.ty)
                ))?;
            }
        }
        tx.execute(
            "UPDATE tally_tables SET definition = $2 WHERE name = $1",
            &[&new.name, &sql],
        )?;
        tx.execute(
            "UPDATE tally_streams SET definition = $3 WHERE tenant_id = $1 AND name = $2",
            &[&self.tenant, &new.name, &sql],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Drops a stream: the catalog dropped it for every tenant, so its table goes.
    pub(crate) fn drop_stream(&mut self, name: &str) -> Result<()> {
        self.drop_table(
            name,
            "DELETE FROM tally_streams WHERE tenant_id = $1 AND name = $2",
        )?;
        self.partitions.remove(name);
        Ok(())
    }

    fn drop_table(&mut self, name: &str, forget: &str) -> Result<()> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
            &[&name],
        )?;
        // Only a table Tally created goes.
        let kind: Option<String> = tx
            .query_opt("SELECT kind FROM tally_tables WHERE name = $1", &[&name])?
            .map(|r| r.get(0));
        if let Some(kind) = kind {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {} CASCADE", quote(name)))?;
            if kind == "view" {
                forget_view_everywhere(&mut tx, &tenant, name)?;
            } else {
                tx.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}",
                    quote(&derived(name, "keys"))
                ))?;
            }
        }
        tx.execute("DELETE FROM tally_tables WHERE name = $1", &[&name])?;
        tx.execute(forget, &[&tenant, &name])?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn reset_view(&mut self, plan: &ViewPlan) -> Result<()> {
        let fingerprint = plan.fingerprint();
        let table = quote(&plan.name);
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        if Self::table_matches(&mut tx, &plan.name, &fingerprint)? {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant_id = $1"),
                &[&self.tenant],
            )?;
        } else {
            let mut cols = vec![
                "tenant_id text NOT NULL".to_owned(),
                "_key bytea NOT NULL".to_owned(),
            ];
            for c in &plan.columns {
                cols.push(format!("{} {}", quote(&c.name), raw_type(c.ty)));
            }
            cols.push("_state bytea NOT NULL".to_owned());
            cols.push("PRIMARY KEY (tenant_id, _key)".to_owned());
            let mut ddl = format!("CREATE TABLE {table} ({});", cols.join(", "));
            if let Some(b) = plan.bucket {
                ddl.push_str(&format!(
                    "CREATE INDEX {} ON {table} (tenant_id, {});",
                    quote(&derived(&plan.name, "bucket")),
                    quote(&plan.keys[b].name)
                ));
            }
            ddl.push_str(&isolate(&plan.name));
            tx.batch_execute(&ddl)?;
            tx.execute(
                "INSERT INTO tally_tables (name, kind, definition) VALUES ($1, 'view', $2)
                 ON CONFLICT (name) DO UPDATE SET kind = 'view', definition = excluded.definition",
                &[&plan.name, &fingerprint],
            )?;
            // The table is new for every tenant: every other tenant's position in it is void.
            forget_view_everywhere(&mut tx, &self.tenant, &plan.name)?;
        }
        tx.execute(
            "INSERT INTO tally_views (tenant_id, name, fingerprint, position) VALUES ($1, $2, $3, 0)
             ON CONFLICT (tenant_id, name) DO UPDATE SET fingerprint = excluded.fingerprint, position = 0",
            &[&self.tenant, &plan.name, &fingerprint],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn drop_view(&mut self, name: &str) -> Result<()> {
        self.drop_table(
            name,
            "DELETE FROM tally_views WHERE tenant_id = $1 AND name = $2",
        )
    }

    /// Creates the week partitions `rows` need, each in its own transaction so that a node
    /// racing to create the same one only has to notice it exists.
    fn ensure_partitions(&mut self, stream: &StreamDef, rows: &[Vec<Value>]) -> Result<()> {
        if !self.partitions.contains_key(&stream.name) {
            let known = self.existing_partitions(&stream.name)?;
            self.partitions.insert(stream.name.clone(), known);
        }
        let mut needed = BTreeSet::new();
        for row in rows {
            if let Value::Timestamp(t) = row[stream.event_time] {
                let week = week_of(t);
                if !self.partitions[&stream.name].contains(&week) {
                    needed.insert(week);
                }
            }
        }
        for week in needed {
            let name = partition_name(&stream.name, week);
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}); {}",
                quote(&name),
                quote(&stream.name),
                pg_time_literal(week),
                pg_time_literal(week + WEEK_MICROS),
                isolate(&name)
            );
            let created = (|| -> Result<()> {
                let mut tx = self.client.transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
                    &[&stream.name],
                )?;
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = $1 AND c.relname = $2",
                        &[&self.schema, &name],
                    )?
                    .is_some();
                if !exists {
                    tx.batch_execute(&ddl)?;
                }
                tx.commit()?;
                Ok(())
            })();
            created?;
            if let Some(known) = self.partitions.get_mut(&stream.name) {
                known.insert(week);
            }
        }
        Ok(())
    }

    /// Holds (or releases) the schema lock shared: no schema change commits meanwhile.
    pub(crate) fn hold_schema(&mut self, hold: bool) -> Result<()> {
        let sql = if hold {
            "SELECT pg_advisory_lock_shared($1)"
        } else {
            "SELECT pg_advisory_unlock_shared($1)"
        };
        self.client.execute(sql, &[&SCHEMA_LOCK])?;
        Ok(())
    }

    /// Gives the lead up (before this connection closes).
    pub(crate) fn release_lead(&mut self) -> Result<()> {
        if self.leading {
            self.client
                .batch_execute("SELECT pg_advisory_unlock_all()")?;
            self.leading = false;
        }
        Ok(())
    }

    /// The applied schema as stored now (another node may have changed it).
    pub(crate) fn stored_schema(&mut self) -> Result<Vec<(String, String)>> {
        let rows = self.client.query(
            "SELECT name, definition FROM schema_objects ORDER BY position",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn existing_partitions(&mut self, stream: &str) -> Result<BTreeSet<i64>> {
        let rows = self.client.query(
            "SELECT c.relname::text FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
              WHERE n.nspname = $1 AND p.relname = $2",
            &[&self.schema, &stream],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| partition_week(stream, r.get(0)))
            .collect())
    }

    /// Creates (once per connection and definition) the temporary staging table `name`.
    fn stage(&mut self, name: &str, columns: &[(String, &'static str)]) -> Result<()> {
        let definition: Vec<String> = columns
            .iter()
            .map(|(c, ty)| format!("{} {ty}", quote(c)))
            .collect();
        let definition = definition.join(", ");
        if self.stages.get(name) == Some(&definition) {
            return Ok(());
        }
        self.client.batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.{table}; CREATE TEMP TABLE {table} ({definition}) ON COMMIT DELETE ROWS",
            table = quote(name)
        ))?;
        self.stages.insert(name.to_owned(), definition);
        Ok(())
    }

    pub(crate) fn append(
        &mut self,
        stream: &StreamDef,
        rows: &[Vec<Value>],
    ) -> Result<Vec<Option<u64>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_partitions(stream, rows)?;
        let stage = format!("tally_stage_{}", stream.name);
        let mut stage_cols = vec![("_seq".to_owned(), "bigint")];
        let mut types = vec![PgType::INT8];
        for c in &stream.columns {
            let (sql, ty) = stage_type(c.ty);
            stage_cols.push((c.name.clone(), sql));
            types.push(ty);
        }
        self.stage(&stage, &stage_cols)?;
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        // The row lock orders appends of this tenant's stream across nodes until commit, so
        // sequence numbers commit in order and dedupe sees every earlier row.
        let last: i64 = tx
            .query_one(
                "SELECT last_seq FROM tally_streams WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
                &[&tenant, &stream.name],
            )?
            .get(0);
        let fresh = match stream.dedupe_key {
            None => vec![true; rows.len()],
            Some(d) => fresh_rows(&mut tx, &tenant, stream, d, rows)?,
        };
        // Sequence numbers in row order, for the rows to store only: dense, as on SQLite.
        let mut out = vec![None; rows.len()];
        let mut next = last;
        for (slot, keep) in out.iter_mut().zip(&fresh) {
            if *keep {
                next += 1;
                *slot = Some(next as u64);
            }
        }
        if next > last {
            let writer = tx.copy_in(&format!(
                "COPY {} FROM STDIN (FORMAT binary)",
                quote(&stage)
            ))?;
            let mut writer = BinaryCopyInWriter::new(writer, &types);
            for (row, seq) in rows.iter().zip(&out) {
                let Some(seq) = seq.map(|s| s as i64) else {
                    continue;
                };
                let cells: Vec<Wire<'_>> = row.iter().map(Wire).collect();
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(row.len() + 1);
                params.push(&seq);
                params.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
                writer.write(&params)?;
            }
            writer.finish()?;
            // COPY cannot write a table under row-level security: the staged rows go in with one
            // INSERT, which the policy checks.
            let (names, casts) =
                insert_columns(stream.columns.iter().map(|c| (c.name.as_str(), c.ty)));
            tx.execute(
                &format!(
                    "INSERT INTO {} (tenant_id, _seq, {}) SELECT $1, s._seq, {} FROM {} s",
                    quote(&stream.name),
                    names.join(", "),
                    casts.join(", "),
                    quote(&stage)
                ),
                &[&tenant],
            )?;
            if let Some(d) = stream.dedupe_key {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (tenant_id, key, _seq, at) SELECT $1, {}, s._seq, s.{} FROM {} s WHERE s.{} IS NOT NULL",
                        quote(&derived(&stream.name, "keys")),
                        casts[d],
                        names[stream.event_time],
                        quote(&stage),
                        names[d]
                    ),
                    &[&tenant],
                )?;
            }
        }
        tx.execute(
            "UPDATE tally_streams SET last_seq = $3 WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &stream.name, &next],
        )?;
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn read_events(
        &mut self,
        stream: &StreamDef,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let events = read_events_in(&mut tx, &tenant, stream, after, limit)?;
        tx.commit()?;
        Ok(events)
    }

    pub(crate) fn load_states(
        &mut self,
        view: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let sql = format!(
            "SELECT _key, _state FROM {} WHERE tenant_id = $1 AND _key = ANY($2)",
            quote(view)
        );
        let tenant = self.tenant.clone();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        for chunk in keys.chunks(LOAD_CHUNK) {
            let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
            for r in tx.query(&sql, &[&tenant, &refs])? {
                found.insert(r.get(0), r.get(1));
            }
        }
        tx.commit()?;
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    pub(crate) fn flush(&mut self, flushes: &[EncodedFlush<'_>]) -> Result<()> {
        for f in flushes {
            let mut cols = vec![("_key".to_owned(), "bytea")];
            cols.extend(
                f.plan
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), stage_type(c.ty).0)),
            );
            cols.push(("_state".to_owned(), "bytea"));
            self.stage(&format!("tally_stage_{}", f.plan.name), &cols)?;
        }
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        for f in flushes {
            let plan = f.plan;
            let stage = quote(&format!("tally_stage_{}", plan.name));
            if !f.rows.is_empty() {
                let mut types = vec![PgType::BYTEA];
                types.extend(plan.columns.iter().map(|c| stage_type(c.ty).1));
                types.push(PgType::BYTEA);
                let writer = tx.copy_in(&format!("COPY {stage} FROM STDIN (FORMAT binary)"))?;
                let mut writer = BinaryCopyInWriter::new(writer, &types);
                for row in &f.rows {
                    let cells: Vec<Wire<'_>> = row.cells.iter().map(Wire).collect();
                    let key = row.key.as_slice();
                    let state = row.state.as_slice();
                    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(cells.len() + 2);
                    params.push(&key);
                    params.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
                    params.push(&state);
                    writer.write(&params)?;
                }
                writer.finish()?;
                let (names, casts) =
                    insert_columns(plan.columns.iter().map(|c| (c.name.as_str(), c.ty)));
                let updates: Vec<String> = names
                    .iter()
                    .chain(std::iter::once(&"_state".to_owned()))
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                tx.execute(
                    &format!(
                        "INSERT INTO {} (tenant_id, _key, {}, _state) SELECT $1, s._key, {}, s._state FROM {stage} s
                         ON CONFLICT (tenant_id, _key) DO UPDATE SET {}",
                        quote(&plan.name),
                        names.join(", "),
                        casts.join(", "),
                        updates.join(", ")
                    ),
                    &[&tenant],
                )?;
                // The staging rows go at commit; clear them now for the next view of this flush.
                tx.execute(&format!("DELETE FROM {stage}"), &[])?;
            }
            // Only into the table built for this plan: if another node rebuilt it meanwhile,
            // nothing of this flush may land.
            let moved = tx.execute(
                "UPDATE tally_views SET position = $3 WHERE tenant_id = $1 AND name = $2 AND fingerprint = $4",
                &[&tenant, &plan.name, &(f.position as i64), &plan.fingerprint()],
            )?;
            if moved == 0 {
                return Err(StoreError::Busy(format!(
                    "view {} was rebuilt by another node; the tenant reopens with it",
                    plan.name
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored rows of a view in `[from, to)` and the position they hold, read from one
    /// snapshot.
    pub(crate) fn snapshot_view(
        &mut self,
        plan: &ViewPlan,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        tail: Option<&StreamDef>,
    ) -> Result<RawSnapshot> {
        let mut sql = format!(
            "SELECT _key, _state FROM {} WHERE tenant_id = $1",
            quote(&plan.name)
        );
        let from = from.map(Value::Timestamp);
        let to = to.map(Value::Timestamp);
        let tenant = self.tenant.clone();
        let from_w = from.as_ref().map(Wire);
        let to_w = to.as_ref().map(Wire);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        if let Some(b) = plan.bucket {
            let col = quote(&plan.keys[b].name);
            if let Some(from) = &from_w {
                params.push(from);
                sql.push_str(&format!(" AND {col} >= ${}", params.len()));
            }
            if let Some(to) = &to_w {
                params.push(to);
                sql.push_str(&format!(" AND {col} < ${}", params.len()));
            }
        }
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        tx.execute(
            "SELECT set_config('tally.tenant_id', $1, true)",
            &[&self.tenant],
        )?;
        let (position, fingerprint) = tx
            .query_opt(
                "SELECT position, fingerprint FROM tally_views WHERE tenant_id = $1 AND name = $2",
                &[&tenant, &plan.name],
            )?
            .map_or((0, String::new()), |r| {
                (r.get::<_, i64>(0) as u64, r.get(1))
            });
        let fresh = fingerprint == plan.fingerprint();
        let rows = if fresh {
            tx.query(&sql, &params)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        } else {
            // The table holds another plan's rows (or none): the caller finds out by the
            // fingerprint, without decoding them.
            Vec::new()
        };
        let tail = match tail {
            Some(stream) if fresh => {
                read_events_in(&mut tx, &tenant, stream, position, usize::MAX)?
            }
            _ => Vec::new(),
        };
        tx.commit()?;
        Ok(RawSnapshot {
            position,
            fingerprint,
            rows,
            tail,
        })
    }

    /// Retention on partitions: records how far this tenant's views applied the stream, then
    /// drops each week partition that ended before `before` once every tenant has applied all of
    /// its events there. Where some tenant has not, this tenant's applied events in it are
    /// deleted row by row. Returns how many of this tenant's events went.
    pub(crate) fn delete_events_before(
        &mut self,
        stream: &StreamDef,
        before: Timestamp,
        max_seq: u64,
    ) -> Result<u64> {
        let tenant = self.tenant.clone();
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        tx.execute(
            "UPDATE tally_streams SET applied_seq = greatest(applied_seq, $3) WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &stream.name, &(max_seq as i64)],
        )?;
        tx.commit()?;
        let weeks = self.existing_partitions(&stream.name)?;
        let tenants: Vec<String> = self
            .client
            .query("SELECT tenant_id FROM tenants ORDER BY tenant_id", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let keys = quote(&derived(&stream.name, "keys"));
        let mut deleted = 0;
        for week in weeks {
            if week + WEEK_MICROS > before.0 {
                continue;
            }
            let part = quote(&partition_name(&stream.name, week));
            let mut droppable = true;
            let mut mine = 0;
            for t in &tenants {
                let mut tx = tenant_tx(&mut self.client, t)?;
                let row = tx.query_one(
                    &format!(
                        "SELECT coalesce(max(_seq), 0), count(*) FROM {part} WHERE tenant_id = $1"
                    ),
                    &[t],
                )?;
                let (newest, count): (i64, i64) = (row.get(0), row.get(1));
                let applied: i64 = tx
                    .query_opt(
                        "SELECT applied_seq FROM tally_streams WHERE tenant_id = $1 AND name = $2",
                        &[t, &stream.name],
                    )?
                    .map_or(0, |r| r.get(0));
                tx.commit()?;
                if *t == tenant {
                    mine = count as u64;
                }
                if newest > applied {
                    droppable = false;
                }
            }
            let (from, until) = (
                Value::Timestamp(Timestamp(week)),
                Value::Timestamp(Timestamp(week + WEEK_MICROS)),
            );
            if droppable {
                let mut tx = self.client.transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('tally-table/' || $1, 0))",
                    &[&stream.name],
                )?;
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {part}"))?;
                // The week's dedupe keys go with its events, every tenant's.
                if stream.dedupe_key.is_some() {
                    for t in &tenants {
                        tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[t])?;
                        tx.execute(
                            &format!(
                                "DELETE FROM {keys} WHERE tenant_id = $1 AND at >= $2 AND at < $3"
                            ),
                            &[t, &Wire(&from), &Wire(&until)],
                        )?;
                    }
                }
                tx.commit()?;
                if let Some(known) = self.partitions.get_mut(&stream.name) {
                    known.remove(&week);
                }
                deleted += mine;
            } else {
                let mut tx = tenant_tx(&mut self.client, &tenant)?;
                deleted += tx.execute(
                    &format!("DELETE FROM {part} WHERE tenant_id = $1 AND _seq <= $2"),
                    &[&tenant, &(max_seq as i64)],
                )?;
                if stream.dedupe_key.is_some() {
                    tx.execute(
                        &format!(
                            "DELETE FROM {keys} WHERE tenant_id = $1 AND at >= $2 AND at < $3 AND _seq <= $4"
                        ),
                        &[&tenant, &Wire(&from), &Wire(&until), &(max_seq as i64)],
                    )?;
                }
                tx.commit()?;
            }
        }
        Ok(deleted)
    }

    pub(crate) fn delete_view_rows_before(
        &mut self,
        plan: &ViewPlan,
        before: Timestamp,
    ) -> Result<u64> {
        let Some(b) = plan.bucket else { return Ok(0) };
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND {} < $2",
            quote(&plan.name),
            quote(&plan.keys[b].name)
        );
        let tenant = self.tenant.clone();
        let before = Value::Timestamp(before);
        let mut tx = tenant_tx(&mut self.client, &self.tenant)?;
        let n = tx.execute(&sql, &[&tenant, &Wire(&before)])?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_name_their_partition() {
        let t = Timestamp::parse("2026-01-01T12:00:00Z").unwrap();
        let week = week_of(t);
        assert_eq!(Timestamp(week).to_string(), "2025-12-29T00:00:00Z");
        let name = partition_name("pay", week);
        assert_eq!(name, "pay#2025-12-29");
        assert_eq!(partition_week("pay", &name), Some(week));
        assert_eq!(partition_week("pay", "pay#default"), None);
        assert_eq!(partition_week("pay_x", &name), None);
        // Long names are cut and told apart by a hash; weeks stay apart.
        let long = "a".repeat(60);
        let a = partition_name(&long, week);
        let b = partition_name(&long, week + WEEK_MICROS);
        assert!(a.len() <= 63 && a != b, "{a} {b}");
        assert_eq!(partition_week(&long, &a), Some(week));
        assert_ne!(derived(&long, "seq"), derived(&format!("{long}b"), "seq"));
        let before = Timestamp::parse("1969-12-31T00:00:00Z").unwrap();
        assert_eq!(
            Timestamp(week_of(before)).to_string(),
            "1969-12-29T00:00:00Z"
        );
    }
}
