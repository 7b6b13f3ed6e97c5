-- Keys of a third kind, `manage` (alerts, dashboards, erasure); the tenants the server's
-- scheduler visits (they have alerts; catalog, no row-level security); and the tenants' records
-- that are not events, views or table rows: alert definitions, their state per group, their
-- history and the webhook deliveries still to make (`body` is JSON; keys order a kind's
-- records). Under the tenant policy like every tenant table.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_kind_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_kind_check CHECK (kind IN ('read', 'write', 'manage'));

CREATE TABLE scheduled_tenants (
    tenant_id text PRIMARY KEY REFERENCES tenants (tenant_id)
);

CREATE TABLE tally_records (
    tenant_id text NOT NULL,
    kind      text NOT NULL,
    key       text COLLATE "C" NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (tenant_id, kind, key)
);

ALTER TABLE tally_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE tally_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tally_tenant ON tally_records
    USING (tenant_id = current_setting('tally.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));
