-- Dropping the column drops its default, which the sequence had to outlive.
ALTER TABLE tally_streams DROP COLUMN incarnation;
DROP SEQUENCE tally_stream_incarnations;
