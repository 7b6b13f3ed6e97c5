-- Setup shared by pg_append_split.sql, pg_raw_split.sql and pg_keys_conflict.sql (each includes
-- it with \ir after setting :schema and :rows): timing on, jit off, a fresh schema :schema as the
-- search path, tenant t1 set, and table :rows with 200,000 rows of the rollups stream's shape
-- (random 64-character ids), analyzed.
\timing on
SET jit = off;
DROP SCHEMA IF EXISTS :schema CASCADE;
CREATE SCHEMA :schema;
SET search_path = :schema;
SELECT set_config('tally.tenant_id', 't1', false);
CREATE TABLE :rows (_seq bigint, id text, event text, user_id text, country text, path text,
  duration_ms float8, revenue numeric(12,2), at timestamptz);
INSERT INTO :rows SELECT g, md5(g::text) || md5((g * 7)::text), 'page_view', 'u' || (g % 50000),
  'c' || (g % 40), '/p/' || (g % 500), (g % 1000)::float8, (g % 100)::numeric / 4,
  timestamptz '2026-11-02' + (g || ' s')::interval
  FROM generate_series(1, 200000) g;
ANALYZE :rows;
