//! What the Segment library tests share: the schema, the server, and the check that the
//! views count exactly the 35 messages `send.py` and `send.mjs` send, before and after a
//! SIGTERM.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::common;

const ADMIN: &str = "segment-test-admin";

const SCHEMA: &str = "
CREATE MATERIALIZED VIEW by_type AS
SELECT event_type, event_name, count(*) AS n, count(DISTINCT user_id) AS users,
       count(page_url) AS with_url
FROM events GROUP BY 1, 2;
";

/// Starts `tally serve` with the schema and a tenant `shop`, runs `sender` with the tenant's
/// write key and the server's URL as its last two arguments, and checks the counts
/// ([`assert_counted`]).
pub(crate) async fn sends_and_counts(mut sender: Command) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(
        Path::new(env!("CARGO_BIN_EXE_tally")),
        dir.path(),
        "127.0.0.1:0",
        &[],
        ADMIN,
    );
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let keys = common::schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"shop"}"#).await;
    let output = sender.arg(&keys.write).arg(&base).output().unwrap();
    assert!(
        output.status.success(),
        "the Segment library failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_counted(server, &http, &base, &keys.read, dir.path()).await;
}

/// The views count exactly what the scripts send; after a SIGTERM the view tables on `data`
/// hold it too.
async fn assert_counted(
    server: common::Served,
    http: &reqwest::Client,
    base: &str,
    read: &str,
    data: &Path,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let answer: Json = common::get_json(
            http,
            &format!("{base}/v1/views/by_type?order_by=event_type"),
            read,
        )
        .await;
        let rows = answer["rows"].clone();
        let total: i64 = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[2].as_i64().unwrap())
            .sum();
        if total >= 35 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        rows,
        json!([
            ["alias", "alias", 1, 1, 0],
            ["group", "group", 1, 1, 0],
            ["identify", "identify", 1, 1, 0],
            ["page", "Pricing", 1, 1, 1],
            ["screen", "Home", 1, 1, 0],
            ["track", "Order Completed", 30, 7, 30],
        ])
    );
    // The server's own count agrees: 35 accepted, nothing rejected.
    let metrics = common::metrics(http, base).await;
    assert!(
        metrics.contains(
            r#"tally_ingest_events_total{tenant="shop",stream="events",outcome="accepted"} 35"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"outcome="rejected""#), "{metrics}");

    // SIGTERM: the server drains, flushes the views and exits 0; the view tables then hold
    // every event, readable without the server.
    let mut server = server;
    server.terminate();
    let db = rusqlite::Connection::open(data.join("tenants/shop.db")).unwrap();
    let stored: i64 = db
        .query_row("SELECT sum(n) FROM by_type", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 35);
}
