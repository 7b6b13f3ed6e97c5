//! `GET /v1/streams` and `GET /v1/views`: the catalog with column types.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use tally_store::KeyKind;
use tally_views::ColumnSource;
use utoipa::ToSchema;

use crate::server::error::ErrorBody;
use crate::server::hub::Hub;
use crate::server::routes::{ApiResult, authorize, credentials};

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
    /// `live` (a materialized view, kept on every event) or `saved_query` (query-time SQL
    /// computed when read, with parameters).
    pub kind: &'static str,
    /// The stream a live view reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// A saved query's parameters, given as URL parameters of `GET /v1/views/{view}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
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
            dedupe_key: s.has_dedupe_key().then(|| {
                s.dedupe_key
                    .iter()
                    .map(|&i| s.columns[i].name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
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
    let items: Vec<ViewInfo> = catalog
        .views()
        .map(|v| ViewInfo {
            name: v.name.clone(),
            kind: "live",
            stream: Some(v.stream.clone()),
            params: Vec::new(),
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
    #[cfg(feature = "sql")]
    let items = {
        let mut items = items;
        for q in catalog.saved_queries() {
            // Checked when the schema was applied, so it plans; its columns come from that.
            let columns = crate::sql::check_saved_query(&catalog, q).unwrap_or_default();
            items.push(ViewInfo {
                name: q.name.clone(),
                kind: "saved_query",
                stream: None,
                params: q.params.clone(),
                columns: columns
                    .into_iter()
                    .map(|(name, ty)| ColumnInfo {
                        name,
                        ty: ty.to_string(),
                    })
                    .collect(),
                group_by: Vec::new(),
                time_column: None,
                retention: None,
                sql: q.sql(),
            });
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        items
    };
    Ok(Json(Catalog { items }))
}
