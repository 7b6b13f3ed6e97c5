-- Rows of the tenant's tables (CREATE TABLE … PRIMARY KEY), one row per (table, key). `key` and
-- `row` are Tally's value encoding (tally_views::codec): the key's value, and the row's values in
-- the table's column order (rows written before the table gained columns have fewer).
CREATE TABLE tally_table_rows (
    tbl TEXT NOT NULL,
    key BLOB NOT NULL,
    row BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
