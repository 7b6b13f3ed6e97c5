-- The tenant policy reads `tally.tenant_id` once per statement, not once per row: the call is
-- wrapped in a scalar subquery, which PostgreSQL plans as an InitPlan. Checking each row of an
-- append's `INSERT … SELECT` with the bare call cost about 0.3 µs a row (docs/performance.md,
-- twentieth round). The same test, so the same rows are visible and writable. `ALTER POLICY`
-- locks each table and partition (ACCESS EXCLUSIVE) until this migration commits; nothing is
-- rewritten, so that is brief, but a database with thousands of partitions may need a larger
-- `max_locks_per_transaction` for it.
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT schemaname, tablename
          FROM pg_policies
         WHERE schemaname = current_schema() AND policyname = 'tally_tenant'
    LOOP
        EXECUTE format(
            'ALTER POLICY tally_tenant ON %I.%I '
            'USING (tenant_id = (SELECT current_setting(''tally.tenant_id'', true))) '
            'WITH CHECK (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))',
            p.schemaname, p.tablename);
    END LOOP;
END
$$;
