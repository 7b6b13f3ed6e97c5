-- A stream's dedupe keys (`<stream>#keys`) are found by a hash index on `h`, a 64-bit hash of
-- the key computed by PostgreSQL from the typed value and seeded by the tenant (the same
-- expressions as `key_hash` in src/postgres/data.rs), instead of the primary key
-- `(tenant_id, key)`: over random text that B-tree cost twice as much to insert into and four
-- times as much to probe. Appends of a tenant's stream are
-- ordered by its row in `tally_streams` and probe under that lock, so no index needs to enforce
-- uniqueness. Each key table is rewritten here, under an exclusive lock: ingest waits for it.
DO $$
DECLARE
    t record;
    hash text;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS tbl, k.conname, format_type(a.atttypid, a.atttypmod) AS ty
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'key'
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE '%#keys'
    LOOP
        hash := CASE
            WHEN t.ty = 'bigint' THEN 'hashint8extended(key, hashtextextended(tenant_id, 0))'
            WHEN t.ty = 'double precision' THEN 'hashfloat8extended(key, hashtextextended(tenant_id, 0))'
            WHEN t.ty LIKE 'numeric%' THEN 'hash_numeric_extended(key, hashtextextended(tenant_id, 0))'
            WHEN t.ty = 'boolean' THEN 'hashint4extended(key::int, hashtextextended(tenant_id, 0))'
            WHEN t.ty = 'timestamp with time zone'
                THEN 'hashint8extended((extract(epoch from key) * 1000000)::bigint, hashtextextended(tenant_id, 0))'
            ELSE 'hashtextextended(key::text, hashtextextended(tenant_id, 0))'
        END;
        EXECUTE format('ALTER TABLE %s ADD COLUMN h bigint', t.tbl);
        -- Every tenant's rows: the owner is exempt from the policy while it is not forced,
        -- within this transaction only.
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', t.tbl);
        EXECUTE format('UPDATE %s SET h = %s', t.tbl, hash);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t.tbl);
        EXECUTE format('ALTER TABLE %s ALTER COLUMN h SET NOT NULL', t.tbl);
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', t.tbl, t.conname);
        EXECUTE format('CREATE INDEX ON %s USING hash (h)', t.tbl);
    END LOOP;
END
$$;
