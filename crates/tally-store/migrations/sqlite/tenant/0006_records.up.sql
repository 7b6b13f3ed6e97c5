-- The tenant's records that are not events, views or table rows: alert definitions, their
-- state per group, their history and the webhook deliveries still to make. `kind` names the
-- sort; `key` orders records of one kind (history keys start with the alert and the time, so a
-- range of keys is an alert's history in time order); `body` is JSON.
CREATE TABLE tally_records (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
