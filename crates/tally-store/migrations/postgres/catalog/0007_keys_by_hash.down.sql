-- Back to the primary key `(tenant_id, key)`; dropping `h` drops its index.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS tbl
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'h' AND NOT a.attisdropped
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE '%#keys'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP COLUMN h', t.tbl);
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, key)', t.tbl);
    END LOOP;
END
$$;
