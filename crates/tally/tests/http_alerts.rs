//! Alerts over HTTP (`/v1/alerts`) against a webhook receiver on loopback that fails the first
//! deliveries and checks every signature: a state change is delivered once logically (one
//! `webhook-id`) after the failures, `above` fires the moment the filling bucket crosses and
//! resolves when a new bucket begins, `below` fires on the timer, and the manage key alone may
//! manage alerts. The clock is fixed and moved by the test, so retries come when it says.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use tally::app::{Clock, Config, Location, Tally};
use tally::server::{Hub, ServerConfig, app};
use tally_views::Timestamp;

mod common;
use common::app::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    body: Json,
}

/// A webhook receiver: answers 503 to the first `fail` requests, then 204; checks each
/// request's Standard Webhooks signature with `secret` (the decoded bytes of `whsec_…`).
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    url: String,
}

async fn receiver(secret: Vec<u8>, fail: usize) -> Receiver {
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let fail = Arc::new(Mutex::new(fail));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (g, f) = (got.clone(), fail.clone());
    let handler = move |headers: axum::http::HeaderMap, body: String| {
        let (g, f, secret) = (g.clone(), f.clone(), secret.clone());
        async move {
            let header = |n: &str| headers[n].to_str().unwrap().to_owned();
            let (id, ts, sig) = (
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
            );
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
            mac.update(format!("{id}.{ts}.{body}").as_bytes());
            let expected = format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            );
            assert_eq!(sig, expected, "signature of {body}");
            assert!(ts.parse::<i64>().is_ok());
            g.lock().unwrap().push(Delivery {
                id,
                body: serde_json::from_str(&body).unwrap(),
            });
            let mut left = f.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::NO_CONTENT
            }
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Receiver { got, url }
}

impl Receiver {
    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the receiver has had `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        let start = Instant::now();
        loop {
            let got = self.deliveries();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waited for {n} deliveries, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
fn secret_bytes() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(&SECRET["whsec_".len()..])
        .unwrap()
}

struct Setup {
    app: axum::Router,
    clock: Clock,
    keys: common::Keys,
    manage: String,
    other_manage: String,
}

async fn set_up(allow_private: bool) -> Setup {
    let clock = Clock::fixed(Timestamp::parse(NOW).unwrap());
    let config = Config {
        clock: clock.clone(),
        ..Config::default()
    };
    let tally = Tally::open(&Location::Memory, config).unwrap();
    let hub = Arc::new(Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            allow_private_webhooks: allow_private,
            ..ServerConfig::default()
        },
    ));
    hub.start_background();
    let app = app(hub);
    let mut keys = setup(&app, &["acme", "other"]).await;
    let mut manage = Vec::new();
    for tenant in ["acme", "other"] {
        let a = call(
            &app,
            "POST",
            &format!("/v1/tenants/{tenant}/keys"),
            &[("authorization", &bearer(ADMIN))],
            json!({"kind": "manage"}).to_string(),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        let key = a.json()["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("tly_m_"), "{key}");
        manage.push(key);
    }
    Setup {
        app,
        clock,
        keys: keys.remove(0),
        manage: manage.remove(0),
        other_manage: manage.remove(0),
    }
}

impl Setup {
    async fn send(&self, method: &str, uri: &str, key: &str, body: Json) -> Answer {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        call(
            &self.app,
            method,
            uri,
            &[
                ("authorization", &bearer(key)),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    async fn orders(&self, orders: &[Json]) {
        let a = self
            .send(
                "POST",
                "/v1/streams/orders/events",
                &self.keys.write.clone(),
                Json::Array(orders.to_vec()),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.json()["accepted"], orders.len(), "{}", a.text);
    }

    async fn history(&self, id: &str) -> Vec<Json> {
        let a = self
            .send(
                "GET",
                &format!("/v1/alerts/{id}/history"),
                &self.manage.clone(),
                Json::Null,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json()["history"].as_array().unwrap().clone()
    }

    /// Waits (up to 10 s) until the history holds `n` entries whose last delivery has made
    /// `attempts` attempts.
    async fn wait_history(&self, id: &str, n: usize, attempts: u64) -> Vec<Json> {
        let start = Instant::now();
        loop {
            let h = self.history(id).await;
            if h.len() == n && h[n - 1]["delivery"]["attempts"] == attempts {
                return h;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{h:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn advance(&self, seconds: i64) {
        let now = self.clock.now();
        self.clock.set(Timestamp(now.0 + seconds * 1_000_000));
    }
}

fn spec(url: &str) -> Json {
    json!({
        "name": "many orders", "view": "sales", "where": "shop <> 'ignored'",
        "group_by": "shop", "grain": "1 hour", "value": "orders",
        "condition": "above", "threshold": 2, "for": 1,
        "webhook": {"url": url, "secret": SECRET}
    })
}

#[tokio::test]
async fn above_fires_as_the_bucket_fills_and_is_delivered_once_after_failures() {
    let s = set_up(true).await;
    let hook = receiver(secret_bytes(), 2).await;
    let a = s
        .send("POST", "/v1/alerts", &s.manage, spec(&hook.url))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let alert = a.json();
    let id = alert["id"].as_str().unwrap().to_owned();
    assert_eq!(alert["name"], "many orders");
    assert_eq!(
        alert["webhook"],
        json!({"url": hook.url}),
        "the secret is never shown"
    );

    // Two orders in the current hour (12:00 UTC is 14:00 in Berlin): not above 2.
    let at = "2026-03-30T12:10:00Z";
    s.orders(&[order("o1", "a", "1.00", at), order("o2", "a", "1.00", at)])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.deliveries().is_empty());
    // The third crosses: it fires at once, without waiting for the timer.
    let acked = Instant::now();
    s.orders(&[order("o3", "a", "1.00", at), order("o4", "b", "1.00", at)])
        .await;
    let first = hook.wait_for(1).await;
    assert!(
        acked.elapsed() < Duration::from_secs(1),
        "{:?}",
        acked.elapsed()
    );
    assert_eq!(first[0].body["type"], "alert.firing");
    assert_eq!(first[0].body["alert"], id.as_str());
    assert_eq!(first[0].body["group"], json!({"shop": "a"}));
    assert_eq!(first[0].body["value"], 3.0);
    assert_eq!(first[0].body["threshold"], 2.0);
    assert_eq!(first[0].body["id"], first[0].id.as_str());
    // The receiver failed: the retry comes after the backoff (1 s, then 2 s, ±20 %), by the
    // test's clock.
    s.wait_history(&id, 1, 1).await;
    let h = s.history(&id).await;
    assert_eq!(h[0]["state"], "firing");
    assert_eq!(h[0]["delivery"]["outcome"], "pending");
    assert_eq!(h[0]["delivery"]["last_status"], 503);
    s.advance(7);
    hook.wait_for(2).await;
    s.wait_history(&id, 1, 2).await;
    s.advance(13);
    let got = hook.wait_for(3).await;
    let h = s.wait_history(&id, 1, 3).await;
    assert_eq!(h[0]["delivery"]["outcome"], "delivered");
    // One logical notification: the same id and body each time.
    assert!(
        got.iter()
            .all(|d| d.id == got[0].id && d.body == got[0].body)
    );
    // The alert shows the group firing.
    let a = s
        .send("GET", &format!("/v1/alerts/{id}"), &s.manage, Json::Null)
        .await;
    assert_eq!(a.json()["firing"], 1, "{}", a.text);
    assert_eq!(a.json()["groups"][0]["group"], json!({"shop": "a"}));

    // More orders change nothing: the group is already firing.
    s.orders(&[order("o5", "a", "1.00", at)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.deliveries().len(), 3);

    // Acknowledged: recorded, no notification.
    let a = s
        .send(
            "POST",
            &format!("/v1/alerts/{id}/ack"),
            &s.manage,
            Json::Null,
        )
        .await;
    assert_eq!(a.json()["acknowledged"], 1, "{}", a.text);
    let a = s
        .send("GET", &format!("/v1/alerts/{id}"), &s.manage, Json::Null)
        .await;
    assert!(
        a.json()["groups"][0]["acknowledged_at"].is_string(),
        "{}",
        a.text
    );

    // A new hour begins (13:00:30 UTC): the filling bucket is empty, the group resolves.
    s.clock
        .set(Timestamp::parse("2026-03-30T13:00:30Z").unwrap());
    let got = hook.wait_for(4).await;
    assert_eq!(got[3].body["type"], "alert.resolved");
    assert_eq!(got[3].body["group"], json!({"shop": "a"}));
    assert_eq!(got[3].body["value"], 0.0);
    assert_ne!(got[3].id, got[0].id);
    let h = s.wait_history(&id, 3, 1).await;
    let states: Vec<&str> = h.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "acknowledged", "resolved"]);
    assert_eq!(h[2]["delivery"]["outcome"], "delivered");

    // A change of threshold: three orders in this hour fire again only above the new one.
    let a = s
        .send(
            "PATCH",
            &format!("/v1/alerts/{id}"),
            &s.manage,
            json!({"threshold": 3}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["threshold"], 3.0);
    let at = "2026-03-30T13:01:00Z";
    s.orders(&[
        order("p1", "a", "1.00", at),
        order("p2", "a", "1.00", at),
        order("p3", "a", "1.00", at),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.deliveries().len(), 4);
    s.orders(&[order("p4", "a", "1.00", at)]).await;
    assert_eq!(hook.wait_for(5).await[4].body["type"], "alert.firing");

    // Another tenant's manage key does not see it; read and write keys may not manage.
    let a = s
        .send(
            "GET",
            &format!("/v1/alerts/{id}"),
            &s.other_manage,
            Json::Null,
        )
        .await;
    a.error(StatusCode::NOT_FOUND, "not_found");
    let a = s
        .send("GET", "/v1/alerts", &s.other_manage, Json::Null)
        .await;
    assert_eq!(a.json(), json!({"items": []}));
    for key in [&s.keys.read, &s.keys.write] {
        let a = s.send("GET", "/v1/alerts", key, Json::Null).await;
        a.error(StatusCode::FORBIDDEN, "forbidden");
        let a = s.send("POST", "/v1/alerts", key, spec(&hook.url)).await;
        a.error(StatusCode::FORBIDDEN, "forbidden");
    }
    // The manage key may not ingest.
    let a = s
        .send("POST", "/v1/streams/orders/events", &s.manage, json!([]))
        .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");

    let a = s.send("GET", "/v1/alerts", &s.manage, Json::Null).await;
    assert_eq!(a.json()["items"][0]["id"], id.as_str());
    let a = s
        .send("DELETE", &format!("/v1/alerts/{id}"), &s.manage, Json::Null)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let a = s
        .send("GET", &format!("/v1/alerts/{id}"), &s.manage, Json::Null)
        .await;
    a.error(StatusCode::NOT_FOUND, "not_found");
    let a = s
        .send(
            "GET",
            &format!("/v1/alerts/{id}/history"),
            &s.manage,
            Json::Null,
        )
        .await;
    a.error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn below_fires_on_the_timer_for_the_last_complete_bucket() {
    let s = set_up(true).await;
    let hook = receiver(b"plain secret".to_vec(), 0).await;
    let a = s
        .send(
            "POST",
            "/v1/alerts",
            &s.manage,
            json!({
                "name": "no orders", "view": "sales", "where": "shop = 'a'", "group_by": "",
                "value": "orders", "condition": "below", "threshold": 1,
                "webhook": {"url": hook.url, "secret": "plain secret"}
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(a.json()["grain"], Json::Null);
    // No events at all: the last complete hour counts 0 orders, below 1; the timer finds it.
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].body["type"], "alert.firing");
    assert_eq!(got[0].body["group"], json!({}));
    assert_eq!(got[0].body["value"], 0.0);
    assert_eq!(got[0].body["bucket"], "2026-03-30T11:00:00Z");
    // An order in the current hour does not resolve it: that bucket is not complete.
    s.orders(&[order("o1", "a", "1.00", "2026-03-30T12:20:00Z")])
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.deliveries().len(), 1);
    // Once that hour is complete, it holds one order: resolved.
    s.clock
        .set(Timestamp::parse("2026-03-30T13:00:05Z").unwrap());
    let got = hook.wait_for(2).await;
    assert_eq!(got[1].body["type"], "alert.resolved");
    assert_eq!(got[1].body["value"], 1.0);
    let h = s.wait_history(&id, 2, 1).await;
    assert_eq!(h[1]["delivery"]["outcome"], "delivered");
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_field() {
    let s = set_up(false).await;
    let url = "https://hooks.example.com/tally";
    let cases: Vec<(Json, &str)> = vec![
        (json!({"view": "sales"}), "name: required"),
        (
            {
                let mut b = spec(url);
                b["view"] = json!("nope");
                b
            },
            "view: there is no view nope",
        ),
        (
            {
                let mut b = spec(url);
                b["value"] = json!("shop");
                b
            },
            "value: shop is not an output column of sales",
        ),
        (
            {
                let mut b = spec(url);
                b["condition"] = json!("over");
                b
            },
            "condition: 'over' is not above, below",
        ),
        (
            {
                let mut b = spec(url);
                b["threshold"] = json!("high");
                b
            },
            "threshold: expected a number",
        ),
        (
            {
                let mut b = spec(url);
                b["for"] = json!(0);
                b
            },
            "for: expected a whole number of buckets",
        ),
        (
            {
                let mut b = spec(url);
                b["grain"] = json!("1 minute");
                b
            },
            "grain",
        ),
        (
            {
                let mut b = spec(url);
                b["where"] = json!("nope = 1");
                b
            },
            "where",
        ),
        (
            {
                let mut b = spec(url);
                b["webhook"]["url"] = json!("ftp://x/");
                b
            },
            "webhook.url: the scheme ftp is not http or https",
        ),
        (
            {
                let mut b = spec(url);
                b["webhook"]["url"] = json!("http://127.0.0.1:9/hook");
                b
            },
            "webhook.url: 127.0.0.1 resolves to 127.0.0.1, a loopback, private",
        ),
        (
            {
                let mut b = spec(url);
                b["webhook"]["url"] = json!("http://169.254.169.254/latest");
                b
            },
            "metadata address",
        ),
        (
            {
                let mut b = spec(url);
                b["webhook"]["secret"] = json!("whsec_!!");
                b
            },
            "webhook.secret: whsec_ secrets are base64",
        ),
        (
            {
                let mut b = spec(url);
                b["colour"] = json!("red");
                b
            },
            "colour: not a field of an alert",
        ),
    ];
    for (body, expected) in cases {
        let a = s.send("POST", "/v1/alerts", &s.manage, body.clone()).await;
        let message = a.error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.contains(expected), "{body}: {message}");
    }
    let a = s.send("POST", "/v1/alerts", &s.manage, Json::Null).await;
    a.error(StatusCode::BAD_REQUEST, "invalid_request");
    let a = s
        .send(
            "PATCH",
            "/v1/alerts/alr_nope",
            &s.manage,
            json!({"threshold": 1}),
        )
        .await;
    a.error(StatusCode::NOT_FOUND, "not_found");
    let a = s
        .send("POST", "/v1/alerts/alr_nope/ack", &s.manage, Json::Null)
        .await;
    a.error(StatusCode::NOT_FOUND, "not_found");
}
