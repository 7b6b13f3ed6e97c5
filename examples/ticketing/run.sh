#!/usr/bin/env bash
# Seed 004 (ticketing) on generated data, in one command from the repository root:
#
#     examples/ticketing/run.sh
#
# Builds Tally and the data generator (the `seed_data` example), then in ./tally-ticketing
# (removed first): generates the input files (input/), applies the schema to a fresh data
# directory (data/), loads the payment transactions, venues and RFM segment names, and reads
# every saved query. TALLY_EXAMPLE_PROFILE=debug builds without --release.
source "$(dirname "$0")/../seed-pack.sh" ticketing

# Deterministic data ending now: 320 customers, two years of purchases, refunds, failed payments.
"./target/$profile/examples/seed_data" ticketing "$dir/input"

step apply examples/ticketing/schema.sql
step ingest --stream payment_transactions "$dir/input/payment_transactions.ndjson"
step table upsert --table venues "$dir/input/venues.csv"
step table upsert --table rfm_segments "$dir/input/rfm_segments.csv"

# customer_rfm_scores: ntile(5) quintiles per venue, segment names, churn risk from now().
step query customer_rfm --limit 10
# churn_risk_dashboard: customers and revenue per venue and risk.
step query churn_risk_dashboard
# customer_lifetime_value, over every venue.
step query customer_lifetime_value --limit 10
# Any other question at query time: customers per segment at one venue.
step sql "WITH s AS (SELECT venue_id, customer_id,
                            ntile(5) OVER (PARTITION BY venue_id ORDER BY last_purchase_at, customer_id) AS r,
                            ntile(5) OVER (PARTITION BY venue_id ORDER BY purchase_count, customer_id) AS f
                     FROM customer_value)
          SELECT g.segment, count(*) AS customers
          FROM s JOIN rfm_segments g ON g.rf_code = CAST(s.r AS VARCHAR) || CAST(s.f AS VARCHAR)
          WHERE s.venue_id = :venue GROUP BY g.segment ORDER BY customers DESC" --param venue=vn-1

# analytics_alerts / venue_alerts: failed payments per venue and hour, and a venue's daily
# sales halved, as alerts on the live view venue_activity (see docs/alerts.md). `tally serve
# --data tally-ticketing/data --allow-private-webhooks` evaluates them on every payment and
# posts each state change, signed, to the receiver named in the files (127.0.0.1:8787).
step alert create examples/ticketing/alerts/failed_payments.json --allow-private-webhooks
step alert create examples/ticketing/alerts/sales_drop.json --allow-private-webhooks
step alert list
step query venue_activity --grain day --group-by venue_id --order-by hour --limit 8

# The dashboard (docs/dashboards.md): the same numbers as a page in the browser. `tally serve
# --data tally-ticketing/data` shows it at http://127.0.0.1:8420/ (sign in with a read key,
# `tally --data tally-ticketing/data key create --kind read`); here, a widget's data as JSON:
# a number widget's value over its range, the range before it, and the change in %.
step dashboard create examples/ticketing/dashboards/venues.json
id=$(tally dashboard list | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
step dashboard data "$id" 0
step dashboard data "$id" 1
