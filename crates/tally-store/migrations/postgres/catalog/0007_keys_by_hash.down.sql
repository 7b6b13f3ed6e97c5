DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS tbl, i.indexrelid::regclass AS idx
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_index i ON i.indrelid = c.oid
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am a ON a.oid = ic.relam AND a.amname = 'hash'
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE '%#keys'
    LOOP
        EXECUTE format('DROP INDEX %s', t.idx);
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, key)', t.tbl);
    END LOOP;
END
$$;
