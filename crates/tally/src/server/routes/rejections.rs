//! `GET /v1/rejections`: the tenant's rejection log, page by page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Serialize;
use tally_store::KeyKind;
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::{ApiResult, authorize, credentials};

/// The most entries one page holds.
const MAX_PAGE: usize = 1_000;

/// One rejected event.
#[derive(Serialize, ToSchema)]
pub struct RejectionEntry {
    /// Increasing; pass the last one seen as `after` for the next page.
    pub id: u64,
    /// When it was rejected (RFC 3339, UTC).
    pub at: String,
    pub stream: String,
    /// The route group it came through: `streams` or `segment`.
    pub route: String,
    /// The kind of problem: `malformed`, `too_large`, `unknown_field`, `missing_field`,
    /// `invalid_value`, `time_out_of_range`, `view_expression` or `invalid_message`.
    pub reason: String,
    /// What was wrong and what to send instead.
    pub message: String,
    /// What was sent, up to 32 KB.
    pub payload: String,
}

/// A page of the rejection log.
#[derive(Serialize, ToSchema)]
pub struct RejectionPage {
    pub rejections: Vec<RejectionEntry>,
    /// The id to pass as `after` for the next page; absent when this page was the last.
    pub next: Option<u64>,
}

/// The tenant's rejected events, oldest first: every event an ingest rejected (through the
/// native or the Segment routes) is kept for the rejection retention (default 7 days, at most
/// 100,000 per tenant), with the reason and what was sent.
#[utoipa::path(get, path = "/v1/rejections", tag = "ingest",
    params(
        ("after" = Option<u64>, Query, description = "Only entries with a larger id (default 0)"),
        ("limit" = Option<usize>, Query, description = "Entries per page (default 100, at most 1000)"),
    ),
    responses(
        (status = 200, body = RejectionPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn list_rejections(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<RejectionPage>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let number = |name: &str, default: usize| -> ApiResult<usize> {
        match query.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{name} '{v}' is not a whole number"))),
        }
    };
    if let Some(unknown) = query.keys().find(|k| *k != "after" && *k != "limit") {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}'; the parameters are after and limit"
        )));
    }
    let after = number("after", 0)? as u64;
    let limit = number("limit", 100)?.clamp(1, MAX_PAGE);
    let page = hub.rejections(&principal.tenant, after, limit + 1).await?;
    let more = page.len() > limit;
    let rejections: Vec<RejectionEntry> = page
        .into_iter()
        .take(limit)
        .map(|r| RejectionEntry {
            id: r.id,
            at: r.rejected.at.to_string(),
            stream: r.rejected.stream,
            route: r.rejected.route,
            reason: r.rejected.reason,
            message: r.rejected.message,
            payload: r.rejected.payload,
        })
        .collect();
    let next = if more {
        rejections.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RejectionPage { rejections, next }))
}
