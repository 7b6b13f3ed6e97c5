//! `tally-sql`: SQL at query time over what a tenant's live views, tables and streams hold,
//! planned and run by Apache DataFusion.
//!
//! Live views do the heavy, incremental work; this crate shapes their small results any way
//! SQL can (joins to reference data, window functions, `now()`, CTEs).
//!
//! The flow:
//! 1. [`prepare`] parses one statement, refuses anything but a read-only query, rewrites `:name`
//!    parameters and `view_at(…)` calls, and lists the relations the query names.
//! 2. The caller (the app, which owns the tenant's runtime) supplies those relations' rows as
//!    [`Relation`]s: a view's stored rows ⊕ unflushed deltas, a table's rows, a stream's events.
//! 3. [`execute`] registers them as in-memory tables of a session that holds nothing else (a
//!    query can only ever see the relations its tenant supplied), binds the parameters by the
//!    type the plan infers for them, and runs the plan under the time, memory and answer-size
//!    limits of [`Limits`].
//!
//! Invariant: this crate does no IO and knows nothing of tenants, stores or HTTP.

mod bounded;
mod convert;
mod error;
mod now;
mod params;
mod prepare;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ScalarUDF;
use futures::StreamExt;
use tally_views::{ResultSet, Timestamp, Type, Value};

pub use error::SqlError;

/// Apache Arrow as DataFusion builds it, for writers of Arrow data (Parquet exports).
pub use datafusion::arrow;

/// The Arrow schema of columns, timestamps in `time_zone` (`UTC` for files).
pub fn arrow_schema(
    columns: &[(String, tally_views::Type)],
    time_zone: &str,
) -> datafusion::arrow::datatypes::SchemaRef {
    convert::schema(columns, time_zone)
}

/// Rows as one Arrow record batch of `schema` (made by [`arrow_schema`]).
pub fn record_batch(
    schema: datafusion::arrow::datatypes::SchemaRef,
    rows: &[Vec<tally_views::Value>],
) -> Result<datafusion::arrow::record_batch::RecordBatch, SqlError> {
    convert::batch(schema, rows)
}
pub use params::ParamValue;
pub use prepare::{Prepared, RelationRequest, prepare, prepare_with};

/// What one query may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock time from the start of execution.
    pub time: Duration,
    /// Memory for the query's operators (sorts, joins, aggregations) and the relations it reads.
    pub memory_bytes: usize,
    /// Rows of the answer.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            time: Duration::from_secs(10),
            memory_bytes: 256 * 1024 * 1024,
            max_rows: 100_000,
        }
    }
}

/// The rows of one relation a query reads.
#[derive(Clone, Debug)]
pub struct Relation {
    /// The name the query uses ([`RelationRequest::name`]).
    pub name: String,
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Value>>,
}

impl Relation {
    /// Approximate bytes, counted against the memory limit.
    pub fn bytes(&self) -> usize {
        rows_bytes(&self.rows)
    }
}

/// Approximate bytes of rows once in Arrow arrays: 16 a value, plus the text.
pub fn rows_bytes(rows: &[Vec<Value>]) -> usize {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| 16 + v.as_str().map_or(0, str::len))
                .sum::<usize>()
        })
        .sum()
}

/// Where and when a query runs.
#[derive(Clone, Debug)]
pub struct Context {
    /// The tenant's time zone (IANA name): timestamps are read in it, so `date_trunc`,
    /// `date_part` and `extract` work in local time, and `now()` carries it.
    pub time_zone: String,
    /// The instant `now()` and `current_timestamp` return.
    pub now: Timestamp,
    pub limits: Limits,
}

/// Runs a prepared query over `relations` with `params` bound.
pub async fn execute(
    prepared: Prepared,
    relations: Vec<Relation>,
    params: &BTreeMap<String, ParamValue>,
    context: &Context,
) -> Result<ResultSet, SqlError> {
    let limits = context.limits;
    let limit_mb = limits.memory_bytes / (1024 * 1024);
    let session = session(&prepared, relations, context)?;
    let run = async {
        let plan = plan(&session, prepared.statement).await?;
        let plan = params::bind(plan, &prepared.params, params)?;
        let frame = session
            .execute_logical_plan(plan)
            .await
            .map_err(plan_error)?;
        let columns = answer_columns(frame.schema().as_arrow());
        let mut stream = frame
            .execute_stream()
            .await
            .map_err(|e| run_error(e, limit_mb))?;
        let mut rows = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| run_error(e, limit_mb))?;
            if rows.len() + batch.num_rows() > limits.max_rows {
                return Err(SqlError::TooManyRows(limits.max_rows));
            }
            convert::append_rows(&batch, &mut rows)?;
        }
        Ok(ResultSet { columns, rows })
    };
    match tokio::time::timeout(limits.time, run).await {
        Ok(answer) => answer,
        Err(_) => Err(SqlError::Timeout(limits.time)),
    }
}

/// The columns a prepared query answers with over relations with these columns (their rows
/// are not read): planning alone, to check a saved query when it is defined.
pub fn describe(
    prepared: Prepared,
    relations: Vec<Relation>,
    context: &Context,
) -> Result<Vec<(String, Type)>, SqlError> {
    let session = session(&prepared, relations, context)?;
    // Planning over in-memory tables never waits on anything, so it completes on its first
    // poll, whatever executor (if any) the caller runs on.
    let plan = futures::FutureExt::now_or_never(plan(&session, prepared.statement))
        .ok_or_else(|| SqlError::Execution("planning did not complete at once".into()))??;
    Ok(answer_columns(plan.schema().as_arrow()))
}

fn answer_columns(schema: &datafusion::arrow::datatypes::Schema) -> Vec<(String, Type)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), convert::tally_type(f.data_type())))
        .collect()
}

/// A session holding exactly `relations`, under `context`'s limits.
fn session(
    prepared: &Prepared,
    relations: Vec<Relation>,
    context: &Context,
) -> Result<SessionContext, SqlError> {
    for request in &prepared.relations {
        if !relations.iter().any(|r| r.name == request.name()) {
            return Err(SqlError::Plan(format!(
                "there is no view, table or stream called {}",
                request.name()
            )));
        }
    }
    let limits = context.limits;
    let limit_mb = limits.memory_bytes / (1024 * 1024);
    let mut budget = limits.memory_bytes;
    for r in &relations {
        budget = budget
            .checked_sub(r.bytes())
            .ok_or_else(|| SqlError::RelationTooLarge {
                name: r.name.clone(),
                limit_mb,
            })?;
    }
    // In memory only: no spill files, so the memory limit is the query's whole footprint.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(budget.max(1024 * 1024), 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| SqlError::Execution(e.to_string()))?;
    let mut config = SessionConfig::new()
        .with_information_schema(false)
        // Two partitions: the plan then has exchange points where execution yields, which the
        // time limit needs (with one partition a long query never gave its thread back).
        .with_target_partitions(2)
        .with_create_default_catalog_and_schema(true);
    config.options_mut().execution.time_zone = Some(context.time_zone.clone());
    let session = SessionContext::new_with_config_rt(config, runtime);
    session.register_udf(ScalarUDF::from(now::FixedNow::new(
        context.now,
        &context.time_zone,
    )));
    for f in bounded::functions() {
        session.register_udf(f);
    }
    for r in relations {
        let schema = convert::schema(&r.columns, &context.time_zone);
        let batch = convert::batch(schema.clone(), &r.rows)?;
        let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(plan_error)?;
        session
            .register_table(r.name.as_str(), Arc::new(table))
            .map_err(plan_error)?;
    }
    Ok(session)
}

/// The logical plan of a read-only statement, checked again by DataFusion's own rules.
async fn plan(
    session: &SessionContext,
    statement: datafusion::sql::parser::Statement,
) -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
    let plan = session
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(plan_error)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| SqlError::NotReadOnly(strip(e)))?;
    Ok(plan)
}

/// The message of a DataFusion error without its context chain's noise.
fn strip(e: DataFusionError) -> String {
    let e = e.find_root().to_string();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "Arrow error: ",
    ] {
        if let Some(rest) = e.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    e
}

fn plan_error(e: DataFusionError) -> SqlError {
    SqlError::Plan(strip(e))
}

fn run_error(e: DataFusionError, limit_mb: usize) -> SqlError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(detail) => SqlError::Memory {
            limit_mb,
            detail: detail.clone(),
        },
        _ => SqlError::Execution(strip(e)),
    }
}
