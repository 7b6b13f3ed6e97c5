DROP TABLE tally_records;
