-- The tables stream and view tables are tracked in. A stream or view table is shared by every
-- tenant (tenant_id is its first column) and created once for its definition: tally_tables
-- records which definition each table was created for.
CREATE TABLE tally_tables (
    name       text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('stream', 'view')),
    definition text NOT NULL
);

-- Per tenant: each stream with the last sequence number it handed out (never reused) and the
-- highest one every view of the stream has applied (retention may drop events up to it).
CREATE TABLE tally_streams (
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    definition  text NOT NULL,
    last_seq    bigint NOT NULL DEFAULT 0,
    applied_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, name)
);

-- Per tenant: each view with the plan it was built for and the last event it folded in.
CREATE TABLE tally_views (
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    fingerprint text NOT NULL,
    position    bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

ALTER TABLE tally_streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE tally_streams FORCE ROW LEVEL SECURITY;
CREATE POLICY tally_tenant ON tally_streams
    USING (tenant_id = current_setting('tally.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));

ALTER TABLE tally_views ENABLE ROW LEVEL SECURITY;
ALTER TABLE tally_views FORCE ROW LEVEL SECURITY;
CREATE POLICY tally_tenant ON tally_views
    USING (tenant_id = current_setting('tally.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));
