-- Nothing to revert in the tables (see the up migration). Converted streams keep their span
-- tables and have no time index; a binary from before the spans that writes them again leaves
-- its rows out of the spans, so restore a backup taken before the upgrade instead of going down.
SELECT 1;
