-- Dedupe keys two ways (docs/performance.md, twenty-third round): 20 batches of 10,000 random
-- keys, each staged into a temporary table, then either probed in a key table with the indexes
-- ddl.rs gives it (hash index on h, BRIN on at; no policy; the probe data.rs runs, reading the
-- staging table instead of an array parameter) and inserted, or inserted
-- into a key table with a unique B-tree on h with ON CONFLICT DO NOTHING (the insert is the
-- probe), with and without the BRIN index. run_stage times the staging alone. Two rounds, the
-- second into emptied tables after a CHECKPOINT.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -f pg_keys_conflict.sql
\set schema tally_keys_conflict
\set rows src
\ir pg_rollup_rows.sql
-- keys as today: hash index + BRIN, probe then insert
CREATE TABLE keys_hash (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE INDEX ON keys_hash USING hash (h);
CREATE INDEX ON keys_hash USING brin (at);
-- keys with a unique btree on h: the insert is the probe
CREATE TABLE keys_uniq (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE UNIQUE INDEX ON keys_uniq (h);
CREATE INDEX ON keys_uniq USING brin (at);
-- keys with a unique btree on h, no BRIN
CREATE TABLE keys_uniq2 (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE UNIQUE INDEX ON keys_uniq2 (h);
CREATE TEMP TABLE stage (LIKE src);

CREATE FUNCTION run_hash() RETURNS void LANGUAGE plpgsql AS $$
DECLARE b int; n int;
BEGIN
  FOR b IN 0..19 LOOP
    TRUNCATE stage;
    INSERT INTO stage SELECT * FROM src WHERE _seq > b * 10000 AND _seq <= (b + 1) * 10000;
    SELECT count(*) INTO n FROM (
      WITH u AS MATERIALIZED (SELECT s.id AS v, hashtextextended(s.id, hashtextextended('t1', 0)) AS h FROM stage s)
      SELECT 1 FROM u CROSS JOIN LATERAL (SELECT 1 FROM keys_hash t WHERE t.h = u.h AND t.tenant_id = 't1' AND t.key = u.v LIMIT 1) x) q;
    INSERT INTO keys_hash SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
  END LOOP;
END $$;
CREATE FUNCTION run_uniq() RETURNS void LANGUAGE plpgsql AS $$
DECLARE b int; n int;
BEGIN
  FOR b IN 0..19 LOOP
    TRUNCATE stage;
    INSERT INTO stage SELECT * FROM src WHERE _seq > b * 10000 AND _seq <= (b + 1) * 10000;
    WITH ins AS (INSERT INTO keys_uniq SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage ON CONFLICT (h) DO NOTHING RETURNING _seq)
    SELECT count(*) INTO n FROM ins;
  END LOOP;
END $$;
CREATE FUNCTION run_uniq2() RETURNS void LANGUAGE plpgsql AS $$
DECLARE b int; n int;
BEGIN
  FOR b IN 0..19 LOOP
    TRUNCATE stage;
    INSERT INTO stage SELECT * FROM src WHERE _seq > b * 10000 AND _seq <= (b + 1) * 10000;
    WITH ins AS (INSERT INTO keys_uniq2 SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage ON CONFLICT (h) DO NOTHING RETURNING _seq)
    SELECT count(*) INTO n FROM ins;
  END LOOP;
END $$;
CREATE FUNCTION run_stage() RETURNS void LANGUAGE plpgsql AS $$
DECLARE b int;
BEGIN
  FOR b IN 0..19 LOOP
    TRUNCATE stage;
    INSERT INTO stage SELECT * FROM src WHERE _seq > b * 10000 AND _seq <= (b + 1) * 10000;
  END LOOP;
END $$;
\echo stage-only, hash(probe+insert), uniq(on conflict), uniq no brin  -- x2
CHECKPOINT;
SELECT run_stage();
SELECT run_hash();
SELECT run_uniq();
SELECT run_uniq2();
\echo second round, into the emptied tables
SELECT run_stage();
TRUNCATE keys_hash, keys_uniq, keys_uniq2;
CHECKPOINT;
SELECT run_hash();
SELECT run_uniq();
SELECT run_uniq2();
DROP SCHEMA tally_keys_conflict CASCADE;
