//! The HTTP error body of DESIGN.md: `{"error":{"code":"…","message":"…"}}`.
//!
//! Every failure of a request ends here: the app's [`Error`] variants map to their status,
//! store failures become a 500 whose body says nothing of the internals (the log has them), and
//! [`json_errors`] rewrites the plain-text errors of axum and tower-http (unknown route, wrong
//! method, body too large, timeouts) into the same JSON form.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use crate::error::Error;
use crate::params::Spelling;

/// An error answer: status, a stable machine-readable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code, e.g. `not_found`, `invalid_request`, `rate_limited`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; it has been logged",
        )
    }

    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Compile(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_sql",
                e.to_string(),
            ),
            // Query errors name their parameter as the URL spells it.
            Error::Query(e) => ApiError::bad_request(Spelling::Url.message(&e)),
            #[cfg(feature = "sql")]
            Error::Sql(e) => {
                use tally_sql::SqlError as S;
                let (status, code) = match &e {
                    S::NotReadOnly(_) => (StatusCode::BAD_REQUEST, "read_only"),
                    S::Param { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
                    S::Timeout(_) => (StatusCode::UNPROCESSABLE_ENTITY, "query_timeout"),
                    S::Memory { .. } | S::RelationTooLarge { .. } => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "query_memory")
                    }
                    S::TooManyRows(_) => (StatusCode::UNPROCESSABLE_ENTITY, "answer_too_large"),
                    S::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "query_failed"),
                    _ => (StatusCode::BAD_REQUEST, "invalid_sql"),
                };
                ApiError::new(status, code, e.to_string())
            }
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Request(m) => ApiError::bad_request(m),
            Error::Analysis(e) if e.param == "kind" => ApiError::not_found(e.message),
            Error::Analysis(e) => ApiError::bad_request(e.to_string()),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            Error::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            Error::Input { .. } => ApiError::bad_request(e.to_string()),
            Error::Store(tally_store::StoreError::Busy(m)) => ApiError::overloaded(m),
            Error::Exhausted(m) => {
                tracing::error!(error = %m, "out of a resource");
                ApiError::overloaded(m)
            }
            Error::Store(e) if e.exhausted().is_some() => {
                let m = e.exhausted().unwrap_or_default();
                tracing::error!(error = %e, "out of a resource");
                ApiError::overloaded(m)
            }
            Error::Unavailable(m) => {
                tracing::warn!(error = %m, "request failed; retryable");
                ApiError::overloaded("the store is unavailable right now; retry shortly")
            }
            Error::Store(e) if e.is_transient() => {
                tracing::error!(error = %e, "the database is unreachable");
                ApiError::overloaded("the database is unreachable; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Rewrites error responses that are not JSON (from axum's routing and extractors or from
/// tower-http's layers) into the JSON error body, keeping their status and headers.
pub async fn json_errors<B>(response: Response<B>) -> Response<Body>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(Body::new);
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "there is no such route; see /v1/openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method; see /v1/openapi.json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            "the request body is over 512 KB (after decompression); send smaller batches",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "timeout",
            "the request was not received in time; send it faster or in smaller parts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the body's encoding or type is not supported; send JSON, NDJSON, optionally gzip",
        ),
        s if s.is_server_error() => (
            "internal",
            "the server could not complete the request; it has been logged",
        ),
        _ => ("invalid_request", "the request is not valid"),
    };
    let (mut parts, body) = response.into_parts();
    // Keep the detail axum gives for bad requests (it names the parameter), never for 5xx.
    let detail = if status.is_client_error() && status != StatusCode::NOT_FOUND {
        axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    let message = match detail {
        Some(d) if status == StatusCode::BAD_REQUEST => d,
        _ => message.to_owned(),
    };
    let json = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    })
    .unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json))
}
