//! TLS for PostgreSQL connections (rustls with the `ring` provider), with libpq's `sslmode`s.
//!
//! `sslmode` in the URL (or key-value string) chooses, as in libpq:
//!
//! - `disable`: no TLS;
//! - `allow`, `prefer` (the default): TLS when the server offers it, without checking its
//!   certificate (encryption against eavesdroppers, not against a man in the middle);
//! - `require`: TLS or no connection, certificate not checked;
//! - `verify-ca`, `verify-full`: TLS with the server's certificate checked against the PEM file
//!   `sslrootcert` when given, the Mozilla roots otherwise, host name included (both modes check
//!   it).
//!
//! The parameters the `postgres` crate does not know (`verify-*` modes, `sslrootcert`) are taken
//! out of the URL before it parses the rest.

use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Result, StoreError};

/// How to secure a connection.
enum Mode {
    Disable,
    /// Encrypt without checking the certificate; `require` refuses a server without TLS.
    Encrypt {
        require: bool,
    },
    /// Encrypt and check the certificate chain and host name.
    Verify {
        root_cert: Option<String>,
    },
}

/// Connects as `url` says, TLS included.
pub(crate) fn connect(url: &str) -> Result<Client> {
    let (rest, mode) = split_tls(url)?;
    let mut settings: postgres::Config = rest.parse()?;
    if settings.get_application_name().is_none() {
        // How Tally's connections show in pg_stat_activity.
        settings.application_name("tally");
    }
    if settings.get_connect_timeout().is_none() {
        // An unreachable server fails a connection in seconds, not minutes.
        settings.connect_timeout(std::time::Duration::from_secs(10));
    }
    // A dead peer is noticed in about half a minute on both sides: here by keepalives, on the
    // server by the session settings `connect` sends (so a dead node's lead lock is released).
    settings.keepalives(true);
    settings.keepalives_idle(std::time::Duration::from_secs(10));
    settings.keepalives_interval(std::time::Duration::from_secs(5));
    settings.keepalives_retries(3);
    Ok(match mode {
        Mode::Disable => {
            settings.ssl_mode(SslMode::Disable);
            settings.connect(NoTls)?
        }
        Mode::Encrypt { require } => {
            settings.ssl_mode(if require {
                SslMode::Require
            } else {
                SslMode::Prefer
            });
            settings.connect(MakeRustlsConnect::new(unverified()?))?
        }
        Mode::Verify { root_cert } => {
            settings.ssl_mode(SslMode::Require);
            settings.connect(MakeRustlsConnect::new(verified(root_cert.as_deref())?))?
        }
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: String) -> StoreError {
    StoreError::Unsafe(what)
}

fn unverified() -> Result<rustls::ClientConfig> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unchecked(algorithms)))
        .with_no_client_auth())
}

fn verified(root_cert: Option<&str>) -> Result<rustls::ClientConfig> {
    // As libpq: the given root certificate alone when there is one, the public roots otherwise.
    let mut roots = rustls::RootCertStore::empty();
    if root_cert.is_none() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = root_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| tls_error(format!("sslrootcert {path}: {e}")))?;
        if certs.is_empty() {
            return Err(tls_error(format!(
                "sslrootcert {path} holds no PEM certificate"
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("sslrootcert {path}: {e}")))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?a=b&c=d`) or a key-value string
/// (`host=… sslmode=…`); returns the rest and the mode.
fn split_tls(url: &str) -> Result<(String, Mode)> {
    let (rest, params): (String, Vec<(String, String)>) =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => (url.to_owned(), Vec::new()),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    let mut taken = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        if k == "sslmode" || k == "sslrootcert" {
                            taken.push((k.to_owned(), v.to_owned()));
                        } else {
                            kept.push(pair);
                        }
                    }
                    let rest = if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    };
                    (rest, taken)
                }
            }
        } else {
            let mut kept = Vec::new();
            let mut taken = Vec::new();
            for word in url.split_whitespace() {
                match word.split_once('=') {
                    Some((k, v)) if k == "sslmode" || k == "sslrootcert" => {
                        taken.push((k.to_owned(), v.trim_matches('\'').to_owned()));
                    }
                    _ => kept.push(word),
                }
            }
            (kept.join(" "), taken)
        };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let root_cert = get("sslrootcert");
    let mode = match get("sslmode").as_deref() {
        Some("disable") => Mode::Disable,
        None | Some("allow" | "prefer") => Mode::Encrypt { require: false },
        Some("require") if root_cert.is_none() => Mode::Encrypt { require: true },
        // libpq: require with a root certificate behaves like verify-ca.
        Some("require" | "verify-ca" | "verify-full") => Mode::Verify { root_cert },
        Some(other) => {
            return Err(tls_error(format!(
                "sslmode={other} is not a TLS mode; use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    Ok((rest, mode))
}

/// Accepts any server certificate: `sslmode=prefer|require` encrypt without authenticating, as
/// libpq does. Signatures are still checked, so the handshake itself is sound.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> (String, &'static str) {
        let (rest, mode) = split_tls(url).unwrap();
        let name = match mode {
            Mode::Disable => "disable",
            Mode::Encrypt { require: false } => "prefer",
            Mode::Encrypt { require: true } => "require",
            Mode::Verify { root_cert: None } => "verify",
            Mode::Verify { root_cert: Some(_) } => "verify+root",
        };
        (rest, name)
    }

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_key_value_strings() {
        assert_eq!(
            mode("postgres://u@h/db"),
            ("postgres://u@h/db".into(), "prefer")
        );
        assert_eq!(
            mode("postgres://u@h/db?sslmode=disable&application_name=x"),
            ("postgres://u@h/db?application_name=x".into(), "disable")
        );
        assert_eq!(
            mode("postgres://u@h/db?sslmode=require"),
            ("postgres://u@h/db".into(), "require")
        );
        assert_eq!(
            mode("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem"),
            ("postgres://u@h/db".into(), "verify+root")
        );
        assert_eq!(
            mode("host=h user=u sslmode=verify-ca"),
            ("host=h user=u".into(), "verify")
        );
        assert!(split_tls("postgres://h/db?sslmode=sometimes").is_err());
    }
}
