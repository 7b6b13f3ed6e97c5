-- The rejection log: every event this tenant's ingest rejected, with why and what was sent (up
-- to 32 KB), kept for the rejection retention. `at` is microseconds since the Unix epoch.
CREATE TABLE tally_rejections (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    route   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    message TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX tally_rejections_at ON tally_rejections (at);
