-- Where a PostgreSQL append's server time goes (docs/performance.md, twenty-second round): the
-- same 200,000 staged rows of the rollups stream's shape inserted into an unindexed table, the
-- raw table, the key table, and blocks of 1,000 events a row (one array a column, built
-- beforehand) compressed with pglz or lz4; tables and policies as ddl.rs creates them.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -q -f pg_append_split.sql
\set schema tally_split
\set rows stage
\ir pg_rollup_rows.sql

CREATE TABLE bare (LIKE stage);
CREATE TABLE raw (tenant_id text NOT NULL, _seq bigint NOT NULL, id text, event text,
  user_id text, country text, path text, duration_ms float8, revenue numeric(12,2),
  at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE INDEX ON raw (tenant_id, _seq);
CREATE TABLE raw_w1 PARTITION OF raw FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE raw_def PARTITION OF raw DEFAULT;
CREATE TABLE keys (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL,
  _seq bigint NOT NULL, at timestamptz);
CREATE INDEX ON keys USING hash (h);
CREATE INDEX ON keys USING brin (at);
CREATE TABLE stage_blocks AS
  SELECT 't1'::text tenant_id, min(_seq) first_seq, max(_seq) last_seq, min(at) at_min,
    max(at) at_max, array_agg(_seq ORDER BY _seq) seqs, array_agg(id ORDER BY _seq) ids,
    array_agg(event ORDER BY _seq) events, array_agg(user_id ORDER BY _seq) user_ids,
    array_agg(country ORDER BY _seq) countries, array_agg(path ORDER BY _seq) paths,
    array_agg(duration_ms ORDER BY _seq) durations, array_agg(revenue ORDER BY _seq) revenues,
    array_agg(at ORDER BY _seq) ats
  FROM stage GROUP BY (_seq - 1) / 1000;
CREATE TABLE blocks_pglz (LIKE stage_blocks);
CREATE INDEX ON blocks_pglz (tenant_id, first_seq);
CREATE TABLE blocks_lz4 (LIKE stage_blocks);
CREATE INDEX ON blocks_lz4 (tenant_id, first_seq);
DO $$ DECLARE c text; BEGIN
  FOREACH c IN ARRAY ARRAY['seqs','ids','events','user_ids','countries','paths','durations','revenues','ats'] LOOP
    EXECUTE format('ALTER TABLE blocks_pglz ALTER COLUMN %I SET COMPRESSION pglz', c);
    EXECUTE format('ALTER TABLE blocks_lz4 ALTER COLUMN %I SET COMPRESSION lz4', c);
  END LOOP;
END $$;
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['raw','raw_w1','raw_def','keys','blocks_pglz','blocks_lz4'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY; ALTER TABLE %I FORCE ROW LEVEL SECURITY;
      CREATE POLICY p ON %I USING (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))
      WITH CHECK (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))', t, t, t);
  END LOOP;
END $$;

\echo round 1: bare, raw, keys, blocks pglz, blocks lz4
CHECKPOINT;
INSERT INTO bare SELECT * FROM stage;
INSERT INTO raw SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO keys SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO blocks_pglz SELECT * FROM stage_blocks;
INSERT INTO blocks_lz4 SELECT * FROM stage_blocks;
SELECT pg_size_pretty(pg_total_relation_size('bare')) bare,
  pg_size_pretty(pg_total_relation_size('raw_w1')) raw,
  pg_size_pretty(pg_total_relation_size('keys')) keys,
  pg_size_pretty(pg_total_relation_size('blocks_pglz')) blocks_pglz,
  pg_size_pretty(pg_total_relation_size('blocks_lz4')) blocks_lz4;
TRUNCATE bare, raw, keys, blocks_pglz, blocks_lz4;

\echo round 2: bare, raw, keys, blocks pglz, blocks lz4
CHECKPOINT;
INSERT INTO bare SELECT * FROM stage;
INSERT INTO raw SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO keys SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO blocks_pglz SELECT * FROM stage_blocks;
INSERT INTO blocks_lz4 SELECT * FROM stage_blocks;

DROP SCHEMA tally_split CASCADE;
