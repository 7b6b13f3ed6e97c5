ALTER TABLE tally_streams DROP COLUMN keys_epoch;
ALTER TABLE tally_streams DROP COLUMN keys_merged;
