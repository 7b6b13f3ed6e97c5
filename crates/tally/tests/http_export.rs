//! Exports over HTTP: CSV and NDJSON equal the view query's rows; Parquet read back with DuckDB
//! (installed by this test into a virtual environment under the target directory, once) equals
//! them with the columns' types; incremental exports after a random sequence of ingests
//! reassemble exactly the final state, for views (re-grouped too) and streams; a cursor past
//! deleted events is refused; only a manage key exports raw events.
//!
//! Needs `python3` with `venv` and access to PyPI on the first run; it fails (never skips)
//! without them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use axum::http::StatusCode;
use serde_json::{Value as Json, json};

mod common;
use common::Rng;
use common::app::*;

async fn get(app: &axum::Router, uri: &str, key: &str) -> Answer {
    call(app, "GET", uri, &[("authorization", &bearer(key))], "").await
}

async fn post(app: &axum::Router, uri: &str, key: &str, body: Json) -> Answer {
    call(
        app,
        "POST",
        uri,
        &[
            ("authorization", &bearer(key)),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

async fn manage(app: &axum::Router) -> String {
    let a = post(
        app,
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"kind": "manage"}),
    )
    .await;
    a.json()["key"].as_str().unwrap().to_owned()
}

fn ndjson(text: &str) -> Vec<Json> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The view query's answer as objects, for comparing with NDJSON.
fn objects(answer: &Json) -> Vec<Json> {
    let names: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            Json::Object(
                names
                    .iter()
                    .zip(row.as_array().unwrap())
                    .map(|(n, v)| ((*n).to_owned(), v.clone()))
                    .collect(),
            )
        })
        .collect()
}

fn cursor(a: &Answer) -> String {
    a.headers["tally-cursor"].to_str().unwrap().to_owned()
}

fn random_orders(rng: &mut Rng, n: usize, ids: u64) -> Json {
    let shops = ["berlin", "paris", "rome", "oslo"];
    Json::Array(
        (0..n)
            .map(|_| {
                let id = rng.below(ids);
                let hour = rng.below(72);
                json!({
                    "id": format!("o{id}"),
                    "shop": shops[rng.below(4) as usize],
                    "amount": format!("{}.{:02}", rng.below(500), rng.below(100)),
                    "at": format!("2026-03-{:02}T{:02}:{:02}:00Z", 27 + hour / 24, hour % 24, rng.below(60)),
                })
            })
            .collect(),
    )
}

#[tokio::test]
async fn csv_and_ndjson_equal_the_query_and_incremental_exports_reassemble_the_state() {
    let app = tally::server::app(hub_with(Default::default()));
    let keys = setup(&app, &["acme"]).await;
    let manage = manage(&app).await;
    let key = &keys[0];
    let mut rng = Rng(0xe4_9047);
    // Views, as stored and re-grouped to days per shop; the stream's events.
    let views = ["/v1/views/sales", "/v1/views/sales?grain=day&group_by=shop"];
    let mut reassembled: Vec<BTreeMap<String, Json>> = vec![BTreeMap::new(); views.len()];
    let mut cursors: Vec<Option<String>> = vec![None; views.len()];
    let mut events: Vec<Json> = Vec::new();
    let mut stream_cursor: Option<String> = None;
    for round in 0..12 {
        if round > 0 {
            let n = 1 + rng.below(40) as usize;
            let batch = random_orders(&mut rng, n, 300);
            let a = post(&app, "/v1/streams/orders/events", &key.write, batch).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        }
        for (i, view) in views.iter().enumerate() {
            let (path, query) = view.split_once('?').unwrap_or((view, ""));
            let mut params: Vec<String> = vec!["format=ndjson".into()];
            if !query.is_empty() {
                params.push(query.to_owned());
            }
            if let Some(c) = &cursors[i] {
                params.push(format!("after={c}"));
            }
            let a = get(
                &app,
                &format!("{path}/export?{}", params.join("&")),
                &key.read,
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
            assert_eq!(a.headers["content-type"], "application/x-ndjson");
            for row in ndjson(&a.text) {
                let group = format!(
                    "{}|{}",
                    row["hour"].as_str().or(row["day"].as_str()).unwrap_or(""),
                    row["shop"]
                );
                reassembled[i].insert(group, row);
            }
            cursors[i] = Some(cursor(&a));
            // The state so far equals the query's answer.
            let answer = get(&app, view, &key.read).await.json();
            let full: Vec<Json> = reassembled[i].values().cloned().collect();
            let mut expected = objects(&answer);
            let group = |r: &Json| {
                format!(
                    "{}|{}",
                    r["hour"].as_str().or(r["day"].as_str()).unwrap_or(""),
                    r["shop"]
                )
            };
            expected.sort_by_key(group);
            assert_eq!(full, expected, "{view} after round {round}");
        }
        // The stream: incremental exports add up to every event, once.
        let uri = match &stream_cursor {
            Some(c) => format!("/v1/streams/orders/export?after={c}"),
            None => "/v1/streams/orders/export".to_owned(),
        };
        let a = get(&app, &uri, &manage).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        events.extend(ndjson(&a.text));
        stream_cursor = Some(cursor(&a));
    }
    let seqs: Vec<i64> = events.iter().map(|e| e["_seq"].as_i64().unwrap()).collect();
    let all = ndjson(&get(&app, "/v1/streams/orders/export", &manage).await.text);
    assert_eq!(events, all);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // CSV equals the query's rows as text.
    let answer = get(&app, "/v1/views/sales", &key.read).await.json();
    let csv_text = get(&app, "/v1/views/sales/export?format=csv", &key.read)
        .await
        .text;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, ["hour", "shop", "orders", "revenue"]);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let expected: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| match v {
                    Json::String(s) => s.clone(),
                    Json::Null => String::new(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    assert_eq!(rows, expected);

    // Only a manage key exports raw events; bad parameters are named.
    get(&app, "/v1/streams/orders/export", &key.read)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    let m = get(&app, "/v1/views/sales/export?format=xml", &key.read)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(m.starts_with("format: 'xml'"), "{m}");
    let m = get(&app, "/v1/views/sales/export?after=soon", &key.read)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(m.starts_with("after: 'soon'"), "{m}");

    // An export after the newest cursor is empty, and keeps the cursor.
    let last = cursor(&get(&app, "/v1/views/sales/export", &key.read).await);
    let a = get(
        &app,
        &format!("/v1/views/sales/export?after={last}"),
        &key.read,
    )
    .await;
    assert!(a.text.is_empty(), "{}", a.text);
    assert_eq!(cursor(&a), last);
}

/// A cursor older than deleted events is refused with 409 and a way forward.
#[test]
fn export_after_deleted_events_is_refused() {
    use tally::app::{Config, Tally};
    let store = tally_store::Store::memory();
    let mut tally = Tally::with_store(store, Config::default()).unwrap();
    tally
        .apply_schema(
            "CREATE STREAM visits (who TEXT, at TIMESTAMP NOT NULL) WITH (event_time = 'at', person = 'who');
             CREATE MATERIALIZED VIEW daily AS SELECT time_bucket('1 day', at) AS day, count(*) AS n FROM visits GROUP BY 1;",
        )
        .unwrap();
    tally.create_tenant("acme", "UTC").unwrap();
    let mut runtime = tally.open_tenant("acme").unwrap();
    let stream = tally.stream("visits").unwrap();
    let rows = |who: &str| {
        vec![
            tally_views::Value::text(who),
            tally_views::Value::Timestamp(
                tally_views::Timestamp::parse("2026-03-01T10:00:00Z").unwrap(),
            ),
        ]
    };
    runtime.append(&stream, vec![rows("ann")]).unwrap();
    let req = tally_views::QueryRequest::default();
    let (_, cursor) = runtime.export_view("daily", &req, None).unwrap();
    runtime
        .append(&stream, vec![rows("bob"), rows("cy")])
        .unwrap();
    let (changed, next) = runtime.export_view("daily", &req, Some(cursor)).unwrap();
    assert_eq!(changed.rows.len(), 1);
    assert_eq!(next, 3);
    runtime
        .erase_person(
            "bob",
            tally_views::Timestamp::parse("2026-03-02T00:00:00Z").unwrap(),
        )
        .unwrap();
    let error = runtime
        .export_view("daily", &req, Some(cursor))
        .unwrap_err();
    assert!(
        error.to_string().contains("export again without after"),
        "{error}"
    );
    // From the cursor after the erasure on, it works again.
    let (nothing, _) = runtime.export_view("daily", &req, Some(3)).unwrap();
    assert!(nothing.rows.is_empty());
}

/// A virtual environment with DuckDB and pyarrow, made once per target directory.
fn venv() -> PathBuf {
    common::python_venv(
        "export-venv",
        &["duckdb==1.4.2", "pyarrow==22.0.0", "pytz==2025.2"],
    )
}

const READ_BACK: &str = r#"
import json, sys
import duckdb, pyarrow.parquet as pq
path = sys.argv[1]
types = [[r[0], r[1]] for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall()]
rows = []
for row in duckdb.sql(f"SELECT * FROM '{path}'").fetchall():
    out = []
    for v in row:
        if v is None: out.append(None)
        elif hasattr(v, "isoformat"): out.append(v.astimezone(__import__("datetime").timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif type(v).__name__ == "Decimal": out.append(str(v))
        else: out.append(v)
    rows.append(out)
arrow = [[f.name, str(f.type)] for f in pq.read_table(path).schema]
print(json.dumps({"types": types, "rows": rows, "arrow": arrow}))
"#;

#[tokio::test]
async fn parquet_reads_back_in_duckdb_and_pyarrow_with_its_types() {
    let python = venv();
    let app = tally::server::app(hub_with(Default::default()));
    let keys = setup(&app, &["acme"]).await;
    let manage = manage(&app).await;
    let key = &keys[0];
    let mut rng = Rng(0x9a_7e7);
    let a = post(
        &app,
        "/v1/streams/orders/events",
        &key.write,
        random_orders(&mut rng, 80, 1000),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let read_back = |uri: String, key: String, file: &str| {
        let app = app.clone();
        let path = dir.path().join(file);
        let python = python.clone();
        async move {
            let a = call(&app, "GET", &uri, &[("authorization", &bearer(&key))], "").await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
            assert_eq!(a.headers["content-type"], "application/vnd.apache.parquet");
            // The body as bytes: `call` reads it lossily as text, so fetch it again raw.
            let bytes = raw(&app, &uri, &key).await;
            std::fs::write(&path, bytes).unwrap();
            let out = Command::new(&python)
                .args(["-c", READ_BACK])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Json>(&out.stdout).unwrap()
        }
    };
    let got = read_back(
        "/v1/views/sales/export?format=parquet".into(),
        key.read.clone(),
        "sales.parquet",
    )
    .await;
    assert_eq!(
        got["types"],
        json!([
            ["hour", "TIMESTAMP WITH TIME ZONE"],
            ["shop", "VARCHAR"],
            ["orders", "BIGINT"],
            ["revenue", "DECIMAL(38,2)"]
        ])
    );
    assert_eq!(
        got["arrow"],
        json!([
            ["hour", "timestamp[us, tz=UTC]"],
            ["shop", "string"],
            ["orders", "int64"],
            ["revenue", "decimal128(38, 2)"]
        ])
    );
    let answer = get(&app, "/v1/views/sales", &key.read).await.json();
    assert_eq!(got["rows"], answer["rows"]);

    let got = read_back(
        "/v1/streams/orders/export?format=parquet".into(),
        manage.clone(),
        "orders.parquet",
    )
    .await;
    assert_eq!(got["types"][0], json!(["_seq", "BIGINT"]));
    assert_eq!(got["types"][3], json!(["amount", "DECIMAL(38,2)"]));
    let events = ndjson(&get(&app, "/v1/streams/orders/export", &manage).await.text);
    assert_eq!(got["rows"].as_array().unwrap().len(), events.len());
    for (row, event) in got["rows"].as_array().unwrap().iter().zip(&events) {
        assert_eq!(row[0], event["_seq"]);
        assert_eq!(row[3], event["amount"]);
        assert_eq!(row[4], event["at"]);
    }
}

/// The body of a GET as bytes.
async fn raw(app: &axum::Router, uri: &str, key: &str) -> Vec<u8> {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .uri(uri)
        .header("authorization", bearer(key))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}
