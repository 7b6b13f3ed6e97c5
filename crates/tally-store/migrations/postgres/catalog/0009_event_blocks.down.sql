-- Back to one row per event: each stream's blocks are unnested into a table named like the
-- stream, partitioned by its event time (the partitions keep their names), with its
-- (tenant_id, _seq) index; the view goes. The event time and the NOT NULL columns are read from
-- the comments `CREATE STREAM` and migration 9 put on the blocks' columns.
-- The helpers below are the up step's: each migration file runs on its own.
CREATE OR REPLACE FUNCTION pg_temp.tally_derived(stream text, suffix text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE
    h numeric := 14695981039346656037;
    two64 numeric := 18446744073709551616;
    low bigint;
BEGIN
    IF length(stream) + 1 + length(suffix) <= 63 THEN
        RETURN stream || '#' || suffix;
    END IF;
    FOR i IN 1..length(stream) LOOP
        low := (CASE WHEN h >= 9223372036854775808 THEN h - two64 ELSE h END)::bigint
            # ascii(substr(stream, i, 1))::bigint;
        h := mod((CASE WHEN low < 0 THEN low + two64 ELSE low END) * 1099511628211, two64);
    END LOOP;
    RETURN substr(stream, 1, 63 - 1 - 8 - 1 - length(suffix)) || '#'
        || lpad(to_hex(mod(h, 4294967296)::bigint), 8, '0') || '#' || suffix;
END
$f$;

CREATE OR REPLACE FUNCTION pg_temp.tally_isolate(tbl text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY tally_tenant ON %I '
        'USING (tenant_id = (SELECT current_setting(''tally.tenant_id'', true))) '
        'WITH CHECK (tenant_id = (SELECT current_setting(''tally.tenant_id'', true)))', tbl);
END
$f$;

DO $$
DECLARE
    s record;
    blocks text;
    rel oid;
    event_time text;
    names text;
    decls text;
    from_block text;
    from_events text;
    parts text[];
    bounds text[];
BEGIN
    FOR s IN
        SELECT t.name
          FROM tally_tables t
          JOIN pg_class c ON c.relname = t.name AND c.relkind = 'v'
          JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
         WHERE t.kind = 'stream'
         ORDER BY t.name
    LOOP
        blocks := pg_temp.tally_derived(s.name, 'blocks');
        SELECT c.oid INTO rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relname = blocks;
        SELECT col_description(rel, a.attnum) INTO event_time
          FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = '_week';
        SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('%I %s%s', a.attname, format_type(ty.typelem, a.atttypmod),
                   CASE WHEN col_description(rel, a.attnum) = 'NOT NULL' THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY a.attnum),
               string_agg(format('b.%I', a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('e.%I', a.attname), ', ' ORDER BY a.attnum)
          INTO names, decls, from_block, from_events
          FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('tenant_id', '_week', '_first_seq', '_last_seq', '_n', '_seq');
        SELECT array_agg(c.relname::text ORDER BY c.relname), array_agg(pg_get_expr(c.relpartbound, c.oid) ORDER BY c.relname)
          INTO parts, bounds
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = rel;
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', blocks);
        EXECUTE format(
            'CREATE TEMP TABLE tally_convert ON COMMIT DROP AS '
            'SELECT b.tenant_id, e._seq, %s FROM %I b CROSS JOIN LATERAL unnest(b._seq, %s) AS e(_seq, %s)',
            from_events, blocks, from_block, names);
        EXECUTE format('DROP VIEW %I CASCADE', s.name);
        EXECUTE format('DROP TABLE %I CASCADE', blocks);
        EXECUTE format(
            'CREATE TABLE %I (tenant_id text NOT NULL, _seq bigint NOT NULL, %s) PARTITION BY RANGE (%I)',
            s.name, decls, event_time);
        EXECUTE format('CREATE INDEX %I ON %I (tenant_id, _seq)', pg_temp.tally_derived(s.name, 'seq'), s.name);
        FOR i IN 1..coalesce(array_length(parts, 1), 0) LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I %s', parts[i], s.name, bounds[i]);
        END LOOP;
        EXECUTE format(
            'INSERT INTO %I (tenant_id, _seq, %s) SELECT tenant_id, _seq, %s FROM tally_convert',
            s.name, names, names);
        DROP TABLE tally_convert;
        PERFORM pg_temp.tally_isolate(s.name);
        FOR i IN 1..coalesce(array_length(parts, 1), 0) LOOP
            PERFORM pg_temp.tally_isolate(parts[i]);
        END LOOP;
    END LOOP;
END
$$;

DROP FUNCTION pg_temp.tally_derived(text, text);
DROP FUNCTION pg_temp.tally_isolate(text);
