//! The SQL compiler: schema text → catalog changes, view `SELECT` → [`ViewPlan`].
//!
//! This module and its children are the only code that knows `sqlparser`; no AST type leaves
//! them. It parses with the PostgreSQL dialect, but drives the parser itself statement by
//! statement, because `CREATE STREAM` is Tally's own statement and
//! `CREATE MATERIALIZED VIEW … WITH (…)` options must be read the same way on every dialect
//! version.
//!
//! Binding is a single pass over the AST: names resolve to column indexes, operators to the
//! operation for their operand types (with casts inserted where types differ), aggregates to
//! [`AggKind`](crate::agg::AggKind)s for their input type. Everything a live view cannot do is
//! rejected here, with the construct, its line and column, and what to do instead.
//!
//! - `mod.rs` (here): errors, [`apply`] and the statement dispatch, names, options and types;
//! - [`stream`](self::stream): `CREATE STREAM`;
//! - [`view`](self::view): `CREATE MATERIALIZED VIEW`: clause checks, `GROUP BY`, columns;
//! - [`bind`](self::bind): the scalar binder (names, operators, casts, `CASE`, literals);
//! - [`function`](self::function): scalar functions (`lower`, `round`, `time_bucket`, …);
//! - [`aggregate`](self::aggregate): the table of aggregates; adding one is a row there, its
//!   state in `agg.rs` and its oracle in `reference.rs`.

use std::fmt;

use sqlparser::ast::{self, Spanned};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token};

use crate::decimal::MAX_PRECISION;
use crate::expr::Expr;
use crate::plan::{Catalog, ColumnDef, SavedQuery, StreamDef, TableDef, ViewPlan};
use crate::value::Type;

mod aggregate;
mod bind;
mod function;
mod limits;
mod stream;
mod table;
mod view;

pub use limits::{MAX_DEPTH, MAX_TOKENS};

use bind::{Binder, Scope, ScopeTarget};

/// How deep expressions may nest before the parser refuses them.
const RECURSION_LIMIT: usize = 64;

/// A schema or query text that cannot be compiled, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

type Result<T, E = CompileError> = std::result::Result<T, E>;

fn error_at(at: Location, message: impl Into<String>, hint: Option<&str>) -> CompileError {
    CompileError {
        line: at.line.max(1),
        column: at.column.max(1),
        message: message.into(),
        hint: hint.map(str::to_owned),
    }
}

fn unsupported(at: Location, construct: &str, hint: &str) -> CompileError {
    error_at(
        at,
        format!("{construct} is not supported in a live view"),
        Some(hint),
    )
}

fn parse_error(e: ParserError, fallback: Location) -> CompileError {
    let text = match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
        ParserError::RecursionLimitExceeded => {
            return error_at(
                fallback,
                "the statement nests too deeply",
                Some("expressions may nest at most 64 levels"),
            );
        }
    };
    // sqlparser reports positions only inside the text: "... at Line: 3, Column: 7".
    if let Some(idx) = text.rfind(" at Line: ") {
        let pos = &text[idx + " at Line: ".len()..];
        let mut parts = pos.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return error_at(
                Location { line, column },
                format!("syntax error: {}", &text[..idx]),
                None,
            );
        }
    }
    error_at(fallback, format!("syntax error: {text}"), None)
}

/// What applying a schema did to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    CreatedStream(String),
    /// Nullable columns were appended, or the retention or the person column changed.
    AlteredStream {
        name: String,
        added: Vec<String>,
    },
    UnchangedStream(String),
    DroppedStream(String),
    CreatedView(String),
    /// The definition changed: the view is rebuilt from the retained raw events.
    ReplacedView(String),
    UnchangedView(String),
    DroppedView(String),
    CreatedQuery(String),
    ReplacedQuery(String),
    UnchangedQuery(String),
    DroppedQuery(String),
    CreatedTable(String),
    /// Nullable columns were appended.
    AlteredTable {
        name: String,
        added: Vec<String>,
    },
    UnchangedTable(String),
    /// The table and its rows were deleted.
    DroppedTable(String),
}

impl Change {
    /// Whether the change does anything.
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Change::UnchangedStream(_)
                | Change::UnchangedView(_)
                | Change::UnchangedQuery(_)
                | Change::UnchangedTable(_)
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreatedStream(n) => write!(f, "created stream {n}"),
            Change::AlteredStream { name, added } if added.is_empty() => {
                write!(f, "altered stream {name}")
            }
            Change::AlteredStream { name, added } => {
                write!(f, "altered stream {name} (added {})", added.join(", "))
            }
            Change::UnchangedStream(n) => write!(f, "unchanged stream {n}"),
            Change::DroppedStream(n) => write!(f, "dropped stream {n}"),
            Change::CreatedView(n) => write!(f, "created view {n}"),
            Change::ReplacedView(n) => write!(f, "replaced view {n}"),
            Change::UnchangedView(n) => write!(f, "unchanged view {n}"),
            Change::DroppedView(n) => write!(f, "dropped view {n}"),
            Change::CreatedQuery(n) => write!(f, "created saved query {n}"),
            Change::ReplacedQuery(n) => write!(f, "replaced saved query {n}"),
            Change::UnchangedQuery(n) => write!(f, "unchanged saved query {n}"),
            Change::DroppedQuery(n) => write!(f, "dropped saved query {n}"),
            Change::CreatedTable(n) => write!(f, "created table {n}"),
            Change::AlteredTable { name, added } => {
                write!(f, "altered table {name} (added {})", added.join(", "))
            }
            Change::UnchangedTable(n) => write!(f, "unchanged table {n}"),
            Change::DroppedTable(n) => write!(f, "dropped table {n}"),
        }
    }
}

/// The result of applying schema text to a catalog.
#[derive(Debug)]
pub struct Applied {
    pub catalog: Catalog,
    pub changes: Vec<Change>,
}

/// Applies `CREATE STREAM`, `CREATE MATERIALIZED VIEW`, `DROP MATERIALIZED VIEW` and
/// `DROP STREAM` statements to a copy of `catalog`, in order.
pub fn apply(catalog: &Catalog, sql: &str) -> Result<Applied> {
    let dialect = PostgreSqlDialect {};
    let mut parser = limits::parser(&dialect, sql)?;
    let mut working = catalog.clone();
    let mut changes = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let next = parser.peek_token();
        if next.token == Token::EOF {
            break;
        }
        let at = next.span.start;
        let compiled = statement(&mut parser, &working, at)?;
        compiles_as_stored(&compiled, &working, at)?;
        let change = compiled.apply_to(&mut working)?;
        changes.push(change);
        let after = parser.peek_token();
        if after.token != Token::SemiColon && after.token != Token::EOF {
            return Err(error_at(
                after.span.start,
                format!(
                    "syntax error: expected ';' after the statement, found {}",
                    after.token
                ),
                None,
            ));
        }
    }
    // Table rows are stored in their definition's column order: a table dropped and created
    // again in one text would read its old rows under the new definition.
    for table in working.tables() {
        if let Some(old) = catalog.table(&table.name)
            && let Err(reason) = table::alteration(old, table)
        {
            return Err(error_at(
                Location { line: 1, column: 1 },
                format!("table {} cannot change this way: {reason}", table.name),
                Some("apply DROP TABLE (which deletes its rows) first, then create it again"),
            ));
        }
    }
    Ok(Applied {
        catalog: working,
        changes,
    })
}

/// Parses one stream definition as [`StreamDef::sql`] writes it, whatever its name (built-in
/// names included): what a tenant's store recorded when it created the stream's table.
pub fn parse_stream(sql: &str) -> Result<StreamDef> {
    let dialect = PostgreSqlDialect {};
    let at = Location { line: 1, column: 1 };
    let mut parser = limits::parser(&dialect, sql)?;
    parser
        .expect_keyword(Keyword::CREATE)
        .map_err(|e| parse_error(e, at))?;
    let word = parser.next_token();
    if !matches!(&word.token, Token::Word(w) if w.value.eq_ignore_ascii_case("stream")) {
        return Err(error_at(word.span.start, "expected CREATE STREAM", None));
    }
    match stream::create_stream(&mut parser, &Catalog::empty(), at)? {
        Compiled::Stream(def, _) => Ok(def),
        _ => Err(error_at(at, "expected CREATE STREAM", None)),
    }
}

/// Checks that the definition `compiled` stores compiles again, as it will when its catalog is
/// loaded: a view's or saved query's text is stored as the parser prints it ([`printable`]),
/// which puts nested prefix operations in parentheses, so a definition within the parser's
/// limits as written can be over them as stored (the nesting limit, the statement's tokens).
/// Such a definition is refused here rather than left to make the catalog fail to load.
fn compiles_as_stored(compiled: &Compiled, catalog: &Catalog, at: Location) -> Result<()> {
    let stored = match compiled {
        Compiled::View(plan) => plan.sql.clone(),
        Compiled::Query(query, _) => query.sql(),
        _ => return Ok(()),
    };
    let dialect = PostgreSqlDialect {};
    limits::parser(&dialect, &stored)
        .and_then(|mut parser| statement(&mut parser, catalog, at))
        .map(|_| ())
        .map_err(|e| {
            error_at(
                at,
                format!(
                    "the definition as stored would not compile again: {}",
                    e.message
                ),
                Some(
                    "a definition is stored as the parser prints it, with each nested prefix \
                     operation in parentheses (-(-x)), which count toward the parser's limit of \
                     64 levels: nest fewer",
                ),
            )
        })
}

/// A parsed and compiled statement, not yet applied.
enum Compiled {
    Stream(StreamDef, Location),
    View(Box<ViewPlan>),
    Query(SavedQuery, Location),
    Table(TableDef, Location),
    DropTable {
        name: String,
        if_exists: bool,
        at: Location,
    },
    DropView {
        name: String,
        if_exists: bool,
        at: Location,
    },
    DropStream {
        name: String,
        if_exists: bool,
        at: Location,
    },
}

impl Compiled {
    fn apply_to(self, catalog: &mut Catalog) -> Result<Change> {
        match self {
            Compiled::Stream(def, at) => {
                let change = match catalog.stream(&def.name) {
                    None => Change::CreatedStream(def.name.clone()),
                    Some(old) if **old == def => Change::UnchangedStream(def.name.clone()),
                    Some(old) => {
                        let added = stream_alteration(old, &def).map_err(|reason| {
                            error_at(
                                at,
                                format!("stream {} cannot change this way: {reason}", def.name),
                                Some("a stream may only gain nullable columns at the end or change its retention or person column; to change more, DROP STREAM (which deletes its events) and create it again"),
                            )
                        })?;
                        Change::AlteredStream {
                            name: def.name.clone(),
                            added,
                        }
                    }
                };
                catalog.put_stream(def);
                Ok(change)
            }
            Compiled::Table(def, at) => {
                let change = match catalog.table(&def.name) {
                    None => Change::CreatedTable(def.name.clone()),
                    Some(old) if **old == def => Change::UnchangedTable(def.name.clone()),
                    Some(old) => {
                        let added = table::alteration(old, &def).map_err(|reason| {
                            error_at(
                                at,
                                format!("table {} cannot change this way: {reason}", def.name),
                                Some("a table may only gain nullable columns at the end; to change more, DROP TABLE (which deletes its rows) in one apply and create it again in the next"),
                            )
                        })?;
                        Change::AlteredTable {
                            name: def.name.clone(),
                            added,
                        }
                    }
                };
                catalog.put_table(def);
                Ok(change)
            }
            Compiled::DropTable {
                name,
                if_exists,
                at,
            } => {
                if catalog.table(&name).is_none() {
                    if if_exists {
                        return Ok(Change::UnchangedTable(name));
                    }
                    return Err(error_at(at, format!("there is no table {name}"), None));
                }
                catalog.remove(&name);
                Ok(Change::DroppedTable(name))
            }
            Compiled::Query(query, at) => {
                if catalog.stream(&query.name).is_some()
                    || catalog.view(&query.name).is_some()
                    || catalog.table(&query.name).is_some()
                {
                    return Err(error_at(
                        at,
                        format!("{} is already a stream, live view or table", query.name),
                        Some("a saved query needs a name of its own"),
                    ));
                }
                let change = match catalog.saved_query(&query.name) {
                    None => Change::CreatedQuery(query.name.clone()),
                    Some(old) if **old == query => Change::UnchangedQuery(query.name.clone()),
                    Some(_) => Change::ReplacedQuery(query.name.clone()),
                };
                catalog.put_query(query);
                Ok(change)
            }
            Compiled::View(plan) => {
                if catalog.table(&plan.name).is_some() {
                    return Err(error_at(
                        Location { line: 1, column: 1 },
                        format!("{} is already a table", plan.name),
                        Some("give the live view another name"),
                    ));
                }
                if catalog.saved_query(&plan.name).is_some() {
                    return Err(error_at(
                        Location { line: 1, column: 1 },
                        format!("{} is already a saved query", plan.name),
                        Some("DROP VIEW it first, or give the live view another name"),
                    ));
                }
                let change = match catalog.view(&plan.name) {
                    None => Change::CreatedView(plan.name.clone()),
                    Some(old) if old.fingerprint() == plan.fingerprint() => {
                        Change::UnchangedView(plan.name.clone())
                    }
                    Some(_) => Change::ReplacedView(plan.name.clone()),
                };
                catalog.put_view(*plan);
                Ok(change)
            }
            Compiled::DropView {
                name,
                if_exists,
                at,
            } => {
                if catalog.saved_query(&name).is_some() {
                    catalog.remove(&name);
                    return Ok(Change::DroppedQuery(name));
                }
                if catalog.view(&name).is_none() {
                    if if_exists {
                        return Ok(Change::UnchangedView(name));
                    }
                    return Err(error_at(at, format!("there is no view {name}"), None));
                }
                catalog.remove(&name);
                Ok(Change::DroppedView(name))
            }
            Compiled::DropStream {
                name,
                if_exists,
                at,
            } => {
                match catalog.stream(&name) {
                    None if if_exists => return Ok(Change::UnchangedStream(name)),
                    None => return Err(error_at(at, format!("there is no stream {name}"), None)),
                    Some(s) if s.builtin => {
                        return Err(error_at(
                            at,
                            format!("{name} is a built-in stream and cannot be dropped"),
                            None,
                        ));
                    }
                    Some(_) => {}
                }
                let dependents: Vec<String> =
                    catalog.views_of(&name).map(|v| v.name.clone()).collect();
                if !dependents.is_empty() {
                    return Err(error_at(
                        at,
                        format!("stream {name} is read by views {}", dependents.join(", ")),
                        Some("drop those views first"),
                    ));
                }
                catalog.remove(&name);
                Ok(Change::DroppedStream(name))
            }
        }
    }
}

/// The columns `new` appends to `old`, or why the change is not allowed.
fn stream_alteration(old: &StreamDef, new: &StreamDef) -> std::result::Result<Vec<String>, String> {
    let added = appended_columns(&old.columns, &new.columns, "earlier events")?;
    if old.event_time != new.event_time {
        return Err("the event_time column changed".into());
    }
    if old.dedupe_key != new.dedupe_key {
        return Err("the dedupe_key changed".into());
    }
    Ok(added)
}

/// The names of the columns `new` adds after `old`'s, which must be unchanged; added columns
/// must be nullable, since `stored` (earlier events, stored rows) have no value for them.
fn appended_columns(
    old: &[ColumnDef],
    new: &[ColumnDef],
    stored: &str,
) -> std::result::Result<Vec<String>, String> {
    if new.len() < old.len() {
        return Err("columns cannot be removed".into());
    }
    for (o, n) in old.iter().zip(new) {
        if o != n {
            return Err(format!(
                "column {} changed (was {} {})",
                o.name,
                o.ty,
                if o.not_null { "NOT NULL" } else { "NULL" }
            ));
        }
    }
    let added = &new[old.len()..];
    if let Some(c) = added.iter().find(|c| c.not_null) {
        return Err(format!(
            "new column {} must be nullable, since {stored} have no value for it",
            c.name
        ));
    }
    Ok(added.iter().map(|c| c.name.clone()).collect())
}

fn statement(parser: &mut Parser<'_>, catalog: &Catalog, at: Location) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    if parser.parse_keyword(Keyword::CREATE) {
        let _ = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        let next = parser.peek_token();
        if let Token::Word(w) = &next.token
            && w.value.eq_ignore_ascii_case("stream")
        {
            parser.next_token();
            return stream::create_stream(parser, catalog, at);
        }
        if parser.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
            return view::create_view(parser, catalog, at);
        }
        if parser.parse_keyword(Keyword::VIEW) {
            return saved_query(parser, at);
        }
        if parser.parse_keyword(Keyword::TABLE) {
            return table::create_table(parser, catalog, at);
        }
        if parser.parse_keyword(Keyword::INDEX)
            || parser.parse_keywords(&[Keyword::UNIQUE, Keyword::INDEX])
        {
            return Err(error_at(
                next.span.start,
                "CREATE INDEX is not needed",
                Some(
                    "Tally keeps the indexes its streams and views need (event time, dedupe key, group keys); drop the statement",
                ),
            ));
        }
        if parser.parse_keyword(Keyword::POLICY) {
            return Err(error_at(
                next.span.start,
                "CREATE POLICY is not needed",
                Some(
                    "tenant isolation is Tally's job: every tenant reads only its own rows (row-level security on PostgreSQL); drop the statement",
                ),
            ));
        }
        return Err(error_at(
            next.span.start,
            format!("cannot create {}", next.token),
            Some(
                "write CREATE STREAM, CREATE MATERIALIZED VIEW, CREATE VIEW (a saved query) or CREATE TABLE",
            ),
        ));
    }
    if parser.parse_keyword(Keyword::DROP) {
        if parser.parse_keyword(Keyword::TABLE) {
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name_at = parser.peek_token().span.start;
            let name = object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
            return Ok(Compiled::DropTable {
                name,
                if_exists,
                at,
            });
        }
        let next = parser.peek_token();
        let stream =
            matches!(&next.token, Token::Word(w) if w.value.eq_ignore_ascii_case("stream"));
        if stream {
            parser.next_token();
        } else if !parser.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
            && !parser.parse_keyword(Keyword::VIEW)
        {
            return Err(error_at(
                next.span.start,
                format!("cannot drop {}", next.token),
                Some(
                    "write DROP MATERIALIZED VIEW name, DROP VIEW name (a saved query), DROP TABLE name or DROP STREAM name",
                ),
            ));
        }
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name_at = parser.peek_token().span.start;
        let name = object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
        return Ok(if stream {
            Compiled::DropStream {
                name,
                if_exists,
                at,
            }
        } else {
            Compiled::DropView {
                name,
                if_exists,
                at,
            }
        });
    }
    let first = parser.peek_token();
    let hint = match &first.token {
        Token::Word(w) if w.keyword == Keyword::INSERT => {
            "send events with `tally ingest` or POST /v1/streams/{stream}/events"
        }
        Token::Word(w) if w.keyword == Keyword::SELECT => {
            "read views with a view query; a schema file only defines them"
        }
        Token::Word(w) if w.keyword == Keyword::UPDATE || w.keyword == Keyword::DELETE => {
            "change a table's rows with PUT /v1/tables/{table}/rows or `tally table upsert`"
        }
        _ => {
            "a schema file holds CREATE STREAM, CREATE MATERIALIZED VIEW, CREATE VIEW, CREATE TABLE and DROP statements"
        }
    };
    Err(error_at(
        first.span.start,
        format!("{} statements cannot be applied", first.token),
        Some(hint),
    ))
}

/// `query` as a definition stores it: as the parser prints it, except that the operand of a
/// prefix operator that is itself a prefix operation is put in parentheses. Printed as it is,
/// `- + x` becomes `-+x`, which the parser reads as one operator, and `- - x` becomes `--x`, a
/// comment; the stored text must compile again to the same query.
pub(super) fn printable(query: &ast::Query) -> String {
    let mut query = query.clone();
    let _ = ast::visit_expressions_mut(&mut query, |e| {
        if let ast::Expr::UnaryOp { expr, .. } = e
            && matches!(**expr, ast::Expr::UnaryOp { .. })
        {
            let operand = std::mem::replace(expr, Box::new(ast::Expr::Identifier("x".into())));
            **expr = ast::Expr::Nested(operand);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    query.to_string()
}

/// `CREATE VIEW name AS SELECT …`, after `VIEW`: a saved query. Its text is kept as the parser
/// prints it ([`printable`]); its parameters are the `:name` placeholders in it.
fn saved_query(parser: &mut Parser<'_>, at: Location) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    let name_at = parser.peek_token().span.start;
    let name = new_object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
    parser.expect_keyword(Keyword::AS).map_err(perr)?;
    let query = parser.parse_query().map_err(perr)?;
    let text = printable(&query);
    let mut params: Vec<String> = Vec::new();
    let tokens = sqlparser::tokenizer::Tokenizer::new(&PostgreSqlDialect {}, &text)
        .tokenize()
        .map_err(|e| error_at(at, e.to_string(), None))?;
    for pair in tokens.windows(2) {
        if let (Token::Colon, Token::Word(w)) = (&pair[0], &pair[1])
            && !params.contains(&w.value)
        {
            params.push(w.value.clone());
        }
    }
    Ok(Compiled::Query(
        SavedQuery {
            name,
            query: text,
            params,
        },
        at,
    ))
}

/// A plain name: lower-cased unless quoted, one part, not reserved.
fn object_name(name: &ast::ObjectName, at: Location) -> Result<String> {
    match name.0.as_slice() {
        [ast::ObjectNamePart::Identifier(ident)] => ident_name(ident),
        _ => Err(error_at(
            at,
            format!("{name} is not a plain name"),
            Some("names have one part, without a schema"),
        )),
    }
}

/// Tables the stores keep for themselves (the catalog's, on PostgreSQL in the same schema as
/// the streams and views), and prefixes of the databases' own tables (`sqlite_master`,
/// PostgreSQL's `pg_catalog`, which is searched before Tally's schema).
const STORE_TABLES: &[&str] = &["tenants", "api_keys", "schema_objects"];
const STORE_PREFIXES: &[&str] = &["sqlite_", "pg_"];

/// The name of a new stream or view: a plain name that no store uses for its own tables.
fn new_object_name(name: &ast::ObjectName, at: Location) -> Result<String> {
    let text = object_name(name, at)?;
    if STORE_TABLES.contains(&text.as_str()) || STORE_PREFIXES.iter().any(|p| text.starts_with(p)) {
        return Err(error_at(
            at,
            format!("'{text}' is reserved: the stores use it for their own tables"),
            Some(
                "choose another name; tenants, api_keys, schema_objects and names starting with tally_, sqlite_ or pg_ are reserved",
            ),
        ));
    }
    Ok(text)
}

fn ident_name(ident: &ast::Ident) -> Result<String> {
    let name = if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    };
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(error_at(
            ident.span.start,
            format!("'{name}' is not a valid name"),
            Some(
                "names start with a letter and use lower-case letters, digits and _, at most 63 characters",
            ),
        ));
    }
    if name.starts_with("tally_") {
        return Err(error_at(
            ident.span.start,
            format!("'{name}' is reserved"),
            Some("names starting with tally_ are Tally's own"),
        ));
    }
    Ok(name)
}

trait LocationExt {
    fn max_or(self, other: Location) -> Location;
}

impl LocationExt for Location {
    /// `self` unless it is the empty location sqlparser uses for nodes without a span.
    fn max_or(self, other: Location) -> Location {
        if self.line == 0 { other } else { self }
    }
}

/// `key = 'text'` options as (key, text, position).
fn key_values(options: &[ast::SqlOption], at: Location) -> Result<Vec<(String, String, Location)>> {
    let mut out = Vec::new();
    for option in options {
        let ast::SqlOption::KeyValue { key, value } = option else {
            return Err(error_at(
                at,
                format!("option {option} is not of the form key = 'value'"),
                None,
            ));
        };
        let value_at = value.span().start.max_or(key.span.start);
        let text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        out.push((key.value.to_lowercase(), text, value_at));
    }
    Ok(out)
}

fn data_type(dt: &ast::DataType, at: Location) -> Result<Type> {
    use ast::DataType as D;
    Ok(match dt {
        D::Text
        | D::Varchar(_)
        | D::CharacterVarying(_)
        | D::CharVarying(_)
        | D::String(_)
        | D::Char(_)
        | D::Character(_)
        | D::Uuid => Type::Text,
        D::Boolean | D::Bool => Type::Boolean,
        D::BigInt(_)
        | D::Int(_)
        | D::Integer(_)
        | D::Int8(_)
        | D::Int4(_)
        | D::SmallInt(_)
        | D::Int2(_)
        | D::Int64
        | D::Int32 => Type::BigInt,
        D::Double(_)
        | D::DoublePrecision
        | D::Float(_)
        | D::Float8
        | D::Float64
        | D::Real
        | D::Float4 => Type::Double,
        D::Decimal(info) | D::Numeric(info) | D::Dec(info) => match info {
            ast::ExactNumberInfo::PrecisionAndScale(p, s) => {
                if *p == 0 || *p > u64::from(MAX_PRECISION) {
                    return Err(error_at(
                        at,
                        format!("DECIMAL precision {p} is outside 1..=38"),
                        None,
                    ));
                }
                if *s < 0 || *s as u64 > *p {
                    return Err(error_at(
                        at,
                        format!("DECIMAL scale {s} must be between 0 and the precision {p}"),
                        None,
                    ));
                }
                Type::Decimal {
                    precision: *p as u8,
                    scale: *s as u8,
                }
            }
            ast::ExactNumberInfo::Precision(p) if *p >= 1 && *p <= u64::from(MAX_PRECISION) => {
                Type::Decimal {
                    precision: *p as u8,
                    scale: 0,
                }
            }
            _ => {
                return Err(error_at(
                    at,
                    format!("{dt} needs a precision and scale"),
                    Some("write DECIMAL(p,s) with p ≤ 38, e.g. DECIMAL(36,18)"),
                ));
            }
        },
        D::Timestamp(_, _) | D::Datetime(_) | D::TimestampNtz(_) => Type::Timestamp,
        D::JSON | D::JSONB => Type::Json,
        other => {
            return Err(error_at(
                at,
                format!("type {other} is not supported"),
                Some(
                    "column types are TEXT, BOOLEAN, BIGINT, DOUBLE, DECIMAL(p,s), TIMESTAMP and JSON",
                ),
            ));
        }
    })
}

pub fn compile_key_filter(plan: &ViewPlan, text: &str) -> Result<Expr> {
    let scope = Scope {
        columns: plan.keys.iter().map(|k| (k.name.clone(), k.ty)).collect(),
        qualifiers: vec![plan.name.clone()],
        target: ScopeTarget::Key,
    };
    compile_filter(&scope, text)
}

/// Compiles a query's `where` over the columns of its answer (`columns`, in order): evaluated
/// against each answer row after re-grouping, so it may name output columns.
pub fn compile_row_filter(view: &str, columns: &[(String, Type)], text: &str) -> Result<Expr> {
    let scope = Scope {
        columns: columns.to_vec(),
        qualifiers: vec![view.to_owned()],
        target: ScopeTarget::Row,
    };
    compile_filter(&scope, text)
}

fn compile_filter(scope: &Scope, text: &str) -> Result<Expr> {
    let dialect = PostgreSqlDialect {};
    let start = Location { line: 1, column: 1 };
    let mut parser = limits::parser(&dialect, text)?;
    let ast = parser.parse_expr().map_err(|e| parse_error(e, start))?;
    limits::check_depth(&ast, "the condition", start)?;
    let trailing = parser.peek_token();
    if trailing.token != Token::EOF {
        return Err(error_at(
            trailing.span.start,
            format!("unexpected {} after the condition", trailing.token),
            None,
        ));
    }
    let mut binder = Binder::new(scope, start);
    binder.context = "a query filter";
    let (expr, ty) = binder.expr(&ast)?;
    if ty != Type::Boolean {
        return Err(error_at(
            start,
            format!("the filter needs a condition, but {ast} is {ty}"),
            None,
        ));
    }
    Ok(expr)
}
