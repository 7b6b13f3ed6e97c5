//! Alert latency, end to end: `tally serve` on SQLite on loopback, an alert `above 0` per shop
//! on an hourly view, and a webhook receiver on loopback. Each firing is one event of a new
//! shop sent over HTTP: the time from the ingest's acknowledgement (its `200` read by the
//! client) to the webhook's arrival at the receiver, over 200 firings one after the other,
//! p50 / p99 / max. The goal (issue: alerts) is p99 ≤ 1 s.
//!
//! `cargo bench -p tally --bench alerts` (`TALLY_BENCH_FIRINGS`, default 200).
//!
//! The same run measures, as the baseline, the ingest request alone (send to `200`): the
//! latency an alert adds is the difference.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, serve};

#[path = "../tests/common/mod.rs"]
mod common;

const ADMIN: &str = "bench";
const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, shop TEXT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW sales AS
SELECT time_bucket('1 hour', at) AS hour, shop, count(*) AS orders FROM orders GROUP BY 1, 2;
";

fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let firings: usize = std::env::var("TALLY_BENCH_FIRINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10 } else { 200 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(firings));
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(firings: usize) {
    // The receiver: notes when each notification arrives, by shop.
    let arrived: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = arrived.clone();
    let handler = move |body: String| {
        let got = got.clone();
        async move {
            let at = Instant::now();
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            let shop = body["group"]["shop"].as_str().unwrap_or("").to_owned();
            got.lock().unwrap().push((shop, at));
            axum::http::StatusCode::NO_CONTENT
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let tally = Tally::open(
        &Location::Directory(dir.path().join("data")),
        Config::default(),
    )
    .unwrap();
    let hub = Arc::new(Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            allow_private_webhooks: true,
            ..ServerConfig::default()
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(hub, listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let keys = common::schema_and_tenant(
        &http,
        &base,
        ADMIN,
        SCHEMA,
        r#"{"name":"acme","time_zone":"UTC"}"#,
    )
    .await;
    let manage = common::manage_key(&http, &base, ADMIN, "acme").await;
    let alert = json!({
        "name": "any order", "view": "sales", "value": "orders", "group_by": "shop",
        "condition": "above", "threshold": 0,
        "webhook": {"url": hook, "secret": "whsec_YmVuY2g="}
    });
    common::create_alert(&http, &base, &manage, &alert).await;

    let ingest = |id: String, shop: String| {
        let (http, base) = (http.clone(), base.clone());
        let key = keys.write.clone();
        async move {
            let order = json!([{"id": id, "shop": shop, "at": common::now_text()}]);
            common::post_events(&http, &base, &key, "orders", &order).await;
            Instant::now()
        }
    };
    // Baseline: the same requests to a shop that already fires (no new notification).
    ingest("warm".into(), "baseline".into()).await;
    let mut baseline = Vec::new();
    for i in 0..firings {
        let sent = Instant::now();
        let acked = ingest(format!("b{i}"), "baseline".into()).await;
        baseline.push(acked - sent);
    }
    let mut latencies = Vec::new();
    for i in 0..firings {
        let shop = format!("s{i}");
        let acked = ingest(format!("o{i}"), shop.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived_at = loop {
            if let Some(at) = arrived
                .lock()
                .unwrap()
                .iter()
                .find(|(s, _)| *s == shop)
                .map(|(_, at)| *at)
            {
                break at;
            }
            assert!(Instant::now() < deadline, "no notification for {shop}");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(arrived_at.saturating_duration_since(acked));
    }
    baseline.sort();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "alert latency (ack → webhook arrival), {firings} firings: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    println!(
        "baseline: the ingest request alone (send → 200): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&baseline, 0.5)),
        ms(percentile(&baseline, 0.99)),
    );
    let _ = stop.send(());
    let _ = server.await;
}
