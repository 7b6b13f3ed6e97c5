-- Nothing to revert in the tables (see the up migration). Converted streams keep their key
-- blocks; a binary from before the blocks would not read them, so restore a backup taken before
-- the upgrade instead of going down.
SELECT 1;
