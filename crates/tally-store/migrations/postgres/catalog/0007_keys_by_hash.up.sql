-- A stream's dedupe keys (`<stream>#keys`) are found by a hash index on the key alone, the
-- tenant checked on the row, instead of the primary key `(tenant_id, key)`: over random text
-- that B-tree cost twice as much to insert into and four times as much to probe. Appends of a
-- tenant's stream are ordered by its row in `tally_streams` and look their keys up first, so no
-- index needs to enforce uniqueness.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS tbl, k.conname
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE '%#keys'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', t.tbl, t.conname);
        EXECUTE format('CREATE INDEX ON %s USING hash (key)', t.tbl);
    END LOOP;
END
$$;
