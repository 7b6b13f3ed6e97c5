//! A webhook delivery survives the server: `tally serve` is killed with `SIGKILL` after the
//! first attempt failed, the receiver comes back, and the restarted server delivers the same
//! notification (same `webhook-id`, same body) from the store. On SQLite and on PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tally_store::testing::PgScratch;

mod common;

const ADMIN: &str = "admin-secret-for-tests";
const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, shop TEXT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW sales AS
SELECT time_bucket('1 hour', at) AS hour, shop, count(*) AS orders FROM orders GROUP BY 1, 2;
";

struct Target {
    flags: Vec<String>,
    _dir: tempfile::TempDir,
    _pg: Option<PgScratch>,
}

fn start(target: &Target, addr: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(&target.flags)
        .args(["serve", "--listen", addr, "--allow-private-webhooks"])
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("TALLY_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    child
}

/// Receives webhooks: 503 while `up` is false, then 200; records each request's id and body.
async fn receiver(up: Arc<Mutex<bool>>, got: Arc<Mutex<Vec<(String, String)>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handler = move |headers: axum::http::HeaderMap, body: String| {
        let (up, got) = (up.clone(), got.clone());
        async move {
            let id = headers["webhook-id"].to_str().unwrap().to_owned();
            got.lock().unwrap().push((id, body));
            if *up.lock().unwrap() {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delivery_survives_a_kill(target: &Target) {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let mut server = start(target, &addr);
    let keys = common::schema_and_tenant(
        &http,
        &base,
        ADMIN,
        SCHEMA,
        r#"{"name":"acme","time_zone":"UTC"}"#,
    )
    .await;
    let manage = common::manage_key(&http, &base, ADMIN, "acme").await;

    let (up, got) = (Arc::new(Mutex::new(false)), Arc::default());
    let url = receiver(up.clone(), Arc::clone(&got)).await;
    let alert = json!({
        "name": "any order", "view": "sales", "value": "orders", "grain": "1 hour",
        "condition": "above", "threshold": 0,
        "webhook": {"url": url, "secret": "s3cret"}
    });
    let id = common::create_alert(&http, &base, &manage, &alert).await;
    let now = common::now_text();
    let order = json!([{"id": "o1", "shop": "a", "at": now}]);
    common::post_events(&http, &base, &keys.write, "orders", &order).await;
    // The first attempt fails; the server dies before (or just after) recording it.
    wait_until("the first attempt", || !got.lock().unwrap().is_empty()).await;
    server.kill().unwrap();
    server.wait().unwrap();
    *up.lock().unwrap() = true;
    let before = got.lock().unwrap().len();
    let mut server = start(target, &addr);
    wait_until("the retry", || got.lock().unwrap().len() > before).await;
    let history: Json =
        common::get_json(&http, &format!("{base}/v1/alerts/{id}/history"), &manage).await;
    // One notification, delivered; every request carried its id and the same body.
    let entries = history["history"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{history:#}");
    let got = got.lock().unwrap().clone();
    assert!(got.len() >= 2);
    assert!(
        got.iter()
            .all(|(i, b)| i == entries[0]["id"].as_str().unwrap() && b == &got[0].1),
        "{got:?}"
    );
    let body: Json = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["group"], json!({"shop": "a"}));
    // Its delivery is recorded as delivered (the answer may still be on its way).
    let start = Instant::now();
    loop {
        let history: Json =
            common::get_json(&http, &format!("{base}/v1/alerts/{id}/history"), &manage).await;
        if history["history"][0]["delivery"]["outcome"] == "delivered" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{history:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Runs the scenario on a runtime of its own: the PostgreSQL scratch schema is made and dropped
/// by the synchronous client, outside it.
fn run(target: &Target) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(delivery_survives_a_kill(target));
}

#[test]
fn a_delivery_survives_a_killed_server_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let flags = vec![
        "--data".to_owned(),
        dir.path().join("data").display().to_string(),
    ];
    run(&Target {
        flags,
        _dir: dir,
        _pg: None,
    });
}

#[test]
fn a_delivery_survives_a_killed_server_on_postgres() {
    let pg = PgScratch::new();
    run(&Target {
        flags: vec![
            "--database-url".into(),
            pg.url().to_owned(),
            "--database-schema".into(),
            pg.schema().to_owned(),
        ],
        _dir: tempfile::tempdir().unwrap(),
        _pg: Some(pg),
    });
}

/// Two `tally serve` nodes on one PostgreSQL database: events of one state change arrive
/// through both, and the change is notified once (only the tenant's leader evaluates).
#[test]
fn two_nodes_notify_each_change_once() {
    let pg = PgScratch::new();
    let target = Target {
        flags: vec![
            "--database-url".into(),
            pg.url().to_owned(),
            "--database-schema".into(),
            pg.schema().to_owned(),
        ],
        _dir: tempfile::tempdir().unwrap(),
        _pg: None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(two_nodes(&target));
    drop(pg);
}

async fn two_nodes(target: &Target) {
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (a, b) = (free(), free());
    let mut first = start(target, &a);
    let (base_a, base_b) = (format!("http://{a}"), format!("http://{b}"));
    let http = reqwest::Client::new();
    let keys = common::schema_and_tenant(
        &http,
        &base_a,
        ADMIN,
        SCHEMA,
        r#"{"name":"acme","time_zone":"UTC"}"#,
    )
    .await;
    let mut second = start(target, &b);
    let manage = common::manage_key(&http, &base_a, ADMIN, "acme").await;
    let (up, got) = (Arc::new(Mutex::new(true)), Arc::default());
    let url = receiver(up, Arc::clone(&got)).await;
    let alert = json!({
        "name": "two orders", "view": "sales", "value": "orders", "group_by": "shop",
        "condition": "above", "threshold": 1,
        "webhook": {"url": url, "secret": "s3cret"}
    });
    let id = common::create_alert(&http, &base_b, &manage, &alert).await;
    let now = common::now_text();
    // Shop a crosses with one order through each node; shop b through the second only.
    for (base, orders) in [
        (&base_a, json!([{"id": "o1", "shop": "a", "at": now}])),
        (
            &base_b,
            json!([{"id": "o2", "shop": "a", "at": now},
                         {"id": "o3", "shop": "b", "at": now},
                         {"id": "o4", "shop": "b", "at": now}]),
        ),
    ] {
        common::post_events(&http, base, &keys.write, "orders", &orders).await;
    }
    wait_until("two notifications", || got.lock().unwrap().len() >= 2).await;
    // Both nodes tick each second: give a second notifier time to show itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let groups: std::collections::BTreeSet<String> = got
        .iter()
        .map(|(_, body)| serde_json::from_str::<Json>(body).unwrap()["group"]["shop"].to_string())
        .collect();
    assert_eq!(groups.len(), 2, "{got:?}");
    for base in [&base_a, &base_b] {
        let history: Json =
            common::get_json(&http, &format!("{base}/v1/alerts/{id}/history"), &manage).await;
        assert_eq!(
            history["history"].as_array().unwrap().len(),
            2,
            "{history:#}"
        );
    }
    for server in [&mut first, &mut second] {
        server.kill().unwrap();
        server.wait().unwrap();
    }
}
