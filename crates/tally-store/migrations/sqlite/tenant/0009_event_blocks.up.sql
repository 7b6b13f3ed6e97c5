-- Raw events in blocks (src/sqlite_events.rs): `tally_events__{stream}` holds blocks of up to
-- 1,024 events instead of a table named as the stream with a row per event. The conversion of
-- each stream is done by the binary in the transaction that applies this version (SQL cannot
-- write the blocks); this statement changes nothing itself. A binary from before the blocks
-- refuses the tenant ("newer than this binary"): it would find no raw table.
SELECT 1;
