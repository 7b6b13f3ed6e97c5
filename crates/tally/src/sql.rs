//! Query-time SQL for the app: what a query names, looked up among the tenant's views, tables
//! and streams and read from its runtime, then run by `tally-sql` (DataFusion).
//!
//! The tenant's runtime (one thread owns it) only gathers rows: a view's stored rows ⊕ unflushed
//! deltas (as `GET /v1/views/{view}` reads them), a stream's retained events. Planning and
//! running happen off that thread, so a long query does not hold the tenant's ingest.

use std::collections::BTreeMap;
use std::time::Duration;

use tally_sql::{Relation, RelationRequest, SqlError};
use tally_views::{QueryRequest, Timestamp, Type};

use crate::error::{Error, Result};
use crate::params::QueryParams;
use crate::runtime::TenantRuntime;

pub use tally_sql::{Limits, ParamValue, Prepared, prepare};

/// Events read from the store per round trip while reading a stream.
const STREAM_BATCH: usize = 10_000;

impl TenantRuntime {
    /// The rows of each relation `requests` names that exists in this tenant (views, tables,
    /// streams);
    /// names that match nothing are left out, and the query's planner reports them.
    pub fn relations(
        &self,
        requests: &[RelationRequest],
        limits: &Limits,
    ) -> Result<Vec<Relation>> {
        let limit_mb = limits.memory_bytes / (1024 * 1024);
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let relation = match request {
                RelationRequest::Named(name) => {
                    if self.catalog().view(name).is_some() {
                        let answer = self.sql_view_rows(name)?;
                        Relation {
                            name: name.clone(),
                            columns: answer.columns,
                            rows: answer.rows,
                        }
                    } else if let Some(table) = self.catalog().table(name) {
                        let table = table.clone();
                        let rows = self.table_rows(&table)?;
                        if tally_sql::rows_bytes(&rows) > limits.memory_bytes {
                            return Err(Error::Sql(SqlError::RelationTooLarge {
                                name: name.clone(),
                                limit_mb,
                            }));
                        }
                        Relation {
                            name: name.clone(),
                            columns: table
                                .columns
                                .iter()
                                .map(|c| (c.name.clone(), c.ty))
                                .collect(),
                            rows,
                        }
                    } else if let Some(stream) = self.catalog().stream(name) {
                        let stream = stream.clone();
                        let columns: Vec<(String, Type)> = stream
                            .columns
                            .iter()
                            .map(|c| (c.name.clone(), c.ty))
                            .collect();
                        let mut relation = Relation {
                            name: name.clone(),
                            columns,
                            rows: Vec::new(),
                        };
                        let mut after = 0;
                        let mut bytes = 0;
                        loop {
                            let batch = self.store().read_events(&stream, after, STREAM_BATCH)?;
                            let Some(last) = batch.last() else { break };
                            after = last.seq;
                            let rows: Vec<_> = batch.into_iter().map(|e| e.row).collect();
                            bytes += tally_sql::rows_bytes(&rows);
                            if bytes > limits.memory_bytes {
                                return Err(Error::Sql(SqlError::RelationTooLarge {
                                    name: name.clone(),
                                    limit_mb,
                                }));
                            }
                            relation.rows.extend(rows);
                        }
                        relation
                    } else {
                        continue;
                    }
                }
                RelationRequest::ViewAt {
                    name,
                    view,
                    grain,
                    group_by,
                } => {
                    if self.catalog().view(view).is_none() {
                        return Err(Error::Sql(SqlError::ViewAt(format!(
                            "there is no view {view}"
                        ))));
                    }
                    let request = QueryParams {
                        grain: grain.clone(),
                        group_by: group_by
                            .as_ref()
                            .map(|g| g.split(',').map(|s| s.trim().to_owned()).collect()),
                        ..QueryParams::default()
                    }
                    .to_request()
                    .map_err(|e| {
                        Error::Sql(SqlError::ViewAt(crate::params::Spelling::Url.message(&e)))
                    })?;
                    self.view_relation(name, view, &request)?
                }
            };
            out.push(relation);
        }
        Ok(out)
    }

    fn view_relation(&self, name: &str, view: &str, request: &QueryRequest) -> Result<Relation> {
        let answer = self.query(view, request)?;
        Ok(Relation {
            name: name.to_owned(),
            columns: answer.columns,
            rows: answer.rows,
        })
    }
}

/// Settings of query-time SQL (`tally serve --sql-…`, `tally sql --…`).
pub fn limits(time: Duration, memory_mb: usize, max_rows: usize) -> Limits {
    Limits {
        time,
        memory_bytes: memory_mb * 1024 * 1024,
        max_rows,
    }
}

/// The time zone and clock a tenant's queries run with.
pub fn context(time_zone: &str, now: Timestamp, limits: Limits) -> tally_sql::Context {
    tally_sql::Context {
        time_zone: time_zone.to_owned(),
        now,
        limits,
    }
}

/// `--param name=value` pairs as parameters.
pub fn text_params(pairs: &[String]) -> Result<BTreeMap<String, ParamValue>> {
    let mut params = BTreeMap::new();
    for pair in pairs {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            Error::Invalid(format!(
                "--param {pair}: expected NAME=VALUE, e.g. --param vault_id=v1"
            ))
        })?;
        let name = name.trim().trim_start_matches(':');
        params.insert(name.to_owned(), ParamValue::Text(value.to_owned()));
    }
    Ok(params)
}

/// The relations `requests` names with their columns only, from the catalog: what planning a
/// query needs (saved queries are checked this way when they are defined).
pub fn catalog_relations(
    catalog: &tally_views::Catalog,
    requests: &[RelationRequest],
) -> Vec<Relation> {
    let columns = |name: &str| -> Option<Vec<(String, Type)>> {
        if let Some(view) = catalog.view(name) {
            Some(
                view.columns
                    .iter()
                    .map(|c| (c.name.clone(), c.ty))
                    .collect(),
            )
        } else if let Some(table) = catalog.table(name) {
            Some(
                table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.ty))
                    .collect(),
            )
        } else {
            catalog
                .stream(name)
                .map(|s| s.columns.iter().map(|c| (c.name.clone(), c.ty)).collect())
        }
    };
    requests
        .iter()
        .filter_map(|r| {
            let source = match r {
                RelationRequest::Named(n) => n,
                RelationRequest::ViewAt { view, .. } => view,
            };
            columns(source).map(|columns| Relation {
                name: r.name().to_owned(),
                columns,
                rows: Vec::new(),
            })
        })
        .collect()
}

/// Prepares a query of a tenant whose schema is `catalog`: a saved query it names is read as a
/// common table expression of the query (with its parameters).
pub fn prepare_in(catalog: &tally_views::Catalog, sql: &str) -> Result<Prepared> {
    Ok(tally_sql::prepare_with(sql, &|name| {
        catalog.saved_query(name).map(|q| q.query.clone())
    })?)
}

/// Checks a saved query against `catalog`: one read-only query whose relations exist and whose
/// columns and functions resolve. Answers its columns.
pub fn check_saved_query(
    catalog: &tally_views::Catalog,
    query: &tally_views::SavedQuery,
) -> Result<Vec<(String, Type)>> {
    let prepared = prepare_in(catalog, &query.query)?;
    let relations = catalog_relations(catalog, &prepared.relations);
    let context = context("UTC", Timestamp(0), Limits::default());
    Ok(tally_sql::describe(prepared, relations, &context)?)
}

/// Runs a query over a tenant's relations on the calling thread (the command line, tests).
pub fn run_blocking(
    runtime: &TenantRuntime,
    sql: &str,
    params: &BTreeMap<String, ParamValue>,
    now: Timestamp,
    limits: Limits,
) -> Result<tally_views::ResultSet> {
    let prepared = prepare_in(runtime.catalog(), sql)?;
    let relations = runtime.relations(&prepared.relations, &limits)?;
    let context = context(&runtime.info().time_zone, now, limits);
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Exhausted(format!("cannot start the query runtime: {e}")))?
        .block_on(tally_sql::execute(prepared, relations, params, &context))?;
    Ok(answer)
}

/// A saved query read like a view (`tally query NAME --param k=v --limit N`): its parameters
/// as `NAME=VALUE` text, the first `limit` rows of the answer.
pub fn run_saved_blocking(
    runtime: &TenantRuntime,
    query: &tally_views::SavedQuery,
    pairs: &[String],
    limit: Option<usize>,
    now: Timestamp,
) -> Result<tally_views::ResultSet> {
    let params = text_params(pairs)?;
    let mut answer = run_blocking(runtime, &query.query, &params, now, Limits::default())?;
    if let Some(limit) = limit {
        answer.rows.truncate(limit);
    }
    Ok(answer)
}
