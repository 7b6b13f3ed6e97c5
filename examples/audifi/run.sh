#!/usr/bin/env bash
# Seed 001 (AudiFi) on generated data, in one command from the repository root:
#
#     examples/audifi/run.sh
#
# Builds Tally and the data generator (the `seed_data` example), then in ./tally-audifi
# (removed first): generates the input files (input/), applies the schema to a fresh data
# directory (data/), loads the events, the artists and their tokens, and reads every saved
# query. TALLY_EXAMPLE_PROFILE=debug builds without --release.
source "$(dirname "$0")/../seed-pack.sh" audifi

# Deterministic data ending now: 8 artists, 8 tokens and ~720 transfers (3 sent twice), masters,
# IPOs, mints, revenue, dividends, V Studio votes.
"./target/$profile/examples/seed_data" audifi "$dir/input"

step apply examples/audifi/schema.sql
for stream in token_transfers master_events revenue_events dividend_events vstudio_votes; do
  step ingest --stream "$stream" "$dir/input/$stream.ndjson"
done
step table upsert --table artists "$dir/input/artists.json"
step table upsert --table artist_tokens "$dir/input/artist_tokens.json"

# artist_tokens.holders_count: a count over per-holder balances.
step query token_holders
# One token's holders, largest first.
step query token_holder_balances --param artist_token_id=tk-01 --limit 5
# mv_artist_performance, with the artist names from the artists table.
step query artist_performance
# Any other question at query time: last month's distributed revenue per artist.
step sql "SELECT a.artist_name, count(*) AS payouts, sum(e.amount_usd) AS usd
          FROM revenue_events e JOIN artists a ON a.artist_id = e.artist_id
          WHERE e.status = 'distributed' AND e.occurred_at > now() - INTERVAL '30 days'
          GROUP BY a.artist_name ORDER BY usd DESC"

# "Export data to external warehouses" (the seed's daily batch export of dimension tables and
# streaming export of event tables): Parquet with the columns' types, then only what arrived
# since, from the cursor the first export printed (docs/exports.md).
mkdir -p "$dir/export"
step export view artist_revenue --format parquet --output "$dir/export/artist_revenue.parquet"
printf '\n\033[1m$ tally export stream token_transfers --format parquet --output …\033[0m\n'
cursor=$(tally export stream token_transfers --format parquet --output "$dir/export/token_transfers.parquet" | sed -n 's/^cursor: //p')
echo "cursor: $cursor"
step export stream token_transfers --format ndjson --after "$cursor" --output "$dir/export/token_transfers.next.ndjson"
ls -l "$dir/export"
