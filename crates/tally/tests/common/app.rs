//! The in-process app of the route tests: a hub on the in-memory store with a fixed clock and
//! an admin token, requests through `oneshot` (no sockets), and the JSON answers.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Value as Json, json};
use tally::app::{Clock, Config, Location, Tally};
use tally::server::{Hub, ServerConfig};
use tally_views::Timestamp;
use tower::ServiceExt;

use super::Keys;

pub const ADMIN: &str = "admin-secret-for-tests";
pub const NOW: &str = "2026-03-30T12:00:00Z";

pub const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, shop TEXT NOT NULL, amount DECIMAL(12,2) NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW sales AS
SELECT time_bucket('1 hour', at) AS hour, shop, count(*) AS orders, sum(amount) AS revenue
FROM orders GROUP BY 1, 2;
CREATE MATERIALIZED VIEW signups AS
SELECT date_trunc('day', timestamp) AS day, event_name, count(*) AS n, count(DISTINCT user_id) AS users
FROM events GROUP BY 1, 2;
";

pub fn hub_with(settings: ServerConfig) -> Arc<Hub> {
    let config = Config {
        clock: Clock::fixed(Timestamp::parse(NOW).unwrap()),
        ..Config::default()
    };
    let tally = Tally::open(&Location::Memory, config).unwrap();
    Arc::new(Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            ..settings
        },
    ))
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts an error answer: its status and the JSON error body with this code.
    pub fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}", self.text);
        let message = body["error"]["message"].as_str().unwrap().to_owned();
        assert!(!message.is_empty());
        message
    }
}

pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

pub async fn setup(app: &Router, tenants: &[&str]) -> Vec<Keys> {
    let admin = bearer(ADMIN);
    let a = call(
        app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", &admin),
            ("content-type", "application/sql"),
        ],
        SCHEMA,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let mut keys = Vec::new();
    for t in tenants {
        let a = call(
            app,
            "POST",
            "/v1/tenants",
            &[
                ("authorization", &admin),
                ("content-type", "application/json"),
            ],
            json!({"name": t, "time_zone": "Europe/Berlin"}).to_string(),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        let body = a.json();
        keys.push(Keys {
            write: body["write_key"].as_str().unwrap().to_owned(),
            read: body["read_key"].as_str().unwrap().to_owned(),
        });
    }
    keys
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn order(id: &str, shop: &str, amount: &str, at: &str) -> Json {
    json!({"id": id, "shop": shop, "amount": amount, "at": at})
}
