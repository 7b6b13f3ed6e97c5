-- Drops every stream and view table with the bookkeeping: the data goes with them.
DO $$
DECLARE t record;
BEGIN
    FOR t IN SELECT name FROM tally_tables LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', t.name);
    END LOOP;
END $$;
DROP TABLE tally_views;
DROP TABLE tally_streams;
DROP TABLE tally_tables;
