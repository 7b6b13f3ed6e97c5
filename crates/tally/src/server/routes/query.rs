//! `GET /v1/views/{view}`: a view query, with the parameters of `tally query`; a saved query
//! with its own parameters.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_store::KeyKind;
use tally_views::{Param, QueryError};
use utoipa::ToSchema;

use crate::error::Error;
use crate::output::result_json_text;
use crate::params::QueryParams;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::catalog::ColumnInfo;
use crate::server::routes::{ApiResult, authorize, credentials};

/// A view query's answer.
#[derive(Serialize, ToSchema)]
pub struct QueryResponse {
    pub columns: Vec<ColumnInfo>,
    /// One array per row, values in column order: RFC 3339 timestamps, decimals as strings.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Present when some events made an expression of the view fail (a cast of text that is
    /// not a number, a division by zero): how many. Each such event was kept, with NULL for
    /// that expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression_failures: Option<u64>,
}

/// Query parameters of a view query; the same as `tally query`'s flags.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// Buckets starting at or after this time (RFC 3339 or a date).
    pub from: Option<String>,
    /// Buckets starting before this time.
    pub to: Option<String>,
    /// Re-group the time bucket: minute, hour, day, week, month, quarter or year.
    pub grain: Option<String>,
    /// Group columns to keep, comma separated; the others are merged away.
    pub group_by: Option<String>,
    /// A condition, e.g. `country = 'DE'`: on group columns alone it filters before
    /// re-grouping; naming an output column (`revenue > 100`) it filters the answer's rows.
    #[serde(rename = "where")]
    #[param(rename = "where")]
    pub filter: Option<String>,
    /// `COL [asc|desc] [nulls first|last]`.
    pub order_by: Option<String>,
    pub limit: Option<String>,
}

/// Read a view: stored rows and every acknowledged event, re-grouped as asked. A saved query
/// (`CREATE VIEW … :param`) takes its parameters as URL parameters instead (and `limit`).
#[utoipa::path(get, path = "/v1/views/{view}", tag = "query",
    params(("view" = String, Path, description = "The view"), ViewQuery),
    responses(
        (status = 200, body = QueryResponse),
        (status = 400, description = "A parameter does not fit the view", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "A write key", body = ErrorBody),
        (status = 404, description = "No such view", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn query_view(
    State(hub): State<Arc<Hub>>,
    Path(view): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let Query(mut q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = url_limit(&mut q)?;
    #[cfg(feature = "sql")]
    if let Some(saved) = hub.catalog().saved_query(&view).cloned() {
        return saved_query(&hub, &principal.tenant, &saved, q, limit).await;
    }
    let params = url_params(&mut q, limit);
    if let Some(unknown) = q.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}'; the parameters are from, to, grain, group_by, where, order_by and limit"
        )));
    }
    let request = params.to_request().map_err(Error::Query)?;
    let (result, failures) = hub.query(&principal.tenant, &view, request).await?;
    let mut body = result_json_text(&result);
    if failures > 0 {
        // Only when there are any: the answer keeps its plain shape otherwise.
        body.pop();
        body.push_str(&format!(",\"expression_failures\":{failures}}}"));
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A saved query read like a view: every URL parameter but `limit` (read by the caller) is one
/// of its parameters.
#[cfg(feature = "sql")]
async fn saved_query(
    hub: &Arc<Hub>,
    tenant: &str,
    saved: &tally_views::SavedQuery,
    q: HashMap<String, String>,
    limit: Option<usize>,
) -> ApiResult<Response> {
    let params = q
        .into_iter()
        .map(|(k, v)| (k, crate::sql::ParamValue::Text(v)))
        .collect();
    let mut result = hub.sql(tenant, &saved.query, params).await?;
    if let Some(limit) = limit {
        result.rows.truncate(limit);
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        result_json_text(&result),
    )
        .into_response())
}

/// Takes `limit` out of a view query's URL parameters.
pub(crate) fn url_limit(q: &mut HashMap<String, String>) -> ApiResult<Option<usize>> {
    q.remove("limit")
        .map(|l| {
            l.trim().parse::<usize>().map_err(|_| {
                ApiError::from(Error::Query(QueryError::Invalid {
                    param: Param::Limit,
                    message: format!("'{l}' is not a whole number"),
                }))
            })
        })
        .transpose()
}

/// Takes a view query's parameters out of its URL parameters (`limit` read before).
pub(crate) fn url_params(q: &mut HashMap<String, String>, limit: Option<usize>) -> QueryParams {
    QueryParams {
        from: q.remove("from"),
        to: q.remove("to"),
        grain: q.remove("grain"),
        group_by: q
            .remove("group_by")
            .map(|g| g.split(',').map(str::to_owned).collect()),
        filter: q.remove("where"),
        order_by: q.remove("order_by"),
        limit,
    }
}
