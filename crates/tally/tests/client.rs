//! The Rust client (`crates/tally-client`) against a running `tally serve`: every Segment
//! message type and every metric type counted exactly in views, and a server killed (SIGKILL)
//! and restarted twice while the client keeps sending and retrying: nothing is lost and nothing
//! is counted twice (retried batches carry the same message ids).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tally_client::{
    AliasBuilder, Client, EventBuilder, GroupBuilder, IdentifyBuilder, MetricBuilder, PageBuilder,
};

mod common;
use common::schema_and_tenant;

const ADMIN: &str = "client-test-admin";

const SCHEMA: &str = "
CREATE MATERIALIZED VIEW by_type AS
SELECT event_type, event_name, count(*) AS n, count(DISTINCT user_id) AS users
FROM events GROUP BY 1, 2;
CREATE MATERIALIZED VIEW by_metric AS
SELECT name, metric_type, sum(value) AS total, count(*) AS n,
       count(DISTINCT tags->>'member') AS members, last(value, timestamp) AS last_value
FROM metrics GROUP BY 1, 2;
";

/// Starts `tally serve` on `listen`; the server and its base URL.
fn start(data: &Path, listen: &str) -> (common::Served, String) {
    let served = common::serve(
        Path::new(env!("CARGO_BIN_EXE_tally")),
        data,
        listen,
        &[],
        ADMIN,
    );
    let base = served.base.clone();
    (served, base)
}

/// A view's rows, ordered by its first column.
async fn rows(http: &reqwest::Client, base: &str, key: &str, view: &str) -> Json {
    let order = if view == "by_type" {
        "event_type"
    } else {
        "name"
    };
    let answer = common::get_json(
        http,
        &format!("{base}/v1/views/{view}?order_by={order}"),
        key,
    )
    .await;
    assert!(answer["rows"].is_array(), "{answer}");
    answer["rows"].clone()
}

#[tokio::test]
async fn every_message_type_and_metric_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = start(dir.path(), "127.0.0.1:0");
    let http = reqwest::Client::new();
    let keys = schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"shop"}"#).await;
    let client = Client::new(&base, &keys.write).unwrap();
    for i in 0..20 {
        client
            .track(
                EventBuilder::new("Order Completed")
                    .user_id(format!("u{}", i % 5))
                    .property("total", 10 * i),
            )
            .unwrap();
    }
    client
        .identify(IdentifyBuilder::new().user_id("u1").trait_("plan", "pro"))
        .unwrap();
    client
        .page(
            PageBuilder::new("Pricing")
                .anonymous_id("a1")
                .property("url", "https://x/p"),
        )
        .unwrap();
    client
        .screen(PageBuilder::screen("Home").user_id("u2"))
        .unwrap();
    client
        .group(GroupBuilder::new("acme").user_id("u3"))
        .unwrap();
    client.alias(AliasBuilder::new("u4", "a1")).unwrap();
    for _ in 0..10 {
        client
            .metric(
                MetricBuilder::counter("jobs")
                    .value(2.0)
                    .tag("queue", "mail"),
            )
            .unwrap();
    }
    client
        .metric(MetricBuilder::gauge("depth").value(4.0))
        .unwrap();
    for ms in [10.0, 20.0, 30.0, 40.0, 50.0] {
        client
            .metric(MetricBuilder::timer("latency").value(ms))
            .unwrap();
    }
    client
        .metric(MetricBuilder::histogram("size").value(7.0))
        .unwrap();
    client
        .metric(MetricBuilder::distribution("dist").value(1.5))
        .unwrap();
    for member in ["v1", "v2", "v1"] {
        client
            .metric(MetricBuilder::set("visitors", member))
            .unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(
        rows(&http, &base, &keys.read, "by_type").await,
        json!([
            ["alias", "alias", 1, 1],
            ["group", "group", 1, 1],
            ["identify", "identify", 1, 1],
            ["page", "Pricing", 1, 0],
            ["screen", "Home", 1, 1],
            ["track", "Order Completed", 20, 5],
        ])
    );
    assert_eq!(
        rows(&http, &base, &keys.read, "by_metric").await,
        json!([
            ["depth", "gauge", 4.0, 1, 0, 4.0],
            ["dist", "distribution", 1.5, 1, 0, 1.5],
            ["jobs", "counter", 20.0, 10, 0, 2.0],
            ["latency", "timer", 150.0, 5, 0, 50.0],
            ["size", "histogram", 7.0, 1, 0, 7.0],
            ["visitors", "set", 3.0, 3, 2, 1.0],
        ])
    );
    let stats = client.stats();
    assert_eq!(
        (stats.sent, stats.failed, stats.rejected),
        (46, 0, 0),
        "{stats:?}"
    );
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_server_killed_and_restarted_while_the_client_retries_loses_and_doubles_nothing() {
    const N: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = start(dir.path(), "127.0.0.1:0");
    let http = reqwest::Client::new();
    let keys = schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"shop"}"#).await;
    let client = Client::builder(&base, &keys.write)
        .batch_size(50)
        .flush_interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .max_retries(1_000)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let sender = {
        let client = client.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                client
                    .track(EventBuilder::new("Tick").user_id(format!("u{}", i % 7)))
                    .unwrap();
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    let listen = base.strip_prefix("http://").unwrap().to_owned();
    let mut server = server;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // SIGKILL: no drain, no flush; requests in flight get no answer.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = start(dir.path(), &listen).0;
    }
    tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let stats = client.stats();
    assert_eq!((stats.failed, stats.dropped), (0, 0), "{stats:?}");
    assert!(
        stats.retries > 0,
        "the kills happened while nothing was sent: {stats:?}"
    );
    assert_eq!(stats.sent + stats.duplicates, N as u64, "{stats:?}");
    assert_eq!(
        rows(&http, &base, &keys.read, "by_type").await,
        json!([["track", "Tick", N, 7]]),
        "{stats:?}"
    );
    drop(server);
}
