-- The 5-minute tour of the README: a stream of capital flows between vaults and users, and two
-- live views over it. Apply it with `tally apply examples/quickstart/schema.sql`.

CREATE STREAM capital_flow (
  vault_id     TEXT NOT NULL,
  user_address TEXT NOT NULL,
  flow_type    TEXT NOT NULL,
  amount       DECIMAL(36,18) NOT NULL,
  token_symbol TEXT,
  tx_hash      TEXT NOT NULL,
  occurred_at  TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'tx_hash', person = 'user_address');

-- Daily flows per vault, in the tenant's time zone.
CREATE MATERIALIZED VIEW vault_flows_daily WITH (retention = '2 years') AS
SELECT time_bucket('1 day', occurred_at)                         AS day,
       vault_id,
       sum(amount) FILTER (WHERE flow_type = 'deposit')            AS deposited,
       sum(amount) FILTER (WHERE flow_type = 'withdrawal')         AS withdrawn,
       count(DISTINCT user_address)                                AS depositors,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY amount)        AS p95_amount,
       last(amount, occurred_at)                                   AS last_amount
FROM capital_flow
GROUP BY 1, 2;

-- One row per user: an entity summary, no time bucket.
CREATE MATERIALIZED VIEW user_totals AS
SELECT user_address,
       count(*)                                                    AS flows,
       sum(amount) FILTER (WHERE flow_type = 'deposit')            AS deposited,
       first(occurred_at, occurred_at)                             AS first_seen,
       last(flow_type, occurred_at)                                AS last_flow
FROM capital_flow
GROUP BY user_address;
