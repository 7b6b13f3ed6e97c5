//! Helpers for the test suites (this crate's and the `tally` crate's): PostgreSQL scratch schemas,
//! and a SQLite tenant turned back into an earlier layout.
//!
//! The server comes from `TALLY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), connected to as an administrator. Each
//! [`PgScratch`] gets a schema of its own, dropped when it goes, and connects Tally as the
//! ordinary role `tally_test`: Tally refuses superusers. An unreachable server fails the test
//! with instructions; it is never skipped.

use std::sync::atomic::{AtomicU64, Ordering};

use postgres::{Client, NoTls};

use crate::postgres::PgConfig;

/// The administrator's URL of the test server.
pub fn admin_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A connection as the administrator; panics with instructions when the server is unreachable.
pub fn admin() -> Client {
    let url = admin_url();
    Client::connect(&url, NoTls).unwrap_or_else(|e| {
        panic!(
            "the PostgreSQL tests need a server at {url} (set TALLY_TEST_DATABASE_URL to an \
             administrator's URL, or start PostgreSQL): {e}"
        )
    })
}

/// A scratch schema on the test server, dropped on drop.
pub struct PgScratch {
    config: PgConfig,
}

const ROLE: &str = "tally_test";

impl PgScratch {
    pub fn new() -> PgScratch {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut admin = admin();
        let db = current_db(&mut admin);
        // Parallel tests race to create the role; the losers find it there.
        for attempt in 0.. {
            let done = admin.batch_execute(&format!(
                "DO $$ BEGIN
                   CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}' NOSUPERUSER NOBYPASSRLS;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END $$;
                 GRANT CREATE ON DATABASE {db} TO {ROLE};"
            ));
            match done {
                Ok(()) => break,
                Err(_) if attempt < 20 => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(e) => panic!("cannot create the test role: {e}"),
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!(
            "tally_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        PgScratch {
            config: PgConfig {
                // Named after the schema in pg_stat_activity, so a test can find its connections;
                // without TLS, like the benchmarks' baselines (tests/postgres.rs covers TLS).
                url: format!(
                    "{}?application_name={schema}&sslmode=disable",
                    role_url(&admin_url(), ROLE)
                ),
                schema,
            },
        }
    }

    /// Where Tally's store lives: the scratch schema, as the ordinary test role.
    pub fn config(&self) -> PgConfig {
        self.config.clone()
    }

    /// The URL Tally connects with.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Ends every connection Tally has open on this scratch schema, as a database restart would.
    pub fn drop_connections(&self) -> usize {
        admin()
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&self.config.schema],
            )
            .map_or(0, |rows| rows.len())
    }

    /// The scratch schema's name.
    pub fn schema(&self) -> &str {
        &self.config.schema
    }
}

impl Default for PgScratch {
    fn default() -> Self {
        PgScratch::new()
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&admin_url(), NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.config.schema
            ));
        }
    }
}

fn current_db(client: &mut Client) -> String {
    client
        .query_one("SELECT current_database()::text", &[])
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "test".to_owned())
}

/// The admin URL with another role (whose password is its name) as the user.
pub fn role_url(admin_url: &str, role: &str) -> String {
    let config: postgres::Config = admin_url
        .parse()
        .unwrap_or_else(|e| panic!("TALLY_TEST_DATABASE_URL {admin_url} is not a URL: {e}"));
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{role}:{role}@{host}:{port}/{db}")
}

/// Turns the SQLite tenant database at `path` (closed by every store) back into the layout
/// before the event blocks: a table named as each stream with a row per event, and tenant
/// migration 9 not applied, so that the next open converts it again. For tests of the upgrades
/// that build an earlier layout from a current one.
pub fn sqlite_row_layout(path: &std::path::Path) -> crate::Result<()> {
    crate::sqlite::to_row_layout(path)
}
