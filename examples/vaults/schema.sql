-- Seed 000 (vaults): the analytics schema of a savings-vault app, in Tally.
--
-- The seed keeps an `analytics` schema filled by an ETL job and refreshed materialized views:
-- vault_lifecycle_summary, milestone_performance, capital_flow, user_aggregates,
-- mv_vault_performance and mv_user_behavioral_scores. Here the application sends events instead
-- (three streams), live views keep the per-vault, per-milestone and per-user totals correct on
-- every event (no ETL, no REFRESH), and saved queries shape them into the seed's tables at query
-- time, where durations (`now()`, timestamp differences), ratios, joins and ranks are computed.
--
--   tally apply examples/vaults/schema.sql
--   tally query vault_lifecycle_summary
--   tally query milestone_performance --param vault_id=v-03
--   tally query vault_performance
--   tally query user_leaderboard --limit 10

-- ── Streams ────────────────────────────────────────────────────────────────────────────────

-- What the seed's OLTP writes mirror into `vault_lifecycle_summary`: one event per status
-- change of a vault (created → activated → completed | cancelled). `status` is the status the
-- event leads to; the creator is on the `created` event.
CREATE STREAM vault_events (
  event_id        TEXT NOT NULL,
  vault_id        TEXT NOT NULL,
  event_type      TEXT NOT NULL,
  status          TEXT NOT NULL,
  creator_address TEXT,
  occurred_at     TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'event_id');

-- Milestones: `defined` (with the target and due date), `progress` reports (the amount reached
-- so far), then `completed` or `missed` (with the amount reached).
CREATE STREAM milestone_events (
  event_id        TEXT NOT NULL,
  milestone_id    TEXT NOT NULL,
  vault_id        TEXT NOT NULL,
  milestone_index BIGINT NOT NULL,
  event_type      TEXT NOT NULL,
  status          TEXT NOT NULL,
  target_amount   DECIMAL(36,18),
  actual_amount   DECIMAL(36,18),
  due_at          TIMESTAMP,
  occurred_at     TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'event_id');

-- The seed's append-only `analytics.capital_flow`, as is. Its pre-computed `period_date`,
-- `period_week`, `period_month` and `period_year` are not needed: live views bucket by
-- `time_bucket`, in the tenant's time zone. `tx_hash` is unique: a retried delivery counts once.
CREATE STREAM capital_flow (
  vault_id     TEXT NOT NULL,
  user_address TEXT NOT NULL,
  flow_type    TEXT NOT NULL,            -- deposit / withdrawal / yield / fee / penalty
  amount       DECIMAL(36,18) NOT NULL,
  token_symbol TEXT,
  tx_hash      TEXT NOT NULL,
  occurred_at  TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'tx_hash', person = 'user_address');

-- ── Reference data ────────────────────────────────────────────────────────────────────────

-- Vault names and targets from the OLTP `public.vaults` (upserted with `tally table upsert`).
CREATE TABLE vaults (
  vault_id      TEXT PRIMARY KEY,
  name          TEXT NOT NULL,
  token_symbol  TEXT,
  category      TEXT,
  target_amount DECIMAL(36,18)
);

-- ── Live views: the incremental work ────────────────────────────────────────────────────────

-- One row per vault: status and lifecycle times. `last(status, occurred_at)` goes by event time,
-- so events arriving out of order still leave the latest status.
CREATE MATERIALIZED VIEW vault_lifecycle AS
SELECT vault_id,
       last(status, occurred_at)                                  AS status,
       max(creator_address)                                       AS creator_address,
       min(occurred_at) FILTER (WHERE event_type = 'created')     AS created_at,
       min(occurred_at) FILTER (WHERE event_type = 'activated')   AS activated_at,
       min(occurred_at) FILTER (WHERE event_type = 'completed')   AS completed_at,
       min(occurred_at) FILTER (WHERE event_type = 'cancelled')   AS cancelled_at
FROM vault_events
GROUP BY vault_id;

-- One row per milestone: the seed's `milestone_performance` without its derived columns.
CREATE MATERIALIZED VIEW milestones AS
SELECT milestone_id, vault_id, milestone_index,
       last(status, occurred_at)                                         AS status,
       max(target_amount)                                                AS target_amount,
       last(actual_amount, occurred_at) FILTER (WHERE actual_amount IS NOT NULL) AS actual_amount,
       max(due_at)                                                       AS due_at,
       min(occurred_at) FILTER (WHERE event_type = 'completed')          AS completed_at
FROM milestone_events
GROUP BY milestone_id, vault_id, milestone_index;

-- Lifetime capital per vault (the money columns of `vault_lifecycle_summary`).
CREATE MATERIALIZED VIEW vault_capital AS
SELECT vault_id,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'deposit'), 0)    AS total_deposited,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'withdrawal'), 0) AS total_withdrawn,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'yield'), 0)      AS total_yield_generated,
       sum(CASE WHEN flow_type IN ('deposit', 'yield') THEN amount ELSE -amount END) AS current_tvl,
       count(*)                                                         AS flows
FROM capital_flow
GROUP BY vault_id;

-- Daily flows per vault, in the tenant's time zone: what the 30-day window of
-- `mv_vault_performance` sums.
CREATE MATERIALIZED VIEW vault_flows_daily AS
SELECT time_bucket('1 day', occurred_at)                                AS day,
       vault_id,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'deposit'), 0)    AS deposited,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'withdrawal'), 0) AS withdrawn,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'yield'), 0)      AS yield_generated,
       sum(CASE WHEN flow_type IN ('deposit', 'yield') THEN amount ELSE -amount END) AS net_flow,
       count(*)                                                         AS flows
FROM capital_flow
GROUP BY 1, 2;

-- One row per vault and user: when each user last moved capital in each vault (so a query
-- counts the users active in any window exactly).
CREATE MATERIALIZED VIEW vault_users AS
SELECT vault_id, user_address,
       min(occurred_at) AS first_flow_at,
       max(occurred_at) AS last_flow_at
FROM capital_flow
GROUP BY vault_id, user_address;

-- One row per user: the capital columns of the seed's `user_aggregates`.
CREATE MATERIALIZED VIEW user_activity AS
SELECT user_address,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'deposit'), 0)    AS total_deposited_lifetime,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'withdrawal'), 0) AS total_withdrawn_lifetime,
       coalesce(sum(amount) FILTER (WHERE flow_type = 'yield'), 0)      AS total_yield_earned_lifetime,
       count(DISTINCT vault_id)                                         AS vaults_participated,
       min(occurred_at)                                                 AS first_activity_at,
       max(occurred_at)                                                 AS last_activity_at
FROM capital_flow
GROUP BY user_address;

-- ── Saved queries: the seed's tables and views ─────────────────────────────────────────────

-- analytics.vault_lifecycle_summary: one row per vault. `active_duration_seconds` is
-- activated_at → completed_at; for a vault that has not completed it runs to its cancellation,
-- or to now() while it is still active (NULL for a vault never activated).
-- `completion_rate` and `capital_efficiency_score` are the seed's 0–1 ratios with 4 decimals
-- (milestones completed / defined, yield / deposits), computed on DECIMAL(20,6) casts: a
-- quotient of two DECIMAL(38,18) values would need more than DataFusion's 38 digits.
CREATE VIEW vault_lifecycle_summary AS
WITH ms AS (
  SELECT vault_id,
         count(*)                                      AS milestone_count,
         count(*) FILTER (WHERE status = 'completed')  AS milestones_completed
  FROM milestones GROUP BY vault_id
)
SELECT l.vault_id,
       v.name,
       l.status,
       l.creator_address,
       l.created_at,
       l.activated_at,
       l.completed_at,
       l.cancelled_at,
       coalesce(c.total_deposited, 0)        AS total_deposited,
       coalesce(c.total_withdrawn, 0)        AS total_withdrawn,
       coalesce(c.total_yield_generated, 0)  AS total_yield_generated,
       coalesce(c.current_tvl, 0)            AS current_tvl,
       coalesce(ms.milestone_count, 0)       AS milestone_count,
       coalesce(ms.milestones_completed, 0)  AS milestones_completed,
       round(CAST(ms.milestones_completed AS DECIMAL(20,6))
             / CAST(nullif(ms.milestone_count, 0) AS DECIMAL(20,6)), 4)           AS completion_rate,
       round(CAST(c.total_yield_generated AS DECIMAL(20,6))
             / nullif(CAST(c.total_deposited AS DECIMAL(20,6)), 0), 4)            AS capital_efficiency_score,
       CAST(extract(epoch FROM coalesce(l.completed_at, l.cancelled_at, now()) - l.activated_at)
            AS BIGINT)                                                            AS active_duration_seconds
FROM vault_lifecycle l
LEFT JOIN vaults v ON v.vault_id = l.vault_id
LEFT JOIN vault_capital c ON c.vault_id = l.vault_id
LEFT JOIN ms ON ms.vault_id = l.vault_id
ORDER BY l.vault_id;

-- analytics.milestone_performance for one vault (the seed's GET /analytics/vaults/:id).
-- `completion_lag_seconds` is completed_at − due_at: negative when early, positive when late,
-- NULL until completed. `achievement_ratio` is actual / target with 4 decimals.
CREATE VIEW milestone_performance AS
SELECT m.milestone_id                       AS id,
       m.vault_id,
       m.milestone_index,
       m.status,
       m.target_amount,
       coalesce(m.actual_amount, 0)         AS actual_amount,
       round(CAST(coalesce(m.actual_amount, 0) AS DECIMAL(20,6))
             / nullif(CAST(m.target_amount AS DECIMAL(20,6)), 0), 4)  AS achievement_ratio,
       m.due_at,
       m.completed_at,
       CAST(extract(epoch FROM m.completed_at - m.due_at) AS BIGINT) AS completion_lag_seconds
FROM milestones m
WHERE m.vault_id = :vault_id
ORDER BY m.milestone_index;

-- analytics.mv_vault_performance: each vault's lifecycle joined with its capital flows of the
-- last 30 days (today, in the tenant's time zone, and the 29 days before it), ranked by net
-- flow. The seed refreshes a lateral join over raw flows; here the 30 days are ~30 rows of a
-- daily view per vault, and the active users come from the per-user view.
CREATE VIEW vault_performance AS
WITH recent AS (
  SELECT vault_id,
         sum(deposited)       AS deposits_30d,
         sum(withdrawn)       AS withdrawals_30d,
         sum(yield_generated) AS yield_30d,
         sum(net_flow)        AS net_flow_30d,
         sum(flows)           AS flows_30d
  FROM vault_flows_daily
  WHERE day >= date_trunc('day', now()) - INTERVAL '29 days'
  GROUP BY vault_id
), active AS (
  SELECT vault_id, count(*) AS active_users_30d
  FROM vault_users
  WHERE last_flow_at >= date_trunc('day', now()) - INTERVAL '29 days'
  GROUP BY vault_id
)
SELECT l.vault_id,
       v.name,
       l.status,
       coalesce(c.current_tvl, 0)           AS current_tvl,
       coalesce(r.deposits_30d, 0)          AS deposits_30d,
       coalesce(r.withdrawals_30d, 0)       AS withdrawals_30d,
       coalesce(r.yield_30d, 0)             AS yield_30d,
       coalesce(r.net_flow_30d, 0)          AS net_flow_30d,
       coalesce(r.flows_30d, 0)             AS flows_30d,
       coalesce(a.active_users_30d, 0)      AS active_users_30d,
       rank() OVER (ORDER BY coalesce(r.net_flow_30d, 0) DESC) AS net_flow_rank
FROM vault_lifecycle l
LEFT JOIN vaults v ON v.vault_id = l.vault_id
LEFT JOIN vault_capital c ON c.vault_id = l.vault_id
LEFT JOIN recent r ON r.vault_id = l.vault_id
LEFT JOIN active a ON a.vault_id = l.vault_id
ORDER BY net_flow_rank, l.vault_id;

-- analytics.mv_user_behavioral_scores as a leaderboard: users ranked by lifetime deposits
-- (ties share a rank), with the vaults they created and how many of those completed
-- (`creator_completion_rate`, the seed's derived column).
CREATE VIEW user_leaderboard AS
WITH created AS (
  SELECT creator_address                                AS user_address,
         count(*)                                       AS vaults_created,
         count(*) FILTER (WHERE status = 'completed')   AS vaults_completed,
         count(*) FILTER (WHERE status = 'cancelled')   AS vaults_abandoned
  FROM vault_lifecycle GROUP BY creator_address
)
SELECT rank() OVER (ORDER BY u.total_deposited_lifetime DESC) AS rank,
       u.user_address,
       u.total_deposited_lifetime,
       u.total_withdrawn_lifetime,
       u.total_yield_earned_lifetime,
       u.vaults_participated,
       coalesce(c.vaults_created, 0)        AS vaults_created,
       coalesce(c.vaults_completed, 0)      AS vaults_completed,
       coalesce(c.vaults_abandoned, 0)      AS vaults_abandoned,
       round(CAST(c.vaults_completed AS DECIMAL(20,6))
             / CAST(nullif(c.vaults_created, 0) AS DECIMAL(20,6)), 4) AS creator_completion_rate,
       u.first_activity_at,
       u.last_activity_at
FROM user_activity u
LEFT JOIN created c ON c.user_address = u.user_address
ORDER BY rank, u.user_address;
