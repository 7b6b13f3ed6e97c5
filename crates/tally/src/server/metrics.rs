//! The server's Prometheus metrics, served at `GET /metrics`.
//!
//! One registry per server (no global recorder, so tests can build many apps in one process):
//! ingested events by stream and outcome, HTTP answers by status class, rejected requests by
//! reason, flush lag per tenant, query latency, group-commit sizes and times, and events views left
//! out.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    webhooks: Family<Labels, Counter>,
    statsd_lines: Family<Labels, Counter>,
    statsd_dropped: Family<Labels, Counter>,
    flush_lag: Family<Labels, Gauge<f64, AtomicU64>>,
    skipped: Family<Labels, Counter>,
    expression_failures: Family<Labels, Counter>,
    query_seconds: Histogram,
    group_requests: Histogram,
    group_seconds: Histogram,
    pub flushes: Counter,
    /// Connections open now.
    pub connections: Gauge,
    /// 1 while commits succeed, 0 since one failed (until one succeeds again).
    store_up: Gauge,
    /// Why the last commit failed, while the store is failing.
    store_failure: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tally");
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "ingest_events",
            "Events received, by tenant, stream and outcome (accepted, duplicate, rejected; rejected also by reason)",
            events.clone(),
        );
        let responses = Family::<Labels, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP responses, by route group and status code",
            responses.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "refused_requests",
            "Requests refused before any work, by reason (rate_limited, overloaded, unauthorized, too_large)",
            refused.clone(),
        );
        let webhooks = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Alert webhook delivery attempts, by outcome (delivered, failed)",
            webhooks.clone(),
        );
        let flush_lag = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "flush_lag_seconds",
            "Age of the oldest applied but not yet flushed change, per tenant (view tables lag the API by this much)",
            flush_lag.clone(),
        );
        let skipped = Family::<Labels, Counter>::default();
        registry.register(
            "view_events_skipped",
            "Events a view left out because one of its expressions failed on them, per tenant and view",
            skipped.clone(),
        );
        let expression_failures = Family::<Labels, Counter>::default();
        registry.register(
            "view_expression_failures",
            "Events on which an expression of a view failed (a cast, a division by zero) and gave NULL; the events were kept. Per tenant and view",
            expression_failures.clone(),
        );
        let query_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "query_duration_seconds",
            "Time to answer a view query inside the tenant worker",
            query_seconds.clone(),
        );
        let group_requests = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "ingest_group_requests",
            "Ingest requests a tenant worker decoded, committed and applied together (group commit)",
            group_requests.clone(),
        );
        let group_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "ingest_group_duration_seconds",
            "Time a tenant worker spent on one group of ingest requests: decode, commit, apply (in an ingest session the apply runs on a second thread: the group's time ends when its events are handed over to it, waiting if it is behind, and the flushes it asked for are written)",
            group_seconds.clone(),
        );
        let flushes = Counter::default();
        registry.register(
            "flushes",
            "Flushes of view deltas into view tables",
            flushes.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "HTTP connections open now",
            connections.clone(),
        );
        let statsd_lines = Family::<Labels, Counter>::default();
        registry.register(
            "statsd_lines",
            "StatsD lines received, by outcome (accepted; malformed, unsupported: DogStatsD events and service checks; no_tenant: no tenant tag)",
            statsd_lines.clone(),
        );
        let statsd_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "statsd_dropped_rows",
            "Aggregated StatsD rows that could not be committed, by tenant and reason",
            statsd_dropped.clone(),
        );
        let store_up = Gauge::default();
        store_up.set(1);
        registry.register(
            "store_up",
            "1 while commits to the store succeed, 0 after one failed until one succeeds again",
            store_up.clone(),
        );
        Metrics {
            store_up,
            store_failure: std::sync::Mutex::new(None),
            connections,
            registry,
            events,
            responses,
            refused,
            webhooks,
            statsd_lines,
            statsd_dropped,
            flush_lag,
            skipped,
            expression_failures,
            query_seconds,
            group_requests,
            group_seconds,
            flushes,
        }
    }

    pub fn count_ingest(&self, tenant: &str, stream: &str, accepted: u64, duplicates: u64) {
        for (outcome, n) in [("accepted", accepted), ("duplicate", duplicates)] {
            if n > 0 {
                self.events
                    .get_or_create(&vec![
                        ("tenant", tenant.to_owned()),
                        ("stream", stream.to_owned()),
                        ("outcome", outcome.into()),
                    ])
                    .inc_by(n);
            }
        }
    }

    /// Counts one rejected event by the kind of its problem.
    pub fn count_rejected(&self, tenant: &str, stream: &str, reason: &str) {
        self.events
            .get_or_create(&vec![
                ("tenant", tenant.to_owned()),
                ("stream", stream.to_owned()),
                ("outcome", "rejected".into()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    pub fn count_response(&self, route: &'static str, status: u16) {
        self.responses
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// Counts one webhook attempt.
    pub fn count_webhook(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.webhooks
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts StatsD lines by outcome.
    pub fn count_statsd_lines(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.statsd_lines
                .get_or_create(&vec![("outcome", outcome.to_owned())])
                .inc_by(n);
        }
    }

    /// Counts aggregated StatsD rows a commit could not take.
    pub fn count_statsd_dropped(&self, tenant: &str, reason: &'static str, n: u64) {
        self.statsd_dropped
            .get_or_create(&vec![
                ("tenant", tenant.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc_by(n);
    }

    pub fn count_refused(&self, reason: &'static str) {
        self.refused
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    pub fn set_flush_lag(&self, tenant: &str, seconds: f64) {
        self.flush_lag
            .get_or_create(&vec![("tenant", tenant.to_owned())])
            .set(seconds);
    }

    pub fn count_skipped(&self, tenant: &str, view: &str, n: u64) {
        self.skipped
            .get_or_create(&vec![
                ("tenant", tenant.to_owned()),
                ("view", view.to_owned()),
            ])
            .inc_by(n);
    }

    pub fn count_expression_failures(&self, tenant: &str, view: &str, n: u64) {
        self.expression_failures
            .get_or_create(&vec![
                ("tenant", tenant.to_owned()),
                ("view", view.to_owned()),
            ])
            .inc_by(n);
    }

    /// Records that a commit succeeded: the store works.
    pub fn store_ok(&self) {
        if self.store_up.get() == 0 {
            self.store_up.set(1);
            *self.store_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Records that a commit failed, and why (a message for operators, no internals).
    pub fn store_failed(&self, reason: &str) {
        self.store_up.set(0);
        *self.store_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
    }

    /// Why the store is failing, if it is.
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn observe_query(&self, elapsed: Duration) {
        self.query_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records one group commit: how many requests it answered and how long it took.
    pub fn observe_group(&self, requests: usize, elapsed: Duration) {
        self.group_requests.observe(requests as f64);
        self.group_seconds.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
