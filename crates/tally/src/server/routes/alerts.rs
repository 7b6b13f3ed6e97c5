//! `/v1/alerts`: a tenant's alerts, managed with its manage key (docs/alerts.md). Each
//! operation runs on the tenant's worker, which also evaluates the alerts.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tally_store::KeyKind;
use utoipa::{IntoParams, ToSchema};

use crate::alerts::{AlertOp, AlertSpec, webhook};
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::{ApiResult, Body, authorize, credentials, utf8};

/// An alert's definition (`POST /v1/alerts`; for `PATCH`, any subset of the fields).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlertRequest {
    /// A name for people.
    name: String,
    /// The live view watched.
    view: String,
    /// A condition on the view's group columns, as a view query's `where`.
    #[schema(rename = "where")]
    filter: Option<String>,
    /// Group columns that make an alert group (comma separated); every group column of the
    /// view by default.
    group_by: Option<String>,
    /// Bucket width, e.g. `1 minute`; the view's own by default.
    grain: Option<String>,
    /// The output column compared.
    value: String,
    /// `above`, `below`, `change_pct_above` or `change_pct_below`.
    condition: String,
    threshold: f64,
    /// Consecutive buckets the condition must hold for (default 1).
    #[schema(rename = "for")]
    for_buckets: Option<u32>,
    webhook: WebhookRequest,
    /// Whether the alert is evaluated (default true).
    enabled: Option<bool>,
}

/// Where notifications go: Standard Webhooks, signed with the secret.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookRequest {
    url: String,
    /// `whsec_<base64>` (the decoded bytes sign) or any other text (its UTF-8 bytes sign).
    secret: String,
}

/// `?limit=` of the history.
#[derive(Deserialize, IntoParams)]
pub struct HistoryParams {
    /// The most recent entries to list (default 1000, at most 10000).
    limit: Option<usize>,
}

/// Reads a JSON body: for a new alert, every field's form is checked here (the view-dependent
/// checks run on the tenant's worker); then the webhook's address, which may not resolve to a
/// private network.
async fn definition(hub: &Hub, body: &axum::body::Bytes, create: bool) -> ApiResult<Value> {
    let text = utf8(body)?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if create {
        AlertSpec::from_json(&value, None)?;
    }
    if let Some(url) = value
        .get("webhook")
        .and_then(|w| w.get("url"))
        .and_then(Value::as_str)
    {
        webhook::check_destination(url, hub.settings.allow_private_webhooks)
            .await
            .map_err(|e| ApiError::bad_request(format!("webhook.url: {e}")))?;
    }
    Ok(value)
}

/// Create an alert.
///
/// The alert is evaluated whenever an ingest changes its view and each second as time passes;
/// each change of a group's state (`firing`, `resolved`) is one notification to the webhook.
#[utoipa::path(post, path = "/v1/alerts", tag = "alerts",
    request_body = AlertRequest,
    responses(
        (status = 201, description = "Created: the alert with its id"),
        (status = 400, description = "A field is missing or wrong (named)", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 409, description = "The tenant has the most alerts it may", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn create_alert(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let value = definition(&hub, &body, true).await?;
    let alert = hub
        .alerts(&principal.tenant, AlertOp::Create(value))
        .await?;
    Ok((StatusCode::CREATED, Json(alert)))
}

/// List the alerts.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    responses(
        (status = 200, description = "`{\"items\":[…]}` (as the other lists), each alert with its count of firing groups"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn list_alerts(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let alerts = hub.alerts(&principal.tenant, AlertOp::List).await?;
    Ok(Json(serde_json::json!({ "items": alerts })))
}

/// Show an alert with its firing groups.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "The alert's id")),
    responses(
        (status = 200, description = "The alert and `groups` (those firing)"),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such alert", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn show_alert(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    Ok(Json(
        hub.alerts(&principal.tenant, AlertOp::Show(id)).await?,
    ))
}

/// Change an alert: the fields sent replace the alert's (`null` clears `where`, `group_by`,
/// `grain`); a webhook without a secret keeps the secret.
#[utoipa::path(patch, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "The alert's id")),
    request_body = AlertRequest,
    responses(
        (status = 200, description = "The changed alert"),
        (status = 400, description = "A field is wrong (named)", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such alert", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn patch_alert(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let value = definition(&hub, &body, false).await?;
    Ok(Json(
        hub.alerts(&principal.tenant, AlertOp::Patch(id, value))
            .await?,
    ))
}

/// Delete an alert with its states, history and pending deliveries.
#[utoipa::path(delete, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "The alert's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such alert", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn delete_alert(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    hub.alerts(&principal.tenant, AlertOp::Delete(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An alert's history: every state change (`firing`, `resolved`, `acknowledged`) in time
/// order, with each notification's delivery (attempts, last status or error, next attempt).
#[utoipa::path(get, path = "/v1/alerts/{id}/history", tag = "alerts",
    params(("id" = String, Path, description = "The alert's id"), HistoryParams),
    responses(
        (status = 200, description = "`{\"alert\":…,\"history\":[…]}`"),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such alert", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn alert_history(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let limit = params.limit.unwrap_or(1_000);
    Ok(Json(
        hub.alerts(&principal.tenant, AlertOp::History { id, limit })
            .await?,
    ))
}

/// Acknowledge an alert's firing groups (recorded in the history; no notification).
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = String, Path, description = "The alert's id")),
    responses(
        (status = 200, description = "`{\"alert\":…,\"acknowledged\":n}`"),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such alert", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn ack_alert(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    Ok(Json(hub.alerts(&principal.tenant, AlertOp::Ack(id)).await?))
}
