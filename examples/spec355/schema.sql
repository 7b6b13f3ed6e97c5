-- Seed 003 (Spec 355): the analytics schema of a mission-planning app, in Tally.
--
-- The seed keeps raw `analytics_events` and `metrics` in SQLite and maintains summary tables
-- by hand: `user_activity` (per user and day), `feature_usage` (per feature and day),
-- `metric_aggregates` (hourly count/sum/min/max/avg/p50/p90/p99), `analytics_sessions`
-- (landing and exit pages) and `funnels` / `funnel_conversions`. Here the events and metrics
-- are Tally's built-in `events` and `metrics` streams (the seed's columns), the summaries are
-- live views, and sessions, funnels and active users are analyses over `events`
-- (`tally analyze`, docs/analyses.md), which need no table at all.
--
--   tally apply examples/spec355/schema.sql
--   tally query user_activity --limit 10
--   tally analyze sessions --by landing_page --limit 5
--   tally analyze funnel --steps "Signed Up,Created Mission,Invited Teammate,Upgraded" --window "30 days"

-- user_activity: per person (user, else anonymous visitor) and day — events, sessions, first
-- and last seen. (Sessions by inactivity, with durations, come from `tally analyze sessions`.)
CREATE MATERIALIZED VIEW user_activity AS
SELECT date_trunc('day', timestamp)        AS date,
       coalesce(user_id, anonymous_id)     AS user_id,
       count(*)                            AS event_count,
       count(DISTINCT session_id)          AS session_count,
       min(timestamp)                      AS first_seen_at,
       max(timestamp)                      AS last_seen_at
FROM events
WHERE event_type IN ('track', 'page', 'screen')
GROUP BY 1, 2;

-- feature_usage: tracked events per name and day, and how many users sent them.
CREATE MATERIALIZED VIEW feature_usage AS
SELECT date_trunc('day', timestamp)                           AS date,
       event_name                                             AS feature_name,
       count(*)                                               AS usage_count,
       count(DISTINCT coalesce(user_id, anonymous_id))        AS unique_users
FROM events
WHERE event_type = 'track'
GROUP BY 1, 2;

-- metric_aggregates (period_type 'hourly'): re-group with --grain day|week|month for the
-- seed's daily, weekly and monthly rows (percentiles merge their sketches).
CREATE MATERIALIZED VIEW metric_aggregates AS
SELECT time_bucket('1 hour', timestamp)                          AS period_start,
       name,
       count(*)                                                  AS count,
       sum(value)                                                AS sum,
       min(value)                                                AS min,
       max(value)                                                AS max,
       avg(value)                                                AS avg,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY value)        AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY value)        AS p90,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY value)       AS p99
FROM metrics
GROUP BY 1, 2;
