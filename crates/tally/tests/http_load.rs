//! Load test on loopback: many concurrent clients ingest through a real `serve`, on SQLite and
//! on PostgreSQL (native batches, single events, gzip, Segment batches, re-sent requests as retrying clients
//! do), while others query. It is bounded in requests and in time and stops by itself. Then the
//! server shuts down gracefully, and every view must equal the recomputation over the stored
//! raw events, which must be exactly the distinct events sent.
//!
//! Also here: a client that sends its headers too slowly is cut off, and SIGTERM-style
//! shutdown finishes a request in flight and flushes the views.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, serve};
use tally_views::QueryRequest;
use tally_views::reference::{compare, recompute};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{Keys, Rng, schema_and_tenant};

const ADMIN: &str = "load-test-admin";
const CLIENTS: usize = 12;
const REQUESTS_PER_CLIENT: usize = 40;

const SCHEMA: &str = "
CREATE STREAM hits (id TEXT NOT NULL, page TEXT NOT NULL, user_id TEXT NOT NULL, ms DOUBLE NOT NULL, price DECIMAL(10,2), at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW per_minute AS
SELECT time_bucket('1 minute', at) AS minute, page, count(*) AS n, sum(price) AS revenue,
       count(DISTINCT user_id) AS users, percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) AS p90,
       last(user_id, at) AS last_user
FROM hits GROUP BY 1, 2;
CREATE MATERIALIZED VIEW per_user AS
SELECT user_id, count(*) AS n, max(ms) AS slowest, sum(price) FILTER (WHERE page = '/buy') AS spent
FROM hits GROUP BY user_id;
CREATE MATERIALIZED VIEW tracks AS
SELECT date_trunc('hour', timestamp) AS hour, event_name, count(*) AS n, count(DISTINCT user_id) AS users
FROM events GROUP BY 1, 2;
";

fn hit(rng: &mut Rng) -> Json {
    // Ids from a shared space, so clients send each other's events too (duplicates).
    let id = rng.below(3000);
    let page = ["/", "/docs", "/buy", "/pricing"][rng.below(4) as usize];
    json!({
        "id": format!("h{id}"),
        "page": page,
        "user_id": format!("u{}", id % 97),
        "ms": (id % 500) as f64 + 0.5,
        "price": if page == "/buy" { Json::String(format!("{}.{:02}", id % 50, id % 100)) } else { Json::Null },
        "at": format!("2026-06-01T10:{:02}:{:02}Z", (id / 60) % 60, id % 60),
    })
}

async fn start(
    location: Location,
) -> (
    Arc<Hub>,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    // Opening the store blocks (PostgreSQL's client too): not on the async runtime.
    let tally = tokio::task::spawn_blocking(move || Tally::open(&location, Config::default()))
        .await
        .unwrap()
        .unwrap();
    let hub = Arc::new(Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            flush_interval: Duration::from_millis(200),
            header_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(hub.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let server = tokio::spawn(async move {
        server.await.unwrap().unwrap();
    });
    (hub, addr, stop, server)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_then_every_view_equals_recomputation_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_clients(Location::Directory(dir.path().to_owned())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_then_every_view_equals_recomputation_on_postgres() {
    let pg = tokio::task::spawn_blocking(tally_store::testing::PgScratch::new)
        .await
        .unwrap();
    concurrent_clients(Location::Postgres(pg.config())).await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

async fn concurrent_clients(location: Location) {
    let (_hub, addr, stop, server) = start(location.clone()).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let Keys { write, read } = schema_and_tenant(
        &http,
        &base,
        ADMIN,
        SCHEMA,
        &json!({"name": "load", "time_zone": "America/New_York"}).to_string(),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let http = http.clone();
        let base = base.clone();
        let write = write.clone();
        let read = read.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) * 0x1234_5678));
            let mut acked: Vec<Json> = Vec::new();
            let mut tracks: Vec<String> = Vec::new();
            for n in 0..REQUESTS_PER_CLIENT {
                if Instant::now() > deadline {
                    break;
                }
                let auth = format!("Bearer {write}");
                let kind = rng.below(10);
                let (request, events, segment_ids) = if kind < 5 {
                    // Up to 120: requests of 64 records or more are decoded (and their keys
                    // hashed) on the request threads, smaller ones by the worker. One kind goes
                    // up to 400, so that groups of 256 events or more are common: on SQLite
                    // those are applied while their commit is synced (`commit_applying`).
                    let most = if kind == 1 { 400 } else { 120 };
                    let events: Vec<Json> = (0..1 + rng.below(most)).map(|_| hit(&mut rng)).collect();
                    let body = Json::Array(events.clone()).to_string();
                    let req = if kind == 0 {
                        http.post(format!("{base}/v1/streams/hits/events")).header("content-encoding", "gzip").body(gzip(body.as_bytes()))
                    } else {
                        http.post(format!("{base}/v1/streams/hits/events")).body(body)
                    };
                    (req, events, vec![])
                } else if kind < 8 {
                    let event = hit(&mut rng);
                    (http.post(format!("{base}/v1/streams/hits/events")).body(event.to_string()), vec![event], vec![])
                } else if kind < 9 {
                    let ids: Vec<String> = (0..1 + rng.below(10)).map(|i| format!("c{c}-{n}-{i}")).collect();
                    let batch: Vec<Json> = ids
                        .iter()
                        .map(|id| {
                            let event = ["Signup", "Login"][id.len() % 2];
                            json!({"type": "track", "event": event, "userId": format!("u{}", id.len()), "messageId": id, "timestamp": "2026-06-01T10:30:00Z"})
                        })
                        .collect();
                    let body = json!({"batch": batch, "sentAt": "2026-06-01T10:30:00Z"});
                    (http.post(format!("{base}/v1/batch")).basic_auth(&write, Some("")).body(body.to_string()), vec![], ids)
                } else {
                    // A reader: every answer is well formed.
                    let r = http.get(format!("{base}/v1/views/per_minute?group_by=page")).bearer_auth(&read).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    continue;
                };
                let request = request.header("authorization", auth);
                // Retry on 503 and 429, as clients do; every 7th request is also re-sent after
                // its acknowledgement (a client that did not see the answer).
                let mut tries = 0;
                loop {
                    let r = request.try_clone().unwrap().send().await.unwrap();
                    let status = r.status().as_u16();
                    if status == 503 || status == 429 {
                        tries += 1;
                        assert!(tries < 100, "client {c} kept getting {status}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let body: Json = r.json().await.unwrap();
                    assert_eq!(status, 200, "client {c}: {body}");
                    assert_eq!(body["rejected"], json!([]), "client {c}: {body}");
                    break;
                }
                if n % 7 == 0 {
                    let r = request.try_clone().unwrap().send().await.unwrap();
                    assert!(matches!(r.status().as_u16(), 200 | 429 | 503));
                }
                acked.extend(events);
                tracks.extend(segment_ids);
            }
            (acked, tracks)
        }));
    }
    let mut sent: HashMap<String, Json> = HashMap::new();
    let mut track_ids = std::collections::HashSet::new();
    for client in clients {
        let (acked, tracks) = client.await.unwrap();
        for e in acked {
            sent.insert(e["id"].as_str().unwrap().to_owned(), e);
        }
        track_ids.extend(tracks);
    }
    assert!(sent.len() > 500, "only {} distinct events", sent.len());

    // Read your writes over HTTP, before the shutdown flush: the count is every distinct event.
    let r: Json =
        common::get_json(&http, &format!("{base}/v1/views/per_user?group_by="), &read).await;
    assert_eq!(r["rows"][0][0], json!(sent.len()), "{r}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();

    // The oracle, on the store as the server left it (blocking calls: off the async runtime).
    tokio::task::spawn_blocking(move || check(&location, &sent, &track_ids))
        .await
        .unwrap();
}

fn check(
    location: &Location,
    sent: &HashMap<String, Json>,
    track_ids: &std::collections::HashSet<String>,
) {
    let tally = Tally::open(location, Config::default()).unwrap();
    let runtime = tally.open_tenant("load").unwrap();
    for (stream_name, expected_count) in [("hits", sent.len()), ("events", track_ids.len())] {
        let stream = tally.stream(stream_name).unwrap();
        let stored = runtime.store().read_events(&stream, 0, usize::MAX).unwrap();
        assert_eq!(
            stored.len(),
            expected_count,
            "{stream_name}: events lost or doubled"
        );
        for plan in tally.catalog().views().filter(|v| v.stream == stream_name) {
            let expected = recompute(plan, &stored, runtime.engine().tz());
            let actual = runtime.query(&plan.name, &QueryRequest::default()).unwrap();
            if let Err(e) = compare(plan, &expected, &actual) {
                panic!("view {}: {e}", plan.name);
            }
        }
    }
    // The flush at shutdown left nothing to replay.
    assert!(
        tally
            .catalog()
            .views()
            .all(|v| runtime.replayed(&v.name) == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_shutdown_finishes_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, addr, stop, server) = start(Location::Directory(dir.path().to_owned())).await;

    // Headers that never finish: the connection is closed after the header timeout (1 s).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A request whose body is still arriving when shutdown starts is finished, not cut.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = json!({"name": "late"}).to_string();
    conn.write_all(
        format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    drop(conn);
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
    // New connections are refused after shutdown.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let tally = Tally::open(
        &Location::Directory(dir.path().to_owned()),
        Config::default(),
    )
    .unwrap();
    assert!(tally.tenant_info("late").is_ok());
}
