//! Leadership on a shared store: of the nodes serving a tenant, the one holding the tenant's
//! advisory lock (session-level, so it lasts as long as the connection) writes its view tables.
//! The operations are on [`Lease`], which only a PostgreSQL tenant store hands out
//! ([`TenantStore::shared`](crate::TenantStore::shared)).

use super::conn::in_async_runtime;
use super::{PgConn, PgTenant, SCHEMA_LOCK};
use crate::error::Result;

/// A tenant's leadership operations on a shared store (PostgreSQL), borrowed from its
/// [`TenantStore`](crate::TenantStore) by [`TenantStore::shared`](crate::TenantStore::shared).
/// The lead, once taken, is held until [`Lease::release_lead`] or until the tenant store is
/// dropped, not just while the `Lease` lives.
pub struct Lease<'a>(&'a mut PgConn);

impl PgTenant {
    pub(crate) fn lease(&mut self) -> Lease<'_> {
        // A poisoned lock left at most an open transaction, rolled back when its guard dropped.
        Lease(self.0.get_mut().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Lease<'_> {
    /// Takes the right to write this tenant's view tables, if no other node holds it: the
    /// leader alone writes them. Held for the connection's life (until
    /// [`Lease::release_lead`] or the tenant store is dropped).
    pub fn try_lead(&mut self) -> Result<bool> {
        let conn = &mut *self.0;
        if conn.leading {
            return Ok(true);
        }
        let key = format!("tally/{}/{}", conn.schema, conn.tenant);
        conn.leading = conn
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )?
            .get(0);
        Ok(conn.leading)
    }

    /// Holds (`true`) or releases the schema lock shared: while held, no schema change commits,
    /// so a leader's check of the schema and its reconcile see the same one.
    pub fn hold_schema(&mut self, hold: bool) -> Result<()> {
        let sql = if hold {
            "SELECT pg_advisory_lock_shared($1)"
        } else {
            "SELECT pg_advisory_unlock_shared($1)"
        };
        self.0.client.execute(sql, &[&SCHEMA_LOCK])?;
        Ok(())
    }

    /// Gives up the lead taken by [`Lease::try_lead`] (before the connection closes).
    pub fn release_lead(&mut self) -> Result<()> {
        let conn = &mut *self.0;
        if conn.leading {
            conn.client
                .batch_execute("SELECT pg_advisory_unlock_all()")?;
            conn.leading = false;
        }
        Ok(())
    }

    /// The applied schema as stored now: another node may have changed it.
    pub fn stored_schema(&mut self) -> Result<Vec<(String, String)>> {
        let rows = self.0.client.query(
            "SELECT name, definition FROM schema_objects ORDER BY position",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
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
