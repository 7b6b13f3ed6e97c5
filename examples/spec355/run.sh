#!/usr/bin/env bash
# Seed 003 (Spec 355) on generated data, in one command from the repository root:
#
#     examples/spec355/run.sh
#
# Builds Tally and the data generator (the `seed_data` example), then in ./tally-spec355
# (removed first): generates 45 days of page views, tracked events, identities and metrics
# ending now (input/), applies the schema to a fresh data directory (data/), loads the events
# and metrics, and reads the live summaries and the analyses (sessions, landing pages, the
# sign-up funnel, active users, retention). TALLY_EXAMPLE_PROFILE=debug builds without
# --release.
source "$(dirname "$0")/../seed-pack.sh" spec355

"./target/$profile/examples/seed_data" spec355 "$dir/input"

step apply examples/spec355/schema.sql
step ingest --stream events "$dir/input/events.ndjson"
step ingest --stream metrics "$dir/input/metrics.ndjson"

# user_activity and feature_usage: live views, correct on every event.
step query user_activity --order-by "event_count desc" --limit 5
step query feature_usage --grain week --group-by feature_name --order-by "usage_count desc" --limit 8
# metric_aggregates: hourly, and re-grouped to days (the seed's daily period_type).
step query metric_aggregates --grain day --where "name = 'database.query.duration'" --order-by "period_start desc" --limit 5
# analytics_sessions: sessions per day (30 minutes of inactivity end one), landing and exit pages.
step analyze sessions --limit 5
step analyze sessions --by landing_page --limit 5
step analyze sessions --by exit_page --limit 5
# funnels / funnel_conversions: the onboarding funnel, by plan.
step analyze funnel --steps "Signed Up,Created Mission,Invited Teammate,Upgraded" --window "30 days"
step analyze funnel --steps "Signed Up,Created Mission" --window "7 days" --breakdown plan
# Active users (DAU/WAU/MAU) and weekly retention of sign-up cohorts.
step analyze active_users
step analyze retention --period week --periods 4 --start_event "Signed Up"

# The dashboard (docs/dashboards.md): the same numbers as a page in the browser. `tally serve
# --data tally-spec355/data` shows it at http://127.0.0.1:8420/ (sign in with a read key,
# `tally --data tally-spec355/data key create --kind read`); here, a widget's data as JSON:
# a number widget's value over its range, the range before it, and the change in %.
step dashboard create examples/spec355/dashboards/product.json
id=$(tally dashboard list | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
step dashboard data "$id" 0
step dashboard data "$id" 1

# Metrics as the seed's applications send them (docs/statsd.md): over StatsD, and from Rust
# with the client crate's MetricBuilder (crates/tally-client/examples/send.rs writes the seed's
# helpers `api_request`, `database_query`, `active_users`, `missions_created` with it). A server
# with a StatsD listener for the tenant; SIGTERM commits what the listener aggregated.
if [ "$profile" = release ]; then cargo build -q --release -p tally-client --example send; else cargo build -q -p tally-client --example send; fi
key=$(tally key create --kind write)
TALLY_LOG=error "./target/$profile/tally" --data "$dir/data" serve --listen 127.0.0.1:0 \
  --statsd 127.0.0.1:0 --statsd-tenant default > "$dir/serve.out" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until [ "$(grep -c . "$dir/serve.out" 2>/dev/null)" -ge 2 ]; do sleep 0.1; done
http=$(sed -n 's/^listening on //p' "$dir/serve.out")
statsd=$(sed -n 's/^statsd on \([^ ]*\).*/\1/p' "$dir/serve.out")
printf '\n\033[1m$ echo "api.request.duration:…|ms|#endpoint:/missions" > /dev/udp/%s\033[0m\n' "$statsd"
for ms in 31 45 52 38 260; do
  echo "api.request.duration:$ms|ms|#endpoint:/missions,status:200" > "/dev/udp/${statsd%:*}/${statsd##*:}"
done
echo "missions.created:1|c|@0.5" > "/dev/udp/${statsd%:*}/${statsd##*:}"
printf '\n\033[1m$ cargo run -p tally-client --example send -- %s $WRITE_KEY\033[0m\n' "$http"
"./target/$profile/examples/send" "$http" "$key"
sleep 1.5
kill -TERM "$server"
wait "$server" || true
trap - EXIT
step query metric_aggregates --grain month --where "name = 'api.request.duration'" --order-by "period_start desc" --limit 2
