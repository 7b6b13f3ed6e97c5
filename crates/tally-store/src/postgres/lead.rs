//! Leadership on a shared store: of the nodes serving a tenant, the one holding the tenant's
//! advisory lock (session-level, so it lasts as long as the connection) writes its view tables.

use super::conn::in_async_runtime;
use super::{PgConn, SCHEMA_LOCK};
use crate::error::Result;

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
