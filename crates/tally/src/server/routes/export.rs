//! Exports (docs/exports.md): `GET /v1/views/{view}/export` (read key; the view query's
//! parameters) and `GET /v1/streams/{stream}/export` (manage key: raw events), as CSV, NDJSON
//! or Parquet, with a `Tally-Cursor` header that a later export passes as `after` to get only
//! what changed. A stream's events are read and encoded a batch at a time on a blocking thread
//! with a store handle of its own and sent as they are made: memory stays constant whatever
//! the size, and the tenant's worker is not held up.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use tally_store::KeyKind;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::export::{BATCH, Encoder, ExportFormat, parse_cursor, stream_columns, write_stream};
use crate::server::error::{ApiError, ErrorBody};
use crate::server::hub::Hub;
use crate::server::routes::query::{url_limit, url_params};
use crate::server::routes::{ApiResult, authorize, credentials};

/// The header that carries an export's cursor.
pub const CURSOR: &str = "tally-cursor";

/// A response body fed by a channel of chunks.
struct Chunks(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

fn format_of(q: &mut HashMap<String, String>) -> ApiResult<ExportFormat> {
    Ok(ExportFormat::parse(
        q.remove("format").as_deref().unwrap_or("ndjson"),
    )?)
}

fn exported(format: ExportFormat, name: &str, cursor: u64, body: axum::body::Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{name}.{}\"",
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cursor.to_string()) {
        headers.insert(CURSOR, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CURSOR),
    );
    response
}

/// Export a view's rows.
///
/// The rows of the view query the other parameters make, as `format` (`csv`, `ndjson` —
/// the default — or `parquet`, with the columns' types: decimals as `DECIMAL`, times as UTC
/// timestamps). `Tally-Cursor` names where the export ends; with `after=<cursor>`, only the
/// rows whose group changed since are exported (deleted rows are not).
#[utoipa::path(get, path = "/v1/views/{view}/export", tag = "export",
    params(
        ("view" = String, Path, description = "The live view"),
        ("format" = Option<String>, Query, description = "csv, ndjson (default) or parquet"),
        ("after" = Option<String>, Query, description = "The Tally-Cursor of an earlier export: only rows changed since"),
        crate::server::routes::query::ViewQuery,
    ),
    responses(
        (status = 200, description = "The rows, with a Tally-Cursor header"),
        (status = 400, description = "A bad parameter (named)", body = ErrorBody),
        (status = 403, description = "Not a read key", body = ErrorBody),
        (status = 404, description = "No such view", body = ErrorBody),
        (status = 409, description = "Events after the cursor were deleted: export again without after", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn export_view(
    State(hub): State<Arc<Hub>>,
    Path(view): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Read).await?;
    let Query(mut q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let format = format_of(&mut q)?;
    let after = q.remove("after").map(|a| parse_cursor(&a)).transpose()?;
    let limit = url_limit(&mut q)?;
    let params = url_params(&mut q, limit);
    if let Some(unknown) = q.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}'; the parameters are format, after, from, to, grain, group_by, where, order_by and limit"
        )));
    }
    let request = params.to_request().map_err(Error::Query)?;
    let (answer, cursor) = hub
        .export_view(&principal.tenant, &view, request, after)
        .await?;
    let bytes = tokio::task::spawn_blocking(move || -> crate::Result<Vec<u8>> {
        let mut encoder = Encoder::new(format, answer.columns.clone())?;
        let mut out = Vec::new();
        for chunk in answer.rows.chunks(BATCH) {
            out.extend(encoder.write(chunk)?);
        }
        out.extend(encoder.finish()?);
        Ok(out)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(exported(
        format,
        &view,
        cursor,
        axum::body::Body::from(bytes),
    ))
}

/// Export a stream's raw events.
///
/// The events with sequence numbers after `after_seq` (or the cursor `after`) up to the last
/// committed when the export began, in order, each with its `_seq` first; streamed in
/// constant memory. `Tally-Cursor` is that last sequence number.
#[utoipa::path(get, path = "/v1/streams/{stream}/export", tag = "export",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("format" = Option<String>, Query, description = "csv, ndjson (default) or parquet"),
        ("after_seq" = Option<u64>, Query, description = "Only events with a higher sequence number"),
        ("after" = Option<String>, Query, description = "The Tally-Cursor of an earlier export (the same as after_seq)"),
    ),
    responses(
        (status = 200, description = "The events, with a Tally-Cursor header"),
        (status = 400, description = "A bad parameter (named)", body = ErrorBody),
        (status = 403, description = "Not a manage key", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
    ),
    security(("key" = [])))]
pub async fn export_stream(
    State(hub): State<Arc<Hub>>,
    Path(stream): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let principal = authorize(&hub, credentials(&headers), KeyKind::Manage).await?;
    let Query(mut q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let format = format_of(&mut q)?;
    let after = match (q.remove("after_seq"), q.remove("after")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "after_seq and after are the same thing: give one",
            ));
        }
        (Some(s), None) => s.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("after_seq: '{s}' is not a sequence number"))
        })?,
        (None, Some(c)) => parse_cursor(&c)?,
        (None, None) => 0,
    };
    if let Some(unknown) = q.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}'; the parameters are format, after_seq and after"
        )));
    }
    let def =
        hub.catalog().stream(&stream).cloned().ok_or_else(|| {
            ApiError::from(Error::NotFound(format!("there is no stream {stream}")))
        })?;
    let tenant = principal.tenant.clone();
    let store = hub
        .with_tally(move |t| Ok(t.store().tenant(&tenant)?))
        .await?;
    let head_of = def.clone();
    let (store, head) = tokio::task::spawn_blocking(move || {
        let head = store.last_seq(&head_of)?;
        Ok::<_, crate::Error>((store, head))
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let encoder = Encoder::new(format, stream_columns(&def))?;
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        // The client going away ends the export: the sink answers false.
        let sink = |bytes: Vec<u8>| {
            Ok(bytes.is_empty() || sender.blocking_send(Ok(Bytes::from(bytes))).is_ok())
        };
        if let Err(e) = write_stream(&store, &def, (after, head), encoder, sink) {
            tracing::warn!(error = %e, "a stream export failed midway");
            let _ = sender.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok(exported(
        format,
        &stream,
        head.max(after),
        axum::body::Body::new(Chunks(receiver)),
    ))
}
