//! `POST /v1/streams/{stream}/events`: events into a stream, as JSON or NDJSON.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use serde::Serialize;
use serde_json::value::RawValue;
use tally_store::KeyKind;
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::{ApiResult, Body, authorize, credentials, utf8};
use crate::server::worker::{Outcome, Record};

fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/x-ndjson")
                || v.starts_with("application/ndjson")
                || v.starts_with("application/jsonl")
        })
}

/// Splits a native ingest body into records: a JSON array, one object, or NDJSON.
pub(crate) fn native_records(headers: &HeaderMap, body: &Bytes) -> ApiResult<Vec<Record>> {
    let text = utf8(body)?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send a JSON array, a JSON object or NDJSON",
        ));
    }
    let lines = |text: &str| {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Record::Json(l.to_owned()))
            .collect::<Vec<_>>()
    };
    if is_ndjson(headers) {
        return Ok(lines(text));
    }
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not a valid JSON array: {e}; send one event object per element"
            ))
        })?;
        return Ok(items
            .into_iter()
            .map(|raw| Record::Json(raw.get().to_owned()))
            .collect());
    }
    // One object, or NDJSON sent without its content type.
    let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<&RawValue>();
    match (stream.next(), stream.next()) {
        (Some(Ok(_)), None) => Ok(vec![Record::Json(trimmed.to_owned())]),
        // Not even its first value is JSON: the body as a whole is refused, as Segment does.
        (Some(Err(e)), _) => Err(ApiError::bad_request(format!(
            "the body is not valid JSON: {e}; send a JSON array, a JSON object or NDJSON (Content-Type: application/x-ndjson)"
        ))),
        // Several values: NDJSON sent without its content type; a bad line rejects that event.
        _ => Ok(lines(text)),
    }
}

/// The answer of an ingest: counts, and each rejected event with its index in the request.
#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejection>,
}

#[derive(Serialize, ToSchema)]
pub struct Rejection {
    /// The event's position in the request (0-based; for NDJSON, among the non-empty lines).
    pub index: usize,
    pub error: String,
}

impl From<Outcome> for IngestResponse {
    fn from(o: Outcome) -> IngestResponse {
        IngestResponse {
            accepted: o.accepted,
            duplicates: o.duplicates,
            rejected: o
                .rejected
                .into_iter()
                .map(|(index, error)| Rejection { index, error })
                .collect(),
        }
    }
}

/// Ingest events into a stream.
///
/// The body is a JSON array of events, one JSON object, or NDJSON
/// (`Content-Type: application/x-ndjson`); `Content-Encoding: gzip` is accepted. The answer
/// comes after the accepted events are durably committed. Each bad event is rejected with its
/// index and reason; the others are kept.
#[utoipa::path(post, path = "/v1/streams/{stream}/events", tag = "ingest",
    params(("stream" = String, Path, description = "The stream to ingest into")),
    request_body(content = String, description = "JSON array, object or NDJSON", content_type = "application/json"),
    responses(
        (status = 200, description = "Committed", body = IngestResponse),
        (status = 400, description = "The body cannot be read", body = ErrorBody),
        (status = 401, description = "No valid write key", body = ErrorBody),
        (status = 403, description = "A read key", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
        (status = 413, description = "Body over 512 KB after decompression", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Encoding", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
        (status = 503, description = "The tenant's queue is full; see Retry-After", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn ingest_stream(
    State(hub): State<Arc<Hub>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<IngestResponse>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Write).await?;
    let records = native_records(&headers, &body)?;
    let outcome = hub
        .ingest(&principal.tenant, &stream, "streams", records)
        .await?;
    Ok(Json(outcome.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(content_type: Option<&str>, body: &str) -> Vec<String> {
        let mut headers = HeaderMap::new();
        if let Some(t) = content_type {
            headers.insert(header::CONTENT_TYPE, t.parse().unwrap());
        }
        let records = native_records(&headers, &Bytes::from(body.to_owned()))
            .unwrap_or_else(|e| panic!("{body}: {e:?}"));
        (records.into_iter())
            .map(|r| match r {
                Record::Json(text) => text,
                Record::Rejected { .. } => panic!("rejected at the edge"),
            })
            .collect()
    }

    /// Each record is an event of the body, whichever way the body holds the events.
    #[test]
    fn records_are_the_events_of_the_body() {
        let ndjson = "{\"a\": 1}\n\n  {\"a\": \"é\"}\r\n   \n{\"a\": 3}";
        let lines = ["{\"a\": 1}", "  {\"a\": \"é\"}", "{\"a\": 3}"];
        assert_eq!(texts(Some("application/x-ndjson"), ndjson), lines);
        // NDJSON without its content type.
        assert_eq!(texts(None, ndjson), lines);
        assert_eq!(
            texts(None, " [{\"a\": 1}, {\"b\": [2, 3]} ,\"x\"]"),
            ["{\"a\": 1}", "{\"b\": [2, 3]}", "\"x\""]
        );
        // One object: the body from its first value on, as it came.
        assert_eq!(texts(None, "\n {\"a\": \"ü\"} \n"), ["{\"a\": \"ü\"} \n"]);
    }
}
