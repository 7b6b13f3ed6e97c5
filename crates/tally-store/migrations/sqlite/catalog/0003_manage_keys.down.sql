DROP TABLE scheduled_tenants;
CREATE TABLE api_keys_old (
    hash       BLOB PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    kind       TEXT NOT NULL CHECK (kind IN ('read', 'write')),
    prefix     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
INSERT INTO api_keys_old (hash, tenant, kind, prefix, created_at, revoked_at)
    SELECT hash, tenant, kind, prefix, created_at, revoked_at FROM api_keys WHERE kind <> 'manage';
DROP TABLE api_keys;
ALTER TABLE api_keys_old RENAME TO api_keys;
CREATE INDEX api_keys_tenant ON api_keys (tenant, prefix);
