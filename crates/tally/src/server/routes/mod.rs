//! The routes of DESIGN.md's HTTP table: handlers, their keys and their OpenAPI description,
//! one file per OpenAPI tag (`ingest` and `rejections`, `catalog`, `query`, `admin`,
//! `operations`; the Segment routes live beside the Segment mapping in
//! [`crate::server::segment`]).
//!
//! Every handler authenticates first (write key, read key or admin token), then does one hub
//! operation. Bodies are taken as bytes and parsed in the handler, so that JSON, NDJSON and
//! Segment's `text/plain` all work and every parse error is the JSON error body with a clear
//! message. A new route goes in the file of its tag, with its `#[utoipa::path]`, and is
//! registered in `server/mod.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use tally_store::KeyKind;

use crate::server::error::ApiError;
use crate::server::hub::{Hub, Principal};

pub mod admin;
pub mod alerts;
pub mod analyses;
pub mod catalog;
pub mod dashboards;
pub mod export;
pub mod ingest;
pub mod operations;
pub mod persons;
pub mod query;
pub mod rejections;
#[cfg(feature = "sql")]
pub mod sql;
pub mod tables;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The key of a request: `Authorization: Bearer <key>`, or HTTP Basic with the key as the user
/// name (Segment's libraries), or as the password when the user name is empty.
pub(crate) fn credentials(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned()).filter(|k| !k.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let key = if user.is_empty() { password } else { user };
        return Some(key.to_owned()).filter(|k| !k.is_empty());
    }
    None
}

/// Authenticates a key of `kind` and takes a token from its rate limit.
pub(crate) async fn authorize(
    hub: &Arc<Hub>,
    key: Option<String>,
    kind: KeyKind,
) -> ApiResult<Principal> {
    authorize_any(hub, key, &[kind]).await
}

/// Authenticates a key of one of `kinds` (the first names the route's purpose in a refusal)
/// and takes a token from its rate limit.
pub(crate) async fn authorize_any(
    hub: &Arc<Hub>,
    key: Option<String>,
    kinds: &[KeyKind],
) -> ApiResult<Principal> {
    let kind = kinds[0];
    let Some(key) = key else {
        hub.metrics.count_refused("unauthorized");
        return Err(ApiError::unauthorized(
            "no key: send it as `Authorization: Bearer <key>`",
        ));
    };
    let Some(principal) = hub.principal(&key).await? else {
        hub.metrics.count_refused("unauthorized");
        return Err(ApiError::unauthorized(
            "the key is not valid (unknown or revoked)",
        ));
    };
    if !kinds.contains(&principal.kind) {
        return Err(ApiError::forbidden(match kind {
            KeyKind::Write => "this route writes data (events, table rows) and needs a write key",
            KeyKind::Read => "this route reads data and needs a read key",
            KeyKind::Manage => {
                "this route manages the tenant (alerts, dashboards, erasure) and needs a manage key"
            }
        }));
    }
    if let Err(seconds) = hub.rate_limit(&principal) {
        hub.metrics.count_refused("rate_limited");
        return Err(ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this key sends more than {} requests per second; retry after {seconds} s",
                    hub.settings.rate_limit
                ),
            )
        });
    }
    Ok(principal)
}

/// Checks the admin token.
pub(crate) fn admin(hub: &Hub, headers: &HeaderMap) -> ApiResult<()> {
    if !hub.admin_enabled() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin routes are off: start `tally serve` with TALLY_ADMIN_TOKEN set",
        ));
    }
    match credentials(headers) {
        None => Err(ApiError::unauthorized(
            "no admin token: send it as `Authorization: Bearer <TALLY_ADMIN_TOKEN>`",
        )),
        Some(token) if hub.is_admin(&token) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the admin token is not valid")),
    }
}

pub(crate) fn utf8(body: &Bytes) -> ApiResult<&str> {
    std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// A request body, read whole. A body not received within the body deadline answers 408, one
/// over the size limit 413, and any other failure to read it (a broken gzip stream) 400.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Body, ApiError> {
        match axum::body::to_bytes(request.into_body(), usize::MAX).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) => Err(body_error(e.into_inner())),
        }
    }
}

fn body_error(error: axum::BoxError) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body was not received in time; send it faster or in smaller parts",
            );
        }
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over 512 KB (after decompression); send smaller batches",
            );
        }
        cause = e.source();
    }
    ApiError::bad_request(format!("the request body cannot be read: {error}"))
}
