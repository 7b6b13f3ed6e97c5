#!/usr/bin/env bash
# The 5-minute tour of the README, as one command: build Tally, apply the example schema, load the
# example events and read the live views. Run it from the repository root:
#
#     examples/quickstart/tour.sh
#
# It keeps its data in ./tally-tour (removed first, so the tour can be run again).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p tally
tally() { ./target/release/tally --data ./tally-tour "$@"; }
rm -rf ./tally-tour

step() { printf '\n\033[1m$ tally %s\033[0m\n' "$*"; tally "$@"; }

step apply examples/quickstart/schema.sql
step ingest --stream capital_flow examples/quickstart/capital_flow.ndjson
step query vault_flows_daily
step query vault_flows_daily --grain month --group-by vault_id
step query user_totals --order-by "deposited desc" --limit 3 --format csv
# Query-time SQL over the views: window functions, joins, now().
step sql "SELECT user_address, deposited, ntile(4) OVER (ORDER BY deposited DESC) AS quartile FROM user_totals"
# The same file again: every event is a duplicate, so the views do not move.
step ingest --stream capital_flow examples/quickstart/capital_flow.ndjson --output json
step query vault_flows_daily --grain month --group-by vault_id
# A tenant in Berlin gets its day buckets at Berlin midnight.
step tenant create acme --time-zone Europe/Berlin
step --tenant acme ingest --stream capital_flow examples/quickstart/capital_flow.ndjson
step --tenant acme query vault_flows_daily --where "vault_id = 'v-stable'" --limit 3
echo
echo "The view tables are plain SQLite tables:"
echo "  sqlite3 tally-tour/tenants/default.db 'SELECT * FROM vault_flows_daily'"
