//! The routes of DESIGN.md's HTTP table: handlers, their keys and their OpenAPI description.
//!
//! Every handler authenticates first (write key, read key or admin token), then does one hub
//! operation. Bodies are taken as bytes and parsed here, so that JSON, NDJSON and Segment's
//! `text/plain` all work and every parse error is the JSON error body with a clear message.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tally_store::KeyKind;
use tally_views::{ColumnSource, Param, QueryError};
use utoipa::ToSchema;

use crate::error::Error;
use crate::output::result_json;
use crate::params::QueryParams;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::{Hub, Principal};
use crate::server::segment;
use crate::server::worker::{Outcome, Record};

type ApiResult<T> = Result<T, ApiError>;

// ---- authentication ----

/// The key of a request: `Authorization: Bearer <key>`, or HTTP Basic with the key as the user
/// name (Segment's libraries), or as the password when the user name is empty.
fn credentials(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned()).filter(|k| !k.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let key = if user.is_empty() { password } else { user };
        return Some(key.to_owned()).filter(|k| !k.is_empty());
    }
    None
}

/// Authenticates a key of `kind` and takes a token from its rate limit.
async fn authorize(hub: &Arc<Hub>, key: Option<String>, kind: KeyKind) -> ApiResult<Principal> {
    let Some(key) = key else {
        hub.metrics.count_refused("unauthorized");
        return Err(ApiError::unauthorized(
            "no key: send it as `Authorization: Bearer <key>`",
        ));
    };
    let Some(principal) = hub.principal(&key).await? else {
        hub.metrics.count_refused("unauthorized");
        return Err(ApiError::unauthorized(
            "the key is not valid (unknown or revoked)",
        ));
    };
    if principal.kind != kind {
        return Err(ApiError::forbidden(match kind {
            KeyKind::Write => "this route ingests events and needs a write key; this is a read key",
            KeyKind::Read => "this route reads data and needs a read key; this is a write key",
        }));
    }
    if let Err(seconds) = hub.rate_limit(&principal) {
        hub.metrics.count_refused("rate_limited");
        return Err(ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this key sends more than {} requests per second; retry after {seconds} s",
                    hub.settings.rate_limit
                ),
            )
        });
    }
    Ok(principal)
}

/// Checks the admin token.
fn admin(hub: &Hub, headers: &HeaderMap) -> ApiResult<()> {
    if !hub.admin_enabled() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin routes are off: start `tally serve` with TALLY_ADMIN_TOKEN set",
        ));
    }
    match credentials(headers) {
        None => Err(ApiError::unauthorized(
            "no admin token: send it as `Authorization: Bearer <TALLY_ADMIN_TOKEN>`",
        )),
        Some(token) if hub.is_admin(&token) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the admin token is not valid")),
    }
}

// ---- bodies ----

fn utf8(body: &Bytes) -> ApiResult<&str> {
    std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

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
fn native_records(headers: &HeaderMap, body: &Bytes) -> ApiResult<Vec<Record>> {
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
        _ => Ok(lines(text)),
    }
}

// ---- responses ----

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

/// Segment's answer, with Tally's counts.
#[derive(Serialize, ToSchema)]
pub struct SegmentResponse {
    pub success: bool,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejection>,
}

#[derive(Serialize, ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    /// `TEXT`, `BIGINT`, `DOUBLE`, `DECIMAL(p,s)`, `TIMESTAMP`, `BOOLEAN` or `JSON`.
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Serialize, ToSchema)]
pub struct StreamColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StreamInfo {
    pub name: String,
    pub columns: Vec<StreamColumn>,
    pub event_time: String,
    pub dedupe_key: Option<String>,
    pub retention: Option<String>,
    pub builtin: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ViewInfo {
    pub name: String,
    pub stream: String,
    pub columns: Vec<ColumnInfo>,
    /// The group columns, which `group_by` and `where` may use.
    pub group_by: Vec<String>,
    /// The time bucket column, which `from`, `to` and `grain` apply to.
    pub time_column: Option<String>,
    pub retention: Option<String>,
    pub sql: String,
}

#[derive(Serialize, ToSchema)]
pub struct Catalog<T: ToSchema> {
    pub items: Vec<T>,
}

/// A view query's answer.
#[derive(Serialize, ToSchema)]
pub struct QueryResponse {
    pub columns: Vec<ColumnInfo>,
    /// One array per row, values in column order: RFC 3339 timestamps, decimals as strings.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
}

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
}

#[derive(Serialize, ToSchema)]
pub struct SchemaResponse {
    pub changes: Vec<SchemaChange>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

// ---- handlers ----

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
    body: Bytes,
) -> ApiResult<Json<IngestResponse>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Write).await?;
    let records = native_records(&headers, &body)?;
    let outcome = hub.ingest(&principal.tenant, &stream, records).await?;
    Ok(Json(outcome.into()))
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
    let outcome = hub.ingest(&principal.tenant, "events", records).await?;
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
    body: Bytes,
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
    body: Bytes,
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
    body: Bytes,
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
    body: Bytes,
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
    body: Bytes,
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
    body: Bytes,
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
    body: Bytes,
) -> ApiResult<Json<SegmentResponse>> {
    segment(hub, headers, body, Some("alias")).await
}

/// The streams, with their columns and options.
#[utoipa::path(get, path = "/v1/streams", tag = "catalog",
    responses((status = 200, body = Catalog<StreamInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("key" = [])))]
pub async fn list_streams(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> ApiResult<Json<Catalog<StreamInfo>>> {
    authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let catalog = hub.catalog();
    let items = catalog
        .streams()
        .map(|s| StreamInfo {
            name: s.name.clone(),
            columns: s
                .columns
                .iter()
                .map(|c| StreamColumn {
                    name: c.name.clone(),
                    ty: c.ty.to_string(),
                    nullable: !c.not_null,
                })
                .collect(),
            event_time: s.columns[s.event_time].name.clone(),
            dedupe_key: s.dedupe_key.map(|i| s.columns[i].name.clone()),
            retention: s.retention.map(|r| r.to_string()),
            builtin: s.builtin,
        })
        .collect();
    Ok(Json(Catalog { items }))
}

/// The views, with their columns, group columns and definitions.
#[utoipa::path(get, path = "/v1/views", tag = "catalog",
    responses((status = 200, body = Catalog<ViewInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("key" = [])))]
pub async fn list_views(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> ApiResult<Json<Catalog<ViewInfo>>> {
    authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let catalog = hub.catalog();
    let items = catalog
        .views()
        .map(|v| ViewInfo {
            name: v.name.clone(),
            stream: v.stream.clone(),
            columns: v
                .columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    ty: c.ty.to_string(),
                })
                .collect(),
            group_by: v
                .columns
                .iter()
                .filter(|c| matches!(c.source, ColumnSource::Key(_)))
                .map(|c| c.name.clone())
                .collect(),
            time_column: v.bucket.map(|b| v.keys[b].name.clone()),
            retention: v.retention.map(|r| r.to_string()),
            sql: v.sql.clone(),
        })
        .collect();
    Ok(Json(Catalog { items }))
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
    /// A condition on group columns, e.g. `country = 'DE'`.
    #[serde(rename = "where")]
    #[param(rename = "where")]
    pub filter: Option<String>,
    /// `COL` or `COL desc`.
    pub order_by: Option<String>,
    pub limit: Option<String>,
}

/// Read a view: stored rows and every acknowledged event, re-grouped as asked.
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
    let limit = match q.remove("limit") {
        None => None,
        Some(l) => Some(l.trim().parse::<usize>().map_err(|_| {
            ApiError::from(Error::Query(QueryError::Invalid {
                param: Param::Limit,
                message: format!("'{l}' is not a whole number"),
            }))
        })?),
    };
    let params = QueryParams {
        from: q.remove("from"),
        to: q.remove("to"),
        grain: q.remove("grain"),
        group_by: q
            .remove("group_by")
            .map(|g| g.split(',').map(str::to_owned).collect()),
        filter: q.remove("where"),
        order_by: q.remove("order_by"),
        limit,
    };
    if let Some(unknown) = q.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}'; the parameters are from, to, grain, group_by, where, order_by and limit"
        )));
    }
    let request = params.to_request().map_err(Error::Query)?;
    let result = hub.query(&principal.tenant, &view, request).await?;
    Ok(Json(result_json(&result)).into_response())
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
    body: Bytes,
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
    body: Bytes,
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
            let info = tally.create_tenant(&request.name, zone)?;
            let write_key = tally.create_key(&info.name, KeyKind::Write)?;
            let read_key = tally.create_key(&info.name, KeyKind::Read)?;
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
    body: Bytes,
) -> ApiResult<Response> {
    admin(&hub, &headers)?;
    let request: KeyRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"kind\":\"read\"}} or {{\"kind\":\"write\"}}: {e}"
        ))
    })?;
    let Some(kind) = KeyKind::parse(&request.kind) else {
        return Err(ApiError::bad_request(format!(
            "kind '{}' is not a key kind; use read or write",
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

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Prometheus metrics: ingest counts and rejections, refused requests, flush lag, query latency.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics.render(),
    )
        .into_response()
}
