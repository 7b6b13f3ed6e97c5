-- Keys of a third kind, `manage` (alerts, dashboards, erasure), and the tenants the server's
-- scheduler visits (they have alerts). SQLite cannot change a CHECK constraint, so `api_keys`
-- is rebuilt with its rows.
CREATE TABLE api_keys_new (
    hash       BLOB PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    kind       TEXT NOT NULL CHECK (kind IN ('read', 'write', 'manage')),
    prefix     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
INSERT INTO api_keys_new (hash, tenant, kind, prefix, created_at, revoked_at)
    SELECT hash, tenant, kind, prefix, created_at, revoked_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_tenant ON api_keys (tenant, prefix);

CREATE TABLE scheduled_tenants (
    tenant TEXT PRIMARY KEY REFERENCES tenants (name)
);
