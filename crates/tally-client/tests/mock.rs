//! The client against a scripted HTTP server: batching, gzip, keys, retries honouring
//! `Retry-After` with the same message ids, refusals reported by `flush`, the overflow
//! policies and the blocking flavour. (Against a real `tally serve`, including a server killed
//! and restarted while the client retries: `crates/tally/tests/client.rs`.)

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tally_client::{Client, Error, EventBuilder, MetricBuilder, Overflow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the mock received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: String,
    body: Json,
}

/// A server answering each request with the next scripted status (the last one repeats);
/// a 200 answers with the count of messages as accepted.
async fn mock(script: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let k = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..k]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        let k = socket.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    break (head, buf[end + 4..end + 4 + length].to_vec());
                }
            };
            let gzip = head.to_ascii_lowercase().contains("content-encoding: gzip");
            let text = if gzip {
                let mut out = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut out)
                    .unwrap();
                out
            } else {
                String::from_utf8(body).unwrap()
            };
            let body: Json = serde_json::from_str(&text).unwrap();
            let messages = body["batch"]
                .as_array()
                .or(body.as_array())
                .map_or(0, |a| a.len());
            let path = head.split_whitespace().nth(1).unwrap().to_owned();
            log.lock().unwrap().push(Seen {
                path,
                headers: head.to_ascii_lowercase(),
                body,
            });
            let (status, extra) = script[n.min(script.len() - 1)];
            n += 1;
            let answer = if status == 200 {
                format!(r#"{{"accepted":{messages},"duplicates":0,"rejected":[]}}"#)
            } else {
                r#"{"error":{"code":"x","message":"scripted"}}"#.to_owned()
            };
            let response = format!(
                "HTTP/1.1 {status} X\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        }
    });
    (format!("http://{addr}"), seen)
}

fn ids(seen: &Seen) -> Vec<String> {
    let items = seen.body["batch"]
        .as_array()
        .or(seen.body.as_array())
        .unwrap();
    items
        .iter()
        .map(|m| {
            m["messageId"]
                .as_str()
                .or(m["id"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn retries_honour_retry_after_and_resend_the_same_ids() {
    let (url, seen) = mock(vec![(503, "retry-after: 1\r\n"), (429, ""), (200, "")]).await;
    let client = Client::builder(&url, "tk_w")
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .unwrap();
    for i in 0..3 {
        client
            .track(EventBuilder::new("Signed Up").user_id(format!("u{i}")))
            .unwrap();
    }
    let started = Instant::now();
    client.flush().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|s| s.path == "/v1/batch"));
    assert!(seen[0].headers.contains("content-encoding: gzip"));
    assert!(
        seen[0].headers.contains("authorization: basic dgtfdzo="),
        "{}",
        seen[0].headers
    );
    assert_eq!(ids(&seen[0]), ids(&seen[2]));
    assert_eq!(ids(&seen[0]).len(), 3);
    let stats = client.stats();
    assert_eq!((stats.sent, stats.retries, stats.failed), (3, 2, 0));
}

#[tokio::test]
async fn metrics_go_to_the_metrics_stream_in_batches() {
    let (url, seen) = mock(vec![(200, "")]).await;
    let client = Client::builder(&url, "tk_w")
        .batch_size(10)
        .gzip(false)
        .build()
        .unwrap();
    for i in 0..25 {
        client
            .metric(
                MetricBuilder::timer("latency")
                    .value(f64::from(i))
                    .tag("route", "/"),
            )
            .unwrap();
    }
    client.flush().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.path == "/v1/streams/metrics/events"));
    assert!(
        seen.iter()
            .all(|s| s.headers.contains("authorization: bearer tk_w"))
    );
    assert!(seen.iter().all(|s| ids(s).len() <= 10));
    assert_eq!(seen.iter().map(|s| ids(s).len()).sum::<usize>(), 25);
    assert_eq!(seen[0].body[0]["metric_type"], "timer");
    assert_eq!(client.stats().sent, 25);
}

#[tokio::test]
async fn a_refused_request_is_reported_by_flush_without_retries() {
    let (url, seen) = mock(vec![(400, "")]).await;
    let client = Client::new(&url, "tk_w").unwrap();
    client.track(EventBuilder::new("e").user_id("u")).unwrap();
    match client.flush().await {
        Err(Error::Undelivered { failed, last_error }) => {
            assert_eq!(failed, 1);
            assert!(last_error.contains("400"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn a_full_buffer_refuses_or_drops_the_oldest() {
    // Nothing listens on this port: every batch waits in retries.
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let reject = Client::builder(&url, "k")
        .max_buffer(2)
        .batch_size(1000)
        .flush_interval(Duration::from_secs(3600))
        .shutdown_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    reject.track(EventBuilder::new("a").user_id("u")).unwrap();
    reject.track(EventBuilder::new("b").user_id("u")).unwrap();
    assert!(matches!(
        reject.track(EventBuilder::new("c").user_id("u")),
        Err(Error::BufferFull { capacity: 2 })
    ));
    let drop_oldest = Client::builder(&url, "k")
        .max_buffer(2)
        .batch_size(1000)
        .flush_interval(Duration::from_secs(3600))
        .overflow(Overflow::DropOldest)
        .shutdown_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for name in ["a", "b", "c", "d"] {
        drop_oldest
            .track(EventBuilder::new(name).user_id("u"))
            .unwrap();
    }
    assert_eq!(drop_oldest.stats().dropped, 2);
    // Closing gives up on the unreachable server: the rest counts as failed, and close says so.
    assert!(matches!(
        drop_oldest.close().await,
        Err(Error::Undelivered { .. })
    ));
    assert!(matches!(
        drop_oldest.track(EventBuilder::new("e").user_id("u")),
        Err(Error::Closed)
    ));
}

#[test]
fn the_blocking_client_flushes_and_closes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (url, seen) = runtime.block_on(mock(vec![(200, "")]));
    let client = tally_client::blocking::Client::new(&url, "tk_w").unwrap();
    client
        .identify(
            tally_client::IdentifyBuilder::new()
                .user_id("u")
                .trait_("plan", "pro"),
        )
        .unwrap();
    client
        .alias(tally_client::AliasBuilder::new("u", "anon-1"))
        .unwrap();
    client.flush().unwrap();
    client
        .metric(MetricBuilder::gauge("depth").value(3.0))
        .unwrap();
    client.close().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|s| ids(s).len()).sum::<usize>(), 3);
    assert_eq!(client.stats().sent, 3);
}

#[tokio::test]
async fn close_interrupts_a_long_retry_after() {
    let (url, seen) = mock(vec![(503, "retry-after: 100000\r\n")]).await;
    let client = Client::builder(&url, "tk_w")
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    client.track(EventBuilder::new("e").user_id("u")).unwrap();
    // The first attempt is answered 503 with a Retry-After of more than a day.
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    match client.close().await {
        Err(Error::Undelivered { failed: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close waited {:?}",
        started.elapsed()
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
