-- Where a PostgreSQL stream's dedupe keys could live (docs/performance.md, twenty-fifth round):
-- 200,000 keys (random 64-character text, their 64-bit hashes, sequence numbers, times)
-- inserted, 10,000 a statement, into tables already holding 1,000,000:
--   rows         the key table as ddl.rs creates it: a row per key, hash index on h, BRIN on at
--   rows_nokey   the same without the key's text (a hit would be checked against the event)
--   rows_nobrin  the same without the BRIN index on at (retention deletes keys through it)
--   gin          a row per 10,000 keys, their hashes as one bigint[] under a GIN index, with
--                GIN's pending list (fastupdate); then the list merged into the index
--   gin_direct   the same with fastupdate off
-- Two rounds, each table's insert after a CHECKPOINT.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -q -f pg_key_layouts.sql
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS tally_key_layouts CASCADE;
CREATE SCHEMA tally_key_layouts;
SET search_path = tally_key_layouts;
\set staged_rows 1200000
\ir pg_key_staged.sql

CREATE TABLE rows (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL,
  _seq bigint NOT NULL, at timestamptz NOT NULL);
CREATE INDEX ON rows USING hash (h);
CREATE INDEX ON rows USING brin (at);
CREATE TABLE rows_nokey (tenant_id text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL,
  at timestamptz NOT NULL);
CREATE INDEX ON rows_nokey USING hash (h);
CREATE INDEX ON rows_nokey USING brin (at);
CREATE TABLE rows_nobrin (LIKE rows);
CREATE INDEX ON rows_nobrin USING hash (h);
CREATE TABLE gin (tenant_id text NOT NULL, _last_seq bigint NOT NULL, _h bigint[] NOT NULL);
CREATE INDEX gin_h ON gin USING gin (_h);
CREATE TABLE gin_direct (LIKE gin);
CREATE INDEX ON gin_direct USING gin (_h) WITH (fastupdate = off);

INSERT INTO rows SELECT 'acme', key, h, seq, at FROM staged WHERE seq <= 1000000;
INSERT INTO rows_nokey SELECT 'acme', h, seq, at FROM staged WHERE seq <= 1000000;
INSERT INTO rows_nobrin SELECT * FROM rows;
INSERT INTO gin SELECT 'acme', max(seq), array_agg(h ORDER BY seq) FROM staged
  WHERE seq <= 1000000 GROUP BY (seq - 1) / 10000;
SELECT gin_clean_pending_list('gin_h') \g /dev/null
INSERT INTO gin_direct SELECT * FROM gin;
-- The arrays an append would send, built beforehand.
CREATE TABLE built AS SELECT (seq - 1) / 10000 AS b, max(seq) AS last, array_agg(h ORDER BY seq) AS hs
  FROM staged WHERE seq > 1000000 GROUP BY 1;
VACUUM ANALYZE;

CREATE PROCEDURE insert_into(tbl text, round int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 100..119 LOOP
    EXECUTE CASE
      WHEN tbl = 'rows_nokey' THEN format(
        'INSERT INTO rows_nokey SELECT %L, h, seq + %s, at FROM staged WHERE seq > %s AND seq <= %s',
        'acme', round * 200000, i * 10000, (i + 1) * 10000)
      WHEN tbl LIKE 'rows%' THEN format(
        'INSERT INTO %I SELECT %L, key, h, seq + %s, at FROM staged WHERE seq > %s AND seq <= %s',
        tbl, 'acme', round * 200000, i * 10000, (i + 1) * 10000)
      ELSE format('INSERT INTO %I SELECT %L, last + %s, hs FROM built WHERE b = %s',
        tbl, 'acme', round * 200000, i)
    END;
  END LOOP;
END $$;

\set round 1
\ir pg_key_layouts_round.sql
\ir pg_key_layouts_round.sql
DROP SCHEMA tally_key_layouts CASCADE;
