-- What this tenant's database has materialized: the definition of each stream table with the
-- last sequence number it handed out (never reused, even when retention deletes the newest
-- events), and for each view table the plan it was built for and the last event it folded in.
CREATE TABLE tally_streams (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tally_views (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    position    INTEGER NOT NULL
);
