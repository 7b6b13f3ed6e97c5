//! Dashboards over HTTP (`/v1/dashboards`): definitions checked field by field against the
//! catalog, manage keys change them and read keys read them, each widget's data as JSON —
//! a `number` widget's value over its relative range, the previous range and the change in % —
//! with an `ETag` that answers `304` until an event changes the view.

use axum::http::StatusCode;
use serde_json::{Value as Json, json};

mod common;
use common::app::*;

async fn send(app: &axum::Router, method: &str, uri: &str, key: &str, body: Json) -> Answer {
    send_with(app, method, uri, key, body, &[]).await
}

async fn send_with(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: &str,
    body: Json,
    extra: &[(&str, &str)],
) -> Answer {
    let bearer = bearer(key);
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    call(app, method, uri, &headers, body).await
}

fn dashboard() -> Json {
    json!({
        "name": "Sales",
        "widgets": [
            {"title": "Revenue, 24 h", "kind": "number",
             "query": {"view": "sales", "value": "revenue", "from": "-24 hours", "to": "now"}},
            {"title": "Orders per hour", "kind": "line",
             "query": {"view": "sales", "value": "orders", "grain": "hour", "group_by": ["shop"],
                       "from": "-2 days", "to": "now"}},
            {"title": "Shops", "kind": "table",
             "query": {"view": "sales", "group_by": "shop", "order_by": "revenue desc"}},
            {"title": "Revenue (SQL)", "kind": "number", "from": "-24 hours", "to": "now",
             "sql": "SELECT sum(revenue) AS value FROM sales WHERE hour >= :from AND hour < :to"}
        ]
    })
}

#[tokio::test]
async fn dashboards_are_managed_read_and_answer_their_widgets() {
    let app = tally::server::app(hub_with(Default::default()));
    let keys = setup(&app, &["acme", "other"]).await;
    let a = send(
        &app,
        "POST",
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"kind": "manage"}),
    )
    .await;
    let manage = a.json()["key"].as_str().unwrap().to_owned();
    let acme = &keys[0];
    // NOW is 2026-03-30T12:00:00Z: two orders in the last 24 hours, one the day before.
    let orders = json!([
        order("o1", "berlin", "10.00", "2026-03-30T10:00:00Z"),
        order("o2", "paris", "5.00", "2026-03-30T11:30:00Z"),
        order("o3", "berlin", "20.00", "2026-03-29T09:00:00Z"),
        order("o4", "paris", "7.00", "2026-03-20T09:00:00Z"),
    ]);
    let a = send(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &acme.write,
        orders,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);

    // Only a manage key creates; the definition comes back with its id.
    send(&app, "POST", "/v1/dashboards", &acme.read, dashboard())
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    let a = send(&app, "POST", "/v1/dashboards", &manage, dashboard()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let created = a.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["widgets"][1]["query"]["group_by"], json!("shop"));

    // Read keys read.
    let list = send(&app, "GET", "/v1/dashboards", &acme.read, Json::Null).await;
    assert_eq!(
        list.json()["items"][0],
        json!({"id": id, "name": "Sales", "widgets": 4, "updated_at": created["updated_at"]})
    );
    let shown = send(
        &app,
        "GET",
        &format!("/v1/dashboards/{id}"),
        &acme.read,
        Json::Null,
    )
    .await;
    assert_eq!(shown.json(), created);
    send(&app, "GET", "/v1/dashboards", &acme.write, Json::Null)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    // Another tenant does not see it.
    send(
        &app,
        "GET",
        &format!("/v1/dashboards/{id}"),
        &keys[1].read,
        Json::Null,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");

    // The number widget: the view re-grouped over the last 24 hours, and the 24 before.
    let data = |n: usize| format!("/v1/dashboards/{id}/widgets/{n}/data");
    let a = send(&app, "GET", &data(0), &acme.read, Json::Null).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"value": "15.00", "previous": "20.00", "change_pct": -25.0})
    );
    let etag = a.headers["etag"].to_str().unwrap().to_owned();
    // Unchanged: 304.
    let again = send_with(
        &app,
        "GET",
        &data(0),
        &acme.read,
        Json::Null,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    // The same through SQL, with :from and :to bound to the ranges.
    let a = send(&app, "GET", &data(3), &acme.read, Json::Null).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["value"], json!("15.00"), "{}", a.text);
    assert_eq!(a.json()["previous"], json!("20.00"), "{}", a.text);

    // A new order changes the answer and its ETag.
    let a = send(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &acme.write,
        json!([order("o5", "rome", "5.00", "2026-03-30T11:45:00Z")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let changed = send_with(
        &app,
        "GET",
        &data(0),
        &acme.read,
        Json::Null,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(
        changed.json(),
        json!({"value": "20.00", "previous": "20.00", "change_pct": 0.0})
    );

    // A line widget answers as a view query: hours per shop in range.
    let line = send(&app, "GET", &data(1), &acme.read, Json::Null)
        .await
        .json();
    let columns: Vec<&str> = line["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["hour", "shop", "orders", "revenue"]);
    assert_eq!(line["rows"].as_array().unwrap().len(), 4, "{line}");
    // The range picker's range replaces the widget's own.
    let week = send(
        &app,
        "GET",
        &format!("{}?from=-14%20days&to=now", data(1)),
        &acme.read,
        Json::Null,
    )
    .await
    .json();
    assert_eq!(week["rows"].as_array().unwrap().len(), 5, "{week}");
    // A table widget: per shop, by revenue.
    let table = send(&app, "GET", &data(2), &acme.read, Json::Null)
        .await
        .json();
    assert_eq!(table["rows"][0][0], json!("berlin"), "{table}");
    send(&app, "GET", &data(4), &acme.read, Json::Null)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let message = send(
        &app,
        "GET",
        &format!("{}?from=yesterday", data(0)),
        &acme.read,
        Json::Null,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        message.starts_with("from: 'yesterday' is not a time"),
        "{message}"
    );

    // PUT replaces; DELETE removes.
    let mut changed = dashboard();
    changed["name"] = json!("Sales (EU)");
    let a = send(
        &app,
        "PUT",
        &format!("/v1/dashboards/{id}"),
        &manage,
        changed,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["name"], json!("Sales (EU)"));
    assert_eq!(a.json()["created_at"], created["created_at"]);
    let a = send(
        &app,
        "DELETE",
        &format!("/v1/dashboards/{id}"),
        &manage,
        Json::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    send(
        &app,
        "GET",
        &format!("/v1/dashboards/{id}"),
        &acme.read,
        Json::Null,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_definitions_name_the_field() {
    let app = tally::server::app(hub_with(Default::default()));
    setup(&app, &["acme"]).await;
    let a = send(
        &app,
        "POST",
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"kind": "manage"}),
    )
    .await;
    let manage = a.json()["key"].as_str().unwrap().to_owned();
    let widget = |w: Json| json!({"name": "d", "widgets": [w]});
    let cases = [
        (json!({"widgets": []}), "name: must be text"),
        (json!({"name": "d"}), "widgets: must be an array"),
        (
            json!({"name": "d", "widgets": [], "colour": 1}),
            "colour: is not a field",
        ),
        (
            widget(json!({"title": "t", "kind": "pie", "query": {"view": "sales"}})),
            "widgets[0].kind: must be number, line, bar or table",
        ),
        (
            widget(json!({"title": "t", "kind": "line"})),
            "widgets[0]: needs a query",
        ),
        (
            widget(
                json!({"title": "t", "kind": "line", "query": {"view": "sales"}, "sql": "SELECT 1"}),
            ),
            "widgets[0]: has both query and sql",
        ),
        (
            widget(json!({"title": "t", "kind": "number", "query": {"view": "sales"}})),
            "widgets[0].query.value: a number widget names",
        ),
        (
            widget(json!({"title": "t", "kind": "line", "query": {"view": "nope"}})),
            "widgets[0].query.view: there is no live view nope",
        ),
        (
            widget(
                json!({"title": "t", "kind": "number", "query": {"view": "sales", "value": "profit"}}),
            ),
            "widgets[0].query.value: profit is not a column of the answer",
        ),
        (
            widget(
                json!({"title": "t", "kind": "line", "query": {"view": "sales", "from": "last week"}}),
            ),
            "widgets[0].query.from: 'last week' is not a time",
        ),
        (
            widget(
                json!({"title": "t", "kind": "line", "query": {"view": "sales", "grain": "fortnight"}}),
            ),
            "widgets[0].query.grain: 'fortnight' is not a grain",
        ),
        (
            widget(
                json!({"title": "t", "kind": "line", "query": {"view": "sales", "group_by": "country"}}),
            ),
            "widgets[0].query: ",
        ),
        (
            widget(json!({"title": "t", "kind": "table", "sql": "DELETE FROM sales"})),
            "widgets[0].sql: ",
        ),
    ];
    for (body, expected) in cases {
        let message = send(&app, "POST", "/v1/dashboards", &manage, body.clone())
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.starts_with(expected), "{body}: {message}");
    }
}
