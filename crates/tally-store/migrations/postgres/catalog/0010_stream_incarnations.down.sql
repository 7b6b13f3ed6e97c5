-- The sequence goes with the column it is owned by. CASCADE: a `grant-reader` view made after
-- the up step shows the column; it is dropped too (run `grant-reader` again).
DROP TRIGGER tally_stream_incarnation ON tally_streams;
DROP FUNCTION tally_stream_incarnation();
ALTER TABLE tally_streams DROP COLUMN incarnation CASCADE;
