//! `GET /healthz` and `GET /metrics`: liveness and Prometheus metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::server::hub::Hub;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `failing` while commits to the store fail.
    pub status: String,
    /// What is failing (a full disk, no connections left, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness, and whether the store takes commits: 200 `{"status":"ok"}`, or 503
/// `{"status":"failing","reason":…}` from a failed commit until one succeeds again.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "The store is failing", body = Health)))]
pub async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    match hub.metrics.store_failure() {
        None => Json(Health {
            status: "ok".into(),
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(Health {
                status: "failing".into(),
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
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
