-- What the tenant policy's per-row setting read costs an INSERT (docs/performance.md, twentieth
-- round): 200,000 rows inserted four times into each of two tables under forced row-level
-- security, alternating, one with the policy's setting read per row (`a`), one with it read
-- once per statement in a scalar subquery (`b`, Tally's policy since migration 8).
--
--     psql -h 127.0.0.1 -U postgres -d test -v role=tally_test -f crates/tally/benches/scripts/rls_policy.sql
--
-- `role` must be an ordinary role (superusers and BYPASSRLS roles skip the policies); the
-- PostgreSQL benchmark creates `tally_test`. Compare the times of the INSERTs.
\timing on
DROP SCHEMA IF EXISTS rls_policy_bench CASCADE;
CREATE SCHEMA rls_policy_bench;
GRANT ALL ON SCHEMA rls_policy_bench TO :role;
SET ROLE :role;
SET search_path TO rls_policy_bench;
CREATE TABLE a (tenant_id text NOT NULL, seq bigint, id text, event text, at timestamptz);
CREATE TABLE b (tenant_id text NOT NULL, seq bigint, id text, event text, at timestamptz);
ALTER TABLE a ENABLE ROW LEVEL SECURITY;
ALTER TABLE a FORCE ROW LEVEL SECURITY;
ALTER TABLE b ENABLE ROW LEVEL SECURITY;
ALTER TABLE b FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON a
    USING (tenant_id = current_setting('tally.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('tally.tenant_id', true));
CREATE POLICY p ON b
    USING (tenant_id = (SELECT current_setting('tally.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('tally.tenant_id', true)));
CREATE TEMP TABLE s AS
    SELECT g AS seq, md5(g::text) AS id, 'page' AS event, now() AS at
      FROM generate_series(1, 200000) g;
SELECT set_config('tally.tenant_id', 'bench', false);
\echo a then b
INSERT INTO a SELECT 'bench', seq, id, event, at FROM s;
INSERT INTO b SELECT 'bench', seq, id, event, at FROM s;
TRUNCATE a, b;
\echo a then b
INSERT INTO a SELECT 'bench', seq, id, event, at FROM s;
INSERT INTO b SELECT 'bench', seq, id, event, at FROM s;
TRUNCATE a, b;
\echo b then a
INSERT INTO b SELECT 'bench', seq, id, event, at FROM s;
INSERT INTO a SELECT 'bench', seq, id, event, at FROM s;
TRUNCATE a, b;
\echo b then a
INSERT INTO b SELECT 'bench', seq, id, event, at FROM s;
INSERT INTO a SELECT 'bench', seq, id, event, at FROM s;
RESET ROLE;
DROP SCHEMA rls_policy_bench CASCADE;
