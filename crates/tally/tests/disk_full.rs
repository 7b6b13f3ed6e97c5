//! A full disk, on SQLite (the data directory on a small tmpfs) and on PostgreSQL (Tally's
//! tables in a tablespace on a small tmpfs); the test mounts them, so it runs as root, as on the
//! reference machines. Ingest goes on until the disk is full; then
//! every answer is a 503 with `Retry-After` naming the full disk (never a bare 500), `/healthz`
//! reports the store as failing, and nothing acknowledged is lost. After the disk grows (a
//! remount), the same server takes events again without a restart, `/healthz` recovers, and the
//! view counts every acknowledged event exactly once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;
use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, app};
use tally_store::testing::{PgScratch, admin};

mod common;
use common::app::{ADMIN, call, setup};

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: this test fills a disk and needs root to mount one",
            dir.display()
        );
        Tmpfs(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn event(i: usize) -> serde_json::Value {
    json!({"id": format!("o{i}"), "shop": "paris", "amount": "1.00", "at": "2026-03-30T10:00:00Z",
           "note": "x".repeat(2_000)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_loses_nothing_and_recovers_without_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(dir.path(), "3m");
    let location = Location::Directory(dir.path().join("data"));
    fill_and_recover(
        location,
        "the disk holding the data directory is full",
        || fs.resize("64m"),
    )
    .await;
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_loses_nothing_and_recovers_without_a_restart_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(dir.path(), "3m");
    let owner = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        owner.success(),
        "the PostgreSQL server's user must own the tablespace"
    );
    let tablespace = format!(
        "tally_full_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let path = dir.path().to_owned();
    let (pg, config) = {
        let tablespace = tablespace.clone();
        tokio::task::spawn_blocking(move || {
            let pg = PgScratch::new();
            let mut admin = admin();
            admin
                .batch_execute(&format!(
                    "CREATE TABLESPACE {tablespace} LOCATION '{}'",
                    path.display()
                ))
                .unwrap();
            admin
                .batch_execute(&format!(
                    "GRANT CREATE ON TABLESPACE {tablespace} TO tally_test"
                ))
                .unwrap();
            let mut config = pg.config();
            config
                .url
                .push_str(&format!("&options=-c%20default_tablespace%3D{tablespace}"));
            (pg, config)
        })
        .await
        .unwrap()
    };
    fill_and_recover(
        Location::Postgres(config),
        "the database server's disk is full",
        || fs.resize("64m"),
    )
    .await;
    tokio::task::spawn_blocking(move || {
        drop(pg);
        admin()
            .batch_execute(&format!("DROP TABLESPACE IF EXISTS {tablespace}"))
            .unwrap();
    })
    .await
    .unwrap();
    drop(fs);
}

/// Fills the store's disk through the API, checks the answers while it is full, grows it with
/// `grow`, and checks that the same server recovers and lost nothing.
async fn fill_and_recover(location: Location, message: &str, grow: impl FnOnce()) {
    let tally = tokio::task::spawn_blocking(move || Tally::open(&location, Config::default()))
        .await
        .unwrap()
        .unwrap();
    let hub = Arc::new(Hub::new(
        tally,
        ServerConfig {
            admin_token: Some(ADMIN.into()),
            ..ServerConfig::default()
        },
    ));
    let app = app(hub);
    let keys = setup(&app, &["acme"]).await;
    let a = call(
        &app,
        "POST",
        "/v1/schema",
        &[
            ("authorization", &format!("Bearer {ADMIN}")),
            ("content-type", "application/sql"),
        ],
        "CREATE STREAM notes (id TEXT NOT NULL, shop TEXT NOT NULL, amount DECIMAL(12,2) NOT NULL,
                              at TIMESTAMP NOT NULL, note TEXT) WITH (event_time = 'at', dedupe_key = 'id');
         CREATE MATERIALIZED VIEW per_shop AS SELECT shop, count(*) AS n FROM notes GROUP BY shop;",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let write = format!("Bearer {}", keys[0].write);
    let ingest = |from: usize| {
        let app = app.clone();
        let write = write.clone();
        async move {
            let body: Vec<serde_json::Value> = (from..from + 50).map(event).collect();
            call(
                &app,
                "POST",
                "/v1/streams/notes/events",
                &[
                    ("authorization", &write),
                    ("content-type", "application/json"),
                ],
                serde_json::Value::Array(body).to_string(),
            )
            .await
        }
    };

    // Fill the disk.
    let mut acknowledged = 0;
    let full = loop {
        let a = ingest(acknowledged).await;
        if a.status != StatusCode::OK {
            break a;
        }
        assert_eq!(a.json()["accepted"], 50, "{}", a.text);
        acknowledged += 50;
        assert!(acknowledged < 100_000, "the disk never filled");
    };
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.text
    );
    assert!(full.headers.contains_key("retry-after"));
    assert!(full.text.contains(message), "{}", full.text);
    // While it is full: 503s naming it, never a 500, and /healthz says so.
    for _ in 0..3 {
        let a = ingest(acknowledged).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    }
    let health = call(&app, "GET", "/healthz", &[], Body::empty()).await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.text
    );
    assert_eq!(health.json()["status"], "failing");

    // The disk grows: the same server takes events again, and reports healthy.
    grow();
    let mut recovered = false;
    for _ in 0..50 {
        let a = ingest(acknowledged).await;
        if a.status == StatusCode::OK {
            // A batch refused while the disk was full may have been committed before the
            // answer failed; re-sent, its events are duplicates.
            let body = a.json();
            let counted = body["accepted"].as_u64().unwrap() + body["duplicates"].as_u64().unwrap();
            assert_eq!(counted, 50, "{}", a.text);
            acknowledged += 50;
            recovered = true;
            break;
        }
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the server did not take events after the disk grew"
    );
    let health = call(&app, "GET", "/healthz", &[], Body::empty()).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    let a = call(
        &app,
        "GET",
        "/v1/views/per_shop",
        &[("authorization", &format!("Bearer {}", keys[0].read))],
        Body::empty(),
    )
    .await;
    assert_eq!(
        a.json()["rows"],
        json!([["paris", acknowledged]]),
        "{}",
        a.text
    );
    drop(app);
}
