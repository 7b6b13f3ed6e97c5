//! `GET /v1/analyses/{kind}`: the contract over HTTP, fed through the Segment routes (identify
//! and alias link anonymous visitors to users after the fact), with its errors and tenant
//! isolation. The numbers are small enough to check by hand; `analyses.rs` checks them against
//! a reference on random data.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;
use tally::server::{ServerConfig, app};

mod common;
use common::app::*;

#[tokio::test]
async fn analyses_over_segment_events() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub);
    let keys = setup(&app, &["acme", "other"]).await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:", keys[0].write)
        )
    );
    // Berlin time: 2026-03-27 is a Friday; DST starts on Sunday the 29th.
    let batch = json!({"batch": [
        // An anonymous visitor lands, signs up, and is identified as u1 only later.
        {"type": "page", "name": "Home", "anonymousId": "a1", "messageId": "m1",
         "timestamp": "2026-03-27T09:00:00Z", "context": {"page": {"url": "https://x.io/"}}},
        {"type": "track", "event": "Signed Up", "anonymousId": "a1", "messageId": "m2",
         "timestamp": "2026-03-27T09:05:00Z", "properties": {"plan": "pro"}},
        {"type": "track", "event": "Purchased", "userId": "u1", "messageId": "m3",
         "timestamp": "2026-03-27T10:00:00Z"},
        // u2 signs up and never buys; returns on Saturday.
        {"type": "track", "event": "Signed Up", "userId": "u2", "messageId": "m4",
         "timestamp": "2026-03-27T11:00:00Z", "properties": {"plan": "free"}},
        {"type": "page", "name": "Pricing", "userId": "u2", "messageId": "m5",
         "timestamp": "2026-03-28T08:00:00Z", "context": {"page": {"url": "https://x.io/pricing"}}},
    ], "sentAt": "2026-03-30T12:00:00Z"});
    let post = |body: serde_json::Value| {
        let app = app.clone();
        let basic = basic.clone();
        async move {
            let a = call(
                &app,
                "POST",
                "/v1/batch",
                &[
                    ("authorization", &basic),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        }
    };
    post(batch).await;
    let read = bearer(&keys[0].read);
    let get = |uri: String| {
        let app = app.clone();
        let read = read.clone();
        async move {
            call(
                &app,
                "GET",
                &uri,
                &[("authorization", &read)],
                Body::empty(),
            )
            .await
        }
    };
    let funnel = "/v1/analyses/funnel?from=2026-03-27&to=2026-03-28&steps=Signed%20Up,Purchased";
    let a = get(funnel.into()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // Before the link, the anonymous a1 signed up and u1 bought: nobody converted.
    assert_eq!(
        a.json()["rows"],
        json!([
            [1, "Signed Up", 2, 1.0, 1.0, 0.0],
            [2, "Purchased", 0, 0.0, 0.0, null]
        ])
    );
    // The identify arrives: a1 is u1, retroactively.
    post(
        json!({"batch": [{"type": "identify", "userId": "u1", "anonymousId": "a1",
        "messageId": "m6", "timestamp": "2026-03-27T12:00:00Z"}],
        "sentAt": "2026-03-30T12:00:00Z"}),
    )
    .await;
    let a = get(funnel.into()).await;
    assert_eq!(
        a.json(),
        json!({
            "columns": [
                {"name": "step", "type": "BIGINT"}, {"name": "event", "type": "TEXT"},
                {"name": "persons", "type": "BIGINT"}, {"name": "conversion", "type": "DOUBLE"},
                {"name": "step_conversion", "type": "DOUBLE"},
                {"name": "median_seconds", "type": "DOUBLE"}
            ],
            "rows": [
                [1, "Signed Up", 2, 1.0, 1.0, 0.0],
                [2, "Purchased", 1, 0.5, 0.5, 3300.0]
            ]
        })
    );
    let a = get(format!("{funnel}&breakdown=plan")).await;
    assert_eq!(
        a.json()["rows"],
        json!([
            ["free", 1, "Signed Up", 1, 1.0, 1.0, 0.0],
            ["free", 2, "Purchased", 0, 0.0, 0.0, null],
            ["pro", 1, "Signed Up", 1, 1.0, 1.0, 0.0],
            ["pro", 2, "Purchased", 1, 1.0, 1.0, 3300.0]
        ])
    );
    // An alias links a second anonymous id of u2's.
    post(json!({"batch": [
        {"type": "page", "name": "Home", "anonymousId": "a2", "messageId": "m7",
         "timestamp": "2026-03-29T09:00:00Z", "context": {"page": {"url": "https://x.io/"}}},
        {"type": "alias", "userId": "u2", "previousId": "a2", "messageId": "m8",
         "timestamp": "2026-03-29T09:01:00Z"}
    ], "sentAt": "2026-03-30T12:00:00Z"}))
    .await;
    let a = get("/v1/analyses/active_users?from=2026-03-27&to=2026-03-30".into()).await;
    assert_eq!(
        a.json(),
        json!({
            "columns": [
                {"name": "bucket", "type": "TIMESTAMP"}, {"name": "dau", "type": "BIGINT"},
                {"name": "wau", "type": "BIGINT"}, {"name": "mau", "type": "BIGINT"},
                {"name": "stickiness", "type": "DOUBLE"}
            ],
            "rows": [
                ["2026-03-26T23:00:00Z", 2, 2, 2, 1.0],
                ["2026-03-27T23:00:00Z", 1, 2, 2, 0.5],
                ["2026-03-28T23:00:00Z", 1, 2, 2, 0.5]
            ]
        })
    );
    let a = get("/v1/analyses/lifecycle?from=2026-03-27&to=2026-03-30".into()).await;
    assert_eq!(
        a.json()["rows"],
        json!([
            ["2026-03-26T23:00:00Z", 2, 0, 0, 0],
            ["2026-03-27T23:00:00Z", 0, 1, 0, -1],
            ["2026-03-28T23:00:00Z", 0, 1, 0, 0]
        ])
    );
    let a = get("/v1/analyses/retention?from=2026-03-27&to=2026-03-28&period=day&periods=2".into())
        .await;
    assert_eq!(
        a.json()["rows"],
        json!([["2026-03-26T23:00:00Z", 2, [2, 1, 1]]])
    );
    let a = get("/v1/analyses/sessions?from=2026-03-27&to=2026-03-29".into()).await;
    // Friday: u1's session (page, sign-up at +5 min; the purchase 55 minutes later is a new
    // one) and u2's one-event session; Saturday: u2's page view.
    assert_eq!(
        a.json()["rows"],
        json!([
            [
                "2026-03-26T23:00:00Z",
                3,
                2,
                100.0,
                0.0,
                2.0 / 3.0,
                4.0 / 3.0
            ],
            ["2026-03-27T23:00:00Z", 1, 1, 0.0, 0.0, 1.0, 1.0]
        ])
    );
    let a = get("/v1/analyses/sessions?from=2026-03-27&to=2026-03-30&by=landing_page".into()).await;
    assert_eq!(
        a.json(),
        json!({
            "columns": [
                {"name": "page", "type": "TEXT"}, {"name": "sessions", "type": "BIGINT"},
                {"name": "bounce_rate", "type": "DOUBLE"}
            ],
            "rows": [
                ["https://x.io/", 2, 0.5],
                [null, 2, 1.0],
                ["https://x.io/pricing", 1, 1.0]
            ]
        })
    );

    // Errors name the parameter; an unknown analysis is a 404.
    let message = get("/v1/analyses/active_users?interval=hour".into())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(message, "interval: 'hour' is not day, week or month");
    let message = get("/v1/analyses/funnel?from=2026-03-27".into())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        message.starts_with("steps: a funnel needs steps"),
        "{message}"
    );
    let message = get("/v1/analyses/sessions?colour=red".into())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        message.starts_with("colour: unknown parameter"),
        "{message}"
    );
    let message = get("/v1/analyses/churn".into())
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert!(
        message.contains("active_users, retention, funnel"),
        "{message}"
    );

    // Keys: a write key may not read; no key is a 401; the other tenant sees none of it.
    let write = bearer(&keys[0].write);
    let a = call(
        &app,
        "GET",
        funnel,
        &[("authorization", &write)],
        Body::empty(),
    )
    .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    let a = call(&app, "GET", funnel, &[], Body::empty()).await;
    a.error(StatusCode::UNAUTHORIZED, "unauthorized");
    let other = bearer(&keys[1].read);
    let a = call(
        &app,
        "GET",
        funnel,
        &[("authorization", &other)],
        Body::empty(),
    )
    .await;
    assert_eq!(
        a.json()["rows"],
        json!([
            [1, "Signed Up", 0, null, null, null],
            [2, "Purchased", 0, null, null, null]
        ])
    );
}
