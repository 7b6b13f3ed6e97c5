//! `/v1/persons/{id}` and `/v1/erasures`: GDPR erasure of a person, and the erasure log, with
//! the tenant's manage key (docs/http.md, "Erasing a person"). Both run on the tenant's worker.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use tally_store::KeyKind;
use utoipa::IntoParams;

use crate::erase::{Erased, ErasureEntry};
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::{ApiResult, authorize, credentials};

/// The most erasure log entries one request lists.
const MAX_LIMIT: usize = 10_000;

/// Erase a person.
///
/// Deletes every event of the person — the id given, the user id an anonymous id was linked
/// to, and every anonymous id linked to that user, as the analyses resolve persons — from every
/// stream with a person column (`user_id` and `anonymous_id` of `events`; `WITH (person = …)`),
/// and recomputes every view group those events touched from the events left, in one
/// transaction. Views with touched groups whose raw events may be past their stream's
/// retention are named in `not_correctable` and keep those groups. Erasing again deletes
/// nothing. The erasure log keeps a SHA-256 of the id, never the id.
#[utoipa::path(delete, path = "/v1/persons/{id}", tag = "persons",
    params(("id" = String, Path, description = "A user id or an anonymous id")),
    responses(
        (status = 200, description = "`events_deleted` per stream, `groups_recomputed` per view, `not_correctable` views", body = Erased),
        (status = 400, description = "The id is empty, too long or has control characters", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 503, description = "Another node leads the tenant; retry", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn erase_person(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Erased>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    Ok(Json(hub.erase(&principal.tenant, id).await?))
}

/// `?limit=` of the erasure log.
#[derive(Deserialize, IntoParams)]
pub struct ErasuresParams {
    /// The most entries to list, oldest first (default 1000, at most 10000).
    limit: Option<usize>,
}

/// The erasure log.
#[utoipa::path(get, path = "/v1/erasures", tag = "persons",
    params(ErasuresParams),
    responses(
        (status = 200, description = "`{\"items\":[…]}`, oldest first: `person_sha256`, `at`, `ids` and what each erasure did"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn list_erasures(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(params): Query<ErasuresParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let limit = params.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let items: Vec<ErasureEntry> = hub.erasures(&principal.tenant, limit).await?;
    Ok(Json(serde_json::json!({ "items": items })))
}
