-- Seed 004 (ticketing): the customer analytics of a ticketing platform, in Tally.
--
-- The seed's analytics service stacks 30+ views over other services' tables
-- (customer_360_basic → …_with_purchases → …_with_segments → …_with_churn_risk → customer_360)
-- and refreshes materialized copies, and keeps `customer_rfm_scores`, `customer_segments` and
-- `customer_lifetime_value` tables filled by jobs. Here the payment service sends its
-- transactions as events; one live view keeps each customer's purchase history per venue on
-- every event; RFM quintiles, segments, churn risk and lifetime value are saved queries over
-- it, computed against now() when they are read, so they are never a night behind.
--
--   tally apply examples/ticketing/schema.sql
--   tally query customer_rfm --limit 20
--   tally query churn_risk_dashboard
--   tally query customer_lifetime_value --limit 20

-- ── Streams ────────────────────────────────────────────────────────────────────────────────

-- The payment service's `payment_transactions`: purchases and refunds (refund amounts are
-- positive), completed or failed.
CREATE STREAM payment_transactions (
  id           TEXT NOT NULL,
  customer_id  TEXT NOT NULL,
  venue_id     TEXT NOT NULL,
  event_id     TEXT NOT NULL,
  type         TEXT NOT NULL,          -- purchase / refund
  status       TEXT NOT NULL,          -- completed / failed
  ticket_count BIGINT NOT NULL,
  amount       DECIMAL(12,2) NOT NULL,
  created_at   TIMESTAMP NOT NULL
) WITH (event_time = 'created_at', dedupe_key = 'id');

-- ── Reference data ────────────────────────────────────────────────────────────────────────

CREATE TABLE venues (
  venue_id TEXT PRIMARY KEY,
  name     TEXT NOT NULL,
  city     TEXT
);

-- The seed's `customer_segments`: a segment name for each recency and frequency score pair
-- ('54' is recency 5, frequency 4). A table, so marketing can rename segments without a
-- schema change.
CREATE TABLE rfm_segments (
  rf_code TEXT PRIMARY KEY,
  segment TEXT NOT NULL
);

-- ── Live view ─────────────────────────────────────────────────────────────────────────────

-- One row per venue and customer: the purchase history the seed's customer_360 views join
-- from tickets and payment_transactions each time they are read. Failed payments do not count.
CREATE MATERIALIZED VIEW customer_value AS
SELECT venue_id,
       customer_id,
       count(*) FILTER (WHERE type = 'purchase')                          AS purchase_count,
       count(*) FILTER (WHERE type = 'refund')                            AS refund_count,
       coalesce(sum(ticket_count) FILTER (WHERE type = 'purchase'), 0)    AS tickets_bought,
       count(DISTINCT event_id) FILTER (WHERE type = 'purchase')          AS events_attended,
       coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0)          AS total_spent,
       coalesce(sum(amount) FILTER (WHERE type = 'refund'), 0)            AS total_refunded,
       sum(CASE WHEN type = 'purchase' THEN amount ELSE -amount END)      AS net_revenue,
       min(created_at) FILTER (WHERE type = 'purchase')                   AS first_purchase_at,
       max(created_at) FILTER (WHERE type = 'purchase')                   AS last_purchase_at
FROM payment_transactions
WHERE status = 'completed'
GROUP BY venue_id, customer_id;

-- ── Saved queries ─────────────────────────────────────────────────────────────────────────

-- customer_rfm_scores: recency, frequency and monetary quintiles per venue with ntile(5)
-- (5 = most recent, most frequent, highest net revenue), their total, the segment named by
-- `rfm_segments` for the recency and frequency pair, and the churn risk of the recency.
-- Ties are ordered by customer_id, so the quintiles are the same on every read.
-- Churn risk: last purchase more than 180 days ago is high, more than 60 days medium, else low.
CREATE VIEW customer_rfm AS
WITH base AS (
  SELECT venue_id, customer_id, last_purchase_at, purchase_count, net_revenue,
         CAST(extract(epoch FROM now() - last_purchase_at) AS BIGINT) / 86400 AS recency_days
  FROM customer_value
), scored AS (
  SELECT b.*,
         ntile(5) OVER (PARTITION BY venue_id ORDER BY last_purchase_at, customer_id) AS recency_score,
         ntile(5) OVER (PARTITION BY venue_id ORDER BY purchase_count, customer_id)   AS frequency_score,
         ntile(5) OVER (PARTITION BY venue_id ORDER BY net_revenue, customer_id)      AS monetary_score
  FROM base b
)
SELECT s.venue_id,
       s.customer_id,
       s.recency_days,
       s.purchase_count                                          AS frequency,
       s.net_revenue                                             AS monetary,
       s.recency_score,
       s.frequency_score,
       s.monetary_score,
       s.recency_score + s.frequency_score + s.monetary_score    AS total_score,
       g.segment,
       CASE WHEN s.recency_days > 180 THEN 'high'
            WHEN s.recency_days > 60  THEN 'medium'
            ELSE 'low' END                                       AS churn_risk
FROM scored s
LEFT JOIN rfm_segments g
  ON g.rf_code = CAST(s.recency_score AS VARCHAR) || CAST(s.frequency_score AS VARCHAR)
ORDER BY s.venue_id, total_score DESC, s.customer_id;

-- churn_risk_dashboard: customers and net revenue per venue and churn risk (as in
-- customer_rfm), with each level's share of the venue's customers.
CREATE VIEW churn_risk_dashboard AS
WITH risk AS (
  SELECT venue_id, net_revenue,
         CASE WHEN CAST(extract(epoch FROM now() - last_purchase_at) AS BIGINT) / 86400 > 180 THEN 'high'
              WHEN CAST(extract(epoch FROM now() - last_purchase_at) AS BIGINT) / 86400 > 60  THEN 'medium'
              ELSE 'low' END AS churn_risk
  FROM customer_value
)
SELECT r.venue_id,
       v.name                                                              AS venue_name,
       r.churn_risk,
       count(*)                                                            AS customers,
       round(CAST(count(*) AS DECIMAL(20,6)) * 100
             / sum(count(*)) OVER (PARTITION BY r.venue_id), 1)            AS pct_of_customers,
       sum(r.net_revenue)                                                  AS net_revenue
FROM risk r
LEFT JOIN venues v ON v.venue_id = r.venue_id
GROUP BY r.venue_id, v.name, r.churn_risk
ORDER BY r.venue_id, CASE r.churn_risk WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END;

-- customer_lifetime_value: per customer over all venues (`view_at(…, group_by =>
-- 'customer_id')` merges the per-venue states: counts, sums, first and last purchase).
-- historic_clv is the net revenue so far; clv projects it over 3 years at the customer's rate
-- so far (net revenue per day since the first purchase, at least 30 days, × 1095), which is
-- average order value × purchase frequency × lifespan.
CREATE VIEW customer_lifetime_value AS
WITH c AS (
  SELECT customer_id, purchase_count, net_revenue, first_purchase_at, last_purchase_at,
         CAST(extract(epoch FROM now() - first_purchase_at) AS BIGINT) / 86400 AS tenure_days
  FROM view_at('customer_value', group_by => 'customer_id')
), v AS (
  SELECT c.*,
         round(net_revenue / purchase_count, 2)                                  AS avg_order_value,
         round(net_revenue * 1095 / greatest(tenure_days, 30), 2)                AS clv
  FROM c
)
SELECT rank() OVER (ORDER BY clv DESC) AS clv_rank,
       customer_id,
       purchase_count,
       net_revenue                     AS historic_clv,
       avg_order_value,
       first_purchase_at,
       last_purchase_at,
       tenure_days,
       clv
FROM v
ORDER BY clv_rank, customer_id;

-- The seed's analytics_alerts and venue_alerts: per hour and venue, completed purchases,
-- failed payments and refunded amounts. Alerts (alerts/*.json, created by run.sh) watch it:
-- failed payments above a threshold in the hour filling now, a day's sales down by half.
CREATE MATERIALIZED VIEW venue_activity AS
SELECT time_bucket('1 hour', created_at)                                               AS hour,
       venue_id,
       count(*) FILTER (WHERE type = 'purchase' AND status = 'completed')              AS purchases,
       count(*) FILTER (WHERE status = 'failed')                                       AS failed_payments,
       sum(amount) FILTER (WHERE type = 'refund' AND status = 'completed')             AS refunded
FROM payment_transactions
GROUP BY 1, 2;
