//! Requests an attacker or an unlucky client sends, through `app(hub)` with `oneshot`: each is
//! answered with a clear 4xx and none takes the server down or leaves it broken.
//!
//! - expressions of every shape past the size limits (a 1,100-term `OR` in a URL, a flat sum of
//!   2,000 terms in a view) answer 400 / 422, and the server keeps serving;
//! - streams and views named like a store's own tables are refused before anything is stored;
//! - event times outside 0001-01-01 to 9999-12-30, and Segment clock-skew corrections that land there,
//!   reject the event, not the batch;
//! - failed authentications are limited per client address, and unknown keys are remembered
//!   only up to a bound;
//! - bodies: invalid JSON answers 400, a stalled body 408, `Content-Length` with
//!   `Transfer-Encoding` 400;
//! - a view without `GROUP BY` answers one row before its first event.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tally::server::{ServerConfig, app};
use tower::ServiceExt;

mod common;
use common::app::*;

async fn apply(app: &axum::Router, sql: &str) -> Answer {
    call(
        app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", &bearer(ADMIN)),
            ("content-type", "application/sql"),
        ],
        sql.to_owned(),
    )
    .await
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn expressions_past_the_limits_are_refused_and_the_server_keeps_serving() {
    let app = app(hub_with(ServerConfig::default()));
    let keys = setup(&app, &["acme"]).await;
    let read = bearer(&keys[0].read);
    let wheres = [
        vec!["shop = 'x'"; 1_100].join(" OR "),
        vec!["shop = 'x'"; 1_100].join(" AND "),
        format!("{}shop = 'x'{}", "(".repeat(5_000), ")".repeat(5_000)),
        format!("{}1{} = 1", "abs(".repeat(2_000), ")".repeat(2_000)),
        format!(
            "CASE WHEN {} THEN true END",
            vec!["shop = 'x'"; 1_100].join(" OR ")
        ),
    ];
    for w in &wheres {
        let uri = format!("/v1/views/sales?where={}", encode(w));
        let message = call(
            &app,
            "GET",
            &uri,
            &[("authorization", &read)],
            Body::empty(),
        )
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.starts_with("where: "), "{message}");
    }
    let sum = vec!["amount"; 2_000].join(" + ");
    let a = apply(
        &app,
        &format!("CREATE MATERIALIZED VIEW deep AS SELECT shop, sum({sum}) AS s FROM orders GROUP BY shop;"),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert!(a.text.contains("nests more than 128 levels"), "{}", a.text);
    // Still serving, and within the limits expressions work: a long IN list is one level.
    for ok in [
        vec!["shop = 'x'"; 50].join(" OR "),
        format!("shop IN ({})", vec!["'x'"; 2_000].join(", ")),
    ] {
        let uri = format!("/v1/views/sales?where={}", encode(&ok));
        let a = call(
            &app,
            "GET",
            &uri,
            &[("authorization", &read)],
            Body::empty(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
}

#[tokio::test]
async fn names_of_the_stores_own_tables_are_refused_and_nothing_changes() {
    let app = app(hub_with(ServerConfig::default()));
    let keys = setup(&app, &["acme"]).await;
    for name in [
        "sqlite_master",
        "sqlite_stat1",
        "tenants",
        "api_keys",
        "schema_objects",
        "pg_class",
        "tally_views",
    ] {
        for sql in [
            format!(
                "CREATE STREAM {name} (x TEXT, at TIMESTAMP NOT NULL) WITH (event_time = 'at');"
            ),
            format!(
                "CREATE MATERIALIZED VIEW {name} AS SELECT shop, count(*) AS n FROM orders GROUP BY shop;"
            ),
        ] {
            let a = apply(&app, &sql).await;
            assert_eq!(
                a.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{name}: {}",
                a.text
            );
            assert!(a.text.contains("reserved"), "{name}: {}", a.text);
        }
    }
    // Everything still works: ingest, queries, tenant creation.
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[
            ("authorization", &bearer(&keys[0].write)),
            ("content-type", "application/json"),
        ],
        order("o1", "paris", "5.00", "2026-03-30T10:00:00Z").to_string(),
    )
    .await;
    assert_eq!(a.json()["accepted"], 1, "{}", a.text);
    let a = call(
        &app,
        "GET",
        "/v1/views/sales",
        &[("authorization", &bearer(&keys[0].read))],
        Body::empty(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(setup(&app, &["beta"]).await.len(), 1);
}

#[tokio::test]
async fn times_outside_the_supported_range_reject_the_event_not_the_batch() {
    let app = app(hub_with(ServerConfig::default()));
    let keys = setup(&app, &["acme"]).await;
    let write = bearer(&keys[0].write);
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[
            ("authorization", &write),
            ("content-type", "application/json"),
        ],
        json!([
            order("y0", "paris", "1.00", "0000-06-01T00:00:00Z"),
            order("ok", "paris", "1.00", "2026-03-30T10:00:00Z"),
            order("neg", "paris", "1.00", "-0001-06-01T00:00:00Z"),
        ])
        .to_string(),
    )
    .await;
    let body = a.json();
    assert_eq!(body["accepted"], 1, "{}", a.text);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{}", a.text);
    assert!(
        rejected[0]["error"].as_str().unwrap().contains(
            "outside the supported time range, 0001-01-01T00:00:00Z to 9999-12-30T00:00:00Z"
        ),
        "{}",
        a.text
    );
    // Segment: a clock-skew correction that lands outside the range rejects that message.
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:", keys[0].write)
        )
    );
    let a = call(
        &app,
        "POST",
        "/v1/batch",
        &[
            ("authorization", &basic),
            ("content-type", "application/json"),
        ],
        json!({"batch": [
            {"type": "track", "event": "A", "userId": "u", "messageId": "m1",
             "timestamp": "9999-01-01T00:00:00Z", "sentAt": "0001-01-01T00:00:00Z"},
            {"type": "track", "event": "B", "userId": "u", "messageId": "m2",
             "timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:00Z"},
            {"type": "track", "event": "C", "userId": "u", "messageId": "m3",
             "timestamp": "2026-03-30T11:59:00Z", "sentAt": "2026-03-30T11:59:30Z"},
        ]})
        .to_string(),
    )
    .await;
    let body = a.json();
    assert_eq!(body["accepted"], 1, "{}", a.text);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{}", a.text);
    for r in rejected {
        assert!(r["error"].as_str().unwrap().contains("clock"), "{}", a.text);
    }
}

/// Sends a request from a client address, as the server's accept loop marks them.
async fn from(app: &axum::Router, addr: &str, key: &str) -> (StatusCode, Option<String>) {
    let mut request = Request::builder()
        .uri("/v1/views")
        .header("authorization", bearer(key))
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = addr.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app.clone().oneshot(request).await.unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry)
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_and_unknown_keys_bounded() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub.clone());
    let keys = setup(&app, &["acme"]).await;
    // Failures until the address has used its burst (100, plus what refills meanwhile on a
    // slow machine, 10 a second): then it is refused before any lookup.
    let mut failures = 0;
    loop {
        let (status, _) = from(&app, "10.0.0.1:1000", &format!("tly_r_bad{failures}")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        failures += 1;
        assert!(failures < 10_000, "never refused");
    }
    assert!(failures >= 100, "refused after {failures} failures");
    // The address has used its burst: refused before any lookup, with the time to wait.
    let (status, retry) = from(&app, "10.0.0.1:1000", &keys[0].read).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
    // Another address is not affected.
    let (status, _) = from(&app, "10.0.0.2:1000", &keys[0].read).await;
    assert_eq!(status, StatusCode::OK);
    // Many unknown keys from many addresses: the cache stays bounded.
    for i in 0..12_000u32 {
        let addr = format!("10.1.{}.{}:1000", i / 250, i % 250);
        from(&app, &addr, &format!("tly_r_unknown{i}")).await;
    }
    assert!(hub.cached_keys() <= 10_000, "{}", hub.cached_keys());
}

#[tokio::test]
async fn bodies_that_cannot_be_read_get_their_own_status() {
    let app = app(hub_with(ServerConfig {
        body_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    }));
    let keys = setup(&app, &["acme"]).await;
    let write = bearer(&keys[0].write);
    // Not JSON at all: 400, as documented (and as Segment answers).
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[
            ("authorization", &write),
            ("content-type", "application/json"),
        ],
        "{\"id\": \"o1\", \"shop\":",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    // Both Content-Length and Transfer-Encoding: refused (request smuggling).
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[
            ("authorization", &write),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("transfer-encoding", "chunked"),
        ],
        "{}",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    // A body that stops arriving: 408 after the body deadline.
    let request = Request::builder()
        .method("POST")
        .uri("/v1/streams/orders/events")
        .header("authorization", &write)
        .header("content-type", "application/json")
        .body(Body::new(Stalled(false)))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
}

/// A body that sends one byte and then nothing, forever.
struct Stalled(bool);

impl http_body::Body for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.0 {
            return std::task::Poll::Pending;
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(
            axum::body::Bytes::from_static(b"["),
        ))))
    }
}

#[tokio::test]
async fn a_view_without_group_by_has_one_row_before_its_first_event() {
    let app = app(hub_with(ServerConfig::default()));
    let keys = setup(&app, &["acme"]).await;
    let a = apply(
        &app,
        "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(amount) AS revenue FROM orders;",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = call(
        &app,
        "GET",
        "/v1/views/totals",
        &[("authorization", &bearer(&keys[0].read))],
        Body::empty(),
    )
    .await;
    assert_eq!(a.json()["rows"], json!([[0, null]]), "{}", a.text);
    // Re-grouped to no group column, a grouped view answers one row too.
    let a = call(
        &app,
        "GET",
        "/v1/views/sales?group_by=",
        &[("authorization", &bearer(&keys[0].read))],
        Body::empty(),
    )
    .await;
    assert_eq!(a.json()["rows"], json!([[0, null]]), "{}", a.text);
}

/// A tenant whose creation fails half-way (here its database file cannot be created) is not
/// left behind: the retry creates it and shows its keys.
#[tokio::test]
async fn a_failed_tenant_creation_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tally = tally::app::Tally::open(
        &tally::app::Location::Directory(dir.path().to_owned()),
        tally::app::Config::default(),
    )
    .unwrap();
    let hub = std::sync::Arc::new(tally::server::Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            ..ServerConfig::default()
        },
    ));
    let app = app(hub);
    let blocker = dir.path().join("tenants").join("acme.db");
    std::fs::create_dir_all(&blocker).unwrap();
    let admin = bearer(ADMIN);
    let headers = [
        ("authorization", admin.as_str()),
        ("content-type", "application/json"),
    ];
    let body = json!({"name": "acme"}).to_string();
    let a = call(&app, "POST", "/v1/tenants", &headers, body.clone()).await;
    assert!(a.status.is_server_error(), "{} {}", a.status, a.text);
    std::fs::remove_dir(&blocker).unwrap();
    let a = call(&app, "POST", "/v1/tenants", &headers, body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert!(
        a.json()["write_key"]
            .as_str()
            .unwrap()
            .starts_with("tly_w_")
    );
}

/// Every rejected event is kept in the tenant's rejection log, with the reason and what was
/// sent, whichever route it came through, and counted by reason in `/metrics`: Segment clients
/// ignore the answer's `rejected`, so this is where such an event can still be found.
#[tokio::test]
async fn rejected_events_are_logged_and_counted() {
    let app = app(hub_with(ServerConfig::default()));
    let keys = setup(&app, &["acme", "beta"]).await;
    let write = bearer(&keys[0].write);
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[
            ("authorization", &write),
            ("content-type", "application/x-ndjson"),
        ],
        [
            order("o1", "paris", "5.00", "2026-03-30T10:00:00Z").to_string(),
            order("o2", "paris", "five", "2026-03-30T10:00:00Z").to_string(),
            json!({"id": "o3", "shop": "lyon", "amount": "1.00", "at": "2026-03-30T10:00:00Z", "colour": "red"}).to_string(),
        ]
        .join("\n"),
    )
    .await;
    assert_eq!(
        a.json()["rejected"].as_array().unwrap().len(),
        2,
        "{}",
        a.text
    );
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:", keys[0].write)
        )
    );
    let a = call(
        &app,
        "POST",
        "/v1/track",
        &[
            ("authorization", &basic),
            ("content-type", "application/json"),
        ],
        json!({"userId": "u1", "messageId": "m1"}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let read = bearer(&keys[0].read);
    let page = |query: &'static str| {
        let app = app.clone();
        let read = read.clone();
        async move {
            call(
                &app,
                "GET",
                &format!("/v1/rejections{query}"),
                &[("authorization", &read)],
                Body::empty(),
            )
            .await
        }
    };
    let a = page("").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let body = a.json();
    let log = body["rejections"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{}", a.text);
    assert_eq!(log[0]["reason"], "invalid_value");
    assert_eq!(log[0]["stream"], "orders");
    assert_eq!(log[0]["route"], "streams");
    assert!(log[0]["payload"].as_str().unwrap().contains("\"five\""));
    assert!(
        log[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("field 'amount'")
    );
    assert_eq!(log[1]["reason"], "unknown_field");
    assert_eq!(log[2]["reason"], "invalid_message");
    assert_eq!(log[2]["route"], "segment");
    assert_eq!(log[2]["stream"], "events");
    assert!(log[2]["payload"].as_str().unwrap().contains("m1"));
    assert_eq!(body["next"], json!(null));
    // Pages.
    let a = page("?limit=2").await;
    let first = a.json();
    assert_eq!(first["rejections"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], log[1]["id"]);
    let a = page("?after=2&limit=2").await;
    assert_eq!(a.json()["rejections"][0]["id"], log[2]["id"]);
    // Another tenant's log is its own; a write key cannot read it; parameters are checked.
    let a = call(
        &app,
        "GET",
        "/v1/rejections",
        &[("authorization", &bearer(&keys[1].read))],
        Body::empty(),
    )
    .await;
    assert_eq!(a.json()["rejections"], json!([]), "{}", a.text);
    call(
        &app,
        "GET",
        "/v1/rejections",
        &[("authorization", &write)],
        Body::empty(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    page("?limit=many")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    // Counted by tenant, stream and reason.
    let metrics = call(&app, "GET", "/metrics", &[], Body::empty()).await.text;
    for series in [
        "tally_ingest_events_total{tenant=\"acme\",stream=\"orders\",outcome=\"rejected\",reason=\"invalid_value\"} 1",
        "tally_ingest_events_total{tenant=\"acme\",stream=\"orders\",outcome=\"rejected\",reason=\"unknown_field\"} 1",
        "tally_ingest_events_total{tenant=\"acme\",stream=\"events\",outcome=\"rejected\",reason=\"invalid_message\"} 1",
        "tally_ingest_events_total{tenant=\"acme\",stream=\"orders\",outcome=\"accepted\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} not in\n{metrics}");
    }
}

/// Idle tenants release their worker (thread, files, connection) and reopen on demand with
/// their data; past the open-tenant limit the least recently used one closes first.
#[tokio::test]
async fn idle_tenants_close_and_reopen_with_their_data() {
    let hub = hub_with(ServerConfig {
        max_open_tenants: 2,
        ..ServerConfig::default()
    });
    let app = app(hub.clone());
    let names = ["t1", "t2", "t3"];
    let keys = setup(&app, &names).await;
    for (i, k) in keys.iter().enumerate() {
        let a = call(
            &app,
            "POST",
            "/v1/streams/orders/events",
            &[
                ("authorization", &bearer(&k.write)),
                ("content-type", "application/json"),
            ],
            order(&format!("o{i}"), names[i], "2.50", "2026-03-30T10:00:00Z").to_string(),
        )
        .await;
        assert_eq!(a.json()["accepted"], 1, "{}", a.text);
        assert!(hub.open_tenants().await <= 2);
    }
    hub.release_idle(Duration::ZERO).await;
    assert_eq!(hub.open_tenants().await, 0);
    for (i, k) in keys.iter().enumerate() {
        let a = call(
            &app,
            "GET",
            "/v1/views/sales?group_by=shop",
            &[("authorization", &bearer(&k.read))],
            Body::empty(),
        )
        .await;
        assert_eq!(
            a.json()["rows"],
            json!([[names[i], 1, "2.50"]]),
            "{}",
            a.text
        );
    }
}
