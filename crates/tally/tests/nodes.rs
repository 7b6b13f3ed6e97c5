//! Two `tally serve` processes on one PostgreSQL database, both ingesting for the same tenants
//! and views at once. Clients spread their requests over both nodes and send events from a
//! shared id space (so the same event reaches both nodes, as a retrying client does); mid-way
//! one node is killed with SIGKILL, its clients retry on the other, and it is restarted. While
//! both run, each node answers queries with every acknowledged event. At the end both stop with
//! SIGTERM, and every view of every tenant must equal the recomputation over the stored events,
//! which must be exactly the distinct events acknowledged, with nothing left to replay.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tally::app::{Config, Location, Tally};
use tally_store::testing::PgScratch;
use tally_views::QueryRequest;
use tally_views::reference::{compare, recompute};

mod common;
use common::{Keys, Rng, create_tenant};

const ADMIN: &str = "nodes-test-admin";
const CLIENTS: usize = 6;
const REQUESTS_PER_CLIENT: usize = 60;
const TENANTS: [&str; 2] = ["north", "south"];

const SCHEMA: &str = "
CREATE STREAM hits (id TEXT NOT NULL, page TEXT NOT NULL, user_id TEXT NOT NULL, ms DOUBLE NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW per_minute AS
SELECT time_bucket('1 minute', at) AS minute, page, count(*) AS n, count(DISTINCT user_id) AS users,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) AS p90, last(user_id, at) AS last_user
FROM hits GROUP BY 1, 2;
CREATE MATERIALIZED VIEW per_user AS
SELECT user_id, count(*) AS n, max(ms) AS slowest, first(page, at) AS first_page
FROM hits GROUP BY user_id;
";

/// A running node; killed if the test ends early.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tally_cmd(pg: &PgScratch) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(["--database-url", pg.url()])
        .args(["--database-schema", pg.schema()]);
    cmd
}

fn start(pg: &PgScratch) -> Node {
    let mut child = tally_cmd(pg)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--flush-interval",
            "200 ms",
        ])
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the node did not start: {line}"))
        .to_owned();
    Node { child, base: addr }
}

/// A scratch schema with `SCHEMA` applied through the CLI, as an operator would before starting
/// nodes.
fn scratch_with_schema() -> PgScratch {
    let pg = PgScratch::new();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let applied = tally_cmd(&pg).arg("apply").arg(&schema).output().unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    pg
}

/// The clients' runtime: the PostgreSQL calls of the tests themselves stay outside it.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn terminate(mut node: Node) {
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = node.child.wait().unwrap();
    assert!(exit.success(), "the node exited with {exit} after SIGTERM");
}

fn hit(rng: &mut Rng) -> Json {
    let id = rng.below(2500);
    let page = ["/", "/docs", "/buy"][rng.below(3) as usize];
    json!({
        "id": format!("h{id}"),
        "page": page,
        "user_id": format!("u{}", id % 53),
        "ms": (id % 700) as f64 + 0.25,
        "at": format!("2026-06-01T{:02}:{:02}:{:02}Z", 8 + id / 600 % 4, (id / 10) % 60, id % 60),
    })
}

type Sent = HashMap<&'static str, HashMap<String, Json>>;

#[test]
fn two_nodes_one_killed_every_view_equals_recomputation() {
    let pg = scratch_with_schema();
    let sent = client_runtime().block_on(drive(&pg));
    check(&pg, &sent);
}

/// Runs the two nodes and their clients; returns the events acknowledged, per tenant.
async fn drive(pg: &PgScratch) -> Sent {
    let nodes: Arc<Mutex<Vec<Option<Node>>>> =
        Arc::new(Mutex::new(vec![Some(start(pg)), Some(start(pg))]));
    let base =
        |i: usize| -> Option<String> { nodes.lock().unwrap()[i].as_ref().map(|n| n.base.clone()) };
    let http = reqwest::Client::new();
    let mut keys: HashMap<&'static str, Keys> = HashMap::new();
    for (i, tenant) in TENANTS.into_iter().enumerate() {
        // Tenants are created on either node; both see them.
        let body = json!({ "name": tenant }).to_string();
        let created = create_tenant(&http, &base(i).unwrap(), ADMIN, &body).await;
        keys.insert(tenant, created);
    }
    // Node 0 takes both tenants' events first, so it leads them (it writes their views) when
    // it is killed: node 1 must take over.
    let mut warm_up = Vec::new();
    for tenant in TENANTS {
        let event = json!({"id": "first", "page": "/", "user_id": "u0", "ms": 1.0, "at": "2026-06-01T08:00:00Z"});
        let r = http
            .post(format!("{}/v1/streams/hits/events", base(0).unwrap()))
            .bearer_auth(&keys[tenant].write)
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        warm_up.push((tenant, event));
    }
    let keys = Arc::new(keys);
    let failovers = Arc::new(AtomicUsize::new(0));
    let bases: Arc<Mutex<[String; 2]>> = Arc::new(Mutex::new([base(0).unwrap(), base(1).unwrap()]));

    let acked_requests = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, keys, bases, acked_requests, failovers) = (
            http.clone(),
            keys.clone(),
            bases.clone(),
            acked_requests.clone(),
            failovers.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(0xA076_1D64_78BD_642F ^ ((c as u64 + 1) * 0x9E37_79B9));
            let mut acked: HashMap<&'static str, Vec<Json>> = HashMap::new();
            for _ in 0..REQUESTS_PER_CLIENT {
                let tenant = TENANTS[rng.below(2) as usize];
                let events: Vec<Json> = (0..1 + rng.below(40)).map(|_| hit(&mut rng)).collect();
                let body = Json::Array(events.clone()).to_string();
                let mut node = rng.below(2) as usize;
                let mut tries = 0;
                loop {
                    assert!(Instant::now() < deadline, "client {c} ran out of time");
                    let url = format!("{}/v1/streams/hits/events", bases.lock().unwrap()[node]);
                    let sent = http
                        .post(url)
                        .bearer_auth(&keys[tenant].write)
                        .body(body.clone())
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await;
                    let retry = match sent {
                        // A killed node: the connection fails; the other node takes the retry.
                        Err(_) => {
                            failovers.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Ok(r) if r.status() == 503 || r.status() == 429 => true,
                        Ok(r) => {
                            let status = r.status();
                            let answer: Json = r.json().await.unwrap();
                            assert_eq!(status, 200, "client {c}: {answer}");
                            assert_eq!(answer["rejected"], json!([]), "client {c}: {answer}");
                            false
                        }
                    };
                    if !retry {
                        break;
                    }
                    tries += 1;
                    assert!(
                        tries < 400,
                        "client {c} could not get {tenant}'s batch through"
                    );
                    node = 1 - node;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                acked.entry(tenant).or_default().extend(events);
                acked_requests.fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }

    // Mid-way, node 0 dies without warning, then comes back (on a new port).
    let total = CLIENTS * REQUESTS_PER_CLIENT;
    while acked_requests.load(Ordering::Relaxed) < total / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    {
        let mut nodes = nodes.lock().unwrap();
        let mut killed = nodes[0].take().unwrap();
        killed.child.kill().unwrap(); // SIGKILL
        killed.child.wait().unwrap();
    }
    let killed_at = acked_requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let restarted = start(pg);
    bases.lock().unwrap()[0] = restarted.base.clone();
    nodes.lock().unwrap()[0] = Some(restarted);

    let mut sent: Sent = HashMap::new();
    for (tenant, event) in warm_up {
        sent.entry(tenant)
            .or_default()
            .insert("first".into(), event);
    }
    for client in clients {
        for (tenant, events) in client.await.unwrap() {
            let by_id = sent.entry(tenant).or_default();
            for e in events {
                by_id.insert(e["id"].as_str().unwrap().to_owned(), e);
            }
        }
    }
    assert!(
        killed_at < total,
        "the kill came after the clients finished"
    );
    assert!(
        failovers.load(Ordering::Relaxed) > 0,
        "no request met the killed node"
    );

    // Either node answers with every acknowledged event, whichever node took it.
    for tenant in TENANTS {
        for i in 0..2 {
            let answer: Json = common::get_json(
                &http,
                &format!("{}/v1/views/per_user?group_by=", base(i).unwrap()),
                &keys[tenant].read,
            )
            .await;
            assert_eq!(
                answer["rows"][0][0],
                json!(sent[tenant].len()),
                "node {i}, tenant {tenant}: {answer}"
            );
        }
    }

    // Both stop gracefully, one after the other: the last one leaves every view flushed.
    let (first, second) = {
        let mut nodes = nodes.lock().unwrap();
        (nodes[1].take().unwrap(), nodes[0].take().unwrap())
    };
    terminate(first);
    terminate(second);
    sent
}

/// Every view of every tenant equals the recomputation over the stored events.
fn check(pg: &PgScratch, sent: &Sent) {
    let tally = Tally::open(&Location::Postgres(pg.config()), Config::default()).unwrap();
    let stream = tally.stream("hits").unwrap();
    for tenant in TENANTS {
        let runtime = tally.open_tenant(tenant).unwrap();
        let stored = runtime.store().read_events(&stream, 0, usize::MAX).unwrap();
        let ids: HashSet<String> = stored.iter().map(|e| e.row[0].to_string()).collect();
        assert_eq!(stored.len(), ids.len(), "{tenant}: an event stored twice");
        assert_eq!(
            ids.len(),
            sent[tenant].len(),
            "{tenant}: events lost or unacknowledged events stored"
        );
        for plan in tally.catalog().views() {
            assert_eq!(
                runtime.replayed(&plan.name),
                0,
                "{tenant}: view {} was not flushed at shutdown",
                plan.name
            );
            let expected = recompute(plan, &stored, runtime.engine().tz());
            let actual = runtime.query(&plan.name, &QueryRequest::default()).unwrap();
            if let Err(e) = compare(plan, &expected, &actual) {
                panic!("{tenant}, view {}: {e}", plan.name);
            }
        }
    }
}

/// A schema applied through one node reaches the other, which leads the tenant: the new view
/// is built from the stored events and both nodes answer it.
#[test]
fn a_schema_applied_on_one_node_reaches_the_other() {
    let pg = scratch_with_schema();
    client_runtime().block_on(async {
            let (a, b) = (start(&pg), start(&pg));
            let http = reqwest::Client::new();
            let keys = create_tenant(&http, &a.base, ADMIN, r#"{"name":"north"}"#).await;
            let (write, read) = (keys.write.as_str(), keys.read.as_str());
            let mut rng = Rng(7);
            let events: Vec<Json> = (0..300).map(|_| hit(&mut rng)).collect();
            let distinct: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
            // Node a takes the events, so it leads the tenant.
            let r = http
                .post(format!("{}/v1/streams/hits/events", a.base))
                .bearer_auth(write)
                .body(Json::Array(events.clone()).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r = http
                .post(format!("{}/v1/schema", b.base))
                .bearer_auth(ADMIN)
                .header("content-type", "application/sql")
                .body("CREATE MATERIALIZED VIEW per_page AS SELECT page, count(*) AS n FROM hits GROUP BY page;")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            for node in [&a, &b] {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let r = http
                        .get(format!("{}/v1/views/per_page?group_by=", node.base))
                        .bearer_auth(read)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let answer: Json = r.json().await.unwrap();
                    if status == 200 {
                        assert_eq!(answer["rows"][0][0], json!(distinct.len()), "{answer}");
                        break;
                    }
                    assert!(
                        matches!(status.as_u16(), 404 | 503) && Instant::now() < deadline,
                        "{}: {status} {answer}",
                        node.base
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            terminate(a);
            terminate(b);
        });
}

/// The database drops every connection, as a restart or a failover does: requests at that
/// moment are answered 503 with Retry-After (never 500), nothing acknowledged is lost, and the
/// node reconnects by itself.
#[test]
fn a_dropped_database_connection_gives_503_then_recovers() {
    let pg = Arc::new(scratch_with_schema());
    let scratch = pg.clone();
    client_runtime().block_on(async move {
        let node = start(&scratch);
        let http = reqwest::Client::new();
        let Keys { write, read } =
            create_tenant(&http, &node.base, ADMIN, r#"{"name":"north"}"#).await;
        let mut rng = Rng(11);
        let mut acked = HashSet::new();
        let mut unavailable = 0;
        for round in 0..40 {
            if round == 10 {
                let pg = scratch.clone();
                let dropped = tokio::task::spawn_blocking(move || pg.drop_connections())
                    .await
                    .unwrap();
                assert!(dropped > 0, "no connection of the node was found");
            }
            let events: Vec<Json> = (0..20).map(|_| hit(&mut rng)).collect();
            let r = http
                .post(format!("{}/v1/streams/hits/events", node.base))
                .bearer_auth(&write)
                .body(Json::Array(events.clone()).to_string())
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => acked.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned())),
                503 => {
                    assert!(r.headers().contains_key("retry-after"));
                    unavailable += 1;
                }
                other => panic!("round {round}: {other} {}", r.text().await.unwrap()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            unavailable < 10,
            "the node did not recover: {unavailable} answers 503"
        );
        let answer: Json = common::get_json(
            &http,
            &format!("{}/v1/views/per_user?group_by=", node.base),
            &read,
        )
        .await;
        let counted = answer["rows"][0][0].as_u64().unwrap() as usize;
        // Every acknowledged event is counted; a batch answered 503 may have committed before
        // the connection went, so at most those come on top.
        assert!(
            counted >= acked.len(),
            "{counted} < {}: acknowledged events lost",
            acked.len()
        );
        assert!(counted <= acked.len() + unavailable * 20, "{answer}");
        terminate(node);
    });
}
