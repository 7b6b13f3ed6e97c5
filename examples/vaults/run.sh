#!/usr/bin/env bash
# Seed 000 (vaults) on generated data, in one command from the repository root:
#
#     examples/vaults/run.sh
#
# Builds Tally and the data generator (the `seed_data` example), then in ./tally-vaults
# (removed first): generates the input files (input/), applies the schema to a fresh data
# directory (data/), loads the events and the vault names, and reads every saved query.
# TALLY_EXAMPLE_PROFILE=debug builds without --release (quicker to build, slower to run).
source "$(dirname "$0")/../seed-pack.sh" vaults

# Deterministic data ending now: 24 vaults, their milestones, ~1,000 capital flows (5 sent twice).
"./target/$profile/examples/seed_data" vaults "$dir/input"

step apply examples/vaults/schema.sql
step ingest --stream vault_events "$dir/input/vault_events.ndjson"
step ingest --stream milestone_events "$dir/input/milestone_events.ndjson"
step ingest --stream capital_flow "$dir/input/capital_flow.ndjson"
step table upsert --table vaults "$dir/input/vaults.csv"

# The seed's analytics.vault_lifecycle_summary, with active_duration_seconds.
step query vault_lifecycle_summary --limit 8
# analytics.milestone_performance of one vault, with completion_lag_seconds.
step query milestone_performance --param vault_id=v-03
# analytics.mv_vault_performance: the last 30 days, from now().
step query vault_performance --limit 8
# The user leaderboard with rank.
step query user_leaderboard --limit 8 --format csv
# Any other question, at query time: net flows per week over every vault.
step sql "SELECT date_trunc('week', day) AS week, sum(net_flow) AS net_flow, sum(flows) AS flows
          FROM vault_flows_daily GROUP BY 1 ORDER BY 1 DESC LIMIT 6"
