//! `POST /v1/sql`: a read-only SQL query over the tenant's views and streams.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tally_store::KeyKind;
use utoipa::ToSchema;

use crate::output::result_json_text;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::query::QueryResponse;
use crate::server::routes::{ApiResult, authorize, credentials};
use crate::sql::ParamValue;

/// A query and its parameters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One read-only `SELECT` (or `WITH … SELECT`); `:name` marks a parameter.
    pub sql: String,
    /// Values of the parameters by name, bound by type (never spliced into the text).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// Run a read-only SQL query over the tenant's live views (stored rows and every acknowledged
/// event), streams and `view_at(…)` re-groupings; the answer has the shape of a view query.
#[utoipa::path(post, path = "/v1/sql", tag = "query",
    request_body = SqlRequest,
    responses(
        (status = 200, body = QueryResponse),
        (status = 400, description = "Not a read-only query, a bad parameter, or SQL that does not fit the tenant's relations", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "A write key", body = ErrorBody),
        (status = 422, description = "A limit was reached (time, memory, answer size) or evaluation failed", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn run_sql(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Result<axum::Json<SqlRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let axum::Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = request
        .params
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches(':').to_owned(), ParamValue::Json(v)))
        .collect();
    let result = hub.sql(&principal.tenant, &request.sql, params).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        result_json_text(&result),
    )
        .into_response())
}
