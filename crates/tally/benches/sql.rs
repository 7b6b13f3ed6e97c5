//! Query-time SQL over HTTP beside DuckDB on the same rows, in the same run (issue 12's figures
//! in docs/performance.md):
//!
//! 1. `POST /v1/sql` `SELECT shop, orders, revenue FROM shops`: a live view of 1,000 rows, read
//!    whole (stored rows ⊕ delta, into DataFusion, the answer as JSON), p50 and p99;
//! 2. a 100,000-row entity view (`customers`) joined with a 10,000-row table (`customer_info`),
//!    ranked with `rank() OVER (ORDER BY revenue DESC)`, the top 100, p50 and p99;
//!
//! against DuckDB (PyPI, in-process, default threads) running the same SQL over the same rows
//! (the view answers and the table, loaded as tables), p50.
//!
//! `cargo bench -p tally --bench sql` (`TALLY_BENCH_CUSTOMERS`, default 100,000). `cargo test
//! --benches` runs Tally's side once on 2,000 customers and skips DuckDB.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, serve};

#[path = "workload.rs"]
mod workload;

const ADMIN: &str = "sql-bench";

const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, customer_id TEXT NOT NULL, shop TEXT NOT NULL,
  amount DECIMAL(12,2) NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW customers AS
  SELECT customer_id, count(*) AS orders, sum(amount) AS revenue, max(at) AS last_at
  FROM orders GROUP BY customer_id;
CREATE MATERIALIZED VIEW shops AS
  SELECT shop, count(*) AS orders, sum(amount) AS revenue FROM orders GROUP BY shop;
CREATE TABLE customer_info (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL, segment TEXT);
";

const SELECT_VIEW: &str = "SELECT shop, orders, revenue FROM shops";
const JOIN_RANKED: &str = "SELECT c.customer_id, i.name, i.segment, c.revenue, \
    rank() OVER (ORDER BY c.revenue DESC) AS r \
    FROM customers c JOIN customer_info i ON i.customer_id = c.customer_id \
    ORDER BY r, c.customer_id LIMIT 100";

/// The DuckDB side: loads the CSVs as tables, runs each query `n` times; prints p50 seconds.
const DUCKDB: &str = r#"
import json, sys, time, duckdb
d, n = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"CREATE TABLE shops AS SELECT * FROM read_csv('{d}/shops.csv', header = true, columns = {{'shop': 'VARCHAR', 'orders': 'BIGINT', 'revenue': 'DECIMAL(38,2)'}})")
con.execute(f"CREATE TABLE customers AS SELECT * FROM read_csv('{d}/customers.csv', header = true, columns = {{'customer_id': 'VARCHAR', 'orders': 'BIGINT', 'revenue': 'DECIMAL(38,2)', 'last_at': 'TIMESTAMPTZ'}})")
con.execute(f"CREATE TABLE customer_info AS SELECT * FROM read_csv('{d}/customer_info.csv', header = true, columns = {{'customer_id': 'VARCHAR', 'name': 'VARCHAR', 'segment': 'VARCHAR'}})")
out = {"version": duckdb.__version__}
for name, sql in [("select_view", sys.argv[3]), ("join_ranked", sys.argv[4])]:
    times = []
    for i in range(n + 5):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        if i >= 5:
            times.append(time.perf_counter() - started)
    times.sort()
    out[name] = times[len(times) // 2]
    out[name + "_rows"] = len(rows)
print(json.dumps(out))
"#;

fn main() {
    let quick = std::env::args().all(|a| a != "--bench");
    let customers: usize = std::env::var("TALLY_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 100_000 });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    load(&data, dir.path(), customers);
    let n = if quick { 10 } else { 200 };
    let (select, join, rows) = latencies(&data, n);
    println!(
        "customers: {customers}, table rows: {}, shops: 1,000; {n} requests each",
        customers / 10
    );
    if quick {
        println!(
            "tally only (quick run; DuckDB runs under cargo bench): select p50 {:?}, join p50 {:?}",
            select.0, join.0
        );
        return;
    }
    export(&data, dir.path());
    let peer = match duckdb(dir.path(), n) {
        Ok(peer) => peer,
        Err(e) => {
            println!("DuckDB could not be measured: {e}");
            return;
        }
    };
    assert_eq!(peer["join_ranked_rows"].as_u64(), Some(rows as u64));
    let secs = |key: &str| Duration::from_secs_f64(peer[key].as_f64().unwrap());
    println!(
        "DuckDB {} (PyPI), in process, default threads",
        peer["version"]
    );
    println!();
    println!(
        "| query | Tally over HTTP p50 (p99) | DuckDB in process p50 | Tally / DuckDB | target |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| `SELECT` a 1,000-row view | {:.2} ms ({:.2} ms) | {:.2} ms | {:.1}× | p50 ≤ 5 ms |",
        ms(select.0),
        ms(select.1),
        ms(secs("select_view")),
        select.0.as_secs_f64() / secs("select_view").as_secs_f64()
    );
    println!(
        "| {}-row entity view ⋈ {}-row table, ranked, top 100 | {:.2} ms ({:.2} ms) | {:.2} ms | {:.1}× | p50 ≤ 100 ms |",
        customers,
        customers / 10,
        ms(join.0),
        ms(join.1),
        ms(secs("join_ranked")),
        join.0.as_secs_f64() / secs("join_ranked").as_secs_f64()
    );
}

/// Orders for `customers` customers (two each) over 1,000 shops, ingested as `tally ingest`
/// does, and a table row for every tenth customer.
fn load(data: &Path, dir: &Path, customers: usize) {
    let tally = Tally::open(&Location::Directory(data.to_owned()), Config::default()).unwrap();
    let mut tally = tally;
    tally.apply_schema(SCHEMA).unwrap();
    let input = dir.join("orders.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..customers * 2 {
        let c = i % customers;
        writeln!(
            file,
            r#"{{"id":"o{i}","customer_id":"c{c}","shop":"s{}","amount":"{}.{:02}","at":"2026-03-{:02}T{:02}:00:00Z"}}"#,
            (i * 7919) % 1000,
            (i * 31) % 500,
            i % 100,
            1 + i % 28,
            i % 24
        )
        .unwrap();
    }
    drop(file);
    let stream = tally.stream("orders").unwrap();
    let mut runtime = tally.open_tenant("default").unwrap();
    let report = tally::ingest::ingest(
        &mut runtime,
        &stream,
        tally.config(),
        tally::ingest::Format::Ndjson,
        std::io::BufReader::new(std::fs::File::open(&input).unwrap()),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.rejected, 0);
    let rows: Vec<String> = (0..customers / 10)
        .map(|i| {
            let c = i * 10;
            format!(
                r#"{{"customer_id":"c{c}","name":"Customer {c}","segment":"{}"}}"#,
                ["gold", "silver", "bronze"][c % 3]
            )
        })
        .collect();
    let upserted = runtime.upsert_rows("customer_info", &rows).unwrap();
    assert_eq!(upserted.upserted as usize, rows.len());
    runtime.flush().unwrap();
}

/// p50 and p99 of `POST /v1/sql` for each query, over HTTP on loopback; and the join's rows.
fn latencies(data: &Path, n: usize) -> ((Duration, Duration), (Duration, Duration), usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tally = Tally::open(&Location::Directory(data.to_owned()), Config::default()).unwrap();
    runtime.block_on(async move {
        let hub = Arc::new(Hub::new(
            tally,
            ServerConfig {
                admin_token: Some(ADMIN.into()),
                rate_limit: 1e9,
                rate_burst: 1e9,
                ..ServerConfig::default()
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(hub, listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let r: Json = http
            .post(format!("{base}/v1/tenants/default/keys"))
            .bearer_auth(ADMIN)
            .body(r#"{"kind":"read"}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = r["key"].as_str().unwrap().to_owned();
        let url = format!("{base}/v1/sql");
        let mut rows = 0;
        let mut measure = async |sql: &str, expect: Option<usize>| {
            let body = serde_json::json!({ "sql": sql }).to_string();
            let mut times = Vec::with_capacity(n);
            for i in 0..n + 5 {
                let started = Instant::now();
                let answer: Json = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let elapsed = started.elapsed();
                let got = answer["rows"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{answer}"))
                    .len();
                if let Some(expect) = expect {
                    assert_eq!(got, expect, "{sql}");
                }
                rows = got;
                if i >= 5 {
                    times.push(elapsed);
                }
            }
            times.sort();
            (times[n / 2], times[(n * 99 / 100).min(n - 1)])
        };
        let select = measure(SELECT_VIEW, Some(1_000)).await;
        let join = measure(JOIN_RANKED, None).await;
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        (select, join, rows)
    })
}

/// The view answers and the table's rows as CSV, for DuckDB to load.
fn export(data: &Path, dir: &Path) {
    let tally = Tally::open(&Location::Directory(data.to_owned()), Config::default()).unwrap();
    let runtime = tally.open_tenant("default").unwrap();
    for view in ["shops", "customers"] {
        let answer = runtime
            .query(view, &tally_views::QueryRequest::default())
            .unwrap();
        let text = tally::output::render(&answer, tally::output::OutputFormat::Csv);
        std::fs::write(dir.join(format!("{view}.csv")), text).unwrap();
    }
    let table = tally.catalog().table("customer_info").unwrap().clone();
    let mut csv = String::from("customer_id,name,segment\n");
    for row in runtime.table_rows(&table).unwrap() {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    std::fs::write(dir.join("customer_info.csv"), csv).unwrap();
}

fn duckdb(dir: &Path, n: usize) -> Result<Json, String> {
    let n = n.to_string();
    let args = [
        dir.as_os_str(),
        n.as_ref(),
        SELECT_VIEW.as_ref(),
        JOIN_RANKED.as_ref(),
    ];
    workload::run_duckdb(dir, "duckdb_sql.py", DUCKDB, &args)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
