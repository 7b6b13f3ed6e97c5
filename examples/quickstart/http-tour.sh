#!/usr/bin/env bash
# The HTTP half of the README's tour, against a running `tally serve`:
#
#     TALLY_ADMIN_TOKEN=change-me tally serve          # in one terminal
#     TALLY_ADMIN_TOKEN=change-me examples/quickstart/http-tour.sh   # in another
#
# It creates a tenant (a new name each run), applies the example schema, ingests the example
# events natively and through the Segment API, and reads the views. Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")"
URL=${TALLY_URL:-http://127.0.0.1:8420}
ADMIN="Authorization: Bearer ${TALLY_ADMIN_TOKEN:?set TALLY_ADMIN_TOKEN to the server\'s token}"
TENANT=${TENANT:-tour$(date +%s)}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }

step "create a tenant; its keys are shown once"
curl -sS -X POST "$URL/v1/tenants" -H "$ADMIN" -d "{\"name\":\"$TENANT\",\"time_zone\":\"Europe/Berlin\"}" | tee /tmp/tally-tour-tenant.json
WRITE=$(field write_key < /tmp/tally-tour-tenant.json)
READ=$(field read_key < /tmp/tally-tour-tenant.json)

step "apply the schema (the same file twice changes nothing)"
curl -sS -X POST "$URL/v1/schema" -H "$ADMIN" -H 'Content-Type: application/sql' --data-binary @schema.sql

step "ingest NDJSON: accepted, duplicates, and each rejected event with its index and reason"
curl -sS -X POST "$URL/v1/streams/capital_flow/events" -H "Authorization: Bearer $WRITE" \
  -H 'Content-Type: application/x-ndjson' --data-binary @capital_flow.ndjson

step "read a view, re-grouped to months per vault"
curl -sS "$URL/v1/views/vault_flows_daily?grain=month&group_by=vault_id" -H "Authorization: Bearer $READ"
echo
curl -sS "$URL/v1/sql" -H "Authorization: Bearer $READ" \
  -d '{"sql":"SELECT vault_id, sum(deposited) AS d, rank() OVER (ORDER BY sum(deposited) DESC) AS rank FROM vault_flows_daily WHERE day > now() - interval '"'"'1 year'"'"' GROUP BY vault_id"}'

step "a Segment track call into the built-in events stream (Basic auth with the write key)"
curl -sS -X POST "$URL/v1/track" -u "$WRITE:" \
  -d '{"userId":"u1","event":"Signed Up","messageId":"tour-1","properties":{"plan":"pro"}}'

step "behavioural analyses of the events stream: today's active users, a funnel"
curl -sS "$URL/v1/analyses/active_users?from=$(date -u +%F)" -H "Authorization: Bearer $READ"
echo
curl -sS "$URL/v1/analyses/funnel?steps=Signed%20Up,Purchased" -H "Authorization: Bearer $READ"
echo

step "erase a person (GDPR) with a manage key: their flows go, every view is corrected"
MANAGE=$(curl -sS -X POST "$URL/v1/tenants/$TENANT/keys" -H "$ADMIN" -d '{"kind":"manage"}' | field key)
curl -sS -X DELETE "$URL/v1/persons/0xdave" -H "Authorization: Bearer $MANAGE"
echo

step "the catalog"
curl -sS "$URL/v1/views" -H "Authorization: Bearer $READ" | python3 -c "import json,sys; print([v['name'] for v in json.load(sys.stdin)['items']])"
echo
