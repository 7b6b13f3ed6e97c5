-- Raw events in blocks (docs/postgres.md, section 2): each stream's table of one row per event
-- becomes `<stream>#blocks`, one row per block of events of one tenant, each column an array,
-- partitioned by week as before (the partitions keep their names), and the stream's name
-- becomes a view showing the events one per row. Blocks are cut every 1,000 sequence numbers
-- and by week; sequence numbers, dedupe keys and positions are kept. Each table is rewritten
-- here, under an exclusive lock: ingest waits for it. Views that depend on the tables (those
-- of `tally tenant grant-reader`, and any of your own) go with them: run `grant-reader` again
-- afterwards. Reverting drops the views named like the streams, and any that depend on them.
CREATE OR REPLACE FUNCTION pg_temp.tally_derived(stream text, suffix text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $f$
-- The name Tally derives from a stream's (src/postgres/ddl.rs, `derived`): `stream#suffix`,
-- or, past 63 bytes, cut and told apart by the FNV-1a hash of the whole name.
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
    required text[];
    blocks text;
    event_time text;
    names text;
    decls text;
    aggs text;
    from_block text;
    from_events text;
    parts text[];
    bounds text[];
BEGIN
    BEGIN
        PERFORM set_config('default_toast_compression', 'lz4', true);
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    FOR s IN
        SELECT t.name, c.oid AS rel
          FROM tally_tables t
          JOIN pg_class c ON c.relname = t.name AND c.relkind = 'p'
          JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
         WHERE t.kind = 'stream'
         ORDER BY t.name
    LOOP
        blocks := pg_temp.tally_derived(s.name, 'blocks');
        SELECT a.attname INTO event_time
          FROM pg_partitioned_table pt
          JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
         WHERE pt.partrelid = s.rel;
        SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('%I %s[]', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum),
               string_agg(format('array_agg(%I ORDER BY _seq) AS %I', a.attname, a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('b.%I', a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('e.%I', a.attname), ', ' ORDER BY a.attnum)
          INTO names, decls, aggs, from_block, from_events
          FROM pg_attribute a
         WHERE a.attrelid = s.rel AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('tenant_id', '_seq');
        SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO required
          FROM pg_attribute a
         WHERE a.attrelid = s.rel AND a.attnotnull AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('tenant_id', '_seq');
        SELECT array_agg(c.relname::text ORDER BY c.relname), array_agg(pg_get_expr(c.relpartbound, c.oid) ORDER BY c.relname)
          INTO parts, bounds
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = s.rel;
        -- Every tenant's rows: the owner is exempt from the policy while it is not forced,
        -- within this transaction only.
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', s.name);
        EXECUTE format(
            'CREATE TEMP TABLE tally_convert ON COMMIT DROP AS '
            'SELECT tenant_id, _week, min(_low) OVER (PARTITION BY tenant_id, _chunk) AS _first_seq, '
            'max(_high) OVER (PARTITION BY tenant_id, _chunk) AS _last_seq, _n, _seq, %s FROM ('
            'SELECT tenant_id, (_seq - 1) / 1000 AS _chunk, '
            'date_trunc(''week'', %I AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'' AS _week, '
            'min(_seq) AS _low, max(_seq) AS _high, count(*)::integer AS _n, '
            'array_agg(_seq ORDER BY _seq) AS _seq, %s FROM %I GROUP BY 1, 2, 3) g',
            names, event_time, aggs, s.name);
        EXECUTE format('DROP TABLE %I CASCADE', s.name);
        EXECUTE format(
            'CREATE TABLE %I (tenant_id text NOT NULL, _week timestamptz, _first_seq bigint NOT NULL, '
            '_last_seq bigint NOT NULL, _n integer NOT NULL, _seq bigint[] NOT NULL, %s) PARTITION BY RANGE (_week)',
            blocks, decls);
        EXECUTE format('CREATE INDEX %I ON %I (tenant_id, _last_seq)', pg_temp.tally_derived(s.name, 'seq'), blocks);
        EXECUTE format('COMMENT ON COLUMN %I._week IS %L', blocks, event_time);
        FOR i IN 1..coalesce(array_length(required, 1), 0) LOOP
            EXECUTE format('COMMENT ON COLUMN %I.%I IS ''NOT NULL''', blocks, required[i]);
        END LOOP;
        FOR i IN 1..coalesce(array_length(parts, 1), 0) LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I %s', parts[i], blocks, bounds[i]);
        END LOOP;
        EXECUTE format(
            'INSERT INTO %I (tenant_id, _week, _first_seq, _last_seq, _n, _seq, %s) '
            'SELECT tenant_id, _week, _first_seq, _last_seq, _n, _seq, %s FROM tally_convert',
            blocks, names, names);
        DROP TABLE tally_convert;
        PERFORM pg_temp.tally_isolate(blocks);
        FOR i IN 1..coalesce(array_length(parts, 1), 0) LOOP
            PERFORM pg_temp.tally_isolate(parts[i]);
        END LOOP;
        EXECUTE format(
            'CREATE VIEW %I AS SELECT b.tenant_id, e._seq, b._week, %s FROM %I b '
            'CROSS JOIN LATERAL unnest(b._seq, %s) AS e(_seq, %s)',
            s.name, from_events, blocks, from_block, names);
    END LOOP;
END
$$;

DROP FUNCTION pg_temp.tally_derived(text, text);
DROP FUNCTION pg_temp.tally_isolate(text);
