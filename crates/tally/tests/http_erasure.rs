//! GDPR erasure over HTTP: `DELETE /v1/persons/{id}` with a manage key deletes the person's
//! events (an anonymous id takes its linked user id along), corrects the views at once,
//! touches no other tenant, answers the same shape again with zeros, and logs a hash of the id;
//! other keys are refused and bad ids named.

use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

mod common;
use common::app::*;

fn event(id: &str, kind: &str, user: Option<&str>, anon: Option<&str>, at: &str) -> Json {
    json!({"id": id, "event_type": kind, "event_name": "Signed Up", "user_id": user,
           "anonymous_id": anon, "timestamp": at})
}

async fn send(app: &axum::Router, method: &str, uri: &str, key: &str, body: Json) -> Answer {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    call(
        app,
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

async fn manage(app: &axum::Router, tenant: &str) -> String {
    let a = send(
        app,
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        ADMIN,
        json!({"kind": "manage"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    a.json()["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_person_is_erased_with_linked_ids_and_views_follow() {
    let app = tally::server::app(hub_with(Default::default()));
    let keys = setup(&app, &["acme", "other"]).await;
    let (acme, other) = (&keys[0], &keys[1]);
    let manage_key = manage(&app, "acme").await;
    let day = "2026-03-30T08:00:00Z";
    let acme_events = json!([
        event("e1", "track", None, Some("anon-1"), day),
        event("e2", "identify", Some("ann"), Some("anon-1"), day),
        event("e3", "track", Some("ann"), None, day),
        event("e4", "track", Some("bob"), None, day),
        event("e5", "track", None, Some("anon-2"), day),
    ]);
    let a = send(
        &app,
        "POST",
        "/v1/streams/events/events",
        &acme.write,
        acme_events,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = send(
        &app,
        "POST",
        "/v1/streams/events/events",
        &other.write,
        json!([event("o1", "track", Some("ann"), None, day)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);

    // Only a manage key may erase.
    for key in [&acme.read, &acme.write] {
        send(&app, "DELETE", "/v1/persons/anon-1", key, Json::Null)
            .await
            .error(StatusCode::FORBIDDEN, "forbidden");
    }
    let a = call(&app, "DELETE", "/v1/persons/anon-1", &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // The anonymous id was linked to ann: ann's events go with it.
    let a = send(
        &app,
        "DELETE",
        "/v1/persons/anon-1",
        &manage_key,
        Json::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"events_deleted": {"events": 3}, "groups_recomputed": {"signups": 1},
               "not_correctable": []})
    );
    let signups = send(&app, "GET", "/v1/views/signups", &acme.read, Json::Null).await;
    assert_eq!(signups.status, StatusCode::OK, "{}", signups.text);
    let rows = &signups.json()["rows"];
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    // bob's event and anon-2's are left: 2 events, 1 user.
    assert_eq!(rows[0][2], json!(2), "{rows}");
    assert_eq!(rows[0][3], json!(1), "{rows}");
    // The other tenant's ann is another person.
    let theirs = send(&app, "GET", "/v1/views/signups", &other.read, Json::Null).await;
    assert_eq!(theirs.json()["rows"][0][2], json!(1), "{}", theirs.text);

    // Again: nothing left, the same shape.
    let a = send(
        &app,
        "DELETE",
        "/v1/persons/anon-1",
        &manage_key,
        Json::Null,
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"events_deleted": {"events": 0}, "groups_recomputed": {"signups": 0},
               "not_correctable": []})
    );
    // The same event sent again after the erasure is a new event, not a duplicate.
    let a = send(
        &app,
        "POST",
        "/v1/streams/events/events",
        &acme.write,
        json!([event("e3", "track", Some("ann"), None, day)]),
    )
    .await;
    assert_eq!(a.json()["accepted"], json!(1), "{}", a.text);

    // The log keeps a hash of the id, never the id.
    let log = send(&app, "GET", "/v1/erasures", &manage_key, Json::Null).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let items = log.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    let hash: String = Sha256::digest(b"anon-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(items[0]["person_sha256"], json!(hash));
    assert_eq!(items[0]["events_deleted"], json!({"events": 3}));
    assert_eq!(items[0]["ids"], json!(2));
    assert!(!log.text.contains("anon-1") && !log.text.contains("ann"));
    send(&app, "GET", "/v1/erasures", &acme.read, Json::Null)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    send(&app, "GET", "/v1/erasures?limit=0", &manage_key, Json::Null)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");

    // A bad id is named.
    let message = send(&app, "DELETE", "/v1/persons/a%01b", &manage_key, Json::Null)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.contains("person id"), "{message}");
}
