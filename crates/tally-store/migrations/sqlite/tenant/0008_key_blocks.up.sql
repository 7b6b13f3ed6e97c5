-- The dedupe keys in blocks (src/sqlite_keys.rs): `tally_keyblocks__{stream}` instead of the
-- `WITHOUT ROWID` table `tally_keys__{stream}`. Streams are converted by their first append;
-- this version changes no table itself. It exists so that a binary from before the blocks
-- refuses the tenant ("newer than this binary"): it would not find the keys in the blocks,
-- hash every row into a table of its own and move `keys_merged`, and the keys it merged there
-- would be in neither place for this binary, so their duplicates would be accepted.
SELECT 1;
