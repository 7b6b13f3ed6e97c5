-- One round of pg_blocks.sql (included twice): 200,000 staged rows into the per-event raw
-- table, the same as blocks of 1,000 built by array_agg, and as blocks already built.
\echo round: one row per event, blocks by array_agg, blocks already built
CHECKPOINT;
INSERT INTO raw SELECT 't1', _seq, id, event, user_id, country, path, duration_ms, revenue, at FROM stage;
INSERT INTO blocks SELECT 't1', '2026-11-02', min(_seq), max(_seq), count(*), array_agg(_seq ORDER BY _seq),
  array_agg(id ORDER BY _seq), array_agg(event ORDER BY _seq), array_agg(user_id ORDER BY _seq),
  array_agg(country ORDER BY _seq), array_agg(path ORDER BY _seq), array_agg(duration_ms ORDER BY _seq),
  array_agg(revenue ORDER BY _seq), array_agg(at ORDER BY _seq)
  FROM stage GROUP BY (_seq - 1) / 1000;
INSERT INTO blocks SELECT 't1', '2026-11-02', s[1], s[1000], 1000, s, id, event, user_id, country, path, d, r, at FROM built;
