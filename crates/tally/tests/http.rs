//! Route tests: every route of the HTTP API and every error status it can answer, through
//! `app(hub)` with `oneshot` (no sockets), on the in-memory store with a fixed clock.
//!
//! Also here: tenant isolation (every route tried with the other tenant's keys), the rate limit
//! (429 with `Retry-After`), the bounded queue (503), gzip bodies and gzip bombs, and the JSON
//! error body on everything that fails.
//!
//! Over 1,000 lines on purpose: each test walks one route group's whole contract against the
//! same in-process app and helpers (`common/app.rs`); later route groups get files of their own.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, app};

mod common;
use common::app::*;
#[tokio::test]
async fn operations_routes() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub);
    let a = call(&app, "GET", "/healthz", &[], Body::empty()).await;
    assert_eq!(
        (a.status, a.json()["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );

    let a = call(&app, "GET", "/v1/openapi.json", &[], Body::empty()).await;
    assert_eq!(a.status, StatusCode::OK);
    let spec = a.json();
    let paths: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in [
        "/v1/streams/{stream}/events",
        "/v1/rejections",
        "/v1/batch",
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
        "/v1/views",
        "/v1/streams",
        "/v1/views/{view}",
        "/v1/analyses/{kind}",
        "/v1/sql",
        "/v1/schema",
        "/v1/tenants",
        "/v1/tenants/{tenant}/keys",
        "/v1/tenants/{tenant}/keys/{prefix}",
        "/healthz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/alerts",
        "/v1/dashboards",
        "/v1/dashboards/{id}",
        "/v1/dashboards/{id}/widgets/{n}/data",
        "/v1/views/{view}/export",
        "/v1/streams/{stream}/export",
        "/v1/persons/{id}",
        "/v1/erasures",
    ] {
        assert!(
            paths.contains(&route),
            "{route} missing from the OpenAPI document: {paths:?}"
        );
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());

    let a = call(&app, "GET", "/metrics", &[], Body::empty()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text.contains("tally_http_responses_total"), "{}", a.text);

    call(&app, "GET", "/nowhere", &[], Body::empty())
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    call(&app, "DELETE", "/healthz", &[], Body::empty())
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn admin_routes_and_their_errors() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub);
    let admin = bearer(ADMIN);
    let sql = [
        ("authorization", admin.as_str()),
        ("content-type", "application/sql"),
    ];

    // Schema.
    call(
        &app,
        "POST",
        "/v1/schema",
        &[("content-type", "application/sql")],
        SCHEMA,
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(
        &app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", "Bearer wrong"),
            ("content-type", "application/sql"),
        ],
        SCHEMA,
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(
        &app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        SCHEMA,
    )
    .await
    .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let message = call(
        &app,
        "POST",
        "/v1/schema",
        &sql,
        "CREATE MATERIALIZED VIEW v AS\nSELECT count(*) OVER () FROM events",
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_sql");
    assert!(message.starts_with("line 2, column 8: "), "{message}");
    let a = call(&app, "POST", "/v1/schema", &sql, SCHEMA).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["changes"][1]["change"], "created view sales");
    let a = call(&app, "POST", "/v1/schema", &sql, SCHEMA).await;
    assert!(
        a.json()["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["changed"] == false),
        "{}",
        a.text
    );

    // Tenants.
    let json_ct = [
        ("authorization", admin.as_str()),
        ("content-type", "application/json"),
    ];
    call(&app, "POST", "/v1/tenants", &[], r#"{"name":"acme"}"#)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(&app, "POST", "/v1/tenants", &json_ct, "{")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    call(
        &app,
        "POST",
        "/v1/tenants",
        &json_ct,
        r#"{"name":"acme","time_zone":"Mars/Base"}"#,
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    call(
        &app,
        "POST",
        "/v1/tenants",
        &json_ct,
        r#"{"name":"Not Valid"}"#,
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let a = call(
        &app,
        "POST",
        "/v1/tenants",
        &json_ct,
        r#"{"name":"acme","time_zone":"Europe/Berlin"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let created = a.json();
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["time_zone"], "Europe/Berlin");
    assert!(created["write_key"].as_str().unwrap().starts_with("tly_w_"));
    assert!(created["read_key"].as_str().unwrap().starts_with("tly_r_"));
    call(&app, "POST", "/v1/tenants", &json_ct, r#"{"name":"acme"}"#)
        .await
        .error(StatusCode::CONFLICT, "conflict");
    let a = call(
        &app,
        "GET",
        "/v1/tenants",
        &[("authorization", &admin)],
        Body::empty(),
    )
    .await;
    let names: Vec<Json> = a.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].clone())
        .collect();
    assert_eq!(names, vec![json!("acme"), json!("default")]);

    // Keys: create, use, revoke.
    call(
        &app,
        "POST",
        "/v1/tenants/acme/keys",
        &json_ct,
        r#"{"kind":"admin"}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    call(
        &app,
        "POST",
        "/v1/tenants/nobody/keys",
        &json_ct,
        r#"{"kind":"read"}"#,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    let a = call(
        &app,
        "POST",
        "/v1/tenants/acme/keys",
        &json_ct,
        r#"{"kind":"read"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let key = a.json()["key"].as_str().unwrap().to_owned();
    let prefix = a.json()["prefix"].as_str().unwrap().to_owned();
    let a = call(
        &app,
        "GET",
        "/v1/views",
        &[("authorization", &bearer(&key))],
        Body::empty(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(
        &app,
        "DELETE",
        &format!("/v1/tenants/acme/keys/{prefix}"),
        &[("authorization", &admin)],
        Body::empty(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    call(
        &app,
        "GET",
        "/v1/views",
        &[("authorization", &bearer(&key))],
        Body::empty(),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(
        &app,
        "DELETE",
        &format!("/v1/tenants/acme/keys/{prefix}"),
        &[("authorization", &admin)],
        Body::empty(),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    // A tenant's own key is no admin token.
    let write = created["write_key"].as_str().unwrap();
    call(
        &app,
        "GET",
        "/v1/tenants",
        &[("authorization", &bearer(write))],
        Body::empty(),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn admin_routes_are_off_without_a_token() {
    let tally = Tally::open(&Location::Memory, Config::default()).unwrap();
    let app = app(Arc::new(Hub::new(tally, ServerConfig::default())));
    let message = call(
        &app,
        "GET",
        "/v1/tenants",
        &[("authorization", "Bearer anything")],
        Body::empty(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "admin_disabled");
    assert!(message.contains("TALLY_ADMIN_TOKEN"), "{message}");
    call(
        &app,
        "POST",
        "/v1/schema",
        &[("content-type", "text/plain")],
        SCHEMA,
    )
    .await
    .error(StatusCode::FORBIDDEN, "admin_disabled");
}

#[tokio::test]
async fn native_ingest_and_view_queries() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub);
    let keys = setup(&app, &["acme"]).await;
    let w = bearer(&keys[0].write);
    let r = bearer(&keys[0].read);
    let json_w = [
        ("authorization", w.as_str()),
        ("content-type", "application/json"),
    ];

    // A JSON array with a duplicate and a bad event.
    let body = json!([
        order("o1", "berlin", "10.50", "2026-03-29T08:15:00Z"),
        order("o2", "berlin", "4.25", "2026-03-29T08:45:00Z"),
        order("o1", "berlin", "10.50", "2026-03-29T08:15:00Z"),
        {"id": "o3", "shop": "paris", "amount": "1.005", "at": "2026-03-29T09:00:00Z"},
        order("o4", "paris", "7.00", "2026-03-29T09:10:00Z"),
    ]);
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &json_w,
        body.to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"accepted": 3, "duplicates": 1, "rejected": [{"index": 3, "error": "field 'amount': 1.005 has 3 decimal places; DECIMAL(12,2) keeps 2"}]})
    );
    // One object.
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &json_w,
        order("o5", "paris", "1.00", "2026-03-29T09:20:00Z").to_string(),
    )
    .await;
    assert_eq!(a.json()["accepted"], 1, "{}", a.text);
    // NDJSON, gzip.
    let ndjson = format!(
        "{}\n\n{}\nnot json\n",
        order("o6", "berlin", "2.00", "2026-03-29T10:00:00Z"),
        order("o7", "berlin", "3.00", "2026-03-29T10:30:00Z")
    );
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[
            ("authorization", &w),
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
        ],
        gzip(ndjson.as_bytes()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let body = a.json();
    assert_eq!(
        (
            body["accepted"].clone(),
            body["rejected"][0]["index"].clone()
        ),
        (json!(2), json!(2))
    );

    // Read your writes: the query sees every acknowledged event before any flush.
    let a = call(
        &app,
        "GET",
        "/v1/views/sales?grain=day&order_by=shop",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({
            "columns": [{"name":"hour","type":"TIMESTAMP"},{"name":"shop","type":"TEXT"},{"name":"orders","type":"BIGINT"},{"name":"revenue","type":"DECIMAL(38,2)"}],
            // 29 March is Berlin's DST day: it starts at 23:00Z the day before.
            "rows": [["2026-03-28T23:00:00Z","berlin",4,"19.75"],["2026-03-28T23:00:00Z","paris",2,"8.00"]]
        })
    );
    let a = call(
        &app,
        "GET",
        "/v1/views/sales?group_by=shop&where=shop%20%3D%20%27paris%27&limit=5",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await;
    assert_eq!(
        a.json()["rows"],
        json!([["paris", 2, "8.00"]]),
        "{}",
        a.text
    );

    // Catalog.
    let a = call(
        &app,
        "GET",
        "/v1/views",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await;
    let views = a.json();
    let sales = views["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "sales")
        .unwrap();
    assert_eq!(sales["group_by"], json!(["hour", "shop"]));
    assert_eq!(sales["time_column"], "hour");
    let a = call(
        &app,
        "GET",
        "/v1/streams",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await;
    let streams = a.json();
    let orders = streams["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "orders")
        .unwrap();
    assert_eq!(orders["dedupe_key"], "id");
    assert_eq!(
        orders["columns"][2],
        json!({"name": "amount", "type": "DECIMAL(12,2)", "nullable": false})
    );

    // Ingest errors.
    call(&app, "POST", "/v1/streams/orders/events", &[], "[]")
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", "Bearer tly_w_nope")],
        "[]",
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &r)],
        "[]",
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    call(&app, "POST", "/v1/streams/nothing/events", &json_w, "[{}]")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    call(&app, "POST", "/v1/streams/orders/events", &json_w, "  ")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &json_w,
        "[{\"id\":",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &json_w,
        vec![0xff, 0xfe],
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    let big = format!(
        "[{}]",
        vec![order("x", "s", "1.00", "2026-03-29T10:00:00Z").to_string(); 9000].join(",")
    );
    assert!(big.len() > 512 * 1024);
    call(&app, "POST", "/v1/streams/orders/events", &json_w, big)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // A gzip bomb: 20 MB of blanks in 20 KB; decompression stops at the limit.
    let bomb = gzip(&vec![b' '; 20 << 20]);
    assert!(bomb.len() < 64 * 1024);
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &w), ("content-encoding", "gzip")],
        bomb,
    )
    .await
    .error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &w), ("content-encoding", "br")],
        "[]",
    )
    .await
    .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // Per event: 32 KB, depth 64, NUL.
    let huge = json!([{"id": "h", "shop": "x".repeat(40_000), "amount": "1.00", "at": "2026-03-29T10:00:00Z"}]);
    let deep = format!(
        "[{{\"id\":\"d\",\"x\":{}1{}}}]",
        "[".repeat(80),
        "]".repeat(80)
    );
    let nul =
        json!([{"id": "n", "shop": "a\u{0}b", "amount": "1.00", "at": "2026-03-29T10:00:00Z"}]);
    for (body, words) in [
        (huge.to_string(), "bytes"),
        (deep, "levels deep"),
        (nul.to_string(), "NUL"),
    ] {
        let a = call(&app, "POST", "/v1/streams/orders/events", &json_w, body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let error = a.json()["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(words), "{error}");
    }

    // Query errors.
    call(
        &app,
        "GET",
        "/v1/views/sales",
        &[("authorization", &w)],
        Body::empty(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    call(
        &app,
        "GET",
        "/v1/views/nothing",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    for bad in [
        "grain=fortnight",
        "from=yesterday",
        "limit=ten",
        "colour=red",
        "where=nope%20%3D",
        "group_by=amount",
        "order_by=shop%20sideways",
        "grain=minute",
    ] {
        let message = call(
            &app,
            "GET",
            &format!("/v1/views/sales?{bad}"),
            &[("authorization", &r)],
            Body::empty(),
        )
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(!message.contains("--"), "{bad}: {message}");
    }
    call(
        &app,
        "GET",
        "/v1/streams",
        &[("authorization", &w)],
        Body::empty(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn segment_routes() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub);
    let keys = setup(&app, &["acme"]).await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:", keys[0].write)
        )
    );
    let batch = json!({
        "batch": [
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1", "timestamp": "2026-03-30T11:00:00Z"},
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1", "timestamp": "2026-03-30T11:00:00Z"},
            {"type": "identify", "userId": "u2", "messageId": "m2", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "u3", "messageId": "m3"},
        ],
        "sentAt": "2026-03-30T11:00:00Z"
    });
    // Segment's browser library sends text/plain with the key in the body.
    let a = call(
        &app,
        "POST",
        "/v1/batch",
        &[("authorization", &basic), ("content-type", "text/plain")],
        batch.to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"success": true, "accepted": 2, "duplicates": 1, "rejected": [{"index": 3, "error": "a track message needs \"event\", the name of the event"}]})
    );
    let write_key_in_body =
        json!({"writeKey": keys[0].write, "userId": "u4", "event": "Signed Up", "messageId": "m4"});
    let a = call(
        &app,
        "POST",
        "/v1/track",
        &[("content-type", "text/plain")],
        write_key_in_body.to_string(),
    )
    .await;
    assert_eq!(a.json()["accepted"], 1, "{}", a.text);
    let w = bearer(&keys[0].write);
    for (route, message) in [
        (
            "page",
            json!({"userId": "u1", "name": "Pricing", "messageId": "p1", "properties": {"url": "https://x/pricing"}}),
        ),
        (
            "screen",
            json!({"anonymousId": "a1", "name": "Home", "messageId": "s1"}),
        ),
        (
            "group",
            json!({"userId": "u1", "groupId": "g1", "messageId": "g1"}),
        ),
        (
            "alias",
            json!({"userId": "u1", "previousId": "a1", "messageId": "al1"}),
        ),
        ("identify", json!({"userId": "u5", "messageId": "i5"})),
    ] {
        let a = call(
            &app,
            "POST",
            &format!("/v1/{route}"),
            &[("authorization", &w)],
            message.to_string(),
        )
        .await;
        assert_eq!(
            (a.status, a.json()["accepted"].clone()),
            (StatusCode::OK, json!(1)),
            "{route}: {}",
            a.text
        );
    }
    let r = bearer(&keys[0].read);
    let a = call(
        &app,
        "GET",
        "/v1/views/signups?order_by=event_name",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await;
    assert_eq!(
        a.json()["rows"],
        json!([
            ["2026-03-29T22:00:00Z", "Home", 1, 0],
            ["2026-03-29T22:00:00Z", "Pricing", 1, 1],
            ["2026-03-29T22:00:00Z", "Signed Up", 2, 2],
            ["2026-03-29T22:00:00Z", "alias", 1, 1],
            ["2026-03-29T22:00:00Z", "group", 1, 1],
            ["2026-03-29T22:00:00Z", "identify", 2, 2],
        ]),
        "{}",
        a.text
    );
    call(&app, "POST", "/v1/batch", &[("authorization", &w)], "{")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    call(
        &app,
        "POST",
        "/v1/batch",
        &[("authorization", &w)],
        "{\"batch\": 3}",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    call(&app, "POST", "/v1/batch", &[], batch.to_string())
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    call(&app, "POST", "/v1/track", &[("authorization", &r)], "{}")
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_tenants_keys_never_reach_another_tenant() {
    let hub = hub_with(ServerConfig::default());
    let app = app(hub);
    let keys = setup(&app, &["alpha", "beta"]).await;
    for (i, (shop, count)) in [("alpha-shop", 3), ("beta-shop", 5)].iter().enumerate() {
        let events: Vec<Json> = (0..*count)
            .map(|n| order(&format!("o{n}"), shop, "1.00", "2026-03-29T10:00:00Z"))
            .collect();
        let a = call(
            &app,
            "POST",
            "/v1/streams/orders/events",
            &[("authorization", &bearer(&keys[i].write))],
            json!(events).to_string(),
        )
        .await;
        // The same ids in both tenants: one tenant never suppresses another's events.
        assert_eq!(a.json()["accepted"], *count, "{}", a.text);
        let a = call(
            &app,
            "POST",
            "/v1/track",
            &[("authorization", &bearer(&keys[i].write))],
            json!({"userId": shop, "event": "e", "messageId": "same"}).to_string(),
        )
        .await;
        assert_eq!(a.json()["accepted"], 1);
    }
    for (i, (own, other)) in [("alpha-shop", "beta-shop"), ("beta-shop", "alpha-shop")]
        .iter()
        .enumerate()
    {
        let r = bearer(&keys[i].read);
        let w = bearer(&keys[i].write);
        let a = call(
            &app,
            "GET",
            "/v1/views/sales?group_by=shop",
            &[("authorization", &r)],
            Body::empty(),
        )
        .await;
        assert_eq!(
            a.json()["rows"],
            json!([[
                own,
                if i == 0 { 3 } else { 5 },
                if i == 0 { "3.00" } else { "5.00" }
            ]])
        );
        let a = call(
            &app,
            "GET",
            &format!("/v1/views/sales?where=shop%20%3D%20%27{other}%27"),
            &[("authorization", &r)],
            Body::empty(),
        )
        .await;
        assert_eq!(a.json()["rows"], json!([]), "{}", a.text);
        let a = call(
            &app,
            "GET",
            "/v1/views/signups?group_by=",
            &[("authorization", &r)],
            Body::empty(),
        )
        .await;
        assert_eq!(a.json()["rows"], json!([[1, 1]]), "{}", a.text);
        // Admin routes, including the other tenant's keys: the keys are no admin token.
        let other_name = if i == 0 { "beta" } else { "alpha" };
        for key in [&r, &w] {
            for (method, uri) in [
                ("GET", "/v1/tenants".to_owned()),
                ("POST", "/v1/tenants".to_owned()),
                ("POST", "/v1/schema".to_owned()),
                ("POST", format!("/v1/tenants/{other_name}/keys")),
                (
                    "DELETE",
                    format!("/v1/tenants/{other_name}/keys/tly_r_00000000"),
                ),
            ] {
                let a = call(&app, method, &uri, &[("authorization", key)], "{}").await;
                assert_eq!(
                    a.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {uri}: {}",
                    a.text
                );
            }
        }
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let hub = hub_with(ServerConfig {
        rate_limit: 0.5,
        rate_burst: 2.0,
        ..ServerConfig::default()
    });
    let app = app(hub);
    let keys = setup(&app, &["acme"]).await;
    let r = bearer(&keys[0].read);
    for _ in 0..2 {
        assert_eq!(
            call(
                &app,
                "GET",
                "/v1/views",
                &[("authorization", &r)],
                Body::empty()
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    let a = call(
        &app,
        "GET",
        "/v1/views",
        &[("authorization", &r)],
        Body::empty(),
    )
    .await;
    a.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another key has its own budget.
    let w = bearer(&keys[0].write);
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &w)],
        "[]",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

// The lock is held across awaits on purpose: it keeps the worker from starting while the
// requests queue up.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_loses_nothing() {
    let hub = hub_with(ServerConfig {
        queue_depth: 2,
        ..ServerConfig::default()
    });
    let app = app(hub.clone());
    let keys = setup(&app, &["acme"]).await;
    let w = bearer(&keys[0].write);
    // Warm the key cache without starting the tenant's worker (an empty body fails before).
    call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &w)],
        "",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    let answers = {
        // While the catalog is locked, the tenant's worker cannot start: requests queue up.
        let guard = hub.catalog_lock();
        let mut tasks = Vec::new();
        for n in 0..3 {
            let app = app.clone();
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let body = json!([order(&format!("q{n}"), "s", "1.00", "2026-03-29T10:00:00Z")])
                    .to_string();
                call(
                    &app,
                    "POST",
                    "/v1/streams/orders/events",
                    &[("authorization", &w)],
                    body,
                )
                .await
            }));
            // Let each request reach the queue in turn.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(guard);
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    };
    assert_eq!(answers[0].status, StatusCode::OK, "{}", answers[0].text);
    assert_eq!(answers[1].status, StatusCode::OK, "{}", answers[1].text);
    answers[2].error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(answers[2].headers["retry-after"], "1");
    let a = call(
        &app,
        "GET",
        "/v1/views/sales?group_by=",
        &[("authorization", &bearer(&keys[0].read))],
        Body::empty(),
    )
    .await;
    assert_eq!(a.json()["rows"], json!([[2, "2.00"]]), "{}", a.text);
}

/// Random bodies, content types and encodings on every route: the answer is never a 5xx and
/// always JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_makes_a_5xx() {
    let hub = hub_with(ServerConfig {
        rate_limit: 1e9,
        rate_burst: 1e9,
        ..ServerConfig::default()
    });
    let app = app(hub);
    let keys = setup(&app, &["acme"]).await;
    let w = bearer(&keys[0].write);
    let r = bearer(&keys[0].read);
    let admin = bearer(ADMIN);
    let fragments: [&[u8]; 16] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"\"id\"",
        b"\"batch\"",
        b"1e999",
        b"-0",
        b"\\u0000",
        b"null",
        b"\n",
        b"\xff",
        b"\"amount\":\"9999999999999999999999.99\"",
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let routes: [(&str, &str, &str); 8] = [
        ("POST", "/v1/streams/orders/events", w.as_str()),
        ("POST", "/v1/streams/events/events", w.as_str()),
        ("POST", "/v1/batch", w.as_str()),
        ("POST", "/v1/track", w.as_str()),
        ("POST", "/v1/schema", admin.as_str()),
        ("POST", "/v1/tenants", admin.as_str()),
        ("POST", "/v1/tenants/acme/keys", admin.as_str()),
        ("GET", "/v1/views/sales?where=", r.as_str()),
    ];
    for round in 0..400 {
        let mut body = Vec::new();
        for _ in 0..next() % 12 {
            body.extend_from_slice(fragments[(next() % 16) as usize]);
        }
        let (method, uri, key) = routes[round % routes.len()];
        let mut uri = uri.to_owned();
        if method == "GET" {
            uri.push_str(
                &String::from_utf8_lossy(&body)
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "%20"),
            );
        }
        let content_type = [
            "application/json",
            "application/x-ndjson",
            "text/plain",
            "application/sql",
        ][(next() % 4) as usize];
        let body = if next() % 5 == 0 { gzip(&body) } else { body };
        let encoding = if next() % 5 == 0 { "gzip" } else { "identity" };
        let a = call(
            &app,
            method,
            &uri,
            &[
                ("authorization", key),
                ("content-type", content_type),
                ("content-encoding", encoding),
            ],
            body,
        )
        .await;
        assert!(
            !a.status.is_server_error(),
            "{method} {uri}: {} {}",
            a.status,
            a.text
        );
        if a.status.is_client_error() {
            a.json();
        }
    }
}
