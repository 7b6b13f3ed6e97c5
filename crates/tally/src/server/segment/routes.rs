//! The Segment routes: `POST /v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`,
//! `/v1/screen`, `/v1/group` and `/v1/alias`, each into the built-in `events` stream.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use tally_store::KeyKind;
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::ingest::{IngestResponse, Rejection};
use crate::server::routes::{ApiResult, Body, authorize, credentials, utf8};
use crate::server::segment;

/// Segment's answer, with Tally's counts.
#[derive(Serialize, ToSchema)]
pub struct SegmentResponse {
    pub success: bool,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejection>,
}

async fn segment(
    hub: Arc<Hub>,
    headers: HeaderMap,
    body: Bytes,
    route_type: Option<&str>,
) -> ApiResult<Json<SegmentResponse>> {
    let text = utf8(&body)?;
    let parsed: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let key = credentials(&headers).or_else(|| {
        parsed
            .get("writeKey")
            .and_then(|k| k.as_str())
            .map(str::to_owned)
    });
    let principal = authorize(&hub, key, KeyKind::Write).await?;
    let now = hub.now();
    let records = segment::records(&parsed, route_type, now).map_err(ApiError::bad_request)?;
    let outcome = hub
        .ingest(&principal.tenant, "events", "segment", records)
        .await?;
    Ok(Json(SegmentResponse {
        success: true,
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected: IngestResponse::from(outcome).rejected,
    }))
}

/// Segment batch: `{"batch":[messages…],"sentAt":…,"context":…}` into `events`.
///
/// Authenticate with the write key as the HTTP Basic user name (as Segment's libraries do), a
/// Bearer token, or `writeKey` in the body. Any content type is read as JSON.
#[utoipa::path(post, path = "/v1/batch", tag = "segment",
    request_body(content = Object, description = "A Segment batch"),
    responses(
        (status = 200, description = "Committed", body = SegmentResponse),
        (status = 400, description = "Not a Segment batch", body = ErrorBody),
        (status = 401, description = "No valid write key", body = ErrorBody),
        (status = 413, description = "Body over 512 KB", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Queue full", body = ErrorBody),
    ),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_batch(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, None).await
}

/// Segment `track`: one event with its name and properties.
#[utoipa::path(post, path = "/v1/track", tag = "segment", request_body(content = Object),
    responses((status = 200, body = SegmentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_track(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("track")).await
}

/// Segment `identify`: a user and their traits.
#[utoipa::path(post, path = "/v1/identify", tag = "segment", request_body(content = Object),
    responses((status = 200, body = SegmentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_identify(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("identify")).await
}

/// Segment `page`: a page view.
#[utoipa::path(post, path = "/v1/page", tag = "segment", request_body(content = Object),
    responses((status = 200, body = SegmentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_page(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("page")).await
}

/// Segment `screen`: a mobile screen view.
#[utoipa::path(post, path = "/v1/screen", tag = "segment", request_body(content = Object),
    responses((status = 200, body = SegmentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_screen(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("screen")).await
}

/// Segment `group`: a user joins a group (account, company).
#[utoipa::path(post, path = "/v1/group", tag = "segment", request_body(content = Object),
    responses((status = 200, body = SegmentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_group(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("group")).await
}

/// Segment `alias`: two identities of one user.
#[utoipa::path(post, path = "/v1/alias", tag = "segment", request_body(content = Object),
    responses((status = 200, body = SegmentResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("key" = []), ("basic" = [])))]
pub async fn segment_alias(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("alias")).await
}
