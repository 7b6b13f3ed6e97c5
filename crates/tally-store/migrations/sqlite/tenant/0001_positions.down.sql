DROP TABLE tally_views;
DROP TABLE tally_streams;
