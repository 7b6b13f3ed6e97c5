-- Seed 002 (Shadow): the analytics of an AI-agent platform, in Tally.
--
-- The seed tracks `user_activity` (page views, agent runs, errors, feature use; 90 days
-- retention), rolls it up hourly and daily with scheduled functions (`daily_metrics`,
-- `agent_performance`) and refreshes materialized views daily, among them
-- `mv_agent_usage_trends`: week-over-week growth per agent. Here the activity is a stream with
-- the same retention, one live view keeps the daily rollup per workspace and agent on every
-- event, and saved queries re-group it to weeks and compare each week with the one before
-- (`lag`). Weeks start on Monday in the tenant's time zone (DST weeks included), so every
-- workspace owner sees their own weeks: create their tenant with `--time-zone`.
--
--   tally apply examples/shadow/schema.sql
--   tally query agent_usage_trends
--   tally query workspace_agent_usage --param workspace_id=ws-1

-- ── Streams ────────────────────────────────────────────────────────────────────────────────

-- analytics.user_activity. Raw events are kept 90 days, as the seed's cleanup_old_data() does;
-- the views keep their rows for good (the seed keeps daily_metrics indefinitely).
CREATE STREAM user_activity (
  id           TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  user_id      TEXT NOT NULL,
  session_id   TEXT,
  event_type   TEXT NOT NULL,          -- page_view / agent_run / error / feature_use
  agent_id     TEXT,
  status       TEXT,                   -- agent runs: success / failure
  runtime_ms   BIGINT,
  credits_used DECIMAL(18,6),
  created_at   TIMESTAMP NOT NULL
) WITH (event_time = 'created_at', dedupe_key = 'id', retention = '90 days');

-- ── Reference data ────────────────────────────────────────────────────────────────────────

CREATE TABLE agents (
  agent_id   TEXT PRIMARY KEY,
  agent_name TEXT NOT NULL,
  category   TEXT
);

-- ── Live views ────────────────────────────────────────────────────────────────────────────

-- The execution columns of the seed's daily_metrics and agent_performance, per local day,
-- workspace and agent. `active_users` is an exact distinct count whose state merges, so a
-- query re-grouping days into weeks, or workspaces into all of them, still counts each user
-- once.
CREATE MATERIALIZED VIEW agent_usage_daily AS
SELECT time_bucket('1 day', created_at)             AS day,
       workspace_id,
       agent_id,
       count(*)                                     AS runs,
       count(*) FILTER (WHERE status = 'success')   AS successful_runs,
       count(DISTINCT user_id)                      AS active_users,
       sum(credits_used)                            AS credits_used,
       sum(runtime_ms)                              AS total_runtime_ms
FROM user_activity
WHERE event_type = 'agent_run'
GROUP BY 1, 2, 3;

-- The seed's alert_rules watch the error rate and the p95 latency of agent runs. Per 5 minutes
-- and agent: runs, failed runs, the error rate in % and the p95 runtime. Alerts (alerts/*.json,
-- created by run.sh) read it at any coarser grain: the error rate is recomputed from the
-- merged counts and the p95 from the merged sketches, never averaged.
CREATE MATERIALIZED VIEW agent_health AS
SELECT time_bucket('5 minutes', created_at)                                   AS bucket,
       agent_id,
       count(*)                                                               AS runs,
       count(*) FILTER (WHERE status = 'failure')                             AS failed_runs,
       CAST(count(*) FILTER (WHERE status = 'failure') AS DOUBLE) * 100 / count(*) AS error_rate_pct,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY runtime_ms)               AS p95_runtime_ms
FROM user_activity
WHERE event_type = 'agent_run'
GROUP BY 1, 2;

-- ── Saved queries ─────────────────────────────────────────────────────────────────────────

-- mv_agent_usage_trends: runs and users per agent and week, over all workspaces, with the
-- change from the week before. `view_at(…, grain => 'week', group_by => 'agent_id')` merges
-- the daily states into weeks (distinct users stay exact). `lag` gives the previous row of the
-- agent; when that row is not the previous calendar week (the agent had no runs then), the
-- previous week counts 0 runs and the percentage is NULL.
CREATE VIEW agent_usage_trends AS
WITH weekly AS (
  SELECT day AS week, agent_id, runs, successful_runs, active_users, credits_used
  FROM view_at('agent_usage_daily', grain => 'week', group_by => 'agent_id')
), previous AS (
  SELECT w.*,
         CASE WHEN lag(week) OVER (PARTITION BY agent_id ORDER BY week) = week - INTERVAL '7 days'
              THEN lag(runs) OVER (PARTITION BY agent_id ORDER BY week) ELSE 0 END AS prev_week_runs,
         CASE WHEN lag(week) OVER (PARTITION BY agent_id ORDER BY week) = week - INTERVAL '7 days'
              THEN lag(active_users) OVER (PARTITION BY agent_id ORDER BY week) ELSE 0 END AS prev_week_users
  FROM weekly w
)
SELECT p.week,
       p.agent_id,
       a.agent_name,
       p.runs,
       round(CAST(p.successful_runs AS DECIMAL(20,6)) * 100 / p.runs, 1)          AS success_rate_pct,
       p.active_users,
       p.credits_used,
       p.prev_week_runs,
       p.runs - p.prev_week_runs                                                 AS runs_change,
       round(CAST(p.runs - p.prev_week_runs AS DECIMAL(20,6)) * 100
             / nullif(p.prev_week_runs, 0), 1)                                 AS runs_change_pct,
       p.prev_week_users,
       p.active_users - p.prev_week_users                                        AS users_change
FROM previous p
LEFT JOIN agents a ON a.agent_id = p.agent_id
ORDER BY p.agent_id, p.week;

-- The same for one workspace (the seed's get_agent_insights / workspace dashboards).
CREATE VIEW workspace_agent_usage AS
WITH weekly AS (
  SELECT day AS week, agent_id, runs, active_users
  FROM view_at('agent_usage_daily', grain => 'week', group_by => 'workspace_id, agent_id')
  WHERE workspace_id = :workspace_id
), previous AS (
  SELECT w.*,
         CASE WHEN lag(week) OVER (PARTITION BY agent_id ORDER BY week) = week - INTERVAL '7 days'
              THEN lag(runs) OVER (PARTITION BY agent_id ORDER BY week) ELSE 0 END AS prev_week_runs
  FROM weekly w
)
SELECT week,
       agent_id,
       runs,
       active_users,
       prev_week_runs,
       runs - prev_week_runs                                                 AS runs_change,
       round(CAST(runs - prev_week_runs AS DECIMAL(20,6)) * 100
             / nullif(prev_week_runs, 0), 1)                               AS runs_change_pct
FROM previous
ORDER BY agent_id, week;
