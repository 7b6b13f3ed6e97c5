-- What this tenant's database has materialized: the definition of each stream table, and for
-- each view table the plan it was built for and the last event it has folded in.
CREATE TABLE tally_streams (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);

CREATE TABLE tally_views (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    position    INTEGER NOT NULL
);
