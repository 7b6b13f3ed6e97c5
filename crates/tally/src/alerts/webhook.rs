//! Webhook delivery as Standard Webhooks (<https://www.standardwebhooks.com>) specifies it:
//! the headers `webhook-id` (the notification's id, the same on every retry),
//! `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed with the secret: the decoded bytes of
//! a `whsec_<base64>` secret, else the secret's UTF-8 bytes).
//!
//! Addresses that resolve to loopback, private, link-local, shared or metadata addresses are
//! refused (unless the server allows private webhooks), when an alert is defined and again at
//! every attempt; the attempt connects to exactly the addresses checked, so a name that
//! resolves differently later cannot reach inside. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;

/// How long one attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a notification is retried after it was made; the first failure after that ends it.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// The first retry's delay; each later one doubles, up to [`MAX_DELAY`] (1, 2, 4, … s: a
/// receiver back within a minute gets its notifications within seconds).
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The bytes a secret signs with.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, String> {
    if secret.is_empty() {
        return Err("empty".into());
    }
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD
            .decode(encoded)
            .map_err(|e| format!("whsec_ secrets are base64 after the prefix: {e}")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` header of a message.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The parts of a webhook URL: scheme, host (brackets removed) and port.
pub fn parse_url(url: &str) -> Result<(String, String, u16), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "" => return Err(format!("'{url}' has no scheme; use http:// or https://")),
        other => return Err(format!("the scheme {other} is not http or https")),
    };
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(format!("'{url}' has no host"));
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("credentials in the URL are not accepted; put a secret in the path or use the signing secret".into());
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((scheme, host, uri.port_u16().unwrap_or(port)))
}

/// Checks a webhook URL's form (not where it resolves).
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

/// Whether an address is one a webhook may not reach without `--allow-private-webhooks`:
/// loopback, private, link-local (cloud metadata at 169.254.169.254 among them), shared
/// (100.64/10), unspecified, broadcast, multicast, documentation, unique-local IPv6, and IPv6
/// forms of such IPv4 addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x64 && v6.segments()[1] == 0xff9b)
                || (first == 0x2001 && v6.segments()[1] == 0xdb8)
        }
    }
}

/// A URL's host and its addresses: an IP literal as it is, a name as resolved (`None` when it
/// does not resolve now).
async fn lookup(url: &str) -> Result<(String, Option<Vec<SocketAddr>>), String> {
    let (_, host, port) = parse_url(url)?;
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => Some(vec![SocketAddr::new(ip, port)]),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .map(Iterator::collect),
    };
    Ok((host, addrs))
}

/// [`lookup`] for a command-line program (no async runtime).
fn lookup_blocking(url: &str) -> Result<(String, Option<Vec<SocketAddr>>), String> {
    use std::net::ToSocketAddrs;
    let (_, host, port) = parse_url(url)?;
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => Some(vec![SocketAddr::new(ip, port)]),
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .map(Iterator::collect),
    };
    Ok((host, addrs))
}

/// Resolves a webhook's host and checks every address; the addresses to connect to.
pub async fn resolve(url: &str, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let (host, addrs) = lookup(url).await?;
    let addrs = addrs.ok_or_else(|| format!("cannot resolve {host}"))?;
    check_addrs(&host, addrs, allow_private)
}

/// Checks, when an alert is defined, that its webhook does not reach a private network: a
/// name that does not resolve now is accepted (attempts fail and are retried until it does).
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    destination(lookup(url).await?, allow_private)
}

/// [`check_destination`] for a command-line program (no async runtime).
pub fn check_destination_blocking(url: &str, allow_private: bool) -> Result<(), String> {
    destination(lookup_blocking(url)?, allow_private)
}

fn destination(
    (host, addrs): (String, Option<Vec<SocketAddr>>),
    allow_private: bool,
) -> Result<(), String> {
    match addrs {
        Some(addrs) if !addrs.is_empty() => check_addrs(&host, addrs, allow_private).map(|_| ()),
        _ => Ok(()),
    }
}

fn check_addrs(
    host: &str,
    addrs: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a loopback, private, link-local or metadata address; \
             webhooks may not reach those unless the server runs with --allow-private-webhooks",
            bad.ip()
        ));
    }
    Ok(addrs)
}

/// The delay before retry number `attempts` (after that many failed attempts), with ±20 %
/// jitter so that many failed deliveries do not come back together.
pub fn backoff(attempts: u32) -> Duration {
    let doubled = FIRST_DELAY
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(MAX_DELAY);
    let jitter = rand::rng().random_range(0.8..1.2);
    doubled.mul_f64(jitter)
}

/// What one attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status, when the receiver answered.
    pub status: Option<u16>,
    /// Why it failed (`None` when the receiver answered 2xx).
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// A resolver answering the addresses already resolved and checked: the connection goes to
/// exactly those.
#[derive(Clone)]
struct Pinned(Vec<SocketAddr>);

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for Pinned {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_iter()))
    }
}

/// The TLS settings of webhook connections: rustls with `ring`, the system's root
/// certificates, or Mozilla's when the system has none.
fn tls() -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Posts a message once: resolve and check the address, sign, send, read the status.
pub async fn attempt(
    url: &str,
    secret: &str,
    id: &str,
    body: &str,
    timestamp: i64,
    allow_private: bool,
) -> Outcome {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    let failed = |status: Option<u16>, error: String| Outcome {
        status,
        error: Some(error),
    };
    let addrs = match resolve(url, allow_private).await {
        Ok(a) => a,
        Err(e) => return failed(None, e),
    };
    let secret = match secret_bytes(secret) {
        Ok(s) => s,
        Err(e) => return failed(None, format!("the secret: {e}")),
    };
    static TLS: std::sync::OnceLock<Result<rustls::ClientConfig, String>> =
        std::sync::OnceLock::new();
    let tls = match TLS.get_or_init(tls) {
        Ok(t) => t.clone(),
        Err(e) => return failed(None, e.clone()),
    };
    let mut http = HttpConnector::new_with_resolver(Pinned(addrs));
    http.enforce_http(false);
    http.set_connect_timeout(Some(TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    let request = match axum::http::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("tally/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&secret, id, timestamp, body))
        .body(Full::new(axum::body::Bytes::from(body.to_owned())))
    {
        Ok(r) => r,
        Err(e) => return failed(None, format!("cannot make the request: {e}")),
    };
    match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Err(_) => failed(None, format!("no answer within {} s", TIMEOUT.as_secs())),
        Ok(Err(e)) => failed(None, format!("cannot deliver: {}", error_chain(&e))),
        Ok(Ok(r)) if r.status().is_success() => Outcome {
            status: Some(r.status().as_u16()),
            error: None,
        },
        Ok(Ok(r)) => failed(
            Some(r.status().as_u16()),
            format!("the receiver answered {}", r.status()),
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(secret_bytes("plain").unwrap(), b"plain");
        assert!(secret_bytes("whsec_not base64!").is_err());
        assert!(secret_bytes("").is_err());
    }

    #[test]
    fn private_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert_eq!(
            parse_url("https://hooks.example.com/a?b=c").unwrap(),
            ("https".into(), "hooks.example.com".into(), 443)
        );
        assert_eq!(
            parse_url("http://[::1]:8080/x").unwrap(),
            ("http".into(), "::1".into(), 8080)
        );
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("hooks.example.com").is_err());
        assert!(parse_url("http://user:pw@example.com/").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let secs = |n| backoff(n).as_secs_f64();
        assert!((0.8..=1.2).contains(&secs(1)));
        assert!((1.6..=2.4).contains(&secs(2)));
        assert!((409.6..=614.4).contains(&secs(10)));
        assert!((2880.0..=4320.0).contains(&secs(30)));
    }
}
