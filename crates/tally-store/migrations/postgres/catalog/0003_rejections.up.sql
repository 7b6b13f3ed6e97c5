-- The rejection log: every event a tenant's ingest rejected, with why and what was sent (up to
-- 32 KB), kept for the rejection retention; under the tenant policy like every tenant table.
CREATE TABLE tally_rejections (
    tenant_id text NOT NULL,
    id        bigserial,
    at        timestamptz NOT NULL,
    stream    text NOT NULL,
    route     text NOT NULL,
    reason    text NOT NULL,
    message   text NOT NULL,
    payload   text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX tally_rejections_at ON tally_rejections (tenant_id, at);

ALTER TABLE tally_rejections ENABLE ROW LEVEL SECURITY;
ALTER TABLE tally_rejections FORCE ROW LEVEL SECURITY;
CREATE POLICY tally_tenant ON tally_rejections
    USING (tenant_id = current_setting('tally.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));
