-- Each incarnation of a tenant's stream gets a number of its own: a new row of `tally_streams`
-- takes the sequence's next value, and so does a stream created again over its old row
-- (`last_seq` goes back to 0 then). A node that keeps a filter of a stream's stored dedupe keys
-- (docs/postgres.md, section 6) compares it under the stream's row lock: a stream dropped and
-- created again by another node is read whole again, even when its new events have numbers the
-- filter had already seen. Existing rows get distinct numbers as the column is added.
CREATE SEQUENCE tally_stream_incarnations;
ALTER TABLE tally_streams
    ADD COLUMN incarnation bigint NOT NULL DEFAULT nextval('tally_stream_incarnations');
