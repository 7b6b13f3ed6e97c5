-- Back to the setting read for each row.
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
            'USING (tenant_id = current_setting(''tally.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''tally.tenant_id'', true))',
            p.schemaname, p.tablename);
    END LOOP;
END
$$;
