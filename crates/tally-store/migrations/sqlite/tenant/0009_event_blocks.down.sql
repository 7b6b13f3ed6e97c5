-- Nothing to revert in SQL: the blocks can only be read by the binary that wrote them. Restore
-- a backup taken before the upgrade instead of going down.
SELECT 1;
