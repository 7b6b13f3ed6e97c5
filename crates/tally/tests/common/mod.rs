//! Helpers shared by the integration tests and the HTTP benchmark: a seeded random generator and
//! the set-up of a running server (schema, tenant, keys) over HTTP.

#![allow(dead_code, unreachable_pub)]

use serde_json::Value as Json;

pub mod app;

/// A small deterministic generator (xorshift), so a failure can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A tenant's keys, as `POST /v1/tenants` shows them once.
pub struct Keys {
    pub write: String,
    pub read: String,
}

/// Applies `schema` with the admin token, then creates a tenant from `tenant` (the JSON body of
/// `POST /v1/tenants`) and returns its keys.
pub async fn schema_and_tenant(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    schema: &str,
    tenant: &str,
) -> Keys {
    let admin = format!("Bearer {admin_token}");
    let r = http
        .post(format!("{base}/v1/schema"))
        .header("authorization", &admin)
        .header("content-type", "application/sql")
        .body(schema.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    create_tenant(http, base, admin_token, tenant).await
}

/// `GET url` with a Bearer key, read as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> Json {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The server's Prometheus metrics (`GET /metrics`) as text.
pub async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Creates a tenant from `tenant` (the JSON body of `POST /v1/tenants`) with the admin token and
/// returns its keys.
pub async fn create_tenant(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    tenant: &str,
) -> Keys {
    let created: Json = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(admin_token)
        .body(tenant.to_owned())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Keys {
        write: created["write_key"].as_str().unwrap().to_owned(),
        read: created["read_key"].as_str().unwrap().to_owned(),
    }
}

/// Creates a manage key of `tenant` with the admin token.
pub async fn manage_key(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    tenant: &str,
) -> String {
    let created: Json = http
        .post(format!("{base}/v1/tenants/{tenant}/keys"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({"kind": "manage"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// Defines an alert (`POST /v1/alerts`) with a manage key; its id.
pub async fn create_alert(http: &reqwest::Client, base: &str, key: &str, alert: &Json) -> String {
    let r = http
        .post(format!("{base}/v1/alerts"))
        .bearer_auth(key)
        .json(alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Json = r.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// Posts events (a JSON array) to a stream with a write key; asserts they were accepted.
pub async fn post_events(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    stream: &str,
    events: &Json,
) {
    let r = http
        .post(format!("{base}/v1/streams/{stream}/events"))
        .bearer_auth(key)
        .json(events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The current time as Tally prints timestamps.
pub fn now_text() -> String {
    tally_views::Timestamp::from_jiff(jiff::Timestamp::now()).to_string()
}

/// A running `tally serve` (a child process, killed when dropped): its base URL and, when it
/// listens for StatsD, the StatsD address.
pub struct Served {
    pub child: std::process::Child,
    pub base: String,
    pub statsd: Option<String>,
}

impl Served {
    /// Sends SIGTERM and waits: the server must drain, flush and exit 0.
    pub fn terminate(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(
            exit.success(),
            "tally serve exited with {exit} after SIGTERM"
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary --data DATA serve --listen LISTEN ARGS` with the admin token `admin` and reads
/// its start-up lines (`listening on …`, then `statsd on …` with `--statsd`).
pub fn serve(
    binary: &std::path::Path,
    data: &std::path::Path,
    listen: &str,
    args: &[&str],
    admin: &str,
) -> Served {
    use std::io::BufRead;
    let mut child = std::process::Command::new(binary)
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", listen])
        .args(args)
        .env("TALLY_ADMIN_TOKEN", admin)
        .env("TALLY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let statsd = args.contains(&"--statsd").then(|| {
        line.clear();
        out.read_line(&mut line).unwrap();
        line.strip_prefix("statsd on ")
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned()
    });
    Served {
        child,
        base,
        statsd,
    }
}

/// A Python virtual environment under the target directory named `name`, with `packages`
/// installed once (a marker file names them, so a changed list installs again). Tests of one
/// binary run on several threads and may ask for the same environment at once: a lock makes
/// the second wait for the first instead of racing it into `python3 -m venv`.
pub fn python_venv(name: &str, packages: &[&str]) -> std::path::PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = dir.join("bin/python");
    let ready = dir.join(format!(".installed-{}", packages.join("-")));
    if !ready.exists() {
        if !python.exists() {
            let status = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&dir)
                .status()
                .expect("python3 runs");
            assert!(status.success(), "python3 -m venv {} failed", dir.display());
        }
        let status = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status()
            .expect("pip runs");
        assert!(
            status.success(),
            "pip install {} failed (PyPI reachable?)",
            packages.join(" ")
        );
        std::fs::write(&ready, "").unwrap();
    }
    python
}
