//! `GET /v1/analyses/{kind}`: behavioural analyses of the tenant's `events` (active users,
//! retention, funnel, sessions, lifecycle), with the parameters of `tally analyze`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tally_store::KeyKind;

use crate::output::result_json_text;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::query::QueryResponse;
use crate::server::routes::{ApiResult, authorize, credentials};

/// Parameters of an analysis; which apply depends on its kind (docs/analyses.md).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AnalysisQuery {
    /// Start of the range: a date (local midnight in the tenant's time zone) or an RFC 3339
    /// time; default 30 days before `to`'s day.
    pub from: Option<String>,
    /// End of the range (excluded); default the end of today.
    pub to: Option<String>,
    /// active_users, lifecycle: `day` (default), `week` or `month`.
    pub interval: Option<String>,
    /// retention: `day`, `week` (default) or `month`.
    pub period: Option<String>,
    /// retention: how many periods after the cohort's (default 8).
    pub periods: Option<String>,
    /// retention: the event name whose first occurrence makes the cohort.
    pub start_event: Option<String>,
    /// retention: the only event name that counts as returning.
    pub return_event: Option<String>,
    /// funnel: event names separated by commas.
    pub steps: Option<String>,
    /// funnel: how long after the first step the last may come (default `1 day`).
    pub window: Option<String>,
    /// funnel: a property of the first step's event to break persons down by.
    pub breakdown: Option<String>,
    /// sessions: the gap between events that starts a new session (default `30 minutes`).
    pub gap: Option<String>,
    /// sessions: `landing_page` or `exit_page` instead of days.
    pub by: Option<String>,
    /// sessions: at most this many rows.
    pub limit: Option<String>,
}

/// Run a behavioural analysis over every acknowledged event of the `events` stream, persons
/// resolved through identity links. The answer has the shape of a view query.
#[utoipa::path(get, path = "/v1/analyses/{kind}", tag = "query",
    params(("kind" = String, Path, description = "active_users, retention, funnel, sessions or lifecycle"), AnalysisQuery),
    responses(
        (status = 200, body = QueryResponse),
        (status = 400, description = "A bad parameter, named", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "A write key", body = ErrorBody),
        (status = 404, description = "No such analysis", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn analyze(
    State(hub): State<Arc<Hub>>,
    Path(kind): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = q.into_iter().collect();
    let result = hub.analyze(&principal.tenant, &kind, params).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        result_json_text(&result),
    )
        .into_response())
}
