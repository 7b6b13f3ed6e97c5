-- What the raw table's insert pays for (docs/performance.md, twenty-third round): 200,000
-- staged rows of the rollups stream's shape inserted into an unindexed table without policy
-- (bare), the raw table as ddl.rs creates it (week partitions, (tenant_id, _seq) index, forced
-- row-level security), and the raw table without its index, without its policy, with tenant_id
-- COLLATE "C", with the index's deduplicate_items off, and with an index on _seq alone. Two
-- rounds, each after a CHECKPOINT; the first table of each round is bare.
-- Run: psql postgres://postgres@127.0.0.1:5432/test -q -f pg_raw_split.sql
\set schema tally_raw_split
\set rows stage
\ir pg_rollup_rows.sql
CREATE TABLE bare (tenant_id text NOT NULL, LIKE stage);
CREATE TABLE raw (tenant_id text NOT NULL, _seq bigint NOT NULL, id text, event text,
  user_id text, country text, path text, duration_ms float8, revenue numeric(12,2),
  at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE INDEX ON raw (tenant_id, _seq);
CREATE TABLE raw_w1 PARTITION OF raw FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE raw_def PARTITION OF raw DEFAULT;
CREATE TABLE rawnoidx (LIKE raw) PARTITION BY RANGE (at);
CREATE TABLE rawnoidx_w1 PARTITION OF rawnoidx FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE rawnoidx_def PARTITION OF rawnoidx DEFAULT;
CREATE TABLE rawnorls (LIKE raw) PARTITION BY RANGE (at);
CREATE INDEX ON rawnorls (tenant_id, _seq);
CREATE TABLE rawnorls_w1 PARTITION OF rawnorls FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE rawnorls_def PARTITION OF rawnorls DEFAULT;
CREATE TABLE flat (tenant_id text COLLATE "C" NOT NULL, _seq bigint NOT NULL, id text, event text,
  user_id text, country text, path text, duration_ms float8, revenue numeric(12,2),
  at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE INDEX ON flat (tenant_id, _seq);
CREATE TABLE flat_w1 PARTITION OF flat FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE flat_def PARTITION OF flat DEFAULT;
CREATE TABLE rawseq (LIKE raw) PARTITION BY RANGE (at);
CREATE INDEX ON rawseq (tenant_id, _seq) WITH (deduplicate_items = off);
CREATE TABLE rawseq_w1 PARTITION OF rawseq FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE rawseq_def PARTITION OF rawseq DEFAULT;
CREATE TABLE seqonly (LIKE raw) PARTITION BY RANGE (at);
CREATE INDEX ON seqonly (_seq);
CREATE TABLE seqonly_w1 PARTITION OF seqonly FOR VALUES FROM ('2026-11-02') TO ('2026-11-09');
CREATE TABLE seqonly_def PARTITION OF seqonly DEFAULT;
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['raw','raw_w1','raw_def','rawnoidx','rawnoidx_w1','rawnoidx_def','flat','flat_w1','flat_def','rawseq','rawseq_w1','rawseq_def','seqonly','seqonly_w1','seqonly_def'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY; ALTER TABLE %I FORCE ROW LEVEL SECURITY;
      CREATE POLICY p ON %I USING (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))
      WITH CHECK (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))', t, t, t);
  END LOOP;
END $$;
\echo round: bare, raw, no index, no policy, tenant_id COLLATE "C", deduplicate_items off, index on _seq alone
CHECKPOINT;
INSERT INTO bare SELECT 't1', * FROM stage;
INSERT INTO raw SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO rawnoidx SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO rawnorls SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO flat SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO rawseq SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO seqonly SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
TRUNCATE bare, raw, rawnoidx, rawnorls, flat, rawseq, seqonly;
\echo round: bare, raw, no index, no policy, tenant_id COLLATE "C", deduplicate_items off, index on _seq alone
CHECKPOINT;
INSERT INTO bare SELECT 't1', * FROM stage;
INSERT INTO raw SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO rawnoidx SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO rawnorls SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO flat SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO rawseq SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO seqonly SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
DROP SCHEMA tally_raw_split CASCADE;
