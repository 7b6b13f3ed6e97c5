-- The last row of each stream whose dedupe key is in the stream's large key table; the keys of
-- later rows are read from the raw table (see src/sqlite_keys.rs). 0 for a stream of an earlier
-- layout until its first append converts it.
ALTER TABLE tally_streams ADD COLUMN keys_merged INTEGER NOT NULL DEFAULT 0;
