//! `tally serve`: the HTTP API of DESIGN.md.
//!
//! - [`app`] builds the axum router over a [`Hub`] (tests drive it with `oneshot`);
//! - [`serve`] accepts up to the connection limit, with first-byte, header-read and idle
//!   timeouts (`conn.rs`), and shuts down gracefully on SIGTERM or Ctrl-C: stop accepting,
//!   finish requests in flight, flush every tenant's views, return.
//!
//! The edges are hardened in layers, outermost first: panics become a JSON 500; non-JSON error
//! answers become the JSON error body; `Authorization` is marked sensitive (never logged); a
//! request must be answered within the request timeout and its body received within the body
//! deadline (slow clients cannot hold a connection); gzip bodies are decompressed *before* the
//! 512 KB limit applies, so a gzip bomb stops at 512 KB.

mod conn;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod routes;
pub mod segment;
pub mod statsd;
mod web;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

use conn::Connections;
pub(crate) use conn::raise_open_files_limit;
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
        .merge(web::routes())
        .fallback(|| async { ApiError::not_found("there is no such route; see /v1/openapi.json") })
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            limit_failed_authentication,
        ))
        .layer(axum::middleware::from_fn_with_state(hub, count_responses))
        .layer(axum::middleware::from_fn(refuse_ambiguous_length))
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
    let router = OpenApiRouter::new()
        .routes(routes!(routes::ingest::ingest_stream))
        .routes(routes!(routes::rejections::list_rejections))
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
        .routes(routes!(routes::analyses::analyze))
        .routes(routes!(routes::tables::upsert_rows))
        .routes(routes!(routes::tables::delete_row))
        .routes(routes!(
            routes::alerts::create_alert,
            routes::alerts::list_alerts
        ))
        .routes(routes!(
            routes::alerts::show_alert,
            routes::alerts::patch_alert,
            routes::alerts::delete_alert
        ))
        .routes(routes!(routes::alerts::alert_history))
        .routes(routes!(routes::alerts::ack_alert))
        .routes(routes!(
            routes::dashboards::create_dashboard,
            routes::dashboards::list_dashboards
        ))
        .routes(routes!(
            routes::dashboards::show_dashboard,
            routes::dashboards::put_dashboard,
            routes::dashboards::delete_dashboard
        ))
        .routes(routes!(routes::dashboards::widget_data))
        .routes(routes!(routes::export::export_view))
        .routes(routes!(routes::export::export_stream))
        .routes(routes!(routes::persons::erase_person))
        .routes(routes!(routes::persons::list_erasures))
        .routes(routes!(routes::admin::apply_schema))
        .routes(routes!(
            routes::admin::create_tenant,
            routes::admin::list_tenants
        ))
        .routes(routes!(routes::admin::create_key))
        .routes(routes!(routes::admin::revoke_key))
        .routes(routes!(routes::operations::healthz))
        .routes(routes!(routes::operations::metrics));
    #[cfg(feature = "sql")]
    let router = router.routes(routes!(routes::sql::run_sql));
    router
}

/// The OpenAPI document, with the security schemes and the document's own route.
fn openapi_json(mut api: utoipa::openapi::OpenApi) -> String {
    api.info.title = "Tally".into();
    api.info.description = Some(
        "Live SQL analytics views over event streams. Keys: a tenant's write key ingests, its read key queries, its manage key manages alerts; the admin token (TALLY_ADMIN_TOKEN) manages tenants and schema.".into(),
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

/// Refuses, before any handler, a client address that failed to authenticate too often (429
/// with `Retry-After`), and counts the failures (401 answers) of each address. The address is
/// the connection's peer; behind a proxy, that is the proxy.
async fn limit_failed_authentication(
    State(hub): State<Arc<Hub>>,
    request: Request,
    next: Next,
) -> Response {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(addr) = addr
        && let Err(wait) = hub.may_authenticate(addr)
    {
        hub.metrics.count_refused("authentication_failures");
        return ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed authentications from this address; check the key and retry later",
            )
        }
        .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(addr) = addr
    {
        hub.failed_authentication(addr);
    }
    response
}

/// Refuses a request that carries both `Content-Length` and `Transfer-Encoding`: a proxy in
/// front may read its body differently (request smuggling).
async fn refuse_ambiguous_length(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers.contains_key(header::CONTENT_LENGTH)
        && headers.contains_key(header::TRANSFER_ENCODING)
    {
        return ApiError::bad_request(
            "the request has both Content-Length and Transfer-Encoding; send one of them",
        )
        .into_response();
    }
    next.run(request).await
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
        "/v1/rejections" => "rejections",
        "/v1/alerts" | "/v1/alerts/{id}" | "/v1/alerts/{id}/history" | "/v1/alerts/{id}/ack" => {
            "alerts"
        }
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
    serve_with_statsd(hub, listener, None, shutdown).await
}

/// [`serve`], with StatsD listeners: they stop when the HTTP requests have drained, and what
/// they aggregated is committed before the views' last flush.
pub async fn serve_with_statsd(
    hub: Arc<Hub>,
    listener: tokio::net::TcpListener,
    statsd: Option<statsd::Bound>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let statsd = statsd
        .filter(|s| !s.is_empty())
        .map(|s| s.start(hub.clone()));
    let connections = Connections::new(app(hub.clone()), &hub.settings, hub.metrics.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    // The scheduler (alert ticks, retention) and the webhook sender.
    let background = hub.start_background();
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
    // Idle tenants release their worker thread, files and database connection.
    let releaser = {
        let hub = hub.clone();
        let idle = hub.settings.tenant_idle;
        let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                hub.release_idle(idle).await;
            }
        })
    };
    loop {
        // At the connection limit, wait for one to close; the listen backlog holds new ones.
        let permit = tokio::select! {
            permit = connections.room() => permit,
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => connections.serve(stream, peer, permit),
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    releaser.abort();
    for task in background {
        task.abort();
    }
    tracing::info!("shutting down: finishing requests in flight");
    if !connections.drain(hub.settings.shutdown_timeout).await {
        tracing::warn!("requests still running after the shutdown timeout; closing them");
    }
    if let Some(statsd) = statsd {
        statsd.stop().await;
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
