-- The catalog: tenants, their API keys (stored only as SHA-256 hashes) and the applied schema.
-- Every node reads these for every tenant, so they carry no row-level security; a BI role is
-- never granted them. On Citus they are reference tables.
CREATE TABLE tenants (
    tenant_id  text PRIMARY KEY,
    time_zone  text NOT NULL,
    created_at text NOT NULL
);

CREATE TABLE api_keys (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id),
    hash       bytea PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('read', 'write')),
    prefix     text NOT NULL,
    created_at text NOT NULL,
    revoked_at text
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, prefix);

CREATE TABLE schema_objects (
    position   bigint PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    definition text NOT NULL
);
