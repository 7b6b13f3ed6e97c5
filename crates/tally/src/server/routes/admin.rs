//! The admin routes: `POST /v1/schema`, tenants and their keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_store::KeyKind;
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::catalog::Catalog;
use crate::server::routes::{ApiResult, Body, admin, utf8};

#[derive(Deserialize, ToSchema)]
pub struct TenantRequest {
    pub name: String,
    /// An IANA time zone; buckets of a day or longer start at its midnight. Default UTC.
    pub time_zone: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: String,
    pub time_zone: String,
    /// Shown once; only its hash is stored.
    pub write_key: String,
    /// Shown once; only its hash is stored.
    pub read_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct TenantSummary {
    pub tenant: String,
    pub time_zone: String,
    pub created_at: String,
}

#[derive(Deserialize, ToSchema)]
pub struct KeyRequest {
    /// `read` or `write`.
    pub kind: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub tenant: String,
    pub kind: String,
    /// Shown once; only its hash is stored.
    pub key: String,
    /// The key's first characters, which name it for revocation.
    pub prefix: String,
}

#[derive(Serialize, ToSchema)]
pub struct SchemaChange {
    /// e.g. `created view daily`, `replaced view daily`, `unchanged stream hits`.
    pub change: String,
    pub changed: bool,
    /// For created and changed views: events replayed into it, over all tenants.
    pub backfilled: Option<u64>,
    /// What the definition may not mean as written, e.g. an integer division that truncates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SchemaResponse {
    pub changes: Vec<SchemaChange>,
}

/// Apply SQL definitions (streams and views) to every tenant.
///
/// The body is the SQL text (`Content-Type: application/sql` or `text/plain`). Applying the same
/// text twice changes nothing; a changed view is rebuilt and a new one backfilled.
#[utoipa::path(post, path = "/v1/schema", tag = "admin",
    request_body(content = String, content_type = "application/sql"),
    responses(
        (status = 200, body = SchemaResponse),
        (status = 401, body = ErrorBody), (status = 403, description = "Admin routes are off", body = ErrorBody),
        (status = 415, description = "Not SQL text", body = ErrorBody),
        (status = 422, description = "The SQL is not valid, with line, column and hint", body = ErrorBody),
    ),
    security(("admin" = [])))]
pub async fn apply_schema(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<SchemaResponse>> {
    admin(&hub, &headers)?;
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let ct = ct.to_ascii_lowercase();
        if !(ct.starts_with("application/sql")
            || ct.starts_with("text/plain")
            || ct.starts_with("text/sql"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send the SQL text itself with Content-Type: application/sql, not {ct}"),
            ));
        }
    }
    let sql = utf8(&body)?.to_owned();
    let reports = hub.apply_schema(sql).await?;
    Ok(Json(SchemaResponse {
        changes: reports
            .into_iter()
            .map(|r| SchemaChange {
                changed: r.change.is_change(),
                change: r.change.to_string(),
                backfilled: r.backfilled,
                warnings: r.warnings,
            })
            .collect(),
    }))
}

/// Create a tenant; the answer carries its first write and read keys, shown once.
#[utoipa::path(post, path = "/v1/tenants", tag = "admin",
    request_body = TenantRequest,
    responses(
        (status = 201, body = CreatedTenant),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The tenant exists", body = ErrorBody),
        (status = 422, description = "Bad name or time zone", body = ErrorBody),
    ),
    security(("admin" = [])))]
pub async fn create_tenant(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    admin(&hub, &headers)?;
    let request: TenantRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"name\":\"acme\",\"time_zone\":\"Europe/Berlin\"}}: {e}"
        ))
    })?;
    let created = hub
        .with_tally(move |tally| {
            let zone = request.time_zone.as_deref().unwrap_or("UTC");
            let (info, mut keys) = tally.create_tenant_with_keys(
                &request.name,
                zone,
                &[KeyKind::Write, KeyKind::Read],
            )?;
            let read_key = keys.pop().unwrap_or_default();
            let write_key = keys.pop().unwrap_or_default();
            Ok(CreatedTenant {
                tenant: info.name,
                time_zone: info.time_zone,
                write_key,
                read_key,
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// List the tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "admin",
    responses((status = 200, body = Catalog<TenantSummary>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin" = [])))]
pub async fn list_tenants(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> ApiResult<Json<Catalog<TenantSummary>>> {
    admin(&hub, &headers)?;
    let tenants = hub.with_tally(|t| t.tenants()).await?;
    Ok(Json(Catalog {
        items: tenants
            .into_iter()
            .map(|t| TenantSummary {
                tenant: t.name,
                time_zone: t.time_zone,
                created_at: t.created_at.to_string(),
            })
            .collect(),
    }))
}

/// Create another key for a tenant (shown once).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", tag = "admin",
    params(("tenant" = String, Path)),
    request_body = KeyRequest,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = [])))]
pub async fn create_key(
    State(hub): State<Arc<Hub>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    admin(&hub, &headers)?;
    let request: KeyRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"kind\":\"read\"}}, {{\"kind\":\"write\"}} or {{\"kind\":\"manage\"}}: {e}"
        ))
    })?;
    let Some(kind) = KeyKind::parse(&request.kind) else {
        return Err(ApiError::bad_request(format!(
            "kind '{}' is not a key kind; use read, write or manage",
            request.kind
        )));
    };
    let owner = tenant.clone();
    let key = hub.with_tally(move |t| t.create_key(&owner, kind)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            tenant,
            kind: kind.as_str().to_owned(),
            prefix: key[..14].to_owned(),
            key,
        }),
    )
        .into_response())
}

/// Revoke a tenant's key by its prefix (the first 14 characters).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/keys/{prefix}", tag = "admin",
    params(("tenant" = String, Path), ("prefix" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody)),
    security(("admin" = [])))]
pub async fn revoke_key(
    State(hub): State<Arc<Hub>>,
    Path((tenant, prefix)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    admin(&hub, &headers)?;
    let revoked = hub
        .with_tally(move |t| Ok(t.store().revoke_key(&tenant, &prefix)?))
        .await?;
    hub.forget_keys();
    if revoked == 0 {
        return Err(ApiError::not_found("there is no such key of this tenant"));
    }
    Ok(StatusCode::NO_CONTENT)
}
