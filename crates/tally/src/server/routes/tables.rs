//! `PUT /v1/tables/{table}/rows` and `DELETE /v1/tables/{table}/rows/{key}`: a tenant's
//! reference data, upserted and deleted by primary key with the write key.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use tally_store::KeyKind;
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::ingest::{Rejection, native_records};
use crate::server::routes::{ApiResult, Body, authorize, credentials};
use crate::server::worker::Record;

/// The answer of an upsert: rows stored, and each rejected row with its index in the request.
#[derive(Serialize, ToSchema)]
pub struct UpsertResponse {
    pub upserted: u64,
    pub rejected: Vec<Rejection>,
}

/// Insert or replace rows of a table.
///
/// The body is a JSON array of row objects, one object, or NDJSON
/// (`Content-Type: application/x-ndjson`); `Content-Encoding: gzip` is accepted. A row whose
/// key is already stored replaces it; within one request a later row wins. Fields are the
/// table's columns, converted as event fields are. Each bad row is rejected with its index and
/// reason; the others are stored in one transaction before the answer.
#[utoipa::path(put, path = "/v1/tables/{table}/rows", tag = "tables",
    params(("table" = String, Path, description = "The table (CREATE TABLE in the schema)")),
    request_body(content = String, description = "JSON array, object or NDJSON", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = UpsertResponse),
        (status = 400, description = "The body cannot be read", body = ErrorBody),
        (status = 401, description = "No valid write key", body = ErrorBody),
        (status = 403, description = "A read key", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
        (status = 413, description = "Body over 512 KB after decompression", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
        (status = 503, description = "The tenant's queue is full; see Retry-After", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn upsert_rows(
    State(hub): State<Arc<Hub>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<UpsertResponse>> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Write).await?;
    let records = native_records(&headers, &body)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Json(text) => Some(text),
            Record::Rejected { .. } => None,
        })
        .collect();
    let outcome = hub.upsert_rows(&principal.tenant, &table, records).await?;
    Ok(Json(UpsertResponse {
        upserted: outcome.upserted,
        rejected: outcome
            .rejected
            .into_iter()
            .map(|(index, error)| Rejection { index, error })
            .collect(),
    }))
}

/// Delete a row of a table by its primary key.
///
/// The key is the row's primary-key value as text (URL-encoded), parsed for the key column's
/// type.
#[utoipa::path(delete, path = "/v1/tables/{table}/rows/{key}", tag = "tables",
    params(
        ("table" = String, Path, description = "The table"),
        ("key" = String, Path, description = "The row's primary-key value"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 422, description = "The key does not fit the key column's type", body = ErrorBody),
        (status = 401, description = "No valid write key", body = ErrorBody),
        (status = 403, description = "A read key", body = ErrorBody),
        (status = 404, description = "No such table, or no row with this key", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn delete_row(
    State(hub): State<Arc<Hub>>,
    Path((table, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Write).await?;
    if hub.delete_row(&principal.tenant, &table, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "table {table} has no row with key {key}"
        )))
    }
}
