//! Segment compatibility with a real client: Segment's own Node.js library
//! (`@segment/analytics-node`, installed by this test from the npm registry into the target
//! directory, once) sends tracks, identify, page, screen, group and alias, in batches, with
//! Basic auth, to a running `tally serve`; then the views must count exactly those messages.
//!
//! Needs `node` with `npm` and the npm registry on the first run; it fails (never skips)
//! without them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

mod common;
use common::schema_and_tenant;

const ADMIN: &str = "segment-node-test-admin";

const SCHEMA: &str = "
CREATE MATERIALIZED VIEW by_type AS
SELECT event_type, event_name, count(*) AS n, count(DISTINCT user_id) AS users,
       count(page_url) AS with_url
FROM events GROUP BY 1, 2;
";

const LIBRARY: &str = "@segment/analytics-node@3.1.0";

/// A directory with the Segment library installed, made once per target directory.
fn library() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segment-node");
    let ready = dir.join(format!(".installed-{}", LIBRARY.replace('/', "_")));
    if !ready.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(LIBRARY)
            .status()
            .expect("npm runs (install Node.js with npm)");
        assert!(
            status.success(),
            "npm install {LIBRARY} failed (npm registry reachable?)"
        );
        std::fs::write(&ready, "").unwrap();
    }
    dir
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
        .args(["serve", "--listen", "127.0.0.1:0"])
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

#[tokio::test]
async fn segment_node_library_events_are_counted() {
    let library = library();
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = start(dir.path());
    let http = reqwest::Client::new();
    let keys = schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"shop"}"#).await;
    let (write, read) = (keys.write.as_str(), keys.read.as_str());

    // The script runs where the library is installed, so `import` finds it.
    let script = library.join("send.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/segment/send.mjs"),
        &script,
    )
    .unwrap();
    let output = Command::new("node")
        .arg(script)
        .arg(write)
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Segment library failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let answer: Json = common::get_json(
            &http,
            &format!("{base}/v1/views/by_type?order_by=event_type"),
            read,
        )
        .await;
        let rows = answer["rows"].clone();
        let total: i64 = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[2].as_i64().unwrap())
            .sum();
        if total >= 35 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        rows,
        json!([
            ["alias", "alias", 1, 1, 0],
            ["group", "group", 1, 1, 0],
            ["identify", "identify", 1, 1, 0],
            ["page", "Pricing", 1, 1, 1],
            ["screen", "Home", 1, 1, 0],
            ["track", "Order Completed", 30, 7, 30],
        ])
    );
    // The server's own count agrees: 35 accepted, nothing rejected.
    let metrics = common::metrics(&http, &base).await;
    assert!(
        metrics.contains(
            r#"tally_ingest_events_total{tenant="shop",stream="events",outcome="accepted"} 35"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"outcome="rejected""#), "{metrics}");

    // SIGTERM: the server drains, flushes the views and exits 0; the view tables then hold
    // every event, readable without the server.
    let mut server = server;
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.0.wait().unwrap();
    assert!(exit.success(), "tally serve exited with {exit}");
    let db = rusqlite::Connection::open(dir.path().join("tenants/shop.db")).unwrap();
    let stored: i64 = db
        .query_row("SELECT sum(n) FROM by_type", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 35);
}
