-- Each incarnation of a tenant's stream gets a number of its own: a new row of `tally_streams`
-- takes the sequence's next value, and so does a row whose `last_seq` goes back (a stream created
-- again over its old row: `last_seq` returns to 0), by the trigger below, whoever writes the row
-- (also a node of an earlier version during an upgrade). A tenant connection that keeps a filter
-- of a stream's stored dedupe keys (docs/postgres.md, section 2) compares it under the stream's
-- row lock: a stream created again by another node is read whole again, even when its new
-- events have numbers the filter had already seen. Existing rows get distinct numbers as the
-- column is added.
CREATE SEQUENCE tally_stream_incarnations;
ALTER TABLE tally_streams
    ADD COLUMN incarnation bigint NOT NULL DEFAULT nextval('tally_stream_incarnations');
ALTER SEQUENCE tally_stream_incarnations OWNED BY tally_streams.incarnation;
-- The function keeps this schema as its search path, so it finds the sequence whoever updates.
CREATE FUNCTION tally_stream_incarnation() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    NEW.incarnation := nextval('tally_stream_incarnations');
    RETURN NEW;
END $$;
CREATE TRIGGER tally_stream_incarnation BEFORE UPDATE ON tally_streams
    FOR EACH ROW WHEN (NEW.last_seq < OLD.last_seq)
    EXECUTE FUNCTION tally_stream_incarnation();
