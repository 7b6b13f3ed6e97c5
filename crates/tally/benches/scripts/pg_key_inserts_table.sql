-- One table of pg_key_inserts.sql: 200,000 keys after a CHECKPOINT, then 200,000 more, timed.
CHECKPOINT;
\echo :tbl
\timing on
CALL insert_into(:'tbl', 100);
CALL insert_into(:'tbl', 120);
\timing off
