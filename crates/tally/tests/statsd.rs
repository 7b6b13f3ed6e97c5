//! The StatsD listener with real clients: the Python `statsd` package (UDP, pipelines, sample
//! rates, TCP) and Datadog's DogStatsD client (tags, the tenant in the `tenant:` tag), both
//! installed by this test into a virtual environment under the target directory, send to a
//! running `tally serve --statsd`; the views over the built-in `metrics` stream must hold
//! exactly what the clients sent. Raw packets check what the clients do not send (several
//! lines per datagram, malformed lines counted in `/metrics`), and a SIGTERM before the
//! interval ends still commits what was received.
//!
//! Needs `python3` with `venv` and access to PyPI on the first run; it fails (never skips)
//! without them.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

mod common;
use common::{create_tenant, schema_and_tenant};

const ADMIN: &str = "statsd-test-admin";

const SCHEMA: &str = "
CREATE MATERIALIZED VIEW metric_totals AS
SELECT name, metric_type, tags->>'queue' AS queue, sum(value) AS total, count(*) AS n,
       last(value, timestamp) AS last_value, count(DISTINCT tags->>'member') AS members,
       count(tags->>'tenant') AS with_tenant_tag, max(unit) AS unit
FROM metrics GROUP BY 1, 2, 3;
";

/// A virtual environment with the StatsD clients, made once per target directory.
fn venv() -> PathBuf {
    common::python_venv("statsd-venv", &["statsd==4.0.1", "datadog==0.56.0"])
}

/// Starts `tally serve --statsd 127.0.0.1:0 STATSD_ARGS`: the server, its URL, its StatsD address.
fn start(data: &Path, statsd_args: &[&str]) -> (common::Served, String, String) {
    let mut args = vec!["--statsd", "127.0.0.1:0"];
    args.extend_from_slice(statsd_args);
    let served = common::serve(
        Path::new(env!("CARGO_BIN_EXE_tally")),
        data,
        "127.0.0.1:0",
        &args,
        ADMIN,
    );
    let (base, statsd) = (served.base.clone(), served.statsd.clone().unwrap());
    (served, base, statsd)
}

/// Runs the client script; what it sent.
fn send_with(python: &Path, statsd: &str, client: &str) -> Json {
    let (host, port) = statsd.rsplit_once(':').unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/statsd/send.py");
    let output = Command::new(python)
        .arg(script)
        .args([host, port, client])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the {client} client failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The view's rows keyed by `name/metric_type/queue`, once `ready` holds (or after 10 s).
async fn totals(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    ready: impl Fn(&std::collections::BTreeMap<String, Json>) -> bool,
) -> std::collections::BTreeMap<String, Json> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = common::get_json(http, &format!("{base}/v1/views/metric_totals"), key).await;
        let rows: std::collections::BTreeMap<String, Json> = answer["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|r| {
                let queue = r[2].as_str().unwrap_or("-");
                (
                    format!(
                        "{}/{}/{queue}",
                        r[0].as_str().unwrap(),
                        r[1].as_str().unwrap()
                    ),
                    r.clone(),
                )
            })
            .collect();
        if ready(&rows) || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn total(rows: &std::collections::BTreeMap<String, Json>, key: &str) -> f64 {
    rows.get(key)
        .unwrap_or_else(|| panic!("no row {key}: {rows:?}"))[3]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn statsd_python_client_and_raw_packets_are_counted_exactly() {
    let python = venv();
    let dir = tempfile::tempdir().unwrap();
    let (server, base, statsd) = start(
        dir.path(),
        &[
            "--statsd-tenant",
            "acme",
            "--statsd-flush-interval",
            "200 milliseconds",
        ],
    );
    let http = reqwest::Client::new();
    let keys = schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"acme"}"#).await;

    let sent = send_with(&python, &statsd, "statsd");
    // Several lines per datagram, malformed and unsupported lines among them.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"raw.c:1|c|@0.1\nraw.c:2|c\nnot a metric\n_e{1,1}:a|b\nraw.g:10|g\r\nraw.g:-4|g\nraw.h:3:4|h\nraw.c:1|x",
        &statsd,
    )
    .unwrap();
    // TCP: lines split across writes, the last without a line break.
    let mut tcp = TcpStream::connect(&statsd).unwrap();
    tcp.write_all(b"raw.tcp:5|c\nraw.t").unwrap();
    tcp.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    tcp.write_all(b"cp:5|c").unwrap();
    drop(tcp);

    let expected = sent["totals"].as_object().unwrap().clone();
    let rows = totals(&http, &base, &keys.read, |rows| {
        rows.get("raw.tcp/counter/-").is_some_and(|r| r[3] == 10.0)
            && rows.get("raw.h/histogram/-").is_some_and(|r| r[4] == 2)
            && rows.get("py.tcp/counter/-").is_some_and(|r| r[3] == 21.0)
            && rows.get("py.latency/timer/-").is_some_and(|r| r[4] == 50)
            && rows.get("py.users/set/-").is_some_and(|r| r[6] == 3)
    })
    .await;
    assert!(sent["sampled_packets"].as_u64().unwrap() > 0, "{sent}");
    for (name, kind) in [
        ("py.hits", "counter"),
        ("py.sampled", "counter"),
        ("py.latency", "timer"),
        ("py.piped", "counter"),
        ("py.tcp", "counter"),
    ] {
        assert_eq!(
            total(&rows, &format!("{name}/{kind}/-")),
            expected[name].as_f64().unwrap(),
            "{name}: {rows:?}"
        );
    }
    let latency = &rows["py.latency/timer/-"];
    assert_eq!(
        (latency[4].as_i64(), latency[8].as_str()),
        (Some(50), Some("ms"))
    );
    assert_eq!(rows["py.temp/gauge/-"][5], 22.0, "{rows:?}");
    assert_eq!(total(&rows, "py.piped_latency/timer/-"), 7.0);
    assert_eq!(total(&rows, "raw.c/counter/-"), 12.0);
    assert_eq!(rows["raw.g/gauge/-"][5], 6.0);
    assert_eq!(total(&rows, "raw.h/histogram/-"), 7.0);
    assert_eq!(total(&rows, "raw.tcp/counter/-"), 10.0);

    let metrics = common::metrics(&http, &base).await;
    for line in [
        r#"tally_statsd_lines_total{outcome="malformed"} 2"#,
        r#"tally_statsd_lines_total{outcome="unsupported"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    drop(server);

    // SIGTERM before the interval ends: what was received is committed before exit.
    let (server, _base, statsd) = start(
        dir.path(),
        &[
            "--statsd-tenant",
            "acme",
            "--statsd-flush-interval",
            "1 hour",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"term.c:5|c\nterm.c:2|c", &statsd).unwrap();
    // A TCP connection still open at SIGTERM: what it sent is committed too.
    let mut tcp = TcpStream::connect(&statsd).unwrap();
    tcp.write_all(b"term.tcp:1|c\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut server = server;
    server.terminate();
    drop(tcp);
    let db = rusqlite::Connection::open(dir.path().join("tenants/acme.db")).unwrap();
    let stored: f64 = db
        .query_row(
            "SELECT sum(total) FROM metric_totals WHERE name IN ('term.c', 'term.tcp')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 8.0);
}

#[tokio::test]
async fn dogstatsd_client_names_its_tenant_in_a_tag() {
    let python = venv();
    let dir = tempfile::tempdir().unwrap();
    let (_server, base, statsd) = start(
        dir.path(),
        &[
            "--statsd-tenant-tag",
            "--statsd-flush-interval",
            "200 milliseconds",
        ],
    );
    let http = reqwest::Client::new();
    let acme = schema_and_tenant(&http, &base, ADMIN, SCHEMA, r#"{"name":"acme"}"#).await;
    let beta = create_tenant(&http, &base, ADMIN, r#"{"name":"beta"}"#).await;

    let sent = send_with(&python, &statsd, "dogstatsd");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"beta.c:3|c|#tenant:beta,queue:q\nnobody:1|c\nghost.c:1|c|#tenant:ghost",
        &statsd,
    )
    .unwrap();

    let rows = totals(&http, &base, &acme.read, |rows| {
        rows.get("dd.visitors/set/-").is_some_and(|r| r[6] == 2)
            && rows.get("dd.size/histogram/-").is_some_and(|r| r[4] == 3)
            && rows
                .get("dd.dist/distribution/-")
                .is_some_and(|r| r[4] == 2)
            && rows
                .get("dd.jobs/counter/mail")
                .is_some_and(|r| r[3] == 10.0)
            && rows.contains_key("dd.t/timer/-")
    })
    .await;
    let expected = &sent["totals"];
    assert_eq!(total(&rows, "dd.jobs/counter/mail"), expected["dd.jobs"]);
    assert_eq!(total(&rows, "dd.size/histogram/-"), expected["dd.size"]);
    assert_eq!(total(&rows, "dd.dist/distribution/-"), expected["dd.dist"]);
    assert_eq!(total(&rows, "dd.t/timer/-"), expected["dd.t"]);
    assert_eq!(rows["dd.depth/gauge/mail"][5], 9.0);
    // The tenant tag routes the line and is not stored.
    assert!(rows.values().all(|r| r[7] == 0), "{rows:?}");
    assert!(rows.keys().all(|k| !k.starts_with("beta.")), "{rows:?}");

    let beta_rows = totals(&http, &base, &beta.read, |rows| {
        rows.contains_key("beta.c/counter/q")
    })
    .await;
    assert_eq!(total(&beta_rows, "beta.c/counter/q"), 3.0);
    // A line without a tenant is counted; one for a tenant that does not exist is dropped
    // and counted without its name.
    let expected = [
        r#"tally_statsd_lines_total{outcome="no_tenant"} 1"#,
        r#"tally_statsd_dropped_rows_total{tenant="(unknown)",reason="unknown_tenant"} 1"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = common::metrics(&http, &base).await;
        if expected.iter().all(|l| metrics.contains(l)) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in expected {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}
