//! `tally serve`: the HTTP API of DESIGN.md.
//!
//! - [`app`] builds the axum router over a [`Hub`] (tests drive it with `oneshot`);
//! - [`serve`] binds, accepts with header-read timeouts, and shuts down gracefully on SIGTERM or
//!   Ctrl-C: stop accepting, finish requests in flight, flush every tenant's views, return.
//!
//! The edges are hardened in layers, outermost first: panics become a JSON 500; non-JSON error
//! answers become the JSON error body; `Authorization` is marked sensitive (never logged); a
//! request must be answered within the request timeout and its body received within the body
//! deadline (slow clients cannot hold a connection); gzip bodies are decompressed *before* the
//! 512 KB limit applies, so a gzip bomb stops at 512 KB.

pub mod error;
pub mod hub;
pub mod metrics;
pub mod routes;
pub mod segment;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::{RequestBodyDeadlineLayer, TimeoutLayer};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use hub::{Hub, ServerConfig};

/// The largest request body, after decompression.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// The router with every route and layer, over `hub`.
pub fn app(hub: Arc<Hub>) -> Router {
    let (router, api) = api_router().with_state(hub.clone()).split_for_parts();
    let spec = Arc::new(openapi_json(api));
    let settings = hub.settings.clone();
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let spec = spec.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        spec.as_str().to_owned(),
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::not_found("there is no such route; see /v1/openapi.json") })
        .layer(axum::middleware::from_fn_with_state(hub, count_responses))
        .layer(DefaultBodyLimit::disable())
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("a request handler panicked");
                    ApiError::internal().into_response()
                }))
                .layer(axum::middleware::map_response(error::json_errors))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                ]))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    settings.request_timeout,
                ))
                .layer(RequestBodyDeadlineLayer::new(settings.body_timeout))
                .layer(RequestDecompressionLayer::new())
                .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
                // Back to axum's body type for the router.
                .layer(MapRequestBodyLayer::new(axum::body::Body::new)),
        )
}

/// The routes that make up the OpenAPI document.
fn api_router() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(routes!(routes::ingest::ingest_stream))
        .routes(routes!(segment::routes::segment_batch))
        .routes(routes!(segment::routes::segment_track))
        .routes(routes!(segment::routes::segment_identify))
        .routes(routes!(segment::routes::segment_page))
        .routes(routes!(segment::routes::segment_screen))
        .routes(routes!(segment::routes::segment_group))
        .routes(routes!(segment::routes::segment_alias))
        .routes(routes!(routes::catalog::list_streams))
        .routes(routes!(routes::catalog::list_views))
        .routes(routes!(routes::query::query_view))
        .routes(routes!(routes::admin::apply_schema))
        .routes(routes!(
            routes::admin::create_tenant,
            routes::admin::list_tenants
        ))
        .routes(routes!(routes::admin::create_key))
        .routes(routes!(routes::admin::revoke_key))
        .routes(routes!(routes::operations::healthz))
        .routes(routes!(routes::operations::metrics))
}

/// The OpenAPI document, with the security schemes and the document's own route.
fn openapi_json(mut api: utoipa::openapi::OpenApi) -> String {
    api.info.title = "Tally".into();
    api.info.description = Some(
        "Live SQL analytics views over event streams. Keys: a tenant's write key ingests, its read key queries; the admin token (TALLY_ADMIN_TOKEN) manages tenants and schema.".into(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "key",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
    );
    components.add_security_scheme(
        "admin",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        paths.insert(
            "/v1/openapi.json".into(),
            serde_json::json!({"get": {
                "tags": ["operations"],
                "summary": "This document.",
                "operationId": "openapi",
                "responses": {"200": {"description": "The OpenAPI document"}}
            }}),
        );
    }
    doc.to_string()
}

/// Counts responses by route and status for `/metrics`.
async fn count_responses(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_group(p.as_str()))
        .unwrap_or("unmatched");
    let response = next.run(request).await;
    hub.metrics
        .count_response(route, response.status().as_u16());
    response
}

fn route_group(path: &str) -> &'static str {
    match path {
        "/v1/streams/{stream}/events" => "ingest",
        "/v1/batch" | "/v1/track" | "/v1/identify" | "/v1/page" | "/v1/screen" | "/v1/group"
        | "/v1/alias" => "segment",
        "/v1/views/{view}" => "query",
        "/v1/views" | "/v1/streams" => "catalog",
        "/v1/schema"
        | "/v1/tenants"
        | "/v1/tenants/{tenant}/keys"
        | "/v1/tenants/{tenant}/keys/{prefix}" => "admin",
        _ => "other",
    }
}

/// How often a node on a shared database checks whether another node changed the schema.
const SCHEMA_POLL: Duration = Duration::from_secs(2);

/// Serves `hub` until `shutdown` resolves, then drains: no new connections, requests in flight
/// finish (up to the shutdown timeout), every tenant's views are flushed.
pub async fn serve(
    hub: Arc<Hub>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let router = app(hub.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(hub.settings.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // With other nodes on the same database, a schema any of them applies reaches this one.
    let watcher = hub.is_shared().then(|| {
        let hub = hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCHEMA_POLL).await;
                match hub.refresh_catalog().await {
                    Ok(true) => tracing::info!("schema changed on another node; reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e.message, "cannot check the schema"),
                }
            }
        })
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(hub.settings.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown timeout; closing them");
    }
    hub.shutdown().await;
    tracing::info!("views flushed; stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
