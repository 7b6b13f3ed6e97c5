//! One POST of a batch to Tally: the body (gzipped when asked), the key, and what the answer
//! means for the batch — delivered (with the server's counts), refused for good, or to retry
//! (429, 408, 5xx, a network error or a timeout), with the server's `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::message::Route;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// How one attempt ended.
pub(crate) enum Attempt {
    Delivered {
        accepted: u64,
        duplicates: u64,
        rejected: u64,
    },
    /// Not to be retried: the server refused the request itself (a 4xx).
    Refused(String),
    /// Worth retrying, after the server's `Retry-After` when it sent one.
    Retry {
        error: String,
        after: Option<Duration>,
    },
}

pub(crate) struct Transport {
    client: HyperClient<Https, Full<Bytes>>,
    batch_url: hyper::Uri,
    metrics_url: hyper::Uri,
    basic: String,
    bearer: String,
    gzip: bool,
    timeout: Duration,
}

impl Transport {
    pub(crate) fn new(
        base: &str,
        write_key: &str,
        gzip: bool,
        timeout: Duration,
    ) -> Result<Transport, crate::Error> {
        use base64::Engine as _;
        let base = base.trim_end_matches('/');
        let bad = |reason: &str| crate::Error::Url {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = base.parse().map_err(|e| bad(&format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("use http://host:port or https://host"));
        }
        let url = |path: &str| -> Result<hyper::Uri, crate::Error> {
            format!("{base}{path}")
                .parse()
                .map_err(|e| bad(&format!("{e}")))
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Transport {
            client: HyperClient::builder(TokioExecutor::new()).build(https),
            batch_url: url("/v1/batch")?,
            metrics_url: url("/v1/streams/metrics/events")?,
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
            ),
            bearer: format!("Bearer {write_key}"),
            gzip,
            timeout,
        })
    }

    /// The body of a batch: Segment's `{"batch": […]}` or a JSON array of metrics.
    pub(crate) fn body<'a>(&self, route: Route, messages: impl Iterator<Item = &'a str>) -> Bytes {
        let mut json = String::from(match route {
            Route::Segment => "{\"batch\":[",
            Route::Metrics => "[",
        });
        for (i, m) in messages.enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(m);
        }
        json.push_str(match route {
            Route::Segment => "]}",
            Route::Metrics => "]",
        });
        if !self.gzip {
            return Bytes::from(json);
        }
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 4),
            flate2::Compression::fast(),
        );
        match encoder
            .write_all(json.as_bytes())
            .and_then(|()| encoder.finish())
        {
            Ok(gz) => Bytes::from(gz),
            // Writing to memory does not fail; send it plain if it ever did.
            Err(_) => Bytes::from(json),
        }
    }

    /// Posts one body.
    pub(crate) async fn post(&self, route: Route, body: Bytes) -> Attempt {
        let (url, auth) = match route {
            Route::Segment => (&self.batch_url, &self.basic),
            Route::Metrics => (&self.metrics_url, &self.bearer),
        };
        let mut request = hyper::Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, auth)
            .header(
                header::USER_AGENT,
                concat!("tally-client/", env!("CARGO_PKG_VERSION")),
            );
        if self.gzip {
            request = request.header(header::CONTENT_ENCODING, "gzip");
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Attempt::Refused(format!("cannot make the request: {e}")),
        };
        let retry = |error: String, after: Option<Duration>| Attempt::Retry { error, after };
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return retry(format!("{url}: {e}"), None),
            Err(_) => return retry(format!("{url}: no answer within {:?}", self.timeout), None),
        };
        let status = response.status();
        let after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match tokio::time::timeout(self.timeout, response.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return retry(format!("{url}: reading the answer: {e}"), None),
            Err(_) => {
                return retry(
                    format!("{url}: the answer did not finish within {:?}", self.timeout),
                    None,
                );
            }
        };
        if status.is_success() {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let count = |k: &str| answer[k].as_u64().unwrap_or(0);
            return Attempt::Delivered {
                accepted: count("accepted"),
                duplicates: count("duplicates"),
                rejected: answer["rejected"].as_array().map_or(0, |r| r.len() as u64),
            };
        }
        let text = String::from_utf8_lossy(&body);
        let error = format!("{url}: {status}: {}", text.trim());
        if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
            retry(error, after)
        } else {
            Attempt::Refused(error)
        }
    }
}

/// rustls with `ring`, the system's root certificates, or Mozilla's when the system has none.
fn tls() -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
