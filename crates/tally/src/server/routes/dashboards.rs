//! `/v1/dashboards`: a tenant's dashboards (docs/dashboards.md) — changed with its manage key,
//! read with its read key (or the manage key) — and each widget's data as JSON, with an `ETag`
//! so that a page polling an unchanged widget costs a version check.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tally_store::KeyKind;
use utoipa::{IntoParams, ToSchema};

use crate::dashboards::DashboardOp;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::{ApiResult, Body, authorize, authorize_any, credentials, utf8};

/// A dashboard as `POST` and `PUT` take it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DashboardRequest {
    name: String,
    widgets: Vec<crate::dashboards::Widget>,
}

fn json_body(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_str(utf8(body)?)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// Create a dashboard.
#[utoipa::path(post, path = "/v1/dashboards", tag = "dashboards",
    request_body = DashboardRequest,
    responses(
        (status = 201, description = "Created: the dashboard with its id", body = crate::dashboards::Dashboard),
        (status = 400, description = "A field is missing or wrong (named, as widgets[2].query.view)", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn create_dashboard(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let body = json_body(&body)?;
    let created = hub
        .dashboards(&principal.tenant, DashboardOp::Create(body))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List the dashboards.
#[utoipa::path(get, path = "/v1/dashboards", tag = "dashboards",
    responses(
        (status = 200, description = "`{\"items\":[{\"id\",\"name\",\"widgets\",\"updated_at\"}]}`"),
        (status = 403, description = "Not a read or manage key", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn list_dashboards(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let principal = authorize_any(
        &hub,
        credentials(&headers),
        &[KeyKind::Read, KeyKind::Manage],
    )
    .await?;
    Ok(Json(
        hub.dashboards(&principal.tenant, DashboardOp::List).await?,
    ))
}

/// Show a dashboard.
#[utoipa::path(get, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path, description = "The dashboard's id")),
    responses(
        (status = 200, description = "The dashboard", body = crate::dashboards::Dashboard),
        (status = 404, description = "No such dashboard", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn show_dashboard(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let principal = authorize_any(
        &hub,
        credentials(&headers),
        &[KeyKind::Read, KeyKind::Manage],
    )
    .await?;
    Ok(Json(
        hub.dashboards(&principal.tenant, DashboardOp::Get(id))
            .await?,
    ))
}

/// Replace a dashboard's name and widgets.
#[utoipa::path(put, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path, description = "The dashboard's id")),
    request_body = DashboardRequest,
    responses(
        (status = 200, description = "The dashboard as stored", body = crate::dashboards::Dashboard),
        (status = 400, description = "A field is missing or wrong (named)", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such dashboard", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn put_dashboard(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let body = json_body(&body)?;
    Ok(Json(
        hub.dashboards(&principal.tenant, DashboardOp::Put(id, body))
            .await?,
    ))
}

/// Delete a dashboard.
#[utoipa::path(delete, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path, description = "The dashboard's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such dashboard", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn delete_dashboard(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    hub.dashboards(&principal.tenant, DashboardOp::Delete(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?from=&to=` overriding a widget's range.
#[derive(Deserialize, IntoParams)]
pub struct RangeParams {
    /// `-7 days`, `today`, `now` or a time; the widget's own `from` by default.
    from: Option<String>,
    /// As `from`; the widget's own `to` by default.
    to: Option<String>,
}

/// A widget's data.
///
/// A `number` widget answers `{"value":…,"previous":…,"change_pct":…}` (the view re-grouped
/// over the range and over the range of the same length before it; `change_pct` null when
/// `previous` is 0 or null); the others `{"columns":[…],"rows":[[…]]}` as view queries do. With
/// `If-None-Match` naming the current `ETag`, `304` without a body.
#[utoipa::path(get, path = "/v1/dashboards/{id}/widgets/{n}/data", tag = "dashboards",
    params(
        ("id" = String, Path, description = "The dashboard's id"),
        ("n" = usize, Path, description = "The widget's position, from 0"),
        RangeParams,
    ),
    responses(
        (status = 200, description = "The widget's data, with an ETag"),
        (status = 304, description = "Unchanged since the ETag given in If-None-Match"),
        (status = 400, description = "A bad range (named)", body = ErrorBody),
        (status = 404, description = "No such dashboard or widget", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn widget_data(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path((id, n)): Path<(String, usize)>,
    Query(range): Query<RangeParams>,
) -> ApiResult<Response> {
    let principal = authorize_any(
        &hub,
        credentials(&headers),
        &[KeyKind::Read, KeyKind::Manage],
    )
    .await?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (etag, body) = hub
        .widget_data(
            &principal.tenant,
            id,
            n,
            (range.from, range.to),
            if_none_match,
        )
        .await?;
    let mut response = match body {
        Some(body) => Json(body).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
