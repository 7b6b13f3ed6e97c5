//! Dashboards (docs/dashboards.md): named lists of widgets, each a view query or a query-time
//! SQL query, stored as tenant records and answered as JSON for the web page and other tools.
//!
//! A definition is read field by field (errors name the field, `widgets[2].query.view`), then
//! checked against the catalog as the query it makes (a view, its columns, the parameters).
//! Relative ranges (`-7 days`, `today`, `now`) resolve in the tenant's time zone when the data
//! is asked for, against the clock rounded up to the next whole minute, so that an answer and
//! its `ETag` stay the same through the minute while no event arrives.
//!
//! A `number` widget is its view re-grouped over the whole range (one row: sums add,
//! percentiles merge) and over the previous range of the same length, with the change in %.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tally_store::RecordWrite;
use tally_views::{Interval, QueryPlan, QueryRequest, ResultSet, TimeZone, Timestamp, Value};

use crate::error::{Error, Result};
use crate::output::{json_value, result_json};
use crate::params::QueryParams;
use crate::runtime::TenantRuntime;

/// The record kind of dashboards.
pub const DASHBOARD: &str = "dashboard";
const KEY_END: &str = "~";
const MAX_DASHBOARDS: usize = 1_000;
const MAX_WIDGETS: usize = 50;
const MAX_TEXT: usize = 200;
const MAX_SQL: usize = 100_000;

/// A stored dashboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub id: String,
    pub name: String,
    pub widgets: Vec<Widget>,
    pub created_at: String,
    pub updated_at: String,
}

/// One widget: a title, how it is drawn, and its query (`query` or `sql`, one of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Widget {
    pub title: String,
    pub kind: WidgetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<WidgetQuery>,
    /// A query-time SQL query (saved queries included); `:from` and `:to`, when it names
    /// them, are bound to the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// A SQL widget's range (a query widget's is in its query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// How a widget is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WidgetKind {
    Number,
    Line,
    Bar,
    Table,
}

impl WidgetKind {
    fn parse(text: &str) -> Option<WidgetKind> {
        match text {
            "number" => Some(WidgetKind::Number),
            "line" => Some(WidgetKind::Line),
            "bar" => Some(WidgetKind::Bar),
            "table" => Some(WidgetKind::Table),
            _ => None,
        }
    }
}

/// A view query, with the parameters of `GET /v1/views/{view}` and a range that may be
/// relative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WidgetQuery {
    pub view: String,
    /// The output column a `number` widget shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `hour`, `day`, … or `1 hour`, `1 day`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grain: Option<String>,
    /// Group columns to keep, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `-7 days`, `today`, `now`, or a time (RFC 3339, a date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// An operation on a tenant's dashboards, run on its worker.
#[derive(Debug)]
pub enum DashboardOp {
    Create(Json),
    List,
    Get(String),
    Put(String, Json),
    Delete(String),
}

impl DashboardOp {
    /// Runs the operation as of `now`; the answer as the API shows it.
    pub fn run(self, runtime: &mut TenantRuntime, now: Timestamp) -> Result<Json> {
        let shown = |d: &Dashboard| serde_json::to_value(d).unwrap_or(Json::Null);
        match self {
            DashboardOp::Create(body) => {
                if runtime.dashboards()?.len() >= MAX_DASHBOARDS {
                    return Err(Error::Conflict(format!(
                        "a tenant may have at most {MAX_DASHBOARDS} dashboards; delete one first"
                    )));
                }
                let id = uuid::Uuid::now_v7().to_string();
                let dashboard = read(&body, &id, now, None)?;
                check(runtime, &dashboard, now)?;
                runtime.put_dashboard(&dashboard)?;
                Ok(shown(&dashboard))
            }
            DashboardOp::List => Ok(json!({
                "items": runtime.dashboards()?.iter().map(|d| json!({
                    "id": d.id, "name": d.name, "widgets": d.widgets.len(),
                    "updated_at": d.updated_at,
                })).collect::<Vec<_>>()
            })),
            DashboardOp::Get(id) => Ok(shown(&runtime.dashboard(&id)?)),
            DashboardOp::Put(id, body) => {
                let old = runtime.dashboard(&id)?;
                let dashboard = read(&body, &id, now, Some(&old.created_at))?;
                check(runtime, &dashboard, now)?;
                runtime.put_dashboard(&dashboard)?;
                Ok(shown(&dashboard))
            }
            DashboardOp::Delete(id) => {
                runtime.dashboard(&id)?;
                runtime.store_mut().write_records(&[RecordWrite::Delete {
                    kind: DASHBOARD.into(),
                    key: id,
                }])?;
                Ok(Json::Null)
            }
        }
    }

    /// Whether the operation changes a dashboard (needs a manage key).
    pub fn changes(&self) -> bool {
        !matches!(self, DashboardOp::List | DashboardOp::Get(_))
    }
}

/// Reads a definition field by field.
fn read(body: &Json, id: &str, now: Timestamp, created: Option<&str>) -> Result<Dashboard> {
    let bad = |field: &str, what: &str| Error::Request(format!("{field}: {what}"));
    let Json::Object(map) = body else {
        return Err(Error::Request(
            "the body must be a JSON object with name and widgets".into(),
        ));
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "name" | "widgets" | "id" | "created_at" | "updated_at"
        ) {
            return Err(bad(key, "is not a field of a dashboard (name, widgets)"));
        }
    }
    let name = text(map.get("name"), "name", true)?.unwrap_or_default();
    let Some(Json::Array(items)) = map.get("widgets") else {
        return Err(bad("widgets", "must be an array of widgets"));
    };
    if items.len() > MAX_WIDGETS {
        return Err(bad(
            "widgets",
            &format!("a dashboard has at most {MAX_WIDGETS} widgets"),
        ));
    }
    let widgets = items
        .iter()
        .enumerate()
        .map(|(i, w)| read_widget(w, &format!("widgets[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Dashboard {
        id: id.to_owned(),
        name,
        widgets,
        created_at: created.map_or_else(|| now.to_string(), str::to_owned),
        updated_at: now.to_string(),
    })
}

/// A text field: `Ok(None)` when absent and optional.
fn text(value: Option<&Json>, field: &str, required: bool) -> Result<Option<String>> {
    match value {
        None | Some(Json::Null) if !required => Ok(None),
        Some(Json::String(s)) if !s.trim().is_empty() && s.len() <= MAX_TEXT => Ok(Some(s.clone())),
        _ => Err(Error::Request(format!(
            "{field}: must be text of 1 to {MAX_TEXT} bytes"
        ))),
    }
}

fn read_widget(value: &Json, at: &str) -> Result<Widget> {
    let bad = |field: &str, what: String| Error::Request(format!("{at}.{field}: {what}"));
    let Json::Object(map) = value else {
        return Err(Error::Request(format!(
            "{at}: must be an object with title, kind and query or sql"
        )));
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "title" | "kind" | "query" | "sql" | "from" | "to"
        ) {
            return Err(bad(
                key,
                "is not a field of a widget (title, kind, query, sql, from, to)".into(),
            ));
        }
    }
    let title = text(map.get("title"), &format!("{at}.title"), true)?.unwrap_or_default();
    let kind = match map.get("kind") {
        Some(Json::String(k)) => WidgetKind::parse(k),
        _ => None,
    }
    .ok_or_else(|| bad("kind", "must be number, line, bar or table".into()))?;
    let sql = match map.get("sql") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if !s.trim().is_empty() && s.len() <= MAX_SQL => Some(s.clone()),
        _ => {
            return Err(bad(
                "sql",
                format!("must be a SELECT of at most {MAX_SQL} bytes"),
            ));
        }
    };
    let query = match map.get("query") {
        None | Some(Json::Null) => None,
        Some(q) => Some(read_query(q, &format!("{at}.query"))?),
    };
    match (&query, &sql) {
        (Some(_), Some(_)) => {
            return Err(Error::Request(format!(
                "{at}: has both query and sql; give one"
            )));
        }
        (None, None) => {
            return Err(Error::Request(format!(
                "{at}: needs a query ({{\"view\":…}}) or sql"
            )));
        }
        _ => {}
    }
    if let (WidgetKind::Number, Some(q)) = (kind, &query)
        && q.value.is_none()
    {
        return Err(bad(
            "query.value",
            "a number widget names the output column it shows".into(),
        ));
    }
    let from = text(map.get("from"), &format!("{at}.from"), false)?;
    let to = text(map.get("to"), &format!("{at}.to"), false)?;
    if query.is_some() && (from.is_some() || to.is_some()) {
        return Err(Error::Request(format!(
            "{at}: a query widget's range is its query's from and to"
        )));
    }
    Ok(Widget {
        title,
        kind,
        query,
        sql,
        from,
        to,
    })
}

fn read_query(value: &Json, at: &str) -> Result<WidgetQuery> {
    let Json::Object(map) = value else {
        return Err(Error::Request(format!(
            "{at}: must be an object with view and the parameters of a view query"
        )));
    };
    let field = |name: &str| format!("{at}.{name}");
    let mut q = WidgetQuery::default();
    for (key, v) in map {
        match key.as_str() {
            "view" => q.view = text(Some(v), &field(key), true)?.unwrap_or_default(),
            "value" => q.value = text(Some(v), &field(key), false)?,
            "grain" => q.grain = text(Some(v), &field(key), false)?,
            "where" => q.filter = long_text(v, &field(key))?,
            "from" => q.from = text(Some(v), &field(key), false)?,
            "to" => q.to = text(Some(v), &field(key), false)?,
            "order_by" => q.order_by = text(Some(v), &field(key), false)?,
            "group_by" => {
                q.group_by = match v {
                    Json::Null => None,
                    Json::String(s) => Some(s.clone()),
                    Json::Array(items) => Some(
                        items
                            .iter()
                            .map(|i| i.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| {
                                Error::Request(format!("{}: must be column names", field(key)))
                            })?
                            .join(","),
                    ),
                    _ => {
                        return Err(Error::Request(format!(
                            "{}: must be column names, as text (a, b) or an array",
                            field(key)
                        )));
                    }
                }
            }
            "limit" => {
                q.limit = match v {
                    Json::Null => None,
                    Json::Number(n) => Some(n.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                        Error::Request(format!("{}: must be a positive whole number", field(key)))
                    })? as usize),
                    _ => {
                        return Err(Error::Request(format!(
                            "{}: must be a positive whole number",
                            field(key)
                        )));
                    }
                }
            }
            other => {
                return Err(Error::Request(format!(
                    "{}: is not a parameter of a view query (view, value, grain, group_by, where, from, to, order_by, limit)",
                    field(other)
                )));
            }
        }
    }
    if q.view.is_empty() {
        return Err(Error::Request(format!("{}: is required", field("view"))));
    }
    Ok(q)
}

fn long_text(value: &Json, field: &str) -> Result<Option<String>> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) if s.len() <= MAX_SQL => Ok(Some(s.clone())),
        _ => Err(Error::Request(format!(
            "{field}: must be text of at most {MAX_SQL} bytes"
        ))),
    }
}

/// Checks every widget against the catalog, as the query it makes now.
fn check(runtime: &TenantRuntime, dashboard: &Dashboard, now: Timestamp) -> Result<()> {
    let tz = runtime.engine().tz().clone();
    for (i, widget) in dashboard.widgets.iter().enumerate() {
        let at = format!("widgets[{i}]");
        if let Some(q) = &widget.query {
            let plan = runtime.catalog().view(&q.view).ok_or_else(|| {
                Error::Request(format!("{at}.query.view: there is no live view {}", q.view))
            })?;
            let range = resolve_range(q.from.as_deref(), q.to.as_deref(), now, &tz)
                .map_err(|e| Error::Request(format!("{at}.query.{e}")))?;
            let req = q
                .request(widget.kind, range, bucket_width(plan))
                .map_err(|e| Error::Request(format!("{at}.query.{e}")))?;
            let query_plan = QueryPlan::new(plan, &req).map_err(|e| {
                Error::Request(format!(
                    "{at}.query: {}",
                    crate::params::Spelling::Url.message(&e)
                ))
            })?;
            let columns = query_plan.column_names();
            if let Some(value) = &q.value
                && !columns.contains(&value.as_str())
            {
                return Err(Error::Request(format!(
                    "{at}.query.value: {value} is not a column of the answer; its columns are {}",
                    columns.join(", ")
                )));
            }
        }
        if let Some(sql) = &widget.sql {
            check_sql(runtime, sql).map_err(|e| Error::Request(format!("{at}.sql: {e}")))?;
            resolve_range(widget.from.as_deref(), widget.to.as_deref(), now, &tz)
                .map_err(|e| Error::Request(format!("{at}.{e}")))?;
        }
    }
    Ok(())
}

#[cfg(feature = "sql")]
fn check_sql(runtime: &TenantRuntime, sql: &str) -> Result<()> {
    crate::sql::prepare_in(runtime.catalog(), sql).map(|_| ())
}

#[cfg(not(feature = "sql"))]
fn check_sql(_runtime: &TenantRuntime, _sql: &str) -> Result<()> {
    Err(Error::Invalid(
        "this build of Tally has no query-time SQL (the sql feature)".into(),
    ))
}

/// A resolved range: either end open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl Range {
    /// The range of the same length just before, when both ends are known.
    pub fn previous(self) -> Option<Range> {
        let (from, to) = (self.from?, self.to?);
        Some(Range {
            from: Some(Timestamp(from.0 - (to.0 - from.0))),
            to: Some(from),
        })
    }
}

/// Resolves `from` and `to` (an error names which is wrong).
pub fn resolve_range(
    from: Option<&str>,
    to: Option<&str>,
    now: Timestamp,
    tz: &TimeZone,
) -> std::result::Result<Range, String> {
    let one = |name: &str, text: Option<&str>| {
        text.map(|t| resolve_time(t, now, tz).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    let range = Range {
        from: one("from", from)?,
        to: one("to", to)?,
    };
    if let (Some(f), Some(t)) = (range.from, range.to)
        && f >= t
    {
        return Err("from: must be before to".into());
    }
    Ok(range)
}

/// `now`, `today`, `-N unit` (second, minute, hour, day, week, month, year; calendar units in
/// the tenant's time zone), or a time (RFC 3339, a date). Relative times count from the clock
/// rounded up to the next whole minute.
pub fn resolve_time(
    text: &str,
    now: Timestamp,
    tz: &TimeZone,
) -> std::result::Result<Timestamp, String> {
    const MINUTE: i64 = 60_000_000;
    let t = text.trim();
    let anchor = Timestamp(now.0.div_euclid(MINUTE) * MINUTE + MINUTE);
    let zoned = anchor.to_jiff().to_zoned(tz.clone());
    let usage = || {
        format!(
            "'{t}' is not a time; write now, today, -N unit (-24 hours, -7 days, -3 months) or RFC 3339"
        )
    };
    if t.eq_ignore_ascii_case("now") {
        return Ok(anchor);
    }
    if t.eq_ignore_ascii_case("today") {
        let start = now
            .to_jiff()
            .to_zoned(tz.clone())
            .start_of_day()
            .map_err(|e| e.to_string())?;
        return Ok(Timestamp::from_jiff(start.timestamp()));
    }
    if let Some(rest) = t.strip_prefix('-') {
        let mut parts = rest.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(usage());
        };
        let n: i64 = n.parse().map_err(|_| usage())?;
        if !(0..=100_000).contains(&n) {
            return Err(usage());
        }
        let span = match unit.trim_end_matches('s') {
            "second" => jiff::Span::new().try_seconds(n),
            "minute" => jiff::Span::new().try_minutes(n),
            "hour" => jiff::Span::new().try_hours(n),
            "day" => jiff::Span::new().try_days(n),
            "week" => jiff::Span::new().try_weeks(n),
            "month" => jiff::Span::new().try_months(n),
            "year" => jiff::Span::new().try_years(n),
            _ => return Err(usage()),
        }
        .map_err(|_| usage())?;
        let back = zoned.checked_sub(span).map_err(|_| usage())?;
        return Ok(Timestamp::from_jiff(back.timestamp()));
    }
    Timestamp::parse(t).ok_or_else(usage)
}

impl WidgetQuery {
    /// The view query of this widget over `range`: a `number` widget keeps no group column and
    /// no time bucket (one row over the range); a `line` or `bar` widget always keeps the time
    /// bucket (`bucket`, the view's width, when it names no grain).
    pub fn request(
        &self,
        kind: WidgetKind,
        range: Range,
        bucket: Option<Interval>,
    ) -> std::result::Result<QueryRequest, String> {
        let params = QueryParams {
            from: None,
            to: None,
            grain: None,
            group_by: match kind {
                WidgetKind::Number => Some(Vec::new()),
                _ => self.group_by.as_ref().map(|g| {
                    g.split(',')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect()
                }),
            },
            filter: self.filter.clone(),
            order_by: if kind == WidgetKind::Number {
                None
            } else {
                self.order_by.clone()
            },
            limit: if kind == WidgetKind::Number {
                None
            } else {
                self.limit
            },
        };
        let mut req = params
            .to_request()
            .map_err(|e| crate::params::Spelling::Url.message(&e))?;
        req.from = range.from;
        req.to = range.to;
        if kind != WidgetKind::Number
            && let Some(g) = &self.grain
        {
            req.grain = Some(
                crate::params::grain(g)
                    .or_else(|| Interval::parse(g).ok())
                    .ok_or_else(|| {
                        format!("grain: '{g}' is not a grain; use one of {} or an interval such as 1 hour", crate::params::GRAINS)
                    })?,
            );
        }
        if matches!(kind, WidgetKind::Line | WidgetKind::Bar) && req.grain.is_none() {
            req.grain = bucket;
        }
        Ok(req)
    }
}

/// The width of a view's time bucket.
fn bucket_width(plan: &tally_views::ViewPlan) -> Option<Interval> {
    plan.bucket.and_then(|b| plan.keys[b].bucket)
}

/// What the worker answers for a widget's data: the answer, or the SQL the hub runs (off the
/// worker) with the ranges to bind.
#[derive(Debug)]
pub enum WidgetData {
    /// The answer, or `None` when it is what the `If-None-Match` named.
    Done { etag: String, body: Option<Json> },
    Sql {
        kind: WidgetKind,
        sql: String,
        range: Range,
    },
}

impl TenantRuntime {
    /// The tenant's dashboards, in id order (creation order).
    pub fn dashboards(&self) -> Result<Vec<Dashboard>> {
        self.store()
            .records(DASHBOARD, "", KEY_END, MAX_DASHBOARDS)?
            .into_iter()
            .map(|(key, body)| {
                serde_json::from_str(&body)
                    .map_err(|e| Error::Invalid(format!("dashboard {key} cannot be read: {e}")))
            })
            .collect()
    }

    /// One dashboard.
    pub fn dashboard(&self, id: &str) -> Result<Dashboard> {
        let found = self.store().records(DASHBOARD, id, &format!("{id}\0"), 1)?;
        match found.into_iter().next() {
            Some((_, body)) => serde_json::from_str(&body)
                .map_err(|e| Error::Invalid(format!("dashboard {id} cannot be read: {e}"))),
            None => Err(Error::NotFound(format!("there is no dashboard {id}"))),
        }
    }

    fn put_dashboard(&mut self, dashboard: &Dashboard) -> Result<()> {
        let body = serde_json::to_string(dashboard).map_err(|e| Error::Invalid(e.to_string()))?;
        self.store_mut().write_records(&[RecordWrite::Put {
            kind: DASHBOARD.into(),
            key: dashboard.id.clone(),
            body,
        }])?;
        Ok(())
    }

    /// The data of widget `index` of dashboard `id`, over its own range or `from`/`to` when
    /// given; answered `None` (not modified) when `if_none_match` is its current `ETag`.
    pub fn widget_data(
        &self,
        id: &str,
        index: usize,
        from: Option<&str>,
        to: Option<&str>,
        if_none_match: Option<&str>,
        now: Timestamp,
    ) -> Result<WidgetData> {
        let dashboard = self.dashboard(id)?;
        let widget = dashboard.widgets.get(index).ok_or_else(|| {
            Error::NotFound(format!(
                "dashboard {id} has {} widgets, numbered from 0",
                dashboard.widgets.len()
            ))
        })?;
        let tz = self.engine().tz().clone();
        let (from, to) = match (&widget.query, from.or(to)) {
            (_, Some(_)) => (from, to),
            (Some(q), None) => (q.from.as_deref(), q.to.as_deref()),
            (None, None) => (widget.from.as_deref(), widget.to.as_deref()),
        };
        let range = resolve_range(from, to, now, &tz).map_err(Error::Request)?;
        let Some(q) = &widget.query else {
            return Ok(WidgetData::Sql {
                kind: widget.kind,
                sql: widget.sql.clone().unwrap_or_default(),
                range,
            });
        };
        // On a shared store other nodes' events are not in the version: hash the answer.
        let etag_of = |parts: &dyn Fn(&mut std::hash::DefaultHasher)| {
            let mut h = std::hash::DefaultHasher::new();
            parts(&mut h);
            format!("\"{:016x}\"", h.finish())
        };
        let version = (!self.is_shared()).then(|| {
            etag_of(&|h| (self.data_version(), &dashboard.updated_at, index, range).hash(h))
        });
        if let Some(etag) = &version
            && if_none_match == Some(etag.as_str())
        {
            return Ok(WidgetData::Done {
                etag: etag.clone(),
                body: None,
            });
        }
        let width = self.catalog().view(&q.view).and_then(|p| bucket_width(p));
        let req = q
            .request(widget.kind, range, width)
            .map_err(Error::Request)?;
        let answer = self.query(&q.view, &req)?;
        let body = if widget.kind == WidgetKind::Number {
            let value = q.value.as_deref().unwrap_or_default();
            let previous = match range.previous() {
                Some(p) => Some(self.query(
                    &q.view,
                    &q.request(widget.kind, p, width).map_err(Error::Request)?,
                )?),
                None => None,
            };
            number(&answer, previous.as_ref(), Some(value))
        } else {
            result_json(&answer)
        };
        let etag = version.unwrap_or_else(|| etag_of(&|h| body.to_string().hash(h)));
        if if_none_match == Some(etag.as_str()) {
            return Ok(WidgetData::Done { etag, body: None });
        }
        Ok(WidgetData::Done {
            etag,
            body: Some(body),
        })
    }
}

/// The parameters a SQL widget's query takes for `range`: `:from` and `:to`, when it names them.
#[cfg(feature = "sql")]
pub fn sql_params(
    names: &std::collections::BTreeSet<String>,
    range: Range,
) -> std::collections::BTreeMap<String, tally_sql::ParamValue> {
    let mut params = std::collections::BTreeMap::new();
    for (name, at) in [("from", range.from), ("to", range.to)] {
        if let Some(at) = at
            && names.contains(name)
        {
            params.insert(name.to_owned(), tally_sql::ParamValue::Text(at.to_string()));
        }
    }
    params
}

/// Whether a SQL widget's query names the range (so a `number` widget has a previous range).
#[cfg(feature = "sql")]
pub fn names_range(names: &std::collections::BTreeSet<String>) -> bool {
    names.contains("from") || names.contains("to")
}

/// The data of a widget in a process of its own (`tally dashboard data`): SQL widgets run
/// here, as the server runs them off its worker.
#[cfg(feature = "sql")]
pub fn widget_data_blocking(
    runtime: &TenantRuntime,
    id: &str,
    index: usize,
    range: (Option<&str>, Option<&str>),
    now: Timestamp,
    limits: tally_sql::Limits,
) -> Result<Json> {
    match runtime.widget_data(id, index, range.0, range.1, None, now)? {
        WidgetData::Done { body, .. } => Ok(body.unwrap_or(Json::Null)),
        WidgetData::Sql { kind, sql, range } => {
            let names = crate::sql::prepare_in(runtime.catalog(), &sql)?.params;
            let run = |r: Range| {
                crate::sql::run_blocking(runtime, &sql, &sql_params(&names, r), now, limits)
            };
            let answer = run(range)?;
            Ok(if kind == WidgetKind::Number {
                let previous = match range.previous() {
                    Some(p) if names_range(&names) => Some(run(p)?),
                    _ => None,
                };
                number(&answer, previous.as_ref(), Some("value"))
            } else {
                result_json(&answer)
            })
        }
    }
}

/// A number widget's answer: `value` (the column named, or the first), `previous`, and
/// `change_pct` (null when `previous` is 0 or null).
pub fn number(answer: &ResultSet, previous: Option<&ResultSet>, column: Option<&str>) -> Json {
    let pick = |r: &ResultSet| -> Value {
        let i = column
            .and_then(|c| r.columns.iter().position(|(n, _)| n == c))
            .unwrap_or(0);
        r.rows
            .first()
            .and_then(|row| row.get(i).cloned())
            .unwrap_or(Value::Null)
    };
    let value = pick(answer);
    let before = previous.map(pick).unwrap_or(Value::Null);
    let change = match (as_f64(&value), as_f64(&before)) {
        (Some(v), Some(p)) if p != 0.0 => Some((v - p) / p.abs() * 100.0),
        _ => None,
    };
    json!({
        "value": json_value(&value),
        "previous": json_value(&before),
        "change_pct": change.filter(|c| c.is_finite()),
    })
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::Decimal(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_count_calendar_units_in_the_tenant_time_zone() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // The day after Berlin's change to summer time (2026-03-29).
        let now = Timestamp::parse("2026-03-30T12:00:00Z").unwrap();
        let t = |s: &str| resolve_time(s, now, &tz).map(|t| t.to_string());
        // The clock rounded up to the next whole minute.
        assert_eq!(t("now").unwrap(), "2026-03-30T12:01:00Z");
        assert_eq!(t("-48 hours").unwrap(), "2026-03-28T12:01:00Z");
        // Two calendar days back cross the change: 47 hours.
        assert_eq!(t("-2 days").unwrap(), "2026-03-28T13:01:00Z");
        assert_eq!(t("-1 month").unwrap(), "2026-02-28T13:01:00Z");
        // Local midnight.
        assert_eq!(t("today").unwrap(), "2026-03-29T22:00:00Z");
        assert_eq!(t("2026-03-01").unwrap(), "2026-03-01T00:00:00Z");
        for bad in [
            "yesterday",
            "-x days",
            "-3 fortnights",
            "-1",
            "- 2 days extra",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        let range = resolve_range(Some("-1 hour"), Some("now"), now, &tz).unwrap();
        assert_eq!(
            range.previous().unwrap().to,
            Some(Timestamp::parse("2026-03-30T11:01:00Z").unwrap())
        );
        assert!(resolve_range(Some("now"), Some("-1 hour"), now, &tz).is_err());
    }
}
