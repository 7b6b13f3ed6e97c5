-- Per tenant and view, how many applied events made one of its expressions fail (and yield
-- NULL): counted with the position, in the same transaction.
ALTER TABLE tally_views ADD COLUMN failed bigint NOT NULL DEFAULT 0;
