//! The dashboards in a real browser: a running `tally serve` with generated orders and a
//! dashboard (two number widgets, a line, a bar and a table), then headless Chromium (Debian's
//! `chromium`; `TALLY_CHROMIUM` names another) driven by `playwright-core` (installed by this
//! test from the npm registry into the target directory, once) runs
//! `tests/browser/dashboard.cjs`: sign in with a read key, open the dashboard, number widgets
//! equal the API's numbers, new events show within 2 s, the explorer draws a view, and not one
//! console error. `TALLY_SCREENSHOTS=DIR` keeps the screenshots (docs/img/ has the README's).
//!
//! Needs `node` with `npm`, Chromium and the npm registry on the first run; it fails (never
//! skips) without them. `.ci/run` installs Chromium when missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value as Json, json};
use tally_views::Timestamp;

mod common;
use common::{create_tenant, manage_key};

const ADMIN: &str = "browser-test-admin";
const PLAYWRIGHT: &str = "playwright-core@1.65.2";

const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, shop TEXT NOT NULL, amount DECIMAL(12,2) NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW sales AS
SELECT time_bucket('1 hour', at) AS hour, shop, count(*) AS orders, sum(amount) AS revenue,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) AS median_order
FROM orders GROUP BY 1, 2;
";

/// `playwright-core` in a directory of its own, installed once per target directory.
fn playwright() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-node");
    let ready = dir.join(format!(".installed-{PLAYWRIGHT}"));
    if !ready.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(PLAYWRIGHT)
            .status()
            .expect("npm runs (install Node.js with npm)");
        assert!(
            status.success(),
            "npm install {PLAYWRIGHT} failed (npm registry reachable?)"
        );
        std::fs::write(&ready, "").unwrap();
    }
    dir
}

fn chromium() -> String {
    let path = std::env::var("TALLY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "no Chromium at {path}: install Debian's chromium (apt-get install chromium) or set TALLY_CHROMIUM"
    );
    path
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["--data"])
        .arg(data)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--flush-interval",
            "1 second",
        ])
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (Server(child), addr)
}

/// An order `minutes_ago` before now.
fn order(id: usize, shop: &str, amount: u32, minutes_ago: i64) -> Json {
    let now = Timestamp::from_jiff(jiff::Timestamp::now());
    let at = Timestamp(now.0 - minutes_ago * 60_000_000);
    json!({"id": format!("o{id}"), "shop": shop, "amount": format!("{amount}.50"), "at": at.to_string()})
}

#[tokio::test]
async fn the_dashboard_in_chromium_shows_the_api_numbers_live_without_console_errors() {
    let modules = playwright();
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = start(dir.path());
    let http = reqwest::Client::new();
    let a = http
        .post(format!("{base}/v1/schema"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/sql")
        .body(SCHEMA)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200, "{}", a.text().await.unwrap());
    let keys = create_tenant(
        &http,
        &base,
        ADMIN,
        r#"{"name":"shop","time_zone":"Europe/Berlin"}"#,
    )
    .await;
    let manage = manage_key(&http, &base, ADMIN, "shop").await;

    // A day and a half of orders across three shops, busier in the evening, then the dashboard.
    let shops = ["berlin", "berlin", "paris", "paris", "paris", "rome"];
    let mut rng = common::Rng(0x5eed_1234_abcd);
    let mut minutes_ago = 2;
    let mut orders = Vec::new();
    while minutes_ago < 36 * 60 {
        let hour = (24 + 19 - minutes_ago / 60) % 24;
        let gap = if (17..23).contains(&hour) { 2 } else { 6 };
        let amount = 5 + rng.below(60) as u32 + if rng.below(10) == 0 { 120 } else { 0 };
        let shop = shops[rng.below(shops.len() as u64) as usize];
        orders.push(order(orders.len(), shop, amount, minutes_ago));
        minutes_ago += 1 + rng.below(gap * 2) as i64;
    }
    let a = http
        .post(format!("{base}/v1/streams/orders/events"))
        .bearer_auth(&keys.write)
        .json(&orders)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let range = |q: Json| {
        let mut q = q;
        q["from"] = json!("-24 hours");
        q["to"] = json!("now");
        q
    };
    let definition = json!({
        "name": "Shop sales",
        "widgets": [
            {"title": "Revenue, last 24 h", "kind": "number",
             "query": range(json!({"view": "sales", "value": "revenue"}))},
            {"title": "Orders, last 24 h", "kind": "number",
             "query": range(json!({"view": "sales", "value": "orders"}))},
            {"title": "Orders per hour", "kind": "line",
             "query": range(json!({"view": "sales", "value": "orders", "group_by": "shop"}))},
            {"title": "Revenue per hour", "kind": "bar",
             "query": range(json!({"view": "sales", "value": "revenue", "group_by": []}))},
            {"title": "Shops", "kind": "table",
             "query": {"view": "sales", "group_by": "shop", "order_by": "revenue desc"}}
        ]
    });
    let created: Json = http
        .post(format!("{base}/v1/dashboards"))
        .bearer_auth(&manage)
        .json(&definition)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));

    let more: Vec<Json> = (0..5).map(|i| order(1000 + i, "berlin", 100, 1)).collect();
    let shots = match std::env::var("TALLY_SCREENSHOTS") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => dir.path().join("shots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.cjs");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .env("PLAYWRIGHT_DIR", &modules)
        .env("CHROMIUM", &chromium)
        .env("TALLY_URL", &base)
        .env("READ_KEY", &keys.read)
        .env("WRITE_KEY", &keys.write)
        .env("DASHBOARD_ID", id)
        .env("STREAM", "orders")
        .env("MORE_EVENTS", Json::Array(more).to_string())
        .env("SCREENSHOTS", &shots)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the browser run ends within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Json = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(result["ok"], json!(true), "{stdout}");
    assert!(result["followed_ms"].as_u64().unwrap() <= 2000, "{stdout}");
    assert!(shots.join("dashboard.png").exists() && shots.join("explore.png").exists());
    println!("{stdout}");
    drop(server);
}
