-- Rows of the tenants' tables (CREATE TABLE … PRIMARY KEY), one row per (tenant, table, key).
-- `key` and `row` are Tally's value encoding (tally_views::codec): the key's value, and the row's
-- values in the table's column order. Under the tenant policy like every tenant table.
CREATE TABLE tally_table_rows (
    tenant_id text NOT NULL,
    tbl       text NOT NULL,
    key       bytea NOT NULL,
    row       bytea NOT NULL,
    PRIMARY KEY (tenant_id, tbl, key)
);

ALTER TABLE tally_table_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE tally_table_rows FORCE ROW LEVEL SECURITY;
CREATE POLICY tally_tenant ON tally_table_rows
    USING (tenant_id = current_setting('tally.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));
