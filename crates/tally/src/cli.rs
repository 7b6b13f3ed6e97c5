//! The command line of DESIGN.md: flags in, one `Tally` operation, text out.
//!
//! Output goes to stdout; errors come back as [`Error`] for `main` to print on one line. A
//! closed stdout (`tally query … | head`) ends the command quietly instead of panicking.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tally_store::KeyKind;
use tally_views::{Interval, QueryRequest, Timestamp};

use crate::app::{Config, Location, Tally};
use crate::error::{Error, Result};
use crate::ingest::{Format, IngestReport, ingest};
use crate::output::{OutputFormat, render};
use crate::params::QueryParams;

/// Tally: SQL-defined live analytics views, kept correct on every event.
#[derive(Parser, Debug)]
#[command(name = "tally", version, about)]
pub struct Cli {
    /// The data directory (embedded SQLite).
    #[arg(
        long,
        global = true,
        env = "TALLY_DATA",
        default_value = "./tally-data"
    )]
    pub data: PathBuf,
    /// A PostgreSQL URL, to use PostgreSQL instead of the data directory.
    #[arg(long, global = true, env = "TALLY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The PostgreSQL schema Tally's tables live in.
    #[arg(
        long,
        global = true,
        env = "TALLY_DATABASE_SCHEMA",
        default_value = "tally"
    )]
    pub database_schema: String,
    /// The tenant to work on.
    #[arg(long, global = true, default_value = crate::app::DEFAULT_TENANT)]
    pub tenant: String,
    /// How far in the future an event time may be (e.g. '1 day', '2 hours').
    #[arg(long, global = true, env = "TALLY_MAX_FUTURE", default_value = "1 day")]
    pub max_future: String,
    /// Run as if it were this instant (RFC 3339) instead of the system clock: retention
    /// cut-offs, the future limit, `now()`, alert buckets. For replaying old files and tests.
    #[arg(long, global = true, env = "TALLY_NOW")]
    pub now: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (admin routes need TALLY_ADMIN_TOKEN).
    Serve(ServeArgs),
    /// Create or change streams and views from a SQL file; prints what changed.
    Apply {
        /// The .sql file.
        file: PathBuf,
    },
    /// Load events from a file (NDJSON, CSV or a JSON array).
    Ingest(IngestArgs),
    /// Read a view, optionally re-grouped to a coarser grain or fewer group columns.
    Query(QueryArgs),
    /// Run a read-only SQL query over the tenant's views, tables, streams and saved queries
    /// (joins, windows, now()).
    #[cfg(feature = "sql")]
    Sql(SqlArgs),
    /// Analyse behaviour in the events stream: active_users, retention, funnel, sessions or
    /// lifecycle (see docs/analyses.md).
    Analyze(AnalyzeArgs),
    /// Show the tenant's rejection log: rejected events with why and what was sent.
    Rejections(RejectionsArgs),
    /// Upsert or delete rows of a table (reference data that queries join with).
    #[command(subcommand)]
    Table(TableCommand),
    /// Create and list tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Create API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Define, list, show, delete and acknowledge alerts (see docs/alerts.md).
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Erase a person (GDPR): their events in every stream with a person column, every view
    /// corrected; or show the erasure log.
    Erase(EraseArgs),
    /// Create, list, show and delete dashboards, and read a widget's data (see
    /// docs/dashboards.md; `tally serve` shows them in the browser).
    #[command(subcommand)]
    Dashboard(DashboardCommand),
    /// Export a view's rows or a stream's events as CSV, NDJSON or Parquet, all of them or only
    /// what changed after a cursor; prints the cursor to pass next time.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Show, apply or revert the migrations of Tally's catalog.
    Migrate {
        #[arg(value_enum)]
        action: MigrateAction,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8420")]
    pub listen: std::net::SocketAddr,
    /// How often view changes are written to the view tables (e.g. '1 second', '500 milliseconds').
    #[arg(long, default_value = "1 second")]
    pub flush_interval: String,
    /// Requests per second allowed per key (the burst is twice that).
    #[arg(long, env = "TALLY_RATE_LIMIT", default_value_t = 1000.0)]
    pub rate_limit: f64,
    /// Requests waiting per tenant before ingest answers 503.
    #[arg(long, default_value_t = 256)]
    pub queue_depth: usize,
    /// Connections open at once; at the limit new ones wait until one closes. Capped by the
    /// process's open-file limit (raised to its hard limit at start).
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Tenants open at once (each holds a thread, its database files or connection); past it
    /// the least recently used closes first. Capped by the open-file limit.
    #[arg(long, env = "TALLY_MAX_OPEN_TENANTS", default_value_t = 1_000)]
    pub max_open_tenants: usize,
    /// A tenant no request reached for this long closes until its next request (e.g. '5 minutes').
    #[arg(long, env = "TALLY_TENANT_IDLE", default_value = "5 minutes")]
    pub tenant_idle: String,
    /// How long the rejection log keeps a rejected event (e.g. '7 days').
    #[arg(long, env = "TALLY_REJECTION_RETENTION", default_value = "7 days")]
    pub rejection_retention: String,
    #[cfg(feature = "sql")]
    #[command(flatten)]
    pub sql: SqlLimitArgs,
    /// SQL queries (`POST /v1/sql`, saved queries) running at once; others wait their turn
    /// (up to 5 s, then 503).
    #[arg(long, env = "TALLY_SQL_CONCURRENCY", default_value_t = 1)]
    pub sql_concurrency: usize,
    /// Let alert webhooks reach loopback, private, link-local and metadata addresses (for
    /// tests and closed networks).
    #[arg(long, env = "TALLY_ALLOW_PRIVATE_WEBHOOKS")]
    pub allow_private_webhooks: bool,
    /// How long alert history is kept (e.g. '90 days').
    #[arg(long, env = "TALLY_ALERT_HISTORY_RETENTION", default_value = "90 days")]
    pub alert_history_retention: String,
    /// A StatsD listener (UDP and TCP) on this address, into the built-in `metrics` stream
    /// (repeatable; e.g. 127.0.0.1:8125).
    #[arg(long = "statsd", value_name = "ADDR")]
    pub statsd: Vec<std::net::SocketAddr>,
    /// The tenant of the StatsD listener given in the same position (repeatable, one per
    /// --statsd). With --statsd-tenant-tag, the tenant of lines without a tenant tag.
    #[arg(long = "statsd-tenant", value_name = "TENANT")]
    pub statsd_tenant: Vec<String>,
    /// StatsD lines name their tenant in the DogStatsD tag `tenant:NAME`.
    #[arg(long)]
    pub statsd_tenant_tag: bool,
    /// How long StatsD metrics are aggregated before one commit (e.g. '1 second').
    #[arg(long, default_value = "1 second")]
    pub statsd_flush_interval: String,
}

impl ServeArgs {
    /// The StatsD settings: each --statsd with the --statsd-tenant in the same position.
    pub fn statsd(&self) -> Result<crate::server::statsd::StatsdConfig> {
        use crate::server::statsd::{ListenerConfig, StatsdConfig};
        let (addrs, tenants) = (&self.statsd, &self.statsd_tenant);
        if addrs.is_empty() && (!tenants.is_empty() || self.statsd_tenant_tag) {
            return Err(Error::Invalid(
                "--statsd-tenant and --statsd-tenant-tag need a --statsd address".into(),
            ));
        }
        if tenants.len() != addrs.len() && !(self.statsd_tenant_tag && tenants.is_empty()) {
            return Err(Error::Invalid(format!(
                "{} --statsd address(es) but {} --statsd-tenant: give one tenant per address, or --statsd-tenant-tag to read the tenant from each line's `tenant:` tag",
                addrs.len(),
                tenants.len()
            )));
        }
        let flush_interval =
            parse_duration("--statsd-flush-interval", &self.statsd_flush_interval)?;
        if flush_interval.is_zero() {
            return Err(Error::Invalid(
                "--statsd-flush-interval must be above 0".into(),
            ));
        }
        Ok(StatsdConfig {
            listeners: addrs
                .iter()
                .enumerate()
                .map(|(i, addr)| ListenerConfig {
                    addr: *addr,
                    tenant: tenants.get(i).cloned(),
                })
                .collect(),
            tenant_tag: self.statsd_tenant_tag,
            flush_interval,
        })
    }
}

/// The limits of a query-time SQL query.
#[cfg(feature = "sql")]
#[derive(Args, Debug)]
pub struct SqlLimitArgs {
    /// How long a SQL query may run (e.g. '10 seconds').
    #[arg(long, env = "TALLY_SQL_TIMEOUT", default_value = "10 seconds")]
    pub sql_timeout: String,
    /// Memory a SQL query may use, in MB: the relations it reads and its sorts, joins and
    /// aggregations.
    #[arg(long, env = "TALLY_SQL_MEMORY_MB", default_value_t = 256)]
    pub sql_memory_mb: usize,
    /// Rows a SQL query's answer may have.
    #[arg(long, env = "TALLY_SQL_MAX_ROWS", default_value_t = 100_000)]
    pub sql_max_rows: usize,
}

#[cfg(feature = "sql")]
impl SqlLimitArgs {
    pub fn limits(&self) -> Result<tally_sql::Limits> {
        let time = parse_duration("--sql-timeout", &self.sql_timeout)?;
        Ok(crate::sql::limits(
            time,
            self.sql_memory_mb,
            self.sql_max_rows,
        ))
    }
}

#[cfg(feature = "sql")]
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// One SELECT (or WITH … SELECT); views, tables, streams, saved queries and
    /// view_at('view', grain => 'month')
    /// are its relations, :name its parameters.
    pub sql: String,
    /// A parameter's value, NAME=VALUE (repeatable).
    #[arg(long = "param")]
    pub params: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
    #[command(flatten)]
    pub limits: SqlLimitArgs,
}

#[derive(Args, Debug)]
pub struct RejectionsArgs {
    /// Only entries with a larger id (the last id of the previous page).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// How many entries to show.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The stream to load into.
    #[arg(long)]
    pub stream: String,
    /// The input file.
    pub file: PathBuf,
    /// The input format; by default from the file name (.csv, .json, else NDJSON).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Print the summary as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: SummaryFormat,
    /// Events per durable commit: larger batches are faster, smaller ones acknowledge sooner.
    #[arg(long, default_value_t = crate::app::BATCH_ROWS)]
    pub batch_size: usize,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The view to read.
    pub view: String,
    /// Only buckets starting at or after this time (RFC 3339 or a date).
    #[arg(long)]
    pub from: Option<String>,
    /// Only buckets starting before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Re-group the time bucket to a coarser grain.
    #[arg(long, value_enum)]
    pub grain: Option<Grain>,
    /// Keep only these group columns (comma separated), merging the others.
    #[arg(long, value_delimiter = ',')]
    pub group_by: Option<Vec<String>>,
    /// A condition, e.g. "vault_id = 'v1'" (group columns, before re-grouping) or
    /// "revenue > 100" (naming an output column: on the answer's rows).
    #[arg(long = "where")]
    pub filter: Option<String>,
    /// Order by a column: "COL [asc|desc] [nulls first|last]".
    #[arg(long)]
    pub order_by: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// A saved query's parameter, NAME=VALUE (repeatable).
    #[arg(long = "param")]
    pub params: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// active_users, retention, funnel, sessions or lifecycle.
    pub kind: String,
    /// Start of the range: a date (local midnight) or an RFC 3339 time; default 30 days
    /// before --to's day.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range (excluded); default the end of today.
    #[arg(long)]
    pub to: Option<String>,
    /// active_users, lifecycle: day (default), week or month.
    #[arg(long)]
    pub interval: Option<String>,
    /// retention: day, week (default) or month.
    #[arg(long)]
    pub period: Option<String>,
    /// retention: how many periods after the cohort's (default 8).
    #[arg(long)]
    pub periods: Option<String>,
    /// retention: the event whose first occurrence makes a person's cohort.
    #[arg(long = "start_event", alias = "start-event")]
    pub start_event: Option<String>,
    /// retention: the only event that counts as returning.
    #[arg(long = "return_event", alias = "return-event")]
    pub return_event: Option<String>,
    /// funnel: event names separated by commas.
    #[arg(long)]
    pub steps: Option<String>,
    /// funnel: how long after the first step the last may come (default '1 day').
    #[arg(long)]
    pub window: Option<String>,
    /// funnel: a property of the first step's event to break persons down by.
    #[arg(long)]
    pub breakdown: Option<String>,
    /// sessions: the gap between events that starts a new session (default '30 minutes').
    #[arg(long)]
    pub gap: Option<String>,
    /// sessions: landing_page or exit_page instead of days.
    #[arg(long)]
    pub by: Option<String>,
    /// sessions: at most this many rows.
    #[arg(long)]
    pub limit: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
}

impl AnalyzeArgs {
    /// The parameters given, by their names in docs/analyses.md.
    pub fn params(&self) -> Vec<(String, String)> {
        [
            ("from", &self.from),
            ("to", &self.to),
            ("interval", &self.interval),
            ("period", &self.period),
            ("periods", &self.periods),
            ("start_event", &self.start_event),
            ("return_event", &self.return_event),
            ("steps", &self.steps),
            ("window", &self.window),
            ("breakdown", &self.breakdown),
            ("gap", &self.gap),
            ("by", &self.by),
            ("limit", &self.limit),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name.to_owned(), v.clone())))
        .collect()
    }
}

#[derive(Subcommand, Debug)]
pub enum TableCommand {
    /// Insert or replace rows by primary key, from NDJSON, a JSON array or CSV with a header.
    Upsert {
        /// The table.
        #[arg(long)]
        table: String,
        /// The input file.
        file: PathBuf,
        /// The input format; by default from the file name (.csv, .json, else NDJSON).
        #[arg(long, value_enum)]
        format: Option<InputFormat>,
        /// Print the summary as JSON.
        #[arg(long, value_enum, default_value = "text")]
        output: SummaryFormat,
    },
    /// Delete the row with this primary key.
    Delete {
        /// The table.
        #[arg(long)]
        table: String,
        /// The row's primary-key value.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        /// The tenant's IANA time zone: daily, weekly and monthly buckets follow it.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
    /// List tenants.
    List,
    /// Give a PostgreSQL role read-only access to one tenant (for BI tools): a schema of views
    /// filtered to the tenant. Re-run after schema changes; see docs/postgres.md.
    GrantReader {
        /// The tenant.
        name: String,
        /// The role (it must exist, with `tally.tenant_id` set to the tenant).
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key for --tenant; it is printed once and stored only as a hash.
    Create {
        #[arg(long, value_enum)]
        kind: KeyKindArg,
    },
    /// Revoke a key of --tenant by its prefix (its first 14 characters, e.g. tly_w_1a2b3c4d).
    Revoke { prefix: String },
}

#[derive(Subcommand, Debug)]
pub enum DashboardCommand {
    /// Create a dashboard of --tenant from a JSON file ('-' reads standard input), as
    /// `POST /v1/dashboards` takes it; prints it with its id.
    Create { file: PathBuf },
    /// List the dashboards.
    List,
    /// Show a dashboard.
    Show { id: String },
    /// Replace a dashboard's name and widgets from a JSON file.
    Put { id: String, file: PathBuf },
    /// Delete a dashboard.
    Delete { id: String },
    /// A widget's data, as `GET /v1/dashboards/{id}/widgets/{n}/data` answers it.
    Data {
        id: String,
        /// The widget's position, from 0.
        n: usize,
        /// `-7 days`, `today`, `now` or a time, instead of the widget's own.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// A view's rows, with the query flags of `tally query`.
    View(ExportViewArgs),
    /// A stream's raw events, each with its `_seq` first.
    Stream(ExportStreamArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormatArg {
    Csv,
    Ndjson,
    Parquet,
}

impl ExportFormatArg {
    fn format(self) -> crate::export::ExportFormat {
        match self {
            ExportFormatArg::Csv => crate::export::ExportFormat::Csv,
            ExportFormatArg::Ndjson => crate::export::ExportFormat::Ndjson,
            ExportFormatArg::Parquet => crate::export::ExportFormat::Parquet,
        }
    }
}

#[derive(Args, Debug)]
pub struct ExportViewArgs {
    /// The live view.
    pub view: String,
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: ExportFormatArg,
    /// The file to write ('-', the default, is standard output).
    #[arg(long, default_value = "-")]
    pub output: PathBuf,
    /// The cursor an earlier export printed: only rows whose group changed since.
    #[arg(long)]
    pub after: Option<String>,
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, value_enum)]
    pub grain: Option<Grain>,
    #[arg(long, value_delimiter = ',')]
    pub group_by: Option<Vec<String>>,
    #[arg(long = "where")]
    pub filter: Option<String>,
    #[arg(long)]
    pub order_by: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ExportStreamArgs {
    /// The stream.
    pub stream: String,
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: ExportFormatArg,
    /// The file to write ('-', the default, is standard output).
    #[arg(long, default_value = "-")]
    pub output: PathBuf,
    /// Only events with a higher sequence number.
    #[arg(long, conflicts_with = "after")]
    pub after_seq: Option<u64>,
    /// The cursor an earlier export printed (the same as --after-seq).
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["person", "log"])))]
pub struct EraseArgs {
    /// The person's id: a user id, or an anonymous id (its linked user id is erased with it).
    #[arg(long)]
    pub person: Option<String>,
    /// Show the erasure log (SHA-256 of each id, when, what it did) instead.
    #[arg(long)]
    pub log: bool,
}

#[derive(Subcommand, Debug)]
pub enum AlertCommand {
    /// Define an alert of --tenant from a JSON file ('-' reads standard input), as
    /// `POST /v1/alerts` takes it; prints the alert with its id.
    Create {
        file: PathBuf,
        /// Accept a webhook on a loopback, private or link-local address.
        #[arg(long)]
        allow_private_webhooks: bool,
    },
    /// List the alerts of --tenant.
    List,
    /// Show an alert with its firing groups.
    Show { id: String },
    /// Delete an alert with its history.
    Delete { id: String },
    /// Show an alert's history: every state change and its delivery.
    History {
        id: String,
        /// The most recent entries to show.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Acknowledge an alert's firing groups.
    Ack { id: String },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum MigrateAction {
    Status,
    Up,
    Down,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum InputFormat {
    Ndjson,
    Csv,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SummaryFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TableFormat {
    Table,
    Csv,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Grain {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KeyKindArg {
    Read,
    Write,
    Manage,
}

/// Writes to stdout, ignoring a closed pipe.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn location(cli: &Cli) -> Result<Location> {
    match &cli.database_url {
        Some(url) => Ok(Location::Postgres(tally_store::PgConfig {
            url: url.clone(),
            schema: cli.database_schema.clone(),
        })),
        None => Ok(Location::Directory(cli.data.clone())),
    }
}

fn config(cli: &Cli) -> Result<Config> {
    let max_future = Interval::parse(&cli.max_future)
        .map_err(|e| Error::Invalid(format!("--max-future: {e}")))?;
    let clock = match &cli.now {
        Some(text) => crate::app::Clock::fixed(Timestamp::parse(text).ok_or_else(|| {
            Error::Invalid(format!(
                "--now: '{text}' is not an RFC 3339 instant (e.g. 2026-03-30T12:00:00Z)"
            ))
        })?),
        None => crate::app::Clock::System,
    };
    Ok(Config {
        max_future,
        clock,
        ..Config::default()
    })
}

fn read_file(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Input {
        path: path.display().to_string(),
        source,
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let location = location(&cli)?;
    let mut config = config(&cli)?;
    if let Command::Migrate { action } = &cli.command {
        return migrate(&location, *action);
    }
    if let Command::Ingest(args) = &cli.command {
        config.batch_rows = args.batch_size;
    }
    let mut tally = Tally::open(&location, config)?;
    match &cli.command {
        Command::Apply { file } => {
            let sql = read_file(file)?;
            let changes = tally.apply_schema(&sql).map_err(|e| match e {
                Error::Compile(c) => Error::Invalid(format!(
                    "{}:{}:{}: {}",
                    file.display(),
                    c.line,
                    c.column,
                    strip_position(&c)
                )),
                other => other,
            })?;
            let mut text = String::new();
            for c in &changes {
                text.push_str(&format!("{c}\n"));
            }
            if changes.is_empty() {
                text.push_str("no statements\n");
            }
            out(&text);
        }
        Command::Ingest(args) => {
            let stream = tally.stream(&args.stream)?;
            let format = match args.format {
                Some(InputFormat::Ndjson) => Format::Ndjson,
                Some(InputFormat::Csv) => Format::Csv,
                Some(InputFormat::Json) => Format::Json,
                None => Format::from_path(&args.file),
            };
            let file = std::fs::File::open(&args.file).map_err(|source| Error::Input {
                path: args.file.display().to_string(),
                source,
            })?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = progress_bar(size);
            let mut runtime = tally.open_tenant(&cli.tenant)?;
            let report = ingest(
                &mut runtime,
                &stream,
                tally.config(),
                format,
                std::io::BufReader::with_capacity(1 << 16, file),
                &|bytes| {
                    if let Some(bar) = &bar {
                        bar.set_position(bytes);
                    }
                },
            )?;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            out(&summary(&report, args.output));
        }
        #[cfg(feature = "sql")]
        Command::Query(args) if tally.catalog().saved_query(&args.view).is_some() => {
            let query = tally.catalog().saved_query(&args.view).cloned();
            let query = query.expect("checked by the guard");
            let runtime = tally.open_tenant(&cli.tenant)?;
            let result = crate::sql::run_saved_blocking(
                &runtime,
                &query,
                &args.params,
                args.limit,
                tally.now(),
            )?;
            out(&render(&result, table_format(args.format)));
        }
        Command::Query(args) => {
            if !args.params.is_empty() {
                return Err(Error::Invalid(format!(
                    "--param is for saved queries; {} is a live view (use --where)",
                    args.view
                )));
            }
            let req = query_request(args)?;
            let runtime = tally.open_tenant(&cli.tenant)?;
            let result = runtime.query(&args.view, &req)?;
            out(&render(&result, table_format(args.format)));
            let failures = runtime.expression_failures(&args.view)?;
            if failures > 0 {
                eprintln!(
                    "note: an expression of view {} failed on {failures} events (each kept, with NULL there); see docs/sql.md",
                    args.view
                );
            }
        }
        #[cfg(feature = "sql")]
        Command::Sql(args) => {
            let limits = args.limits.limits()?;
            let params = crate::sql::text_params(&args.params)?;
            let runtime = tally.open_tenant(&cli.tenant)?;
            let result =
                crate::sql::run_blocking(&runtime, &args.sql, &params, tally.now(), limits)?;
            out(&render(&result, table_format(args.format)));
        }
        Command::Analyze(args) => {
            let mut runtime = tally.open_tenant(&cli.tenant)?;
            let result = runtime.analyze(&args.kind, &args.params(), tally.now())?;
            out(&render(&result, table_format(args.format)));
        }
        Command::Table(TableCommand::Upsert {
            table,
            file,
            format,
            output,
        }) => {
            let format = match format {
                Some(InputFormat::Ndjson) => crate::ingest::Format::Ndjson,
                Some(InputFormat::Csv) => crate::ingest::Format::Csv,
                Some(InputFormat::Json) => crate::ingest::Format::Json,
                None => crate::ingest::Format::from_path(file),
            };
            let records = crate::tables::file_records(&read_file(file)?, format)?;
            let mut runtime = tally.open_tenant(&cli.tenant)?;
            let outcome = runtime.upsert_rows(table, &records)?;
            let rejected: Vec<serde_json::Value> = outcome
                .rejected
                .iter()
                .map(|(index, error)| serde_json::json!({"index": index, "error": error}))
                .collect();
            match output {
                SummaryFormat::Json => out(&format!(
                    "{}\n",
                    serde_json::json!({"upserted": outcome.upserted, "rejected": rejected})
                )),
                SummaryFormat::Text => {
                    let mut text = format!(
                        "upserted {} rows of {table}, rejected {}\n",
                        outcome.upserted,
                        outcome.rejected.len()
                    );
                    for (index, error) in outcome.rejected.iter().take(20) {
                        text.push_str(&format!("  row {index}: {error}\n"));
                    }
                    out(&text);
                }
            }
        }
        Command::Table(TableCommand::Delete { table, key }) => {
            let mut runtime = tally.open_tenant(&cli.tenant)?;
            if !runtime.delete_row(table, key)? {
                return Err(Error::NotFound(format!(
                    "table {table} has no row with key {key}"
                )));
            }
            out(&format!("deleted the row {key} of {table}\n"));
        }
        Command::Rejections(args) => {
            let runtime = tally.open_tenant(&cli.tenant)?;
            let page = runtime.rejections(args.after, args.limit)?;
            out(&render(&rejections_table(page), table_format(args.format)));
        }
        Command::Tenant(TenantCommand::Create { name, time_zone }) => {
            let info = tally.create_tenant(name, time_zone)?;
            out(&format!(
                "created tenant {} ({})\n",
                info.name, info.time_zone
            ));
        }
        Command::Tenant(TenantCommand::List) => {
            let mut text = String::new();
            for t in tally.tenants()? {
                text.push_str(&format!("{}\t{}\t{}\n", t.name, t.time_zone, t.created_at));
            }
            out(&text);
        }
        Command::Tenant(TenantCommand::GrantReader { name, role }) => {
            let schema = tally.store().grant_reader(name, role)?;
            out(&format!(
                "role {role} can read tenant {name} in schema {schema}\n"
            ));
        }
        Command::Key(KeyCommand::Create { kind }) => {
            let kind = match kind {
                KeyKindArg::Read => KeyKind::Read,
                KeyKindArg::Write => KeyKind::Write,
                KeyKindArg::Manage => KeyKind::Manage,
            };
            let key = tally.create_key(&cli.tenant, kind)?;
            out(&format!("{key}\n"));
        }
        Command::Key(KeyCommand::Revoke { prefix }) => {
            tally.tenant_info(&cli.tenant)?;
            let prefix: String = prefix.chars().take(14).collect();
            if tally.store().revoke_key(&cli.tenant, &prefix)? == 0 {
                return Err(Error::NotFound(format!(
                    "tenant {} has no key starting with {prefix}",
                    cli.tenant
                )));
            }
            out(&format!(
                "revoked {prefix}… (servers stop accepting it within 5 seconds)\n"
            ));
        }
        Command::Alert(command) => {
            let answer = alert_command(&tally, &cli.tenant, command)?;
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            ));
        }
        Command::Erase(args) => {
            let mut runtime = tally.open_tenant(&cli.tenant)?;
            let answer = match &args.person {
                Some(person) => serde_json::to_value(runtime.erase_person(person, tally.now())?),
                None => serde_json::to_value(runtime.erasures(usize::MAX)?),
            }
            .map_err(|e| Error::Invalid(e.to_string()))?;
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            ));
        }
        Command::Export(command) => export(&tally, &cli.tenant, command)?,
        Command::Dashboard(command) => {
            let answer = dashboard_command(&tally, &cli.tenant, command)?;
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            ));
        }
        Command::Serve(args) => return serve(tally, args),
        Command::Migrate { .. } => {}
    }
    // Nothing else to do with the service; keep it alive until here for clarity.
    let _ = &mut tally;
    Ok(())
}

/// `tally alert …`: the operation on the tenant's alerts; the tenant joins or leaves the
/// scheduler's list as its first alert is made or its last deleted.
fn alert_command(tally: &Tally, tenant: &str, command: &AlertCommand) -> Result<serde_json::Value> {
    use crate::alerts::AlertOp;
    let op = match command {
        AlertCommand::Create {
            file,
            allow_private_webhooks,
        } => {
            let text = read_text(file)?;
            let body: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Request(format!("{}: not JSON: {e}", file.display())))?;
            if let Some(url) = body["webhook"]["url"].as_str() {
                crate::alerts::webhook::check_destination_blocking(url, *allow_private_webhooks)
                    .map_err(|e| Error::Request(format!("webhook.url: {e}")))?;
            }
            AlertOp::Create(body)
        }
        AlertCommand::List => AlertOp::List,
        AlertCommand::Show { id } => AlertOp::Show(id.clone()),
        AlertCommand::Delete { id } => AlertOp::Delete(id.clone()),
        AlertCommand::History { id, limit } => AlertOp::History {
            id: id.clone(),
            limit: *limit,
        },
        AlertCommand::Ack { id } => AlertOp::Ack(id.clone()),
    };
    let mut runtime = tally.open_tenant(tenant)?;
    let changes = op.changes_count();
    let answer = op.run(&mut runtime, tally.now())?;
    if changes {
        tally.store().set_scheduled(tenant, runtime.has_alerts()?)?;
    }
    runtime.flush()?;
    Ok(answer)
}

/// `tally dashboard …`.
fn dashboard_command(
    tally: &Tally,
    tenant: &str,
    command: &DashboardCommand,
) -> Result<serde_json::Value> {
    use crate::dashboards::DashboardOp;
    let body = |file: &PathBuf| -> Result<serde_json::Value> {
        let text = read_text(file)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Request(format!("{}: not JSON: {e}", file.display())))
    };
    let mut runtime = tally.open_tenant(tenant)?;
    let op = match command {
        DashboardCommand::Create { file } => DashboardOp::Create(body(file)?),
        DashboardCommand::List => DashboardOp::List,
        DashboardCommand::Show { id } => DashboardOp::Get(id.clone()),
        DashboardCommand::Put { id, file } => DashboardOp::Put(id.clone(), body(file)?),
        DashboardCommand::Delete { id } => DashboardOp::Delete(id.clone()),
        DashboardCommand::Data { id, n, from, to } => {
            #[cfg(feature = "sql")]
            return crate::dashboards::widget_data_blocking(
                &runtime,
                id,
                *n,
                (from.as_deref(), to.as_deref()),
                tally.now(),
                tally_sql::Limits::default(),
            );
            #[cfg(not(feature = "sql"))]
            {
                return match runtime.widget_data(
                    id,
                    *n,
                    from.as_deref(),
                    to.as_deref(),
                    None,
                    tally.now(),
                )? {
                    crate::dashboards::WidgetData::Done { body, .. } => {
                        Ok(body.unwrap_or_default())
                    }
                    crate::dashboards::WidgetData::Sql { .. } => Err(Error::Invalid(
                        "this build of Tally has no query-time SQL (the sql feature)".into(),
                    )),
                };
            }
        }
    };
    op.run(&mut runtime, tally.now())
}

/// A text file, or standard input for `-`.
fn read_text(file: &PathBuf) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            Error::Input {
                path: "standard input".into(),
                source,
            }
        })?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(|source| Error::Input {
            path: file.display().to_string(),
            source,
        })
    }
}

/// `tally export view|stream`: the rows or events into the output, a batch at a time, then
/// the cursor (on standard error when the output is standard output).
fn export(tally: &Tally, tenant: &str, command: &ExportCommand) -> Result<()> {
    use crate::export::{BATCH, Encoder, parse_cursor, stream_columns, write_stream};
    // An export streams: what one batch frees is not needed again soon.
    crate::return_freed_memory_promptly();
    let (format, output) = match command {
        ExportCommand::View(a) => (a.format.format(), &a.output),
        ExportCommand::Stream(a) => (a.format.format(), &a.output),
    };
    let to_stdout = output.as_os_str() == "-";
    let mut sink: Box<dyn std::io::Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(output).map_err(|source| Error::Input {
                path: output.display().to_string(),
                source,
            })?,
        ))
    };
    let wrote = |e: std::io::Error| Error::Input {
        path: output.display().to_string(),
        source: e,
    };
    let runtime = tally.open_tenant(tenant)?;
    let cursor = match command {
        ExportCommand::View(a) => {
            let req = query_request(&QueryArgs {
                view: a.view.clone(),
                from: a.from.clone(),
                to: a.to.clone(),
                grain: a.grain,
                group_by: a.group_by.clone(),
                filter: a.filter.clone(),
                order_by: a.order_by.clone(),
                limit: a.limit,
                params: Vec::new(),
                format: TableFormat::Table,
            })?;
            let after = a.after.as_deref().map(parse_cursor).transpose()?;
            let (answer, cursor) = runtime.export_view(&a.view, &req, after)?;
            let mut encoder = Encoder::new(format, answer.columns.clone())?;
            for chunk in answer.rows.chunks(BATCH) {
                sink.write_all(&encoder.write(chunk)?).map_err(wrote)?;
            }
            sink.write_all(&encoder.finish()?).map_err(wrote)?;
            cursor
        }
        ExportCommand::Stream(a) => {
            let stream = tally.stream(&a.stream)?;
            let after = match (&a.after, a.after_seq) {
                (Some(c), _) => parse_cursor(c)?,
                (None, Some(s)) => s,
                (None, None) => 0,
            };
            let head = runtime.store().last_seq(&stream)?;
            let encoder = Encoder::new(format, stream_columns(&stream))?;
            write_stream(runtime.store(), &stream, (after, head), encoder, |bytes| {
                sink.write_all(&bytes).map_err(wrote)?;
                Ok(true)
            })?;
            head.max(after)
        }
    };
    sink.flush().map_err(wrote)?;
    drop(sink);
    if to_stdout {
        eprintln!("cursor: {cursor}");
    } else {
        println!("cursor: {cursor}");
    }
    Ok(())
}

/// `tally serve`: runs until SIGTERM or Ctrl-C, then drains and flushes.
fn serve(tally: Tally, args: &ServeArgs) -> Result<()> {
    use crate::server::{Hub, ServerConfig};
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let flush_interval = parse_duration("--flush-interval", &args.flush_interval)?;
    if args.rate_limit.is_nan() || args.rate_limit <= 0.0 {
        return Err(Error::Invalid("--rate-limit must be above 0".into()));
    }
    let admin_token = std::env::var("TALLY_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if admin_token.is_none() {
        tracing::warn!(
            "TALLY_ADMIN_TOKEN is not set: the admin routes (tenants, schema) answer 403"
        );
    }
    // Connections and tenant databases share the process's file descriptors: half for the
    // connections, the rest for the tenants' files (up to five per open SQLite tenant, one of
    // them the WAL kept open for syncing it).
    let mut max_connections = args.max_connections.max(1);
    let mut max_open_tenants = args.max_open_tenants.max(1);
    if let Some(files) = crate::server::raise_open_files_limit() {
        let half = usize::try_from(files / 2).unwrap_or(usize::MAX).max(64);
        if max_connections > half {
            tracing::warn!(
                max_connections,
                open_files = files,
                "--max-connections lowered to half the open-file limit"
            );
            max_connections = half;
        }
        let tenants = (half / 5).max(16);
        if max_open_tenants > tenants {
            tracing::warn!(
                max_open_tenants,
                open_files = files,
                "--max-open-tenants lowered to fit the open-file limit"
            );
            max_open_tenants = tenants;
        }
    }
    let tenant_idle = parse_duration("--tenant-idle", &args.tenant_idle)?;
    let statsd = args.statsd()?;
    let rejection_retention = Interval::parse(&args.rejection_retention).map_err(|e| {
        Error::Invalid(format!(
            "--rejection-retention '{}': {e}",
            args.rejection_retention
        ))
    })?;
    let alert_history_retention = Interval::parse(&args.alert_history_retention).map_err(|e| {
        Error::Invalid(format!(
            "--alert-history-retention '{}': {e}",
            args.alert_history_retention
        ))
    })?;
    let settings = ServerConfig {
        listen: args.listen,
        alert_history_retention,
        allow_private_webhooks: args.allow_private_webhooks,
        rejection_retention,
        admin_token,
        max_connections,
        max_open_tenants,
        tenant_idle,
        flush_interval,
        queue_depth: args.queue_depth.max(1),
        rate_limit: args.rate_limit,
        rate_burst: args.rate_limit * 2.0,
        #[cfg(feature = "sql")]
        sql_limits: args.sql.limits()?,
        sql_concurrency: args.sql_concurrency.max(1),
        ..ServerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::app::THREAD_STACK)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", settings.listen)))?;
        let local = listener.local_addr().map_or(settings.listen, |a| a);
        let statsd = crate::server::statsd::Bound::bind(statsd)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen for StatsD: {e}")))?;
        let hub = std::sync::Arc::new(Hub::new(tally, settings));
        tracing::info!("listening on http://{local}");
        // A line on stdout for scripts that start the server and wait for it.
        out(&format!("listening on http://{local}\n"));
        for (addr, tenant) in statsd.addresses() {
            let tenant = tenant.map_or_else(|| "tagged".to_owned(), |t| format!("tenant {t}"));
            tracing::info!("StatsD on udp://{addr} and tcp://{addr} ({tenant})");
            out(&format!("statsd on {addr} ({tenant})\n"));
        }
        crate::server::serve_with_statsd(hub, listener, Some(statsd), crate::server::termination())
            .await
            .map_err(|e| Error::Invalid(format!("server failed: {e}")))
    })
}

fn table_format(format: TableFormat) -> OutputFormat {
    match format {
        TableFormat::Table => OutputFormat::Table,
        TableFormat::Csv => OutputFormat::Csv,
        TableFormat::Json => OutputFormat::Json,
    }
}

/// The rejection log as a result table.
fn rejections_table(page: Vec<tally_store::LoggedRejection>) -> tally_views::ResultSet {
    use tally_views::{Type, Value};
    let text = |s: String| Value::Text(s.into());
    tally_views::ResultSet {
        columns: [
            ("id", Type::BigInt),
            ("at", Type::Timestamp),
            ("stream", Type::Text),
            ("route", Type::Text),
            ("reason", Type::Text),
            ("message", Type::Text),
            ("payload", Type::Text),
        ]
        .map(|(name, ty)| (name.to_owned(), ty))
        .to_vec(),
        rows: page
            .into_iter()
            .map(|r| {
                vec![
                    Value::Int(i64::try_from(r.id).unwrap_or(i64::MAX)),
                    Value::Timestamp(r.rejected.at),
                    text(r.rejected.stream),
                    text(r.rejected.route),
                    text(r.rejected.reason),
                    text(r.rejected.message),
                    text(r.rejected.payload),
                ]
            })
            .collect(),
    }
}

/// The message of a compile error without its "line L, column C: " prefix.
fn strip_position(e: &tally_views::CompileError) -> String {
    let full = e.to_string();
    match full.split_once(": ") {
        Some((_, rest)) => rest.to_owned(),
        None => full,
    }
}

fn migrate(location: &Location, action: MigrateAction) -> Result<()> {
    let store = location.open_store()?;
    let migrations = store.migrations();
    let mut text = String::new();
    match action {
        MigrateAction::Status => {
            for s in migrations.status()? {
                text.push_str(&format!(
                    "{:04} {}  {}\n",
                    s.version,
                    s.name,
                    if s.applied { "applied" } else { "pending" }
                ));
            }
        }
        MigrateAction::Up => {
            let applied = migrations.up()?;
            if applied.is_empty() {
                text.push_str("the catalog is up to date\n");
            }
            for s in applied {
                text.push_str(&format!("applied {:04} {}\n", s.version, s.name));
            }
        }
        MigrateAction::Down => match migrations.down()? {
            Some(s) => text.push_str(&format!("reverted {:04} {}\n", s.version, s.name)),
            None => text.push_str("no migration is applied\n"),
        },
    }
    out(&text);
    Ok(())
}

fn progress_bar(size: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style);
    }
    Some(bar)
}

fn summary(report: &IngestReport, format: SummaryFormat) -> String {
    match format {
        SummaryFormat::Json => {
            let mut s = serde_json::to_string(report).unwrap_or_default();
            s.push('\n');
            s
        }
        SummaryFormat::Text => {
            let mut s = format!(
                "accepted {}, duplicates {}, rejected {}\n",
                report.accepted, report.duplicates, report.rejected
            );
            for e in &report.errors {
                s.push_str(&format!("line {}: {}\n", e.line, e.error));
            }
            let unlisted = report.rejected - report.errors.len() as u64;
            if unlisted > 0 {
                s.push_str(&format!("… and {unlisted} more rejected\n"));
            }
            s
        }
    }
}

/// Builds the query request from the flags.
pub fn query_request(args: &QueryArgs) -> Result<QueryRequest> {
    let grain = args.grain.map(|g| {
        match g {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
        .to_owned()
    });
    QueryParams {
        from: args.from.clone(),
        to: args.to.clone(),
        grain,
        // `--group-by ""` keeps no group column: everything merges into one row.
        group_by: args.group_by.clone(),
        filter: args.filter.clone(),
        order_by: args.order_by.clone(),
        limit: args.limit,
    }
    .to_request()
    .map_err(Error::from)
}

/// A positive duration under a day given to `flag`, such as '5 minutes'.
fn parse_duration(flag: &str, text: &str) -> Result<std::time::Duration> {
    match Interval::parse(text) {
        Ok(Interval::Micros(us)) if us > 0 => Ok(std::time::Duration::from_micros(us as u64)),
        _ => Err(Error::Invalid(format!(
            "{flag} '{text}' must be a duration under a day, such as '5 minutes'"
        ))),
    }
}
