-- The last row of each stream whose dedupe key is in the stream's large key table; the keys of
-- later rows are read from the raw table (see src/sqlite_keys.rs). 0 for a stream of an earlier
-- layout until its first append converts it. `keys_epoch` is a random value that changes when
-- the stream is created again or retention deletes its rows, so that a process holding recent
-- keys in memory knows to read them again.
ALTER TABLE tally_streams ADD COLUMN keys_merged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tally_streams ADD COLUMN keys_epoch INTEGER NOT NULL DEFAULT 0;
