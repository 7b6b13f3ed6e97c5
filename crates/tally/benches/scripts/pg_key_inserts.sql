-- What a row of the PostgreSQL key table costs to insert, and what does not make it cheaper
-- (docs/performance.md, twenty-sixth round): 200,000 keys (64-bit hashes, sequence numbers,
-- times), 10,000 a statement and a transaction, into tables already holding 1,000,000:
--   insert     INSERT … SELECT into a row per key under a hash index on h (as ddl.rs, without
--              the key's text, which the twenty-fifth round found to change nothing)
--   copy       the same rows with binary COPY from files written beforehand
--   copy_bare  the same COPY into a table with no index (the table's own cost)
--   unlogged   INSERT … SELECT into an UNLOGGED table with the hash index (no WAL)
--   ordered    INSERT … SELECT in the order of the hash index's buckets (each statement reads
--              the index's bucket masks from its metapage with pageinspect, and sorts its rows
--              by the bucket PostgreSQL will put them in)
--   btree      INSERT … SELECT under a B-tree on h instead
-- Each twice in a row after a CHECKPOINT (the second pays fewer full-page images). Then what a
-- key costs in bulk (the runs of an LSM tree kept in PostgreSQL would be built so): 1,000,000
-- keys written into a new table, and an index built over 1,000,000 keys already stored.
-- The key table of ddl.rs also has the key's text and a BRIN index on `at`; the twenty-fifth
-- round (pg_key_layouts.sql) found neither to change the cost, and these tables leave both out.
-- Run as a superuser (COPY writes and reads files of the server's machine, under /tmp/kl, which
-- must exist and be writable by the server; the last line removes them from the client's /tmp/kl,
-- so run psql on the server's machine, or remove them there):
--   mkdir -p /tmp/kl && chmod 777 /tmp/kl
--   psql postgres://postgres@127.0.0.1:5432/test -q -f pg_key_inserts.sql
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS tally_key_inserts CASCADE;
CREATE SCHEMA tally_key_inserts;
SET search_path = tally_key_inserts;
CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA tally_key_inserts;
\set staged_rows 1400000
\ir pg_key_staged.sql
CREATE TABLE insert (tenant_id text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL,
  at timestamptz NOT NULL);
CREATE INDEX ON insert USING hash (h);
INSERT INTO insert SELECT 'acme', h, seq, at FROM staged WHERE seq <= 1000000;
CREATE TABLE copy (LIKE insert);
CREATE INDEX ON copy USING hash (h);
CREATE TABLE copy_bare (LIKE insert);
CREATE UNLOGGED TABLE unlogged (LIKE insert);
CREATE INDEX ON unlogged USING hash (h);
CREATE TABLE ordered (LIKE insert);
CREATE INDEX ordered_h ON ordered USING hash (h);
CREATE TABLE btree (LIKE insert);
CREATE INDEX ON btree (h);
INSERT INTO copy SELECT * FROM insert;
INSERT INTO copy_bare SELECT * FROM insert;
INSERT INTO unlogged SELECT * FROM insert;
INSERT INTO ordered SELECT * FROM insert;
INSERT INTO btree SELECT * FROM insert;
VACUUM ANALYZE;
DO $$ BEGIN FOR i IN 100..139 LOOP
  EXECUTE format('COPY (SELECT %L::text, h, seq, at FROM staged WHERE seq > %s AND seq <= %s) TO %L (FORMAT binary)',
    'acme', i * 10000, (i + 1) * 10000, '/tmp/kl/keys' || i || '.bin');
END LOOP; END $$;

CREATE PROCEDURE insert_into(tbl text, first int) LANGUAGE plpgsql AS $$
DECLARE
  maxbucket bigint := 0;
  highmask bigint := 0;
  lowmask bigint := 0;
BEGIN
  FOR i IN first..first + 19 LOOP
    -- A hash index puts an entry in bucket (hash & highmask), or (hash & lowmask) past its last
    -- bucket, the hash being PostgreSQL's unsigned 32-bit hashint8(h).
    IF tbl = 'ordered' THEN
      SELECT m.maxbucket, m.highmask, m.lowmask INTO maxbucket, highmask, lowmask
        FROM hash_metapage_info(get_raw_page('ordered_h', 0)) m;
    END IF;
    EXECUTE CASE
      WHEN tbl LIKE 'copy%' THEN format('COPY %I FROM %L (FORMAT binary)', tbl, '/tmp/kl/keys' || i || '.bin')
      WHEN tbl = 'ordered' THEN format(
        'INSERT INTO ordered SELECT %L, h, seq, at FROM staged WHERE seq > %s AND seq <= %s
           ORDER BY CASE WHEN (hashint8(h)::bigint & 4294967295 & %s) > %s
             THEN hashint8(h)::bigint & 4294967295 & %s ELSE hashint8(h)::bigint & 4294967295 & %s END',
        'acme', i * 10000, (i + 1) * 10000, highmask, maxbucket, lowmask, highmask)
      ELSE format('INSERT INTO %I SELECT %L, h, seq, at FROM staged WHERE seq > %s AND seq <= %s',
        tbl, 'acme', i * 10000, (i + 1) * 10000)
    END;
    COMMIT;
  END LOOP;
END $$;

\set tbl insert
\ir pg_key_inserts_table.sql
\set tbl copy
\ir pg_key_inserts_table.sql
\set tbl copy_bare
\ir pg_key_inserts_table.sql
\set tbl unlogged
\ir pg_key_inserts_table.sql
\set tbl ordered
\ir pg_key_inserts_table.sql
\set tbl btree
\ir pg_key_inserts_table.sql
SELECT 'the ordered table''s hash index: ' || maxbucket + 1 || ' buckets' AS buckets
  FROM hash_metapage_info(get_raw_page('ordered_h', 0)) \gset
\echo :buckets

\echo bulk: CREATE TABLE AS, INSERT … SELECT, hash index, B-tree index over 1,000,000 keys
CREATE TABLE run AS SELECT h, seq FROM staged WHERE false;
\timing on
CREATE TABLE run_made AS SELECT h, seq FROM staged WHERE seq <= 1000000;
INSERT INTO run SELECT h, seq FROM staged WHERE seq <= 1000000;
CREATE INDEX ON run USING hash (h);
CREATE INDEX ON run_made (h);
\timing off
DROP SCHEMA tally_key_inserts CASCADE;
\! rm -f /tmp/kl/keys1*.bin
