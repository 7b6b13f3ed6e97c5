-- One round of pg_key_layouts.sql: each layout's 200,000 keys after a CHECKPOINT, timed.
\echo round :round
CHECKPOINT;
\timing on
\echo rows
CALL insert_into('rows', :round);
\timing off
CHECKPOINT;
\timing on
\echo rows_nokey
CALL insert_into('rows_nokey', :round);
\timing off
CHECKPOINT;
\timing on
\echo rows_nobrin
CALL insert_into('rows_nobrin', :round);
\timing off
CHECKPOINT;
\timing on
\echo gin (pending list)
CALL insert_into('gin', :round);
\echo gin: the pending list merged
SELECT gin_clean_pending_list('gin_h') \g /dev/null
\timing off
CHECKPOINT;
\timing on
\echo gin_direct
CALL insert_into('gin_direct', :round);
\timing off
SELECT :round + 1 AS round \gset
