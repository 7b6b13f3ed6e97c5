-- What each part of the PostgreSQL key table costs an insert (docs/performance.md, twenty-second
-- round): the same 200,000 keys inserted into the key table as ddl.rs creates it (`full`),
-- without its BRIN index, without the key's text, without any index, and without the policy;
-- three rounds, the third into tables already holding the first 200,000.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -q -f pg_keys_split.sql
\timing on
SET jit = off;
DROP SCHEMA IF EXISTS tally_keys_split CASCADE;
CREATE SCHEMA tally_keys_split;
SET search_path = tally_keys_split;
SELECT set_config('tally.tenant_id', 't1', false);
CREATE TABLE stage (_seq bigint, id text, at timestamptz);
INSERT INTO stage SELECT g, md5(g::text) || md5((g * 7)::text),
  timestamptz '2026-11-02' + (g || ' s')::interval FROM generate_series(1, 200000) g;

CREATE TABLE k_full (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE INDEX ON k_full USING hash (h);
CREATE INDEX ON k_full USING brin (at);
CREATE TABLE k_nobrin (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE INDEX ON k_nobrin USING hash (h);
CREATE TABLE k_nokey (tenant_id text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE INDEX ON k_nokey USING hash (h);
CREATE INDEX ON k_nokey USING brin (at);
CREATE TABLE k_noidx (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE TABLE k_norls (tenant_id text NOT NULL, key text NOT NULL, h bigint NOT NULL, _seq bigint NOT NULL, at timestamptz);
CREATE INDEX ON k_norls USING hash (h);
CREATE INDEX ON k_norls USING brin (at);
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['k_full','k_nobrin','k_nokey','k_noidx'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY; ALTER TABLE %I FORCE ROW LEVEL SECURITY;
      CREATE POLICY p ON %I USING (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))
      WITH CHECK (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))', t, t, t);
  END LOOP;
END $$;

\echo round 1: full, nobrin, nokey, noidx, norls
CHECKPOINT;
INSERT INTO k_full SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_nobrin SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_nokey SELECT 't1', hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_noidx SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_norls SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
TRUNCATE k_full, k_nobrin, k_nokey, k_noidx, k_norls;

\echo round 2: full, nobrin, nokey, noidx, norls
CHECKPOINT;
INSERT INTO k_full SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_nobrin SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_nokey SELECT 't1', hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_noidx SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_norls SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;

\echo round 3, 200,000 more keys: full, nobrin, nokey, noidx, norls
UPDATE stage SET _seq = _seq + 200000, id = id || 'x';
CHECKPOINT;
INSERT INTO k_full SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_nobrin SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_nokey SELECT 't1', hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_noidx SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;
INSERT INTO k_norls SELECT 't1', id, hashtextextended(id, hashtextextended('t1', 0)), _seq, at FROM stage;

DROP SCHEMA tally_keys_split CASCADE;
