-- The raw event layout of time spans (src/sqlite_spans.rs): no index on the event time, a
-- `tally_spans__{stream}` table per stream instead, and no index on `_seq` in the large key
-- tables (src/sqlite_keys.rs). Streams are converted by their first write; this version changes
-- no table itself. It exists so that a binary from before the spans refuses the tenant ("newer
-- than this binary"): its appends would not widen the spans, and retention would never find
-- their rows.
SELECT 1;
