-- The keys pg_key_layouts.sql and pg_key_inserts.sql insert, made once in the current schema:
-- `staged`, :staged_rows rows of a sequence number, a random 64-character text key, its 64-bit
-- hash (PostgreSQL's hashtextextended) and a time in the last seven days.
CREATE TABLE staged AS
  SELECT g::bigint AS seq, md5(random()::text) || md5(random()::text) AS key,
         now() - random() * interval '7 days' AS at
    FROM generate_series(1, :staged_rows) g;
ALTER TABLE staged ADD COLUMN h bigint;
UPDATE staged SET h = hashtextextended(key, 0);
CREATE INDEX ON staged (seq);
