//! Connections to PostgreSQL: connecting (over TLS where the URL asks for it) with the checks
//! that the role and schema keep tenants apart, [`Conn`], the client wrapper that may be dropped
//! inside an async runtime, tenant transactions, and the text of PostgreSQL's errors.

use std::error::Error as StdError;

use postgres::{Client, Transaction};

use super::PgConfig;
use super::wire::quote;
use crate::error::{Result, StoreError};

/// A client that may be dropped anywhere. Closing a `postgres::Client` blocks on its own
/// runtime, which panics inside an async runtime (the server's last handle on the store may go
/// there): there, the client is closed on a thread of its own.
pub(super) struct Conn(Option<Client>);

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

pub(super) fn in_async_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

pub(super) fn connect(config: &PgConfig) -> Result<Conn> {
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
    // No JIT compilation: Tally's statements are short, and a plan estimated above
    // `jit_above_cost` (a batch's key probe on a table not yet analyzed) spent more time
    // compiling than running, 50 ms a batch of 10,000 keys.
    client.batch_execute("SET jit = off")?;
    // Large values this connection writes (blocks of raw events above all; also view states,
    // keys and records) are compressed with lz4 where the server has it (PostgreSQL 14 and
    // newer, built with it), which PostgreSQL documents as faster than its default, pglz. On
    // other servers the setting is refused and pglz stays.
    let _ = client.batch_execute("SET default_toast_compression = 'lz4'");
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

/// Maps "relation does not exist" on the catalog to the actionable error.
pub(super) fn catalog_error(e: postgres::Error) -> StoreError {
    if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) {
        StoreError::NotMigrated
    } else {
        StoreError::Postgres(e)
    }
}

/// Starts a transaction for `tenant`: row-level security shows it only that tenant's rows.
pub(super) fn tenant_tx<'c>(client: &'c mut Client, tenant: &str) -> Result<Transaction<'c>> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[&tenant])?;
    Ok(tx)
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
