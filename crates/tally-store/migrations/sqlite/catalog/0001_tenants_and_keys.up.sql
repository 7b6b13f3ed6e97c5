-- Tenants and their API keys. Keys are stored only as SHA-256 hashes.
CREATE TABLE tenants (
    name       TEXT PRIMARY KEY,
    time_zone  TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    hash       BLOB PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    kind       TEXT NOT NULL CHECK (kind IN ('read', 'write')),
    prefix     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE INDEX api_keys_tenant ON api_keys (tenant, prefix);
