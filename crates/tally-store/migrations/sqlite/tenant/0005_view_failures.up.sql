-- Per view, how many applied events made one of its expressions fail (and yield NULL): counted
-- with the position, in the same transaction, so it holds exactly the events up to it.
ALTER TABLE tally_views ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
