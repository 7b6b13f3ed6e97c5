#!/usr/bin/env bash
# Seed 002 (Shadow) on generated data, in one command from the repository root:
#
#     examples/shadow/run.sh
#
# Builds Tally and the data generator (the `seed_data` example), then in ./tally-shadow
# (removed first): generates the input files (input/), applies the schema to a fresh data
# directory (data/), loads the same activity into the default tenant (UTC) and into a tenant
# in Berlin, and reads the week-over-week trends of both: Berlin's weeks start at its own
# Monday midnight. TALLY_EXAMPLE_PROFILE=debug builds without --release.
source "$(dirname "$0")/../seed-pack.sh" shadow

# Deterministic data ending now: ten weeks of agent runs and other activity, ~5,000 events.
"./target/$profile/examples/seed_data" shadow "$dir/input"

step apply examples/shadow/schema.sql
step tenant create berlin --time-zone Europe/Berlin
for tenant in default berlin; do
  step --tenant "$tenant" ingest --stream user_activity "$dir/input/user_activity.ndjson"
  step --tenant "$tenant" ingest --stream events "$dir/input/events.ndjson"
  step --tenant "$tenant" table upsert --table agents "$dir/input/agents.csv"
done

# mv_agent_usage_trends: week-over-week change per agent (lag), in UTC weeks…
step query agent_usage_trends --limit 12
# …and in Berlin's (weeks start at 22:00 or 23:00 UTC).
step --tenant berlin query agent_usage_trends --limit 12
# One workspace.
step --tenant berlin query workspace_agent_usage --param workspace_id=ws-1 --limit 12
# Any other question at query time: daily runs and users of the last week, all agents.
step --tenant berlin sql "SELECT day, sum(runs) AS runs FROM agent_usage_daily
                          WHERE day >= date_trunc('day', now()) - INTERVAL '6 days' GROUP BY day ORDER BY day"

# mv_active_users: DAU, WAU and MAU per day, from the same activity as product events (each
# user's anonymous landing page counts once the identify links it).
step --tenant berlin analyze active_users --from "$(date -u -d '-14 days' +%F)"
# daily_metrics' new vs returning users, per week: new, returning, resurrecting, dormant.
step --tenant berlin analyze lifecycle --interval week --from "$(date -u -d '-63 days' +%F)"
# user_cohorts: weekly cohorts by first activity and how many came back each week after.
step --tenant berlin analyze retention --period week --periods 6 --from "$(date -u -d '-70 days' +%F)"

# alert_rules: the error rate and p95 runtime of agent runs, as alerts on the live view
# agent_health (see docs/alerts.md). `tally serve --data tally-shadow/data
# --allow-private-webhooks` evaluates them on every event and posts each state change, signed,
# to the receiver named in the files (127.0.0.1:8787).
step alert create examples/shadow/alerts/error_rate.json --allow-private-webhooks
step alert create examples/shadow/alerts/p95_latency.json --allow-private-webhooks
step alert list
# What they watch, hour by hour: error rate and p95 runtime per agent.
step query agent_health --grain hour --group-by agent_id --order-by bucket --limit 8
