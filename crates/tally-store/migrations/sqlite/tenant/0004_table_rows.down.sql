DROP TABLE tally_table_rows;
