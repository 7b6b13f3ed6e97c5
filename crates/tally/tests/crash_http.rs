//! Crash test under HTTP load: `tally serve` is killed with SIGKILL at random moments (100
//! times per backend; `TALLY_CRASH_KILLS` for longer runs) and restarted on the same address,
//! while concurrent clients send batches and retry each until it is acknowledged, as Segment's
//! libraries do. Afterwards the stored raw events are exactly the distinct events sent (none
//! lost, none doubled, each intact) and every view equals the recomputation over them.
//!
//! The schedule comes from a seed printed on failure (`TALLY_CRASH_SEED` replays it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally::app::{Config, Location, Tally};
use tally_store::testing::PgScratch;
use tally_views::QueryRequest;
use tally_views::reference::{compare, recompute};

mod common;
use common::Rng;

const ADMIN: &str = "crash-admin";
const CLIENTS: usize = 4;
const BATCHES_PER_CLIENT: usize = 150;
const BATCH: usize = 20;

const SCHEMA: &str = "
CREATE STREAM orders (id TEXT NOT NULL, shop TEXT NOT NULL, amount DECIMAL(12,2) NOT NULL,
                      customer TEXT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW shop_hourly AS
SELECT time_bucket('1 hour', at) AS hour, shop, count(*) AS orders, sum(amount) AS revenue,
       count(DISTINCT customer) AS customers, last(customer, at) AS last_customer
FROM orders GROUP BY 1, 2;
CREATE MATERIALIZED VIEW customers AS
SELECT customer, count(*) AS orders, max(amount) AS largest FROM orders GROUP BY customer;
";

fn kills() -> usize {
    std::env::var("TALLY_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

/// Where the server keeps its data: the flags that point `tally` at it, and the location.
struct Target {
    flags: Vec<String>,
    location: Location,
    _dir: tempfile::TempDir,
    _pg: Option<PgScratch>,
}

fn sqlite() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Target {
        flags: vec!["--data".into(), data.display().to_string()],
        location: Location::Directory(data),
        _dir: dir,
        _pg: None,
    }
}

fn postgres() -> Target {
    let pg = PgScratch::new();
    Target {
        flags: vec![
            "--database-url".into(),
            pg.url().to_owned(),
            "--database-schema".into(),
            pg.schema().to_owned(),
        ],
        location: Location::Postgres(pg.config()),
        _dir: tempfile::tempdir().unwrap(),
        _pg: Some(pg),
    }
}

/// Starts `tally serve` on `addr` and waits until it listens.
fn start(target: &Target, addr: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(&target.flags)
        .args([
            "serve",
            "--listen",
            addr,
            "--flush-interval",
            "200 milliseconds",
        ])
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("TALLY_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    child
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn event(client: usize, n: usize, rng: &mut Rng) -> String {
    let shop = ["berlin", "paris", "rome"][rng.below(3) as usize];
    format!(
        r#"{{"id":"c{client}-{n}","shop":"{shop}","amount":"{}.{:02}","customer":"u{}","at":"2026-05-{:02}T{:02}:{:02}:00Z"}}"#,
        rng.below(300),
        rng.below(100),
        rng.below(200),
        1 + rng.below(5),
        rng.below(24),
        rng.below(60),
    )
}

#[test]
fn killed_servers_lose_no_acknowledged_event_on_sqlite() {
    killed_servers(sqlite());
}

#[test]
fn killed_servers_lose_no_acknowledged_event_on_postgres() {
    killed_servers(postgres());
}

fn killed_servers(target: Target) {
    let seed = std::env::var("TALLY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let kills_wanted = kills();
    let addr = free_address();
    let target = Arc::new(target);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sent, kills) = runtime.block_on(load_and_kill(target.clone(), addr, seed, kills_wanted));
    drop(runtime);
    verify(&target, &sent, seed, kills);
}

/// Sends every batch under load while the server is killed and restarted; returns the events
/// sent (all acknowledged) by id, and how many kills there were.
async fn load_and_kill(
    target: Arc<Target>,
    addr: String,
    seed: u64,
    kills_wanted: usize,
) -> (HashMap<String, String>, usize) {
    let base = format!("http://{addr}");
    let mut server = {
        let (t, a) = (target.clone(), addr.clone());
        tokio::task::spawn_blocking(move || start(&t, &a))
            .await
            .unwrap()
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let keys = common::schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"shop"}"#).await;

    // The clients: each sends its batches in order, retrying a batch until it is acknowledged.
    let mut sent: HashMap<String, String> = HashMap::new();
    let mut clients = Vec::new();
    let mut rng = Rng(seed);
    for c in 0..CLIENTS {
        let mut batches = Vec::new();
        for b in 0..BATCHES_PER_CLIENT {
            let lines: Vec<String> = (0..BATCH)
                .map(|i| event(c, b * BATCH + i, &mut rng))
                .collect();
            for line in &lines {
                let id = line.split('"').nth(3).unwrap().to_owned();
                sent.insert(id, line.clone());
            }
            batches.push(lines.join("\n"));
        }
        let (http, url, key) = (
            http.clone(),
            format!("{base}/v1/streams/orders/events"),
            keys.write.clone(),
        );
        clients.push(tokio::spawn(async move {
            for body in batches {
                loop {
                    let answer = http
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(r) = answer
                        && r.status() == 200
                    {
                        let body: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(body["rejected"], serde_json::json!([]), "{body}");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    // The killer: SIGKILL at random moments, restart on the same address.
    let mut kills = 0;
    let started = Instant::now();
    while kills < kills_wanted {
        let delay = Duration::from_millis(20 + rng.below(150));
        tokio::time::sleep(delay).await;
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        kills += 1;
        let t = target.clone();
        let a = addr.clone();
        server = tokio::task::spawn_blocking(move || start(&t, &a))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "seed {seed}: {kills} kills took too long"
        );
    }
    for c in clients {
        c.await.unwrap();
    }
    server.kill().unwrap();
    server.wait().unwrap();
    (sent, kills)
}

/// Every batch was acknowledged: the stored events are exactly the distinct events sent, and
/// every view equals the recomputation over them.
fn verify(target: &Target, sent: &HashMap<String, String>, seed: u64, kills: usize) {
    let tally = Tally::open(&target.location, Config::default()).unwrap();
    let runtime = tally.open_tenant("shop").unwrap();
    let stream = tally.stream("orders").unwrap();
    let engine = runtime.engine().clone();
    let decoder = tally::decode::RowDecoder::new(&stream, tally.now(), tally.config().max_future);
    let stored = runtime.store().read_events(&stream, 0, usize::MAX).unwrap();
    assert_eq!(
        stored.len(),
        sent.len(),
        "seed {seed}: after {kills} kills, acknowledged events lost or doubled"
    );
    for e in &stored {
        let id = e.row[0].to_string();
        let line = sent
            .get(&id)
            .unwrap_or_else(|| panic!("seed {seed}: {id} was never sent"));
        assert_eq!(
            &decoder.json(line).unwrap(),
            &e.row,
            "seed {seed}: event {id} stored wrong"
        );
    }
    for plan in tally.catalog().views() {
        let expected = recompute(plan, &stored, engine.tz());
        let actual = runtime.query(&plan.name, &QueryRequest::default()).unwrap();
        if let Err(e) = compare(plan, &expected, &actual) {
            panic!("seed {seed} after {kills} kills: {e}");
        }
    }
}
