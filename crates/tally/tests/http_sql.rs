//! `POST /v1/sql`: the route's contract (answer shape, keys, parameters, error codes, limits)
//! and tenant isolation under hostile SQL, on SQLite and PostgreSQL as well as in memory.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use tally::app::{Clock, Config, Location, Tally};
use tally::server::{Hub, ServerConfig, app};
use tally_views::Timestamp;

mod common;
use common::app::*;

fn hub_on(location: &Location, settings: ServerConfig) -> Arc<Hub> {
    let config = Config {
        clock: Clock::fixed(Timestamp::parse(NOW).unwrap()),
        ..Config::default()
    };
    let tally = Tally::open(location, config).unwrap();
    Arc::new(Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            ..settings
        },
    ))
}

async fn sql(app: &Router, key: &str, body: Json) -> Answer {
    call(
        app,
        "POST",
        "/v1/sql",
        &[
            ("authorization", &bearer(key)),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// Orders for a tenant's shop: `n` of them, 1.00 each, one per hour from 09:00 UTC.
async fn orders(app: &Router, write_key: &str, shop: &str, n: usize) {
    let events: Vec<Json> = (0..n)
        .map(|i| {
            order(
                &format!("{shop}-{i}"),
                shop,
                "1.00",
                &format!("2026-03-30T{:02}:00:00Z", 9 + i % 3),
            )
        })
        .collect();
    let a = call(
        app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &bearer(write_key))],
        json!(events).to_string(),
    )
    .await;
    assert_eq!(a.json()["accepted"], n, "{}", a.text);
}

#[tokio::test]
async fn sql_answers_like_a_view_query() {
    let app = app(hub_on(&Location::Memory, ServerConfig::default()));
    let keys = setup(&app, &["alpha"]).await;
    orders(&app, &keys[0].write, "alpha-shop", 5).await;
    let a = sql(
        &app,
        &keys[0].read,
        json!({"sql": "SELECT shop, sum(orders) AS orders, sum(revenue) AS revenue, \
                       rank() OVER (ORDER BY sum(orders) DESC) AS rank, \
                       max(hour) > now() - interval '1 day' AS recent \
                       FROM sales WHERE shop = :shop GROUP BY shop",
               "params": {"shop": "alpha-shop"}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({
            "columns": [
                {"name": "shop", "type": "TEXT"},
                {"name": "orders", "type": "BIGINT"},
                {"name": "revenue", "type": "DECIMAL(38,2)"},
                {"name": "rank", "type": "BIGINT"},
                {"name": "recent", "type": "BOOLEAN"}
            ],
            "rows": [["alpha-shop", 5, "5.00", 1, true]]
        })
    );
    // Time buckets are TIMESTAMPs, written as RFC 3339 UTC; view_at re-groups by merging.
    let a = sql(
        &app,
        &keys[0].read,
        json!({"sql": "SELECT * FROM view_at('sales', grain => 'day')"}),
    )
    .await;
    assert_eq!(
        a.json()["rows"],
        json!([["2026-03-29T22:00:00Z", "alpha-shop", 5, "5.00"]]),
        "{}",
        a.text
    );
    // The raw events of a stream.
    let a = sql(
        &app,
        &keys[0].read,
        json!({"sql": "SELECT count(*) AS n FROM orders"}),
    )
    .await;
    assert_eq!(a.json()["rows"], json!([[5]]), "{}", a.text);
}

#[tokio::test]
async fn sql_errors_are_4xx_with_their_reason() {
    let settings = ServerConfig {
        sql_limits: tally::sql::Limits {
            max_rows: 2,
            ..tally::sql::Limits::default()
        },
        ..ServerConfig::default()
    };
    let app = app(hub_on(&Location::Memory, settings));
    let keys = setup(&app, &["alpha"]).await;
    orders(&app, &keys[0].write, "alpha-shop", 3).await;
    let read = &keys[0].read;
    let m = sql(&app, read, json!({"sql": "DELETE FROM orders"}))
        .await
        .error(StatusCode::BAD_REQUEST, "read_only");
    assert!(m.contains("only read-only queries"), "{m}");
    let m = sql(&app, read, json!({"sql": "SELECT * FROM nowhere"}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_sql");
    assert!(m.contains("no view, table or stream called nowhere"), "{m}");
    let m = sql(&app, read, json!({"sql": "SELEC 1"}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_sql");
    assert!(m.contains("cannot parse"), "{m}");
    let m = sql(
        &app,
        read,
        json!({"sql": "SELECT * FROM sales WHERE orders > :n", "params": {"n": "many"}}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(m.contains("parameter n"), "{m}");
    let m = sql(&app, read, json!({"sql": "SELECT * FROM orders"}))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "answer_too_large");
    assert!(m.contains("more than 2 rows"), "{m}");
    sql(&app, read, json!({"sql": "SELECT 1 / 0"}))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "query_failed");
    sql(&app, read, json!({"query": "SELECT 1"}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    sql(&app, &keys[0].write, json!({"sql": "SELECT 1"}))
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    sql(&app, "tly_r_nonsense", json!({"sql": "SELECT 1"}))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
}

/// Whatever the SQL, one tenant's key reads only that tenant's rows.
async fn isolation(location: Location) {
    // Opening a PostgreSQL store blocks (its client runs a runtime of its own).
    let hub = tokio::task::spawn_blocking(move || hub_on(&location, ServerConfig::default()))
        .await
        .unwrap();
    let app = app(hub);
    let keys = setup(&app, &["alpha", "beta"]).await;
    orders(&app, &keys[0].write, "alpha-shop", 3).await;
    orders(&app, &keys[1].write, "beta-shop", 4).await;
    apply(&app, SHOPS).await;
    for (i, shop) in ["alpha-shop", "beta-shop"].iter().enumerate() {
        let a = put_rows(
            &app,
            &keys[i].write,
            &json!([{"shop": shop, "name": "mine"}]),
        )
        .await;
        assert_eq!(a.json()["upserted"], 1, "{}", a.text);
    }
    let hostile = [
        "SELECT shop, count(*) FROM shops GROUP BY shop",
        "SELECT s.shop FROM shops s FULL JOIN sales v ON true",
        "SELECT shop FROM shops UNION SELECT shop FROM orders",
        "SELECT shop, count(*) FROM orders GROUP BY shop",
        "SELECT DISTINCT shop FROM sales",
        "SELECT shop FROM sales UNION ALL SELECT shop FROM orders",
        "SELECT shop FROM orders WHERE shop <> 'alpha-shop' OR true",
        "WITH x AS (SELECT * FROM view_at('sales', group_by => 'shop')) SELECT shop FROM x",
        "SELECT shop FROM sales s1 CROSS JOIN (SELECT 1) t",
    ];
    for (i, own) in ["alpha-shop", "beta-shop"].iter().enumerate() {
        for q in hostile {
            let a = sql(&app, &keys[i].read, json!({ "sql": q })).await;
            assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.text);
            for row in a.json()["rows"].as_array().unwrap() {
                assert_eq!(&row[0], own, "{q}: {}", a.text);
            }
        }
        for q in [
            "SELECT * FROM beta.orders",
            "SELECT * FROM tally.orders",
            "SELECT * FROM \"orders#keys\"",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM tally_streams",
            "SELECT * FROM tenants",
        ] {
            let a = sql(&app, &keys[i].read, json!({ "sql": q })).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}: {}", a.text);
        }
    }
}

const SHOPS: &str =
    "CREATE TABLE shops (shop TEXT PRIMARY KEY, name TEXT NOT NULL, opened TIMESTAMP)";

async fn apply(app: &Router, schema: &'static str) {
    let a = call(
        app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", &bearer(ADMIN)),
            ("content-type", "application/sql"),
        ],
        schema,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

async fn put_rows(app: &Router, key: &str, body: &Json) -> Answer {
    call(
        app,
        "PUT",
        "/v1/tables/shops/rows",
        &[("authorization", &bearer(key))],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn tables_upsert_delete_and_join() {
    let app = app(hub_on(&Location::Memory, ServerConfig::default()));
    let keys = setup(&app, &["alpha"]).await;
    orders(&app, &keys[0].write, "alpha-shop", 3).await;
    apply(&app, SHOPS).await;
    let rows = json!([
        {"shop": "alpha-shop", "name": "Alpha", "opened": "2026-01-01T00:00:00Z"},
        {"shop": "bad", "name": "Bad", "opened": "yesterday"},
        {"shop": "gamma-shop", "name": "Gamma"}
    ]);
    let a = put_rows(&app, &keys[0].write, &rows).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["upserted"], 2);
    let rejected = &a.json()["rejected"];
    assert_eq!(rejected[0]["index"], 1, "{}", a.text);
    assert!(
        rejected[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("field 'opened'"),
        "{}",
        a.text
    );
    // One object, and NDJSON, are bodies too.
    let a = put_rows(
        &app,
        &keys[0].write,
        &json!({"shop": "delta-shop", "name": "Delta"}),
    )
    .await;
    assert_eq!(a.json(), json!({"upserted": 1, "rejected": []}));
    let a = call(
        &app,
        "PUT",
        "/v1/tables/shops/rows",
        &[
            ("authorization", &bearer(&keys[0].write)),
            ("content-type", "application/x-ndjson"),
        ],
        "{\"shop\":\"e\",\"name\":\"E\"}\n{\"shop\":\"f\",\"name\":\"F\"}\n",
    )
    .await;
    assert_eq!(a.json(), json!({"upserted": 2, "rejected": []}));
    // A query joins the live view with the table.
    let a = sql(
        &app,
        &keys[0].read,
        json!({"sql": "SELECT t.name, sum(s.orders) AS orders FROM sales s JOIN shops t USING (shop) GROUP BY t.name"}),
    )
    .await;
    assert_eq!(a.json()["rows"], json!([["Alpha", 3]]), "{}", a.text);
    // Keys: writing needs the write key; a read key is refused.
    put_rows(&app, &keys[0].read, &rows)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    let delete = |key: String, path: &'static str| {
        let app = app.clone();
        async move {
            call(
                &app,
                "DELETE",
                path,
                &[("authorization", &bearer(&key))],
                "",
            )
            .await
        }
    };
    let a = delete(keys[0].write.clone(), "/v1/tables/shops/rows/gamma-shop").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    delete(keys[0].write.clone(), "/v1/tables/shops/rows/gamma-shop")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    delete(keys[0].write.clone(), "/v1/tables/nope/rows/x")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    delete(keys[0].read.clone(), "/v1/tables/shops/rows/e")
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    let a = put_rows(&app, &keys[0].write, &json!("[1,")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = call(
        &app,
        "PUT",
        "/v1/tables/shops/rows",
        &[("authorization", &bearer(&keys[0].write))],
        "[1,",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let a = sql(
        &app,
        &keys[0].read,
        json!({"sql": "SELECT shop FROM shops ORDER BY shop"}),
    )
    .await;
    assert_eq!(
        a.json()["rows"],
        json!([["alpha-shop"], ["delta-shop"], ["e"], ["f"]])
    );
}

/// An event on which a view's expression fails is kept: the expression gives NULL for it, and
/// the view query and `/metrics` count it.
#[tokio::test]
async fn failing_expressions_keep_the_event_and_are_counted() {
    let app = app(hub_on(&Location::Memory, ServerConfig::default()));
    let keys = setup(&app, &["alpha"]).await;
    apply(
        &app,
        "CREATE MATERIALIZED VIEW per_order AS SELECT shop, count(*) AS n, \
         sum(100 / CAST(amount AS BIGINT)) AS inverse FROM orders GROUP BY shop",
    )
    .await;
    let events = json!([
        order("o1", "s", "4.00", "2026-03-30T09:00:00Z"),
        order("o2", "s", "0.00", "2026-03-30T09:00:00Z"),
    ]);
    let a = call(
        &app,
        "POST",
        "/v1/streams/orders/events",
        &[("authorization", &bearer(&keys[0].write))],
        events.to_string(),
    )
    .await;
    assert_eq!(a.json()["accepted"], 2, "{}", a.text);
    let a = call(
        &app,
        "GET",
        "/v1/views/per_order",
        &[("authorization", &bearer(&keys[0].read))],
        "",
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"columns": [{"name": "shop", "type": "TEXT"}, {"name": "n", "type": "BIGINT"},
                           {"name": "inverse", "type": "BIGINT"}],
               "rows": [["s", 2, 25]], "expression_failures": 1}),
        "{}",
        a.text
    );
    // A view without failures answers the plain shape.
    let a = call(
        &app,
        "GET",
        "/v1/views/sales?group_by=shop",
        &[("authorization", &bearer(&keys[0].read))],
        "",
    )
    .await;
    assert!(a.json().get("expression_failures").is_none(), "{}", a.text);
    // The metrics count it once the worker has run its periodic work.
    let mut seen = String::new();
    for _ in 0..50 {
        let m = call(&app, "GET", "/metrics", &[], "").await;
        seen = m.text;
        if seen
            .contains("tally_view_expression_failures_total{tenant=\"alpha\",view=\"per_order\"} 1")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no failure count in /metrics:\n{seen}");
}

#[tokio::test]
async fn isolation_in_memory() {
    isolation(Location::Memory).await;
}

#[tokio::test]
async fn isolation_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    isolation(Location::Directory(dir.path().to_owned())).await;
}

#[test]
fn isolation_on_postgres() {
    // Made outside the async runtime: the PostgreSQL client blocks.
    let pg = tally_store::testing::PgScratch::new();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(isolation(Location::Postgres(pg.config())));
}

#[tokio::test]
async fn saved_queries_read_like_views() {
    let app = app(hub_on(&Location::Memory, ServerConfig::default()));
    let keys = setup(&app, &["alpha"]).await;
    orders(&app, &keys[0].write, "alpha-shop", 5).await;
    orders(&app, &keys[0].write, "other-shop", 2).await;
    let a = call(
        &app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", &bearer(ADMIN)),
            ("content-type", "application/sql"),
        ],
        "CREATE VIEW shop_orders AS SELECT shop, sum(orders) AS orders FROM sales \
         WHERE shop = :shop AND hour >= :since GROUP BY shop",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let auth = bearer(&keys[0].read);
    let get = |uri: String| {
        let (app, auth) = (app.clone(), auth.clone());
        async move { call(&app, "GET", &uri, &[("authorization", &auth)], "").await }
    };
    let a =
        get("/v1/views/shop_orders?shop=alpha-shop&since=2026-03-30T10:00:00Z".to_owned()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"columns": [{"name": "shop", "type": "TEXT"}, {"name": "orders", "type": "BIGINT"}],
               "rows": [["alpha-shop", 3]]})
    );
    // A missing or mistyped parameter is a 400 naming it; so is one the query does not have.
    let m = get("/v1/views/shop_orders?shop=alpha-shop".to_owned())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(m.contains("parameter since: missing"), "{m}");
    let m = get("/v1/views/shop_orders?shop=alpha-shop&since=soon".to_owned())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(m.contains("parameter since"), "{m}");
    let m = get("/v1/views/shop_orders?shop=x&since=2026-01-01&grain=day".to_owned())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(m.contains("parameter grain"), "{m}");
    // Listed among the views, with its parameters and columns.
    let a = get("/v1/views".to_owned()).await;
    let items = a.json()["items"].as_array().unwrap().clone();
    let saved = items
        .iter()
        .find(|v| v["name"] == "shop_orders")
        .unwrap_or_else(|| panic!("{}", a.text));
    assert_eq!(saved["kind"], "saved_query");
    assert_eq!(saved["params"], json!(["shop", "since"]));
    assert_eq!(
        saved["columns"][1],
        json!({"name": "orders", "type": "BIGINT"})
    );
    let live = items.iter().find(|v| v["name"] == "sales").unwrap();
    assert_eq!(
        (&live["kind"], &live["stream"]),
        (&json!("live"), &json!("orders"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_take_turns() {
    // One query at a time (the default): the others wait for the slot instead of failing.
    let app = app(hub_on(&Location::Memory, ServerConfig::default()));
    let keys = setup(&app, &["alpha"]).await;
    orders(&app, &keys[0].write, "alpha-shop", 5).await;
    let asks = (0..8).map(|i| {
        let (app, key) = (app.clone(), keys[0].read.clone());
        tokio::spawn(async move {
            sql(
                &app,
                &key,
                json!({"sql": format!("SELECT count(*) + {i} AS n FROM orders")}),
            )
            .await
        })
    });
    for (i, ask) in asks.enumerate() {
        let a = ask.await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.json()["rows"], json!([[5 + i]]));
    }
}
