//! Runs the executable specification in `tests/slt/*.slt` on every backend.
//!
//! Each file runs once per backend (in memory, SQLite and PostgreSQL) through
//! the same library calls the CLI makes. Besides schema statements, the adapter understands:
//!
//! - `INGEST stream [ndjson|csv|json]` followed by the input lines: ingest through the real
//!   decoder; the output is `accepted=… duplicates=… rejected=…` then one row per rejection;
//! - `UPSERT table [ndjson|csv|json]` followed by rows: `tally table upsert`; the output is
//!   `upserted=… rejected=…` then one row per rejection; `DELETE_ROW table key`: `tally table
//!   delete`, printing `deleted` or `absent`;
//! - `QUERY view [flags]`: `tally query` with the same flags (a saved query's parameters as
//!   `--param name=value`); NULL prints as `NULL`;
//! - `FAILURES view`: how many events made an expression of the view fail (each kept, with
//!   NULL there);
//! - `TENANT name [time zone]`: create the tenant if needed and switch to it;
//! - `NOW timestamp`: set the clock; `FLUSH`; `RETENTION`; `RESTART` (drop everything
//!   unflushed, as a crash would, and reopen);
//! - `SELECT …`, `WITH …`, `VALUES …`, or `SQL` followed by any statement: `tally sql` (query-time
//!   SQL over the tenant's views and streams, with the clock's `now()`).
//!
//! `UPDATE_SLT=1 cargo test --test slt` rewrites the expected results in place.

use std::path::{Path, PathBuf};
use std::task::{Context, Poll, Waker};

use clap::Parser;
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use tally::app::{Clock, Config, DEFAULT_TENANT, Tally};
use tally::ingest::{Format, ingest};
use tally::runtime::TenantRuntime;
use tally_store::Store;
use tally_views::{Timestamp, Value};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

impl From<tally::Error> for SltError {
    fn from(e: tally::Error) -> SltError {
        SltError(e.to_string())
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

struct TallyDb {
    /// The store a restart reopens.
    store: Store,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<tally_store::testing::PgScratch>,
    clock: Clock,
    tenant: String,
    tally: Option<Tally>,
    runtime: Option<TenantRuntime>,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct QueryLine {
    #[command(flatten)]
    args: tally::cli::QueryArgs,
}

impl TallyDb {
    fn new(backend: Backend) -> TallyDb {
        let (store, dir, pg) = match backend {
            Backend::Memory => (Store::memory(), None, None),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                (
                    Store::open_sqlite(dir.path()).expect("sqlite store"),
                    Some(dir),
                    None,
                )
            }
            Backend::Postgres => {
                let pg = tally_store::testing::PgScratch::new();
                let store = Store::open_postgres(pg.config()).expect("postgres store");
                (store, None, Some(pg))
            }
        };
        let clock = Clock::fixed(Timestamp::parse("2026-12-31T00:00:00Z").expect("time"));
        let mut db = TallyDb {
            store,
            _dir: dir,
            _pg: pg,
            clock,
            tenant: DEFAULT_TENANT.into(),
            tally: None,
            runtime: None,
        };
        db.restart().expect("open");
        db
    }

    fn restart(&mut self) -> Result<(), SltError> {
        self.runtime = None;
        self.tally = None;
        let store = self.store.reopen().map_err(|e| SltError(e.to_string()))?;
        let config = Config {
            clock: self.clock.clone(),
            ..Config::default()
        };
        let tally = Tally::with_store(store, config)?;
        self.runtime = Some(tally.open_tenant(&self.tenant)?);
        self.tally = Some(tally);
        Ok(())
    }

    fn tally(&mut self) -> &mut Tally {
        self.tally.as_mut().expect("open")
    }

    fn runtime(&mut self) -> &mut TenantRuntime {
        self.runtime.as_mut().expect("open")
    }

    fn rows(rows: Vec<Vec<String>>) -> DBOutput<DefaultColumnType> {
        let width = rows.first().map_or(1, Vec::len);
        DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        }
    }

    fn ingest(
        &mut self,
        header: &str,
        body: &str,
    ) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let mut words = header.split_whitespace().skip(1);
        let stream_name = words
            .next()
            .ok_or_else(|| SltError("INGEST needs a stream".into()))?;
        let format = match words.next() {
            None | Some("ndjson") => Format::Ndjson,
            Some("csv") => Format::Csv,
            Some("json") => Format::Json,
            Some(other) => return Err(SltError(format!("unknown format {other}"))),
        };
        let stream = self.tally().stream(stream_name)?;
        let config = self.tally().config().clone();
        let report = ingest(
            self.runtime(),
            &stream,
            &config,
            format,
            body.as_bytes(),
            &|_| {},
        )?;
        let mut rows = vec![vec![format!(
            "accepted={} duplicates={} rejected={}",
            report.accepted, report.duplicates, report.rejected
        )]];
        rows.extend(
            report
                .errors
                .iter()
                .map(|e| vec![format!("line {}: {}", e.line, e.error)]),
        );
        Ok(Self::rows(rows))
    }

    fn query(&mut self, line: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let words = split_words(line.trim_start_matches("QUERY"));
        let parsed = QueryLine::try_parse_from(words).map_err(|e| SltError(e.to_string()))?;
        if let Some(saved) = self
            .tally()
            .catalog()
            .saved_query(&parsed.args.view)
            .cloned()
        {
            // A saved query, read like a view with its parameters.
            let now = self.clock.now();
            let result = tally::sql::run_saved_blocking(
                self.runtime(),
                &saved,
                &parsed.args.params,
                parsed.args.limit,
                now,
            )?;
            return Ok(Self::result(&result));
        }
        let req = tally::cli::query_request(&parsed.args)?;
        let result = self.runtime().query(&parsed.args.view, &req)?;
        Ok(Self::result(&result))
    }

    /// Query-time SQL, as `tally sql` runs it.
    fn sql(&mut self, text: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let text = text.strip_prefix("SQL").unwrap_or(text);
        let now = self.clock.now();
        let limits = tally::sql::Limits::default();
        let result =
            tally::sql::run_blocking(self.runtime(), text, &Default::default(), now, limits)?;
        Ok(Self::result(&result))
    }

    fn result(result: &tally_views::ResultSet) -> DBOutput<DefaultColumnType> {
        let rows = result
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| match v {
                        Value::Null => "NULL".to_owned(),
                        Value::Text(s) if s.is_empty() => "(empty)".to_owned(),
                        v => v.to_string(),
                    })
                    .collect()
            })
            .collect();
        DBOutput::Rows {
            types: vec![DefaultColumnType::Any; result.columns.len()],
            rows,
        }
    }
}

impl sqllogictest::DB for TallyDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let (first, rest) = sql.split_once('\n').unwrap_or((sql, ""));
        let command = first.split_whitespace().next().unwrap_or_default();
        match command {
            "INGEST" => self.ingest(first, rest),
            "UPSERT" => {
                let mut words = first.split_whitespace().skip(1);
                let table = words
                    .next()
                    .ok_or_else(|| SltError("UPSERT needs a table".into()))?;
                let format = match words.next() {
                    None | Some("ndjson") => Format::Ndjson,
                    Some("csv") => Format::Csv,
                    Some("json") => Format::Json,
                    Some(other) => return Err(SltError(format!("unknown format {other}"))),
                };
                let records = tally::tables::file_records(rest, format)?;
                let outcome = self.runtime().upsert_rows(table, &records)?;
                let mut rows = vec![vec![format!(
                    "upserted={} rejected={}",
                    outcome.upserted,
                    outcome.rejected.len()
                )]];
                rows.extend(
                    outcome
                        .rejected
                        .iter()
                        .map(|(i, e)| vec![format!("row {i}: {e}")]),
                );
                Ok(Self::rows(rows))
            }
            "DELETE_ROW" => {
                let mut words = first.split_whitespace().skip(1);
                let (Some(table), Some(key)) = (words.next(), words.next()) else {
                    return Err(SltError("DELETE_ROW needs a table and a key".into()));
                };
                let found = self.runtime().delete_row(table, key)?;
                Ok(Self::rows(vec![vec![
                    if found { "deleted" } else { "absent" }.to_owned(),
                ]]))
            }
            "QUERY" => self.query(sql),
            "FAILURES" => {
                let view = first
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let n = self.runtime().expression_failures(&view)?;
                Ok(Self::rows(vec![vec![n.to_string()]]))
            }
            "SELECT" | "WITH" | "VALUES" | "SQL" => self.sql(sql),
            "TENANT" => {
                let mut words = first.split_whitespace().skip(1);
                let name = words
                    .next()
                    .ok_or_else(|| SltError("TENANT needs a name".into()))?
                    .to_owned();
                let tz = words.next().unwrap_or("UTC");
                if self
                    .tally()
                    .store()
                    .tenant_info(&name)
                    .map_err(|e| SltError(e.to_string()))?
                    .is_none()
                {
                    self.tally().create_tenant(&name, tz)?;
                }
                self.tenant = name.clone();
                self.runtime = None;
                self.runtime = Some(self.tally().open_tenant(&name)?);
                Ok(DBOutput::StatementComplete(0))
            }
            "NOW" => {
                let t = Timestamp::parse(first.trim_start_matches("NOW").trim())
                    .ok_or_else(|| SltError(format!("bad time in {first}")))?;
                self.clock.set(t);
                Ok(DBOutput::StatementComplete(0))
            }
            "FLUSH" => {
                self.runtime().flush()?;
                Ok(DBOutput::StatementComplete(0))
            }
            "RETENTION" => {
                let now = self.clock.now();
                let (events, rows) = self.runtime().enforce_retention(now)?;
                Ok(Self::rows(vec![vec![format!(
                    "events={events} rows={rows}"
                )]]))
            }
            "RESTART" => {
                self.restart()?;
                Ok(DBOutput::StatementComplete(0))
            }
            _ => {
                // Schema statements apply to every tenant, as `tally apply` does.
                self.runtime = None;
                let changes = self.tally().apply_schema(sql)?;
                let tenant = self.tenant.clone();
                self.runtime = Some(self.tally().open_tenant(&tenant)?);
                Ok(Self::rows(
                    // A change's warnings print on lines of their own: one row each.
                    changes
                        .iter()
                        .flat_map(|c| {
                            let text = c.to_string();
                            text.lines()
                                .map(|l| vec![l.trim().to_owned()])
                                .collect::<Vec<_>>()
                        })
                        .collect(),
                ))
            }
        }
    }

    fn engine_name(&self) -> &str {
        "tally"
    }
}

/// Splits a command line into words, honouring single and double quotes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// Polls a future to completion; the DB is synchronous, so it never waits.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

fn run_file(path: &Path, backend: Backend, update: bool) -> Result<(), String> {
    let mut runner = Runner::new(move || async move { Ok::<_, SltError>(TallyDb::new(backend)) });
    runner.with_column_validator(sqllogictest::default_column_validator);
    if update {
        block_on(runner.update_test_file(
            path,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            sqllogictest::default_column_validator,
        ))
        .map_err(|e| e.to_string())
    } else {
        runner
            .run_file(path)
            .map_err(|e| e.display(true).to_string())
    }
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let update = std::env::var_os("UPDATE_SLT").is_some();
    let mut trials = Vec::new();
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Expectations are written once (from memory); every backend must then match them.
        let backends: &[Backend] = if update {
            &[Backend::Memory]
        } else {
            &[Backend::Memory, Backend::Sqlite, Backend::Postgres]
        };
        for &backend in backends {
            let file = file.clone();
            let label = format!("{name}::{backend:?}").to_lowercase();
            trials.push(sqllogictest::harness::Trial::test(label, move || {
                run_file(&file, backend, update).map_err(Into::into)
            }));
        }
    }
    sqllogictest::harness::run(&sqllogictest::harness::Arguments::from_args(), trials).exit();
}
