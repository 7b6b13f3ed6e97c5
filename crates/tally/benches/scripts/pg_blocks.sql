-- Raw events in blocks against one row per event (docs/performance.md, twenty-fourth round):
-- 200,000 staged rows of the rollups stream's shape inserted into the per-event raw table of
-- Tally before migration 9 (week partitions, (tenant_id, _seq) index, forced row-level
-- security), and the same events as blocks of 1,000 (arrays per column, lz4, the blocks table
-- as ddl.rs creates it): built by array_agg from the staged rows, and inserted already built
-- (the arrays Tally's append sends, but neither parsed from parameters nor compressed again:
-- `built` was made under lz4, and INSERT … SELECT copies compressed values as they are). Two
-- rounds, each after a CHECKPOINT.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -q -f pg_blocks.sql
\set schema tally_blocks
\set rows stage
\ir pg_rollup_rows.sql
SET default_toast_compression = 'lz4';
CREATE TABLE raw (tenant_id text NOT NULL, _seq bigint NOT NULL, id text, event text,
  user_id text, country text, path text, duration_ms float8, revenue numeric(12,2),
  at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE INDEX ON raw (tenant_id, _seq);
CREATE TABLE raw_w1 PARTITION OF raw FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE raw_def PARTITION OF raw DEFAULT;
CREATE TABLE blocks (tenant_id text NOT NULL, _week timestamptz, _first_seq bigint NOT NULL,
  _last_seq bigint NOT NULL, _n integer NOT NULL, _seq bigint[] NOT NULL, id text[],
  event text[], user_id text[], country text[], path text[], duration_ms float8[],
  revenue numeric[], at timestamptz[]) PARTITION BY RANGE (_week);
CREATE INDEX ON blocks (tenant_id, _last_seq);
CREATE TABLE blocks_w1 PARTITION OF blocks FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE blocks_def PARTITION OF blocks DEFAULT;
CREATE TABLE built AS SELECT (_seq - 1) / 1000 AS b, array_agg(_seq ORDER BY _seq) s,
  array_agg(id ORDER BY _seq) id, array_agg(event ORDER BY _seq) event,
  array_agg(user_id ORDER BY _seq) user_id, array_agg(country ORDER BY _seq) country,
  array_agg(path ORDER BY _seq) path, array_agg(duration_ms ORDER BY _seq) d,
  array_agg(revenue ORDER BY _seq) r, array_agg(at ORDER BY _seq) at FROM stage GROUP BY 1;
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['raw','raw_w1','raw_def','blocks','blocks_w1','blocks_def'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY; ALTER TABLE %I FORCE ROW LEVEL SECURITY;
      CREATE POLICY p ON %I USING (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))
      WITH CHECK (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))', t, t, t);
  END LOOP;
END $$;
\ir pg_blocks_round.sql
TRUNCATE raw, blocks;
\ir pg_blocks_round.sql
\echo sizes: per-event table (one round), blocks (two rounds)
SELECT pg_size_pretty(pg_total_relation_size('raw_w1')) AS raw, pg_size_pretty(pg_total_relation_size('blocks_w1')) AS blocks;
DROP SCHEMA tally_blocks CASCADE;
