ALTER TABLE tally_views DROP COLUMN failed;
