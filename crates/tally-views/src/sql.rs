//! The SQL compiler: schema text → catalog changes, view `SELECT` → [`ViewPlan`].
//!
//! This is the only module that knows `sqlparser`; no AST type leaves it. It parses with the
//! PostgreSQL dialect, but drives the parser itself statement by statement, because
//! `CREATE STREAM` is Tally's own statement and `CREATE MATERIALIZED VIEW … WITH (…)` options
//! must be read the same way on every dialect version.
//!
//! Binding is a single pass over the AST: names resolve to column indexes, operators to the
//! operation for their operand types (with casts inserted where types differ), aggregates to
//! [`AggKind`]s for their input type. Everything a live view cannot do is rejected here, with the
//! construct, its line and column, and what to do instead.

use std::fmt;

use sqlparser::ast::{self, Spanned};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token};

use crate::agg::{AggKind, Moment};
use crate::decimal::{Decimal, MAX_PRECISION, digit_count};
use crate::expr::{
    ArithOp, CmpOp, Expr, Func, JsonKey, LikePattern, NumKind, cast_exists, parse_text,
};
use crate::plan::{
    AggPlan, Catalog, ColumnDef, ColumnSource, KeyColumn, OutputColumn, StreamDef, ViewColumn,
    ViewPlan,
};
use crate::time::Interval;
use crate::value::{Type, Value};

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
    /// Nullable columns were appended or the retention changed.
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
}

impl Change {
    /// Whether the change does anything.
    pub fn is_change(&self) -> bool {
        !matches!(self, Change::UnchangedStream(_) | Change::UnchangedView(_))
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
    let start = Location { line: 1, column: 1 };
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .map_err(|e| parse_error(e, start))?;
    let mut working = catalog.clone();
    let mut changes = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let next = parser.peek_token();
        if next.token == Token::EOF {
            break;
        }
        let at = next.span.start;
        let change = statement(&mut parser, &working, at)?;
        let change = change.apply_to(&mut working)?;
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
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .map_err(|e| parse_error(e, at))?;
    parser
        .expect_keyword(Keyword::CREATE)
        .map_err(|e| parse_error(e, at))?;
    let word = parser.next_token();
    if !matches!(&word.token, Token::Word(w) if w.value.eq_ignore_ascii_case("stream")) {
        return Err(error_at(word.span.start, "expected CREATE STREAM", None));
    }
    match create_stream(&mut parser, &Catalog::empty(), at)? {
        Compiled::Stream(def, _) => Ok(def),
        _ => Err(error_at(at, "expected CREATE STREAM", None)),
    }
}

/// A parsed and compiled statement, not yet applied.
enum Compiled {
    Stream(StreamDef, Location),
    View(ViewPlan),
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
                                Some("a stream may only gain nullable columns at the end or change its retention; to change more, DROP STREAM (which deletes its events) and create it again"),
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
            Compiled::View(plan) => {
                let change = match catalog.view(&plan.name) {
                    None => Change::CreatedView(plan.name.clone()),
                    Some(old) if old.fingerprint() == plan.fingerprint() => {
                        Change::UnchangedView(plan.name.clone())
                    }
                    Some(_) => Change::ReplacedView(plan.name.clone()),
                };
                catalog.put_view(plan);
                Ok(change)
            }
            Compiled::DropView {
                name,
                if_exists,
                at,
            } => {
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
    if new.columns.len() < old.columns.len() {
        return Err("columns cannot be removed".into());
    }
    for (o, n) in old.columns.iter().zip(&new.columns) {
        if o != n {
            return Err(format!(
                "column {} changed (was {} {})",
                o.name,
                o.ty,
                if o.not_null { "NOT NULL" } else { "NULL" }
            ));
        }
    }
    let added: Vec<&ColumnDef> = new.columns[old.columns.len()..].iter().collect();
    if let Some(c) = added.iter().find(|c| c.not_null) {
        return Err(format!(
            "new column {} must be nullable, since earlier events have no value for it",
            c.name
        ));
    }
    if old.event_time != new.event_time {
        return Err("the event_time column changed".into());
    }
    if old.dedupe_key != new.dedupe_key {
        return Err("the dedupe_key changed".into());
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
            return create_stream(parser, catalog, at);
        }
        if parser.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
            return create_view(parser, catalog, at);
        }
        if parser.parse_keyword(Keyword::VIEW) {
            return Err(error_at(
                next.span.start,
                "CREATE VIEW is not supported",
                Some("every view in Tally is live: write CREATE MATERIALIZED VIEW"),
            ));
        }
        if parser.parse_keyword(Keyword::TABLE) {
            return Err(error_at(
                next.span.start,
                "CREATE TABLE is not supported",
                Some(
                    "events live in streams: write CREATE STREAM name (columns) WITH (event_time = 'column')",
                ),
            ));
        }
        return Err(error_at(
            next.span.start,
            format!("cannot create {}", next.token),
            Some("write CREATE STREAM or CREATE MATERIALIZED VIEW"),
        ));
    }
    if parser.parse_keyword(Keyword::DROP) {
        let next = parser.peek_token();
        let stream =
            matches!(&next.token, Token::Word(w) if w.value.eq_ignore_ascii_case("stream"));
        if stream {
            parser.next_token();
        } else if !parser.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
            return Err(error_at(
                next.span.start,
                format!("cannot drop {}", next.token),
                Some("write DROP MATERIALIZED VIEW name or DROP STREAM name"),
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
        Token::Word(w) if w.keyword == Keyword::SELECT => "read views with `tally query VIEW`",
        _ => "a schema file holds CREATE STREAM, CREATE MATERIALIZED VIEW and DROP statements",
    };
    Err(error_at(
        first.span.start,
        format!("{} statements cannot be applied", first.token),
        Some(hint),
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

fn create_stream(parser: &mut Parser<'_>, catalog: &Catalog, at: Location) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    let name_at = parser.peek_token().span.start;
    let name = object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
    if catalog.stream(&name).is_some_and(|s| s.builtin) {
        return Err(error_at(
            name_at,
            format!("{name} is a built-in stream"),
            Some("choose another name for your stream"),
        ));
    }
    if catalog.view(&name).is_some() {
        return Err(error_at(name_at, format!("{name} is already a view"), None));
    }
    let (columns, constraints) = parser.parse_columns().map_err(perr)?;
    if let Some(c) = constraints.first() {
        return Err(unsupported(
            c.span().start.max_or(at),
            "a table constraint",
            "a stream has no keys; declare WITH (dedupe_key = 'column') to count repeated events once",
        ));
    }
    if columns.is_empty() {
        return Err(error_at(at, format!("stream {name} has no columns"), None));
    }
    let mut defs: Vec<ColumnDef> = Vec::new();
    for c in &columns {
        let col_name = ident_name(&c.name)?;
        if defs.iter().any(|d| d.name == col_name) {
            return Err(error_at(
                c.name.span.start,
                format!("column {col_name} is declared twice"),
                None,
            ));
        }
        let ty = data_type(&c.data_type, c.name.span.start)?;
        let mut not_null = false;
        for option in &c.options {
            match &option.option {
                ast::ColumnOption::NotNull => not_null = true,
                ast::ColumnOption::Null => not_null = false,
                other => {
                    let hint = match other {
                        ast::ColumnOption::Unique(_) | ast::ColumnOption::PrimaryKey(_) => {
                            "declare WITH (dedupe_key = 'column') to count repeated events once"
                        }
                        _ => "stream columns take only NOT NULL",
                    };
                    return Err(unsupported(
                        c.name.span.start,
                        &format!("column option {other}"),
                        hint,
                    ));
                }
            }
        }
        defs.push(ColumnDef {
            name: col_name,
            ty,
            not_null,
            default: None,
            allowed: None,
        });
    }
    let options = parser.parse_options(Keyword::WITH).map_err(perr)?;
    let mut event_time = None;
    let mut dedupe_key = None;
    let mut retention = None;
    for (key, value, value_at) in key_values(&options, at)? {
        match key.as_str() {
            "event_time" => {
                let idx = defs.iter().position(|d| d.name == value).ok_or_else(|| {
                    error_at(
                        value_at,
                        format!("event_time names '{value}', which is not a column of {name}"),
                        None,
                    )
                })?;
                if defs[idx].ty != Type::Timestamp {
                    return Err(error_at(
                        value_at,
                        format!(
                            "event_time column {value} must be a TIMESTAMP, not {}",
                            defs[idx].ty
                        ),
                        None,
                    ));
                }
                if !defs[idx].not_null {
                    return Err(error_at(
                        value_at,
                        format!("event_time column {value} must be NOT NULL"),
                        None,
                    ));
                }
                event_time = Some(idx);
            }
            "dedupe_key" => {
                let idx = defs.iter().position(|d| d.name == value).ok_or_else(|| {
                    error_at(
                        value_at,
                        format!("dedupe_key names '{value}', which is not a column of {name}"),
                        None,
                    )
                })?;
                if matches!(defs[idx].ty, Type::Json | Type::Double) {
                    return Err(error_at(
                        value_at,
                        format!("dedupe_key column {value} cannot be {}", defs[idx].ty),
                        None,
                    ));
                }
                dedupe_key = Some(idx);
            }
            "retention" => {
                retention = Some(Interval::parse(&value).map_err(|e| error_at(value_at, e, None))?);
            }
            other => {
                return Err(error_at(
                    value_at,
                    format!("unknown stream option {other}"),
                    Some("stream options are event_time, dedupe_key and retention"),
                ));
            }
        }
    }
    let event_time = match event_time {
        Some(i) => i,
        None => match defs
            .iter()
            .position(|d| d.name == "timestamp" && d.ty == Type::Timestamp && d.not_null)
        {
            Some(i) => i,
            None => {
                return Err(error_at(
                    at,
                    format!("stream {name} needs an event time"),
                    Some(
                        "add WITH (event_time = 'column') naming a TIMESTAMP NOT NULL column, or a column called timestamp",
                    ),
                ));
            }
        },
    };
    Ok(Compiled::Stream(
        StreamDef {
            name,
            columns: defs,
            event_time,
            dedupe_key,
            retention,
            builtin: false,
        },
        at,
    ))
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

fn create_view(parser: &mut Parser<'_>, catalog: &Catalog, at: Location) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    if parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]) {
        return Err(error_at(
            at,
            "IF NOT EXISTS is not supported",
            Some("applying a schema is idempotent: an unchanged view stays as it is"),
        ));
    }
    let name_at = parser.peek_token().span.start;
    let name = object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
    if catalog.stream(&name).is_some() {
        return Err(error_at(
            name_at,
            format!("{name} is already a stream"),
            None,
        ));
    }
    if parser.peek_token().token == Token::LParen {
        return Err(unsupported(
            parser.peek_token().span.start,
            "a column list",
            "name columns with AS in the SELECT",
        ));
    }
    let options = parser.parse_options(Keyword::WITH).map_err(perr)?;
    let mut retention = None;
    let mut retention_at = at;
    for (key, value, value_at) in key_values(&options, at)? {
        match key.as_str() {
            "retention" => {
                retention = Some(Interval::parse(&value).map_err(|e| error_at(value_at, e, None))?);
                retention_at = value_at;
            }
            other => {
                return Err(error_at(
                    value_at,
                    format!("unknown view option {other}"),
                    Some("the view option is retention"),
                ));
            }
        }
    }
    parser.expect_keyword(Keyword::AS).map_err(perr)?;
    let query = parser.parse_query().map_err(perr)?;
    let plan = compile_view(catalog, name, retention, retention_at, &query, at)?;
    Ok(Compiled::View(plan))
}

fn compile_view(
    catalog: &Catalog,
    name: String,
    retention: Option<Interval>,
    retention_at: Location,
    query: &ast::Query,
    at: Location,
) -> Result<ViewPlan> {
    if let Some(with) = &query.with {
        return Err(unsupported(
            with.span().start.max_or(at),
            "WITH (a common table expression)",
            "a live view is one SELECT over one stream",
        ));
    }
    if let Some(order) = &query.order_by {
        return Err(unsupported(
            order.span().start.max_or(at),
            "ORDER BY",
            "order results when you read the view: tally query --order-by",
        ));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(unsupported(
            limit.span().start.max_or(at),
            "LIMIT",
            "limit results when you read the view: tally query --limit",
        ));
    }
    if query.fetch.is_some()
        || !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(unsupported(
            at,
            "this query clause",
            "a live view is SELECT … FROM stream [WHERE …] GROUP BY …",
        ));
    }
    let select = match query.body.as_ref() {
        ast::SetExpr::Select(s) => s,
        ast::SetExpr::SetOperation { op, .. } => {
            return Err(unsupported(
                query.body.span().start.max_or(at),
                &format!("{op}"),
                "define one view per SELECT",
            ));
        }
        ast::SetExpr::Query(q) => {
            return Err(unsupported(
                q.span().start.max_or(at),
                "a parenthesized query",
                "write the SELECT without parentheses",
            ));
        }
        other => {
            return Err(unsupported(
                other.span().start.max_or(at),
                "this statement",
                "a live view is a SELECT",
            ));
        }
    };
    let select_at = select.select_token.0.span.start.max_or(at);
    if let Some(d) = &select.distinct {
        let _ = d;
        return Err(unsupported(
            select_at,
            "SELECT DISTINCT",
            "GROUP BY the columns instead",
        ));
    }
    if let Some(having) = &select.having {
        return Err(unsupported(
            having.span().start.max_or(at),
            "HAVING",
            "filter results when you read the view: tally query --where on group columns",
        ));
    }
    if let Some(q) = &select.qualify {
        return Err(unsupported(
            q.span().start.max_or(at),
            "QUALIFY",
            "window functions are not supported",
        ));
    }
    if !select.named_window.is_empty() {
        return Err(unsupported(
            select_at,
            "WINDOW",
            "window functions are not supported; group by a time bucket instead",
        ));
    }
    if select.top.is_some()
        || select.into.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || select.exclude.is_some()
    {
        return Err(unsupported(
            select_at,
            "this SELECT clause",
            "a live view is SELECT … FROM stream [WHERE …] GROUP BY …",
        ));
    }
    // FROM: exactly one stream.
    let stream = match select.from.as_slice() {
        [] => return Err(error_at(select_at, "a live view needs FROM stream", None)),
        [one] => {
            if let Some(join) = one.joins.first() {
                return Err(unsupported(
                    join.relation.span().start.max_or(at),
                    "JOIN",
                    "a live view reads one stream; send the joined fields on each event, or join views in your BI tool",
                ));
            }
            match &one.relation {
                ast::TableFactor::Table {
                    name: table,
                    alias,
                    args,
                    ..
                } => {
                    let table_at = table.span().start.max_or(at);
                    if args.is_some() {
                        return Err(unsupported(
                            table_at,
                            "a table function",
                            "read a stream by name",
                        ));
                    }
                    let stream_name = object_name(table, table_at)?;
                    let Some(stream) = catalog.stream(&stream_name) else {
                        let hint = if catalog.view(&stream_name).is_some() {
                            "a view cannot read another view; define it over the stream, or re-group this view with tally query --grain/--group-by"
                        } else {
                            "create the stream first with CREATE STREAM, or read the built-in events or metrics stream"
                        };
                        return Err(error_at(
                            table_at,
                            format!("there is no stream {stream_name}"),
                            Some(hint),
                        ));
                    };
                    let mut qualifiers = vec![stream_name];
                    if let Some(alias) = alias {
                        qualifiers.push(ident_name(&alias.name)?);
                    }
                    (stream.clone(), qualifiers)
                }
                other => {
                    return Err(unsupported(
                        other.span().start.max_or(at),
                        "a subquery or derived table in FROM",
                        "a live view reads one stream directly",
                    ));
                }
            }
        }
        [_, second, ..] => {
            return Err(unsupported(
                second.relation.span().start.max_or(at),
                "a second table in FROM",
                "a live view reads one stream",
            ));
        }
    };
    let (stream, qualifiers) = stream;
    let scope = Scope {
        columns: stream
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty))
            .collect(),
        qualifiers,
        target: ScopeTarget::Row,
    };
    let mut binder = Binder::new(&scope, at);

    let filter = match &select.selection {
        None => None,
        Some(e) => {
            binder.context = "WHERE";
            let (expr, ty) = binder.expr(e)?;
            expect_bool(&expr, ty, e, at, "WHERE")?;
            Some(expr)
        }
    };

    // Select items: names and expressions.
    let mut items: Vec<(String, &ast::Expr, Location)> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(e) => (e, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            other => {
                return Err(unsupported(
                    other.span().start.max_or(at),
                    &format!("{other}"),
                    "list the columns of the view by name",
                ));
            }
        };
        let item_at = expr.span().start.max_or(at);
        let name = match alias {
            Some(a) => ident_name(a)?,
            None => derived_name(expr).ok_or_else(|| {
                error_at(
                    item_at,
                    format!("the column {expr} needs a name"),
                    Some("add AS name"),
                )
            })?,
        };
        if name.starts_with('_') {
            return Err(error_at(
                item_at,
                format!("column name {name} is reserved"),
                Some("names starting with _ are Tally's own columns"),
            ));
        }
        if items.iter().any(|(n, _, _)| *n == name) {
            return Err(error_at(
                item_at,
                format!("two columns are called {name}"),
                Some("give one of them another name with AS"),
            ));
        }
        items.push((name, expr, item_at));
    }

    // GROUP BY: ordinals and aliases refer to select items.
    let group_exprs: Vec<&ast::Expr> = match &select.group_by {
        ast::GroupByExpr::All(_) => {
            return Err(unsupported(
                select_at,
                "GROUP BY ALL",
                "list the group columns",
            ));
        }
        ast::GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err(unsupported(
                    select_at,
                    "GROUP BY modifiers (ROLLUP, CUBE, TOTALS)",
                    "re-group at query time with tally query --group-by",
                ));
            }
            exprs.iter().collect()
        }
    };
    let mut keys: Vec<(Expr, Type, Option<Interval>)> = Vec::new();
    let mut key_items: Vec<Option<usize>> = Vec::new(); // select item of each key
    let mut key_locs: Vec<Location> = Vec::new();
    binder.context = "GROUP BY";
    for g in group_exprs {
        let g_at = g.span().start.max_or(at);
        let (target, item): (&ast::Expr, Option<usize>) = match g {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(_, _)) => {
                let n: usize = v.value.to_string().parse().unwrap_or(0);
                if n == 0 || n > items.len() {
                    return Err(error_at(
                        g_at,
                        format!(
                            "GROUP BY {n} does not name a column of the SELECT (1..{})",
                            items.len()
                        ),
                        None,
                    ));
                }
                (items[n - 1].1, Some(n - 1))
            }
            ast::Expr::Identifier(ident)
                if scope.find(&ident_name(ident).unwrap_or_default()).is_none() =>
            {
                let name = ident_name(ident)?;
                match items.iter().position(|(n, _, _)| *n == name) {
                    Some(i) => (items[i].1, Some(i)),
                    None => (g, None),
                }
            }
            other => (other, None),
        };
        if contains_aggregate(target) {
            return Err(error_at(
                g_at,
                "aggregate functions are not allowed in GROUP BY",
                None,
            ));
        }
        let (expr, ty) = binder.expr(target)?;
        if ty == Type::Json {
            return Err(error_at(
                g_at,
                "cannot group by a JSON value",
                Some("extract a field as text with ->>"),
            ));
        }
        if keys.iter().any(|(k, _, _)| *k == expr) {
            continue;
        }
        let bucket = match &expr {
            Expr::Bucket { interval, .. } => Some(*interval),
            _ => None,
        };
        keys.push((expr, ty, bucket));
        key_items.push(item);
        key_locs.push(g_at);
    }

    // Classify select items: group keys or outputs over aggregates.
    binder.key_exprs = keys.iter().map(|(e, _, _)| e.clone()).collect();
    let mut columns = Vec::new();
    let mut outputs = Vec::new();
    let mut key_names: Vec<Option<String>> = vec![None; keys.len()];
    for (idx, (name, e, item_at)) in items.iter().enumerate() {
        // A key named by ordinal or alias is that item; otherwise compare the bound expression.
        let mut key_index = key_items.iter().position(|k| *k == Some(idx));
        if key_index.is_none() && !contains_aggregate(e) {
            binder.context = "the SELECT";
            binder.output = false;
            if let Ok((expr, _)) = binder.expr(e) {
                key_index = keys.iter().position(|(k, _, _)| *k == expr);
            }
        }
        if let Some(k) = key_index {
            if let Some(other) = &key_names[k] {
                return Err(error_at(
                    *item_at,
                    format!("columns {other} and {name} are the same group key"),
                    Some("keep one of them"),
                ));
            }
            key_names[k] = Some(name.clone());
            columns.push(ViewColumn {
                name: name.clone(),
                ty: keys[k].1,
                source: ColumnSource::Key(k),
            });
            continue;
        }
        binder.output = true;
        binder.context = "the SELECT";
        let (expr, ty) = binder.expr(e)?;
        binder.output = false;
        if !matches!(expr, Expr::Agg { .. }) && !expr_has(&expr, |x| matches!(x, Expr::Agg { .. }))
        {
            return Err(error_at(
                *item_at,
                format!("column {name} is neither a group column nor computed from aggregates"),
                Some("add it to GROUP BY, or aggregate it"),
            ));
        }
        outputs.push(OutputColumn {
            name: name.clone(),
            expr,
            ty,
        });
        columns.push(ViewColumn {
            name: name.clone(),
            ty,
            source: ColumnSource::Output(outputs.len() - 1),
        });
    }
    let mut key_columns = Vec::new();
    for (i, (expr, ty, bucket)) in keys.into_iter().enumerate() {
        let Some(name) = key_names[i].clone() else {
            return Err(error_at(
                key_locs[i],
                format!("GROUP BY {expr} is not a column of the SELECT"),
                Some(
                    "add it to the SELECT list with a name, so the view table has a column for it",
                ),
            ));
        };
        key_columns.push(KeyColumn {
            name,
            expr,
            ty,
            bucket,
        });
    }
    if binder.aggs.is_empty() && key_columns.is_empty() {
        return Err(error_at(
            select_at,
            "a live view needs aggregates or GROUP BY",
            None,
        ));
    }
    let bucket = key_columns.iter().position(|k| k.bucket.is_some());
    if retention.is_some() && bucket.is_none() {
        return Err(error_at(
            retention_at,
            "view retention needs a time bucket column",
            Some("group by time_bucket(…) or date_trunc(…), or drop the retention option"),
        ));
    }
    let mut aggs = binder.aggs;
    let mut filter = filter;
    let mut slots = 0;
    for e in filter
        .iter_mut()
        .chain(key_columns.iter_mut().map(|k| &mut k.expr))
    {
        number_buckets(e, &mut slots);
    }
    for a in &mut aggs {
        for e in [&mut a.arg, &mut a.time, &mut a.filter]
            .into_iter()
            .flatten()
        {
            number_buckets(e, &mut slots);
        }
    }
    let mut can_fail = filter.as_ref().is_some_and(Expr::can_fail)
        || key_columns.iter().any(|k| k.expr.can_fail());
    for a in &aggs {
        can_fail |= [&a.arg, &a.time, &a.filter]
            .iter()
            .any(|e| e.as_ref().is_some_and(Expr::can_fail));
    }
    let options = match retention {
        Some(r) => format!(" WITH (retention = '{r}')"),
        None => String::new(),
    };
    let sql = format!("CREATE MATERIALIZED VIEW {name}{options} AS {query}");
    Ok(ViewPlan {
        name,
        stream: stream.name.clone(),
        retention,
        filter,
        keys: key_columns,
        aggs,
        outputs,
        columns,
        bucket,
        bucket_slots: slots,
        can_fail,
        sql,
    })
}

/// Gives every time bucket expression its own cache slot.
fn number_buckets(e: &mut Expr, next: &mut usize) {
    if let Expr::Bucket { slot, .. } = e {
        *slot = *next;
        *next += 1;
    }
    e.for_each_child_mut(&mut |c| number_buckets(c, next));
}

fn derived_name(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Identifier(i) => ident_name(i).ok(),
        ast::Expr::CompoundIdentifier(parts) => parts.last().and_then(|i| ident_name(i).ok()),
        ast::Expr::Function(f) => Some(function_name(f)),
        _ => None,
    }
}

fn function_name(f: &ast::Function) -> String {
    f.name.to_string().to_lowercase()
}

fn expect_bool(expr: &Expr, ty: Type, e: &ast::Expr, at: Location, context: &str) -> Result<()> {
    if ty != Type::Boolean && !matches!(expr, Expr::Literal(Value::Null)) {
        return Err(error_at(
            e.span().start.max_or(at),
            format!("{context} needs a condition, but {e} is {ty}"),
            None,
        ));
    }
    Ok(())
}

/// Whether `f` holds for the expression or one of its parts.
fn expr_has(e: &Expr, f: impl Fn(&Expr) -> bool) -> bool {
    let mut found = false;
    e.walk(&mut |x| found |= f(x));
    found
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "variance",
    "var_samp",
    "var_pop",
    "approx_count_distinct",
    "percentile_cont",
    "percentile_disc",
    "first",
    "last",
    "bool_and",
    "bool_or",
    "every",
];

fn is_aggregate(e: &ast::Expr) -> Option<&ast::Function> {
    match e {
        ast::Expr::Function(f) if AGGREGATES.contains(&function_name(f).as_str()) => Some(f),
        _ => None,
    }
}

/// Whether an aggregate call appears anywhere in `e`.
fn contains_aggregate(e: &ast::Expr) -> bool {
    use ast::Expr as E;
    if is_aggregate(e).is_some() {
        return true;
    }
    let any = |list: &[&ast::Expr]| list.iter().any(|x| contains_aggregate(x));
    match e {
        E::BinaryOp { left, right, .. } => any(&[left, right]),
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::IsTrue(expr)
        | E::IsNotTrue(expr)
        | E::IsFalse(expr)
        | E::IsNotFalse(expr)
        | E::Cast { expr, .. } => contains_aggregate(expr),
        E::InList { expr, list, .. } => {
            contains_aggregate(expr) || list.iter().any(contains_aggregate)
        }
        E::Between {
            expr, low, high, ..
        } => any(&[expr, low, high]),
        E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => any(&[expr, pattern]),
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            operand.as_deref().is_some_and(contains_aggregate)
                || conditions
                    .iter()
                    .any(|c| contains_aggregate(&c.condition) || contains_aggregate(&c.result))
                || else_result.as_deref().is_some_and(contains_aggregate)
        }
        E::Function(f) => function_args(f)
            .iter()
            .any(|a| matches!(a, Arg::Expr(x) if contains_aggregate(x))),
        _ => false,
    }
}

enum Arg<'a> {
    Expr(&'a ast::Expr),
    Star,
}

fn function_args(f: &ast::Function) -> Vec<Arg<'_>> {
    match &f.args {
        ast::FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Arg::Expr(e),
                _ => Arg::Star,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Where bare names resolve.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScopeTarget {
    /// Stream columns of the event row.
    Row,
    /// Group columns of a view (query filters).
    Key,
}

struct Scope {
    columns: Vec<(String, Type)>,
    qualifiers: Vec<String>,
    target: ScopeTarget,
}

impl Scope {
    fn find(&self, name: &str) -> Option<(usize, Type)> {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| (i, self.columns[i].1))
    }
}

struct Binder<'s> {
    scope: &'s Scope,
    /// The statement start, for nodes without a span.
    at: Location,
    /// What is being compiled, for error messages ("WHERE", "GROUP BY", …).
    context: &'static str,
    /// Whether aggregates are allowed: output expressions of the SELECT.
    output: bool,
    key_exprs: Vec<Expr>,
    aggs: Vec<AggPlan>,
}

type Bound = (Expr, Type);

impl<'s> Binder<'s> {
    fn new(scope: &'s Scope, at: Location) -> Binder<'s> {
        Binder {
            scope,
            at,
            context: "the view",
            output: false,
            key_exprs: Vec::new(),
            aggs: Vec::new(),
        }
    }

    fn loc(&self, e: &ast::Expr) -> Location {
        e.span().start.max_or(self.at)
    }

    fn expr(&mut self, e: &ast::Expr) -> Result<Bound> {
        if self.output {
            if let Some(f) = is_aggregate(e) {
                return self.aggregate(f, e);
            }
            if !contains_aggregate(e) {
                // A sub-expression without aggregates must be a group key (or a constant).
                self.output = false;
                let bound = self.expr(e);
                self.output = true;
                let (expr, ty) = bound?;
                if let Some(i) = self.key_exprs.iter().position(|k| *k == expr) {
                    return Ok((
                        Expr::Key {
                            index: i,
                            name: format!("{expr}"),
                        },
                        ty,
                    ));
                }
                if expr_has(&expr, |x| matches!(x, Expr::Column { .. })) {
                    return Err(error_at(
                        self.loc(e),
                        format!("{e} must appear in GROUP BY or be used inside an aggregate"),
                        None,
                    ));
                }
                return Ok((expr, ty));
            }
        }
        self.structural(e)
    }

    fn structural(&mut self, e: &ast::Expr) -> Result<Bound> {
        use ast::Expr as E;
        let at = self.loc(e);
        match e {
            E::Identifier(ident) => self.column(ident, None),
            E::CompoundIdentifier(parts) => match parts.as_slice() {
                [qualifier, ident] => self.column(ident, Some(qualifier)),
                _ => Err(error_at(at, format!("{e} is not a column"), None)),
            },
            E::Value(v) => literal(&v.value, at),
            E::TypedString(ts) => {
                let ty = data_type(&ts.data_type, at)?;
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                };
                let v = parse_text(&text, ty)
                    .ok_or_else(|| error_at(at, format!("'{text}' is not a valid {ty}"), None))?;
                Ok((Expr::Literal(v), ty))
            }
            E::Nested(inner) => self.expr(inner),
            E::UnaryOp { op, expr } => {
                let (inner, ty) = self.expr(expr)?;
                match op {
                    ast::UnaryOperator::Not => {
                        self.require_bool(&inner, ty, expr, "NOT")?;
                        Ok((Expr::Not(Box::new(inner)), Type::Boolean))
                    }
                    ast::UnaryOperator::Minus => {
                        if let Expr::Literal(Value::Int(i)) = inner {
                            return Ok((Expr::Literal(Value::Int(-i)), ty));
                        }
                        if let Expr::Literal(Value::Decimal(d)) = inner {
                            return Ok((Expr::Literal(Value::Decimal(-d)), ty));
                        }
                        let kind = num_kind(ty)
                            .ok_or_else(|| error_at(at, format!("cannot negate {ty}"), None))?;
                        Ok((Expr::Neg(Box::new(inner), kind), ty))
                    }
                    ast::UnaryOperator::Plus if ty.is_numeric() => Ok((inner, ty)),
                    other => Err(unsupported(
                        at,
                        &format!("operator {other}"),
                        "use + - * / %, comparisons, AND, OR, NOT",
                    )),
                }
            }
            E::BinaryOp { left, op, right } => self.binary(left, op, right, at),
            E::IsNull(inner) | E::IsNotNull(inner) => {
                let (expr, _) = self.expr(inner)?;
                Ok((
                    Expr::IsNull {
                        expr: Box::new(expr),
                        negated: matches!(e, E::IsNotNull(_)),
                    },
                    Type::Boolean,
                ))
            }
            E::IsTrue(inner) | E::IsNotTrue(inner) | E::IsFalse(inner) | E::IsNotFalse(inner) => {
                let (expr, ty) = self.expr(inner)?;
                self.require_bool(&expr, ty, inner, "IS TRUE/FALSE")?;
                let t = |b| Expr::Literal(Value::Bool(b));
                let out = match e {
                    E::IsTrue(_) => Expr::Coalesce(vec![expr, t(false)]),
                    E::IsNotTrue(_) => Expr::Not(Box::new(Expr::Coalesce(vec![expr, t(false)]))),
                    E::IsFalse(_) => Expr::Coalesce(vec![Expr::Not(Box::new(expr)), t(false)]),
                    _ => Expr::Coalesce(vec![expr, t(true)]),
                };
                Ok((out, Type::Boolean))
            }
            E::InList {
                expr,
                list,
                negated,
            } => {
                let (subject, ty) = self.expr(expr)?;
                let mut items = Vec::new();
                let mut common = ty;
                let mut bound = Vec::new();
                for item in list {
                    let b = self.expr(item)?;
                    if !is_null_literal(&b.0) && !is_text_literal(&b.0) {
                        common = unify(common, b.1).ok_or_else(|| {
                            error_at(
                                self.loc(item),
                                format!("{item} ({}) cannot be compared with {expr} ({ty})", b.1),
                                None,
                            )
                        })?;
                    }
                    bound.push((b, item));
                }
                let subject = self.coerce(subject, ty, common, expr)?;
                for ((item, item_ty), ast_item) in bound {
                    items.push(self.coerce(item, item_ty, common, ast_item)?);
                }
                Ok((
                    Expr::InList {
                        expr: Box::new(subject),
                        list: items,
                        negated: *negated,
                    },
                    Type::Boolean,
                ))
            }
            E::InSubquery { .. } | E::Subquery(_) | E::Exists { .. } => Err(unsupported(
                at,
                "a subquery",
                "a live view reads one stream; compare with literal values",
            )),
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let l = self.comparison(
                    expr,
                    if *negated { CmpOp::Lt } else { CmpOp::GtEq },
                    low,
                    at,
                )?;
                let h = self.comparison(
                    expr,
                    if *negated { CmpOp::Gt } else { CmpOp::LtEq },
                    high,
                    at,
                )?;
                let out = if *negated {
                    Expr::Or(Box::new(l), Box::new(h))
                } else {
                    Expr::And(Box::new(l), Box::new(h))
                };
                Ok((out, Type::Boolean))
            }
            E::Like {
                negated,
                expr,
                pattern,
                escape_char,
                any,
            }
            | E::ILike {
                negated,
                expr,
                pattern,
                escape_char,
                any,
            } => {
                if escape_char.is_some() || *any {
                    return Err(unsupported(
                        at,
                        "LIKE … ESCAPE / LIKE ANY",
                        "escape % and _ with a backslash",
                    ));
                }
                let (subject, ty) = self.expr(expr)?;
                if ty != Type::Text {
                    return Err(error_at(
                        self.loc(expr),
                        format!("LIKE needs TEXT, but {expr} is {ty}"),
                        None,
                    ));
                }
                let source = match pattern.as_ref() {
                    E::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        _ => {
                            return Err(error_at(
                                self.loc(pattern),
                                "the LIKE pattern must be a text literal",
                                None,
                            ));
                        }
                    },
                    _ => {
                        return Err(error_at(
                            self.loc(pattern),
                            "the LIKE pattern must be a text literal",
                            None,
                        ));
                    }
                };
                let case_insensitive = matches!(e, E::ILike { .. });
                Ok((
                    Expr::Like {
                        expr: Box::new(subject),
                        pattern: LikePattern::new(&source, case_insensitive),
                        negated: *negated,
                    },
                    Type::Boolean,
                ))
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref(), at),
            E::Cast {
                kind,
                expr,
                data_type: dt,
                format,
            } => {
                if !matches!(kind, ast::CastKind::Cast | ast::CastKind::DoubleColon)
                    || format.is_some()
                {
                    return Err(unsupported(
                        at,
                        &format!("{kind:?}"),
                        "use CAST(x AS type) or x::type",
                    ));
                }
                let to = data_type(dt, at)?;
                let (inner, from) = self.expr(expr)?;
                if !cast_exists(from, to) {
                    return Err(error_at(at, format!("cannot cast {from} to {to}"), None));
                }
                if let Expr::Literal(v) = &inner {
                    // Fold casts of literals, so that errors show at compile time.
                    let folded = crate::expr::cast(v.clone(), from, to)
                        .map_err(|err| error_at(at, err.to_string(), None))?;
                    return Ok((Expr::Literal(folded), to));
                }
                if from == to {
                    return Ok((inner, to));
                }
                Ok((
                    Expr::Cast {
                        expr: Box::new(inner),
                        from,
                        to,
                    },
                    to,
                ))
            }
            E::Function(f) => self.function(f, e),
            E::Interval(_) => Err(error_at(
                at,
                "an INTERVAL can only be the width of time_bucket",
                None,
            )),
            E::AtTimeZone { .. } => Err(unsupported(
                at,
                "AT TIME ZONE",
                "buckets follow the tenant's time zone; set it with tally tenant create --time-zone",
            )),
            E::Extract { .. } => Err(unsupported(
                at,
                "EXTRACT",
                "group by date_trunc(unit, ts) or time_bucket(width, ts)",
            )),
            E::Substring { .. } | E::Trim { .. } | E::Position { .. } | E::Overlay { .. } => {
                Err(unsupported(
                    at,
                    "this string function",
                    "supported functions: lower, upper, length, coalesce, nullif",
                ))
            }
            other => Err(unsupported(
                at,
                &format!("the expression {other}"),
                "see docs/sql.md for the supported expressions",
            )),
        }
    }

    fn column(&mut self, ident: &ast::Ident, qualifier: Option<&ast::Ident>) -> Result<Bound> {
        let at = ident.span.start.max_or(self.at);
        if let Some(q) = qualifier {
            let q = ident_name(q)?;
            if !self.scope.qualifiers.contains(&q) {
                return Err(error_at(
                    at,
                    format!("{q} is not the stream of this view"),
                    None,
                ));
            }
        }
        let name = ident_name(ident)?;
        match self.scope.find(&name) {
            Some((index, ty)) => {
                let expr = match self.scope.target {
                    ScopeTarget::Row => Expr::Column { index, name },
                    ScopeTarget::Key => Expr::Column { index, name },
                };
                Ok((expr, ty))
            }
            None => {
                let names: Vec<&str> = self.scope.columns.iter().map(|(n, _)| n.as_str()).collect();
                let what = match self.scope.target {
                    ScopeTarget::Row => "column",
                    ScopeTarget::Key => "group column",
                };
                Err(error_at(
                    at,
                    format!("there is no {what} {name}"),
                    Some(&format!("the {what}s are: {}", names.join(", "))),
                ))
            }
        }
    }

    fn require_bool(&self, expr: &Expr, ty: Type, e: &ast::Expr, what: &str) -> Result<()> {
        if ty != Type::Boolean && !is_null_literal(expr) {
            return Err(error_at(
                self.loc(e),
                format!("{what} needs a BOOLEAN, but {e} is {ty}"),
                None,
            ));
        }
        Ok(())
    }

    /// Coerces `expr` of type `from` to `to`: literals are converted now, others get a cast.
    fn coerce(&self, expr: Expr, from: Type, to: Type, e: &ast::Expr) -> Result<Expr> {
        if from == to || is_null_literal(&expr) {
            return Ok(expr);
        }
        if let (Type::Decimal { scale: s1, .. }, Type::Decimal { scale: s2, .. }) = (from, to)
            && s1 == s2
        {
            // Same scale: the value is already right; a wider precision needs no conversion.
            return Ok(expr);
        }
        if let Expr::Literal(v) = &expr {
            let converted = match v {
                Value::Text(s) => parse_text(s, to),
                other => crate::expr::cast(other.clone(), from, to).ok(),
            };
            return converted
                .map(Expr::Literal)
                .ok_or_else(|| error_at(self.loc(e), format!("{e} is not a valid {to}"), None));
        }
        if !cast_exists(from, to) {
            return Err(error_at(
                self.loc(e),
                format!("{e} is {from}, which cannot be used as {to}"),
                None,
            ));
        }
        Ok(Expr::Cast {
            expr: Box::new(expr),
            from,
            to,
        })
    }

    fn comparison(
        &mut self,
        left: &ast::Expr,
        op: CmpOp,
        right: &ast::Expr,
        at: Location,
    ) -> Result<Expr> {
        let (l, lt) = self.expr(left)?;
        let (r, rt) = self.expr(right)?;
        let common = if is_null_literal(&l) || is_text_literal(&l) && rt != Type::Text {
            rt
        } else if is_null_literal(&r) || is_text_literal(&r) && lt != Type::Text {
            lt
        } else {
            unify(lt, rt).ok_or_else(|| {
                error_at(
                    at,
                    format!("cannot compare {left} ({lt}) with {right} ({rt})"),
                    Some("cast one side with CAST(x AS type)"),
                )
            })?
        };
        if common == Type::Json && !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
            return Err(error_at(
                at,
                "JSON values can only be compared for equality",
                Some("extract a field with ->> and cast it"),
            ));
        }
        let l = self.coerce(l, lt, common, left)?;
        let r = self.coerce(r, rt, common, right)?;
        Ok(Expr::Compare {
            op,
            left: Box::new(l),
            right: Box::new(r),
        })
    }

    fn binary(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
        at: Location,
    ) -> Result<Bound> {
        use ast::BinaryOperator as B;
        let cmp = match op {
            B::Eq => Some(CmpOp::Eq),
            B::NotEq => Some(CmpOp::NotEq),
            B::Lt => Some(CmpOp::Lt),
            B::LtEq => Some(CmpOp::LtEq),
            B::Gt => Some(CmpOp::Gt),
            B::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(cmp) = cmp {
            return Ok((self.comparison(left, cmp, right, at)?, Type::Boolean));
        }
        match op {
            B::And | B::Or => {
                let (l, lt) = self.expr(left)?;
                self.require_bool(&l, lt, left, &op.to_string())?;
                let (r, rt) = self.expr(right)?;
                self.require_bool(&r, rt, right, &op.to_string())?;
                let out = if matches!(op, B::And) {
                    Expr::And(Box::new(l), Box::new(r))
                } else {
                    Expr::Or(Box::new(l), Box::new(r))
                };
                Ok((out, Type::Boolean))
            }
            B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                let arith = match op {
                    B::Plus => ArithOp::Add,
                    B::Minus => ArithOp::Sub,
                    B::Multiply => ArithOp::Mul,
                    B::Divide => ArithOp::Div,
                    _ => ArithOp::Mod,
                };
                let (l, lt) = self.expr(left)?;
                let (r, rt) = self.expr(right)?;
                let lt = if is_null_literal(&l) { rt } else { lt };
                let rt = if is_null_literal(&r) { lt } else { rt };
                if !lt.is_numeric() || !rt.is_numeric() {
                    return Err(error_at(
                        at,
                        format!("{op} needs numbers, but {left} is {lt} and {right} is {rt}"),
                        if lt == Type::Text || rt == Type::Text {
                            Some("join text with ||")
                        } else {
                            None
                        },
                    ));
                }
                let (kind, result) = arith_types(arith, lt, rt);
                if arith == ArithOp::Mod && matches!(kind, NumKind::Decimal { .. }) {
                    return Err(error_at(
                        at,
                        "% needs BIGINT or DOUBLE operands",
                        Some("cast the operands"),
                    ));
                }
                // Decimal arithmetic takes operands of any scale; other operands are converted.
                let operand = |ty: Type| match (kind, ty) {
                    (NumKind::Decimal { .. }, Type::Decimal { .. }) => ty,
                    (NumKind::Decimal { .. }, _) => Type::Decimal {
                        precision: 19,
                        scale: 0,
                    },
                    (NumKind::Double, _) => Type::Double,
                    (NumKind::Int, _) => Type::BigInt,
                };
                let l = self.coerce(l, lt, operand(lt), left)?;
                let r = self.coerce(r, rt, operand(rt), right)?;
                Ok((
                    Expr::Arith {
                        op: arith,
                        kind,
                        left: Box::new(l),
                        right: Box::new(r),
                    },
                    result,
                ))
            }
            B::StringConcat => {
                let (l, _) = self.expr(left)?;
                let (r, _) = self.expr(right)?;
                Ok((Expr::Concat(Box::new(l), Box::new(r)), Type::Text))
            }
            B::Arrow | B::LongArrow => {
                let (doc, ty) = self.expr(left)?;
                if ty != Type::Json {
                    return Err(error_at(
                        self.loc(left),
                        format!("{op} needs a JSON value, but {left} is {ty}"),
                        None,
                    ));
                }
                let key = match right {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => JsonKey::Field(s.clone()),
                        ast::Value::Number(n, _) => JsonKey::Index(n.parse().map_err(|_| {
                            error_at(self.loc(right), "JSON index must be an integer", None)
                        })?),
                        _ => {
                            return Err(error_at(
                                self.loc(right),
                                "JSON key must be a text or integer literal",
                                None,
                            ));
                        }
                    },
                    _ => {
                        return Err(error_at(
                            self.loc(right),
                            "JSON key must be a text or integer literal",
                            None,
                        ));
                    }
                };
                let as_text = matches!(op, B::LongArrow);
                Ok((
                    Expr::JsonGet {
                        expr: Box::new(doc),
                        key,
                        as_text,
                    },
                    if as_text { Type::Text } else { Type::Json },
                ))
            }
            other => Err(unsupported(
                at,
                &format!("operator {other}"),
                "see docs/sql.md for the supported operators",
            )),
        }
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        else_result: Option<&ast::Expr>,
        at: Location,
    ) -> Result<Bound> {
        let subject = match operand {
            Some(o) => Some((self.expr(o)?, o)),
            None => None,
        };
        let mut whens = Vec::new();
        for c in conditions {
            whens.push((self.expr(&c.condition)?, &c.condition));
        }
        let (operand, whens) = match subject {
            Some(((s, st), ast_s)) => {
                let mut common = st;
                for ((w, wt), ast_w) in &whens {
                    if !is_null_literal(w) && !is_text_literal(w) {
                        common = unify(common, *wt).ok_or_else(|| {
                            error_at(self.loc(ast_w), format!("WHEN {ast_w} ({wt}) cannot be compared with the CASE operand ({st})"), None)
                        })?;
                    }
                }
                let s = self.coerce(s, st, common, ast_s)?;
                let whens = whens
                    .into_iter()
                    .map(|((w, wt), ast_w)| self.coerce(w, wt, common, ast_w))
                    .collect::<Result<Vec<_>>>()?;
                (Some(Box::new(s)), whens)
            }
            None => {
                for ((w, wt), ast_w) in &whens {
                    self.require_bool(w, *wt, ast_w, "WHEN")?;
                }
                (None, whens.into_iter().map(|((w, _), _)| w).collect())
            }
        };
        let mut thens = Vec::new();
        for c in conditions {
            thens.push((self.expr(&c.result)?, &c.result));
        }
        let otherwise = match else_result {
            Some(e) => Some((self.expr(e)?, e)),
            None => None,
        };
        let mut result_ty: Option<Type> = None;
        for ((expr, ty), _) in thens.iter().chain(otherwise.iter()) {
            if is_null_literal(expr) {
                continue;
            }
            result_ty = Some(match result_ty {
                None => *ty,
                Some(t) => unify(t, *ty).ok_or_else(|| {
                    error_at(
                        at,
                        format!("CASE branches have different types: {t} and {ty}"),
                        None,
                    )
                })?,
            });
        }
        let result_ty = result_ty.unwrap_or(Type::Text);
        let mut branches = Vec::new();
        for (w, ((t, tt), ast_t)) in whens.into_iter().zip(thens) {
            branches.push((w, self.coerce(t, tt, result_ty, ast_t)?));
        }
        let otherwise = match otherwise {
            Some(((e, t), ast_e)) => Some(Box::new(self.coerce(e, t, result_ty, ast_e)?)),
            None => None,
        };
        Ok((
            Expr::Case {
                operand,
                branches,
                otherwise,
            },
            result_ty,
        ))
    }

    fn args<'f>(&self, f: &'f ast::Function, at: Location) -> Result<Vec<&'f ast::Expr>> {
        let list = match &f.args {
            ast::FunctionArguments::List(list) => list,
            ast::FunctionArguments::None => return Ok(Vec::new()),
            ast::FunctionArguments::Subquery(_) => {
                return Err(unsupported(at, "a subquery", "pass values"));
            }
        };
        if !list.clauses.is_empty() {
            return Err(unsupported(
                at,
                "clauses inside a function call",
                "pass plain arguments",
            ));
        }
        list.args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) => Err(error_at(
                    at,
                    format!("{} does not take *", function_name(f)),
                    Some("only count(*) takes *"),
                )),
                other => Err(unsupported(
                    at,
                    &format!("the argument {other}"),
                    "pass plain arguments",
                )),
            })
            .collect()
    }

    fn function(&mut self, f: &ast::Function, e: &ast::Expr) -> Result<Bound> {
        let at = self.loc(e);
        let name = function_name(f);
        if f.over.is_some() {
            return Err(unsupported(
                at,
                "a window function (OVER)",
                "group by a time bucket instead; re-group at query time with --grain",
            ));
        }
        if AGGREGATES.contains(&name.as_str()) {
            return Err(error_at(
                at,
                format!("aggregate functions are not allowed in {}", self.context),
                if self.context == "WHERE" {
                    Some(
                        "use FILTER (WHERE …) on the aggregate, or --where on group columns at query time",
                    )
                } else {
                    None
                },
            ));
        }
        if f.filter.is_some() || !f.within_group.is_empty() {
            return Err(error_at(at, format!("{name} is not an aggregate"), None));
        }
        if matches!(&f.args, ast::FunctionArguments::List(l) if l.duplicate_treatment.is_some()) {
            return Err(error_at(
                at,
                format!("DISTINCT is only allowed in count(DISTINCT x), not in {name}"),
                None,
            ));
        }
        let args = self.args(f, at)?;
        let arity = |n: usize| -> Result<()> {
            if args.len() != n {
                return Err(error_at(
                    at,
                    format!("{name} takes {n} argument{}", if n == 1 { "" } else { "s" }),
                    None,
                ));
            }
            Ok(())
        };
        match name.as_str() {
            "lower" | "upper" | "length" => {
                arity(1)?;
                let (x, ty) = self.expr(args[0])?;
                if ty != Type::Text {
                    return Err(error_at(
                        self.loc(args[0]),
                        format!("{name} needs TEXT, but {} is {ty}", args[0]),
                        None,
                    ));
                }
                let (func, out) = match name.as_str() {
                    "lower" => (Func::Lower, Type::Text),
                    "upper" => (Func::Upper, Type::Text),
                    _ => (Func::Length, Type::BigInt),
                };
                Ok((Expr::Func(func, Box::new(x)), out))
            }
            "abs" => {
                arity(1)?;
                let (x, ty) = self.expr(args[0])?;
                if !ty.is_numeric() {
                    return Err(error_at(
                        self.loc(args[0]),
                        format!("abs needs a number, but {} is {ty}", args[0]),
                        None,
                    ));
                }
                Ok((Expr::Func(Func::Abs, Box::new(x)), ty))
            }
            "round" => {
                if args.is_empty() || args.len() > 2 {
                    return Err(error_at(
                        at,
                        "round takes 1 or 2 arguments: round(x) or round(x, digits)",
                        None,
                    ));
                }
                let digits = match args.get(1) {
                    None => 0,
                    Some(a) => match self.expr(a)?.0 {
                        Expr::Literal(Value::Int(n)) if (0..=18).contains(&n) => n as u8,
                        _ => {
                            return Err(error_at(
                                self.loc(a),
                                "the digits of round must be a whole number literal from 0 to 18",
                                None,
                            ));
                        }
                    },
                };
                let (x, ty) = self.expr(args[0])?;
                let out = match ty {
                    Type::Double | Type::BigInt => ty,
                    Type::Decimal { precision, scale } => Type::Decimal {
                        precision: (precision - scale + digits).min(MAX_PRECISION),
                        scale: digits,
                    },
                    _ => {
                        return Err(error_at(
                            self.loc(args[0]),
                            format!("round needs a number, but {} is {ty}", args[0]),
                            None,
                        ));
                    }
                };
                if ty == Type::BigInt {
                    return Ok((x, ty));
                }
                Ok((Expr::Func(Func::Round(digits), Box::new(x)), out))
            }
            "coalesce" => {
                if args.is_empty() {
                    return Err(error_at(at, "coalesce needs arguments", None));
                }
                let mut bound = Vec::new();
                let mut common: Option<Type> = None;
                for a in &args {
                    let b = self.expr(a)?;
                    if !is_null_literal(&b.0) && !is_text_literal(&b.0) {
                        common = Some(match common {
                            None => b.1,
                            Some(t) => unify(t, b.1).ok_or_else(|| {
                                error_at(
                                    self.loc(a),
                                    format!(
                                        "coalesce arguments have different types: {t} and {}",
                                        b.1
                                    ),
                                    None,
                                )
                            })?,
                        });
                    }
                    bound.push((b, *a));
                }
                let common = common.unwrap_or(Type::Text);
                let list = bound
                    .into_iter()
                    .map(|((x, t), a)| self.coerce(x, t, common, a))
                    .collect::<Result<Vec<_>>>()?;
                Ok((Expr::Coalesce(list), common))
            }
            "nullif" => {
                arity(2)?;
                let (a, at_) = self.expr(args[0])?;
                let (b, bt) = self.expr(args[1])?;
                let common = if is_null_literal(&b) || is_text_literal(&b) {
                    at_
                } else {
                    unify(at_, bt).ok_or_else(|| {
                        error_at(
                            at,
                            format!("nullif arguments have different types: {at_} and {bt}"),
                            None,
                        )
                    })?
                };
                let a = self.coerce(a, at_, common, args[0])?;
                let b = self.coerce(b, bt, common, args[1])?;
                Ok((Expr::NullIf(Box::new(a), Box::new(b)), common))
            }
            "time_bucket" | "date_trunc" => {
                if args.len() != 2 {
                    let hint =
                        "buckets follow the tenant's time zone; write time_bucket('1 day', ts)";
                    return Err(error_at(
                        at,
                        format!("{name} takes 2 arguments"),
                        Some(hint),
                    ));
                }
                let width_text = interval_text(args[0]).ok_or_else(|| {
                    error_at(
                        self.loc(args[0]),
                        format!("the first argument of {name} must be a text literal"),
                        Some(if name == "time_bucket" {
                            "e.g. time_bucket('15 minutes', ts)"
                        } else {
                            "e.g. date_trunc('day', ts)"
                        }),
                    )
                })?;
                let interval = if name == "time_bucket" {
                    Interval::parse(&width_text)
                        .map_err(|m| error_at(self.loc(args[0]), m, None))?
                } else {
                    Interval::of_unit(&width_text).ok_or_else(|| {
                        error_at(
                            self.loc(args[0]),
                            format!("unknown date_trunc unit '{width_text}'"),
                            Some("units are second, minute, hour, day, week, month, quarter, year"),
                        )
                    })?
                };
                let (ts, ty) = self.expr(args[1])?;
                if ty != Type::Timestamp {
                    return Err(error_at(
                        self.loc(args[1]),
                        format!("{name} needs a TIMESTAMP, but {} is {ty}", args[1]),
                        None,
                    ));
                }
                let display = format!("{name}('{width_text}', {ts})");
                Ok((
                    // Slots are numbered once the whole view is bound ([`number_buckets`]).
                    Expr::Bucket {
                        interval,
                        expr: Box::new(ts),
                        display,
                        slot: 0,
                    },
                    Type::Timestamp,
                ))
            }
            "now"
            | "current_timestamp"
            | "localtimestamp"
            | "random"
            | "clock_timestamp"
            | "statement_timestamp"
            | "gen_random_uuid" => Err(error_at(
                at,
                format!("{name}() is not allowed in a live view"),
                Some(
                    "a view must give the same result when it is rebuilt from its events; use the event's own time",
                ),
            )),
            _ => Err(error_at(
                at,
                format!("unknown function {name}"),
                Some(
                    "functions are lower, upper, length, abs, round, coalesce, nullif, time_bucket, date_trunc and the aggregates in docs/sql.md",
                ),
            )),
        }
    }

    fn aggregate(&mut self, f: &ast::Function, e: &ast::Expr) -> Result<Bound> {
        let at = self.loc(e);
        let name = function_name(f);
        if f.over.is_some() {
            return Err(unsupported(
                at,
                "a window function (OVER)",
                "group by a time bucket instead; re-group at query time with --grain",
            ));
        }
        let distinct = match &f.args {
            ast::FunctionArguments::List(l) => matches!(
                l.duplicate_treatment,
                Some(ast::DuplicateTreatment::Distinct)
            ),
            _ => false,
        };
        let saved = (self.output, self.context);
        self.output = false;
        self.context = "an aggregate argument";
        let result = self.aggregate_inner(f, &name, distinct, at);
        (self.output, self.context) = saved;
        let plan = result?;
        let output = plan.output;
        let index = match self.aggs.iter().position(|a| a.display == plan.display) {
            Some(i) => i,
            None => {
                self.aggs.push(plan);
                self.aggs.len() - 1
            }
        };
        Ok((
            Expr::Agg {
                index,
                display: format!("#{index}"),
            },
            output,
        ))
    }

    fn aggregate_inner(
        &mut self,
        f: &ast::Function,
        name: &str,
        distinct: bool,
        at: Location,
    ) -> Result<AggPlan> {
        let star = matches!(&f.args, ast::FunctionArguments::List(l) if l.args.len() == 1 && matches!(l.args[0], ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)));
        if distinct && name != "count" {
            return Err(unsupported(
                at,
                &format!("{name}(DISTINCT …)"),
                "DISTINCT is supported in count(DISTINCT x); approx_count_distinct(x) is the bounded-memory alternative",
            ));
        }
        let args = if star { Vec::new() } else { self.args(f, at)? };
        for a in &args {
            if contains_aggregate(a) {
                return Err(error_at(self.loc(a), "aggregates cannot be nested", None));
            }
        }
        let filter = match &f.filter {
            Some(cond) => {
                self.context = "FILTER";
                let (expr, ty) = self.expr(cond)?;
                self.require_bool(&expr, ty, cond, "FILTER")?;
                self.context = "an aggregate argument";
                Some(expr)
            }
            None => None,
        };
        let mut bound_args = Vec::new();
        for a in &args {
            bound_args.push(self.expr(a)?);
        }
        let arity = |n: usize| -> Result<()> {
            if bound_args.len() != n {
                return Err(error_at(
                    at,
                    format!("{name} takes {n} argument{}", if n == 1 { "" } else { "s" }),
                    None,
                ));
            }
            Ok(())
        };
        let numeric = |ty: Type, what: &str| -> Result<()> {
            if ty.is_numeric() {
                Ok(())
            } else {
                Err(error_at(
                    at,
                    format!("{what} needs a number, but its argument is {ty}"),
                    None,
                ))
            }
        };
        let mut time = None;
        let (kind, arg, input) = match name {
            "count" if star => {
                if !f.within_group.is_empty() {
                    return Err(error_at(at, "count takes no WITHIN GROUP", None));
                }
                (AggKind::CountStar, None, Type::BigInt)
            }
            "count" => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                (
                    if distinct {
                        AggKind::CountDistinct
                    } else {
                        AggKind::Count
                    },
                    Some(x),
                    ty,
                )
            }
            "approx_count_distinct" => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                (AggKind::ApproxCountDistinct, Some(x), ty)
            }
            "sum" | "avg" => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                numeric(ty, name)?;
                let kind = match (name, ty) {
                    ("sum", Type::BigInt) => AggKind::SumInt,
                    ("sum", Type::Decimal { scale, .. }) => AggKind::SumDecimal { scale },
                    ("sum", _) => AggKind::SumDouble,
                    (_, Type::BigInt) => AggKind::AvgInt,
                    (_, Type::Decimal { precision, scale }) => AggKind::AvgDecimal {
                        scale,
                        out_scale: scale + 6u8.min(MAX_PRECISION - precision),
                    },
                    _ => AggKind::AvgDouble,
                };
                (kind, Some(x), ty)
            }
            "min" | "max" => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                if ty == Type::Json {
                    return Err(error_at(
                        at,
                        format!("{name} cannot order JSON values"),
                        Some("extract a field with ->> and cast it"),
                    ));
                }
                (
                    if name == "min" {
                        AggKind::Min
                    } else {
                        AggKind::Max
                    },
                    Some(x),
                    ty,
                )
            }
            "stddev" | "stddev_samp" | "stddev_pop" | "variance" | "var_samp" | "var_pop" => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                numeric(ty, name)?;
                let moment = match name {
                    "stddev" | "stddev_samp" => Moment::StddevSamp,
                    "stddev_pop" => Moment::StddevPop,
                    "variance" | "var_samp" => Moment::VarSamp,
                    _ => Moment::VarPop,
                };
                (AggKind::Moment(moment), Some(x), ty)
            }
            "bool_and" | "bool_or" | "every" => {
                arity(1)?;
                let (x, ty) = bound_args.remove(0);
                if ty != Type::Boolean {
                    return Err(error_at(
                        at,
                        format!("{name} needs a BOOLEAN, but its argument is {ty}"),
                        None,
                    ));
                }
                (
                    if name == "bool_or" {
                        AggKind::BoolOr
                    } else {
                        AggKind::BoolAnd
                    },
                    Some(x),
                    ty,
                )
            }
            "first" | "last" => {
                arity(2)?;
                let (t, tt) = bound_args.remove(1);
                let (x, ty) = bound_args.remove(0);
                if tt != Type::Timestamp {
                    return Err(error_at(
                        at,
                        format!("the second argument of {name} must be a TIMESTAMP, not {tt}"),
                        Some("write first(value, time)"),
                    ));
                }
                time = Some(t);
                (
                    if name == "first" {
                        AggKind::First
                    } else {
                        AggKind::Last
                    },
                    Some(x),
                    ty,
                )
            }
            "percentile_cont" | "percentile_disc" => {
                arity(1)?;
                let q = match &bound_args[0].0 {
                    Expr::Literal(Value::Decimal(d)) => d.to_f64(),
                    Expr::Literal(Value::Int(i)) => *i as f64,
                    Expr::Literal(Value::Double(d)) => *d,
                    _ => {
                        return Err(error_at(
                            at,
                            format!("the fraction of {name} must be a number literal"),
                            Some("e.g. percentile_cont(0.95) WITHIN GROUP (ORDER BY x)"),
                        ));
                    }
                };
                if !(0.0..=1.0).contains(&q) {
                    return Err(error_at(
                        at,
                        format!("the fraction of {name} must be between 0 and 1, not {q}"),
                        None,
                    ));
                }
                let [order] = f.within_group.as_slice() else {
                    return Err(error_at(
                        at,
                        format!("{name} needs WITHIN GROUP (ORDER BY x)"),
                        Some("e.g. percentile_cont(0.95) WITHIN GROUP (ORDER BY x)"),
                    ));
                };
                if matches!(order.options.sort, Some(ast::OrderBySort::Desc)) {
                    return Err(error_at(
                        at,
                        "WITHIN GROUP (ORDER BY x DESC) is not supported",
                        Some("use ascending order and the fraction 1 - q"),
                    ));
                }
                let (x, ty) = self.expr(&order.expr)?;
                numeric(ty, name)?;
                (
                    AggKind::Percentile {
                        q,
                        continuous: name == "percentile_cont",
                    },
                    Some(x),
                    ty,
                )
            }
            _ => return Err(error_at(at, format!("unknown aggregate {name}"), None)),
        };
        if !f.within_group.is_empty() && !matches!(kind, AggKind::Percentile { .. }) {
            return Err(error_at(at, format!("{name} takes no WITHIN GROUP"), None));
        }
        let output = kind.output_type(input);
        let mut display = match (&arg, &kind) {
            (None, _) => "count(*)".to_owned(),
            (Some(x), AggKind::CountDistinct) => format!("count(DISTINCT {x})"),
            (Some(x), AggKind::Percentile { q, .. }) => {
                format!("{name}({q}) WITHIN GROUP (ORDER BY {x})")
            }
            (Some(x), AggKind::First | AggKind::Last) => {
                format!(
                    "{name}({x}, {})",
                    time.as_ref().map(ToString::to_string).unwrap_or_default()
                )
            }
            (Some(x), _) => format!("{name}({x})"),
        };
        if let Some(fl) = &filter {
            display.push_str(&format!(" FILTER (WHERE {fl})"));
        }
        Ok(AggPlan {
            kind,
            arg,
            time,
            filter,
            input,
            output,
            display,
        })
    }
}

fn interval_text(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        ast::Expr::Interval(iv) => {
            let base = interval_text(&iv.value)?;
            Some(match &iv.leading_field {
                Some(unit) => format!("{base} {unit}"),
                None => base,
            })
        }
        _ => None,
    }
}

fn is_null_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(Value::Null))
}

fn is_text_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(Value::Text(_)))
}

fn literal(v: &ast::Value, at: Location) -> Result<Bound> {
    Ok(match v {
        ast::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                (Expr::Literal(Value::Int(i)), Type::BigInt)
            } else {
                let d = Decimal::parse(n).map_err(|_| {
                    error_at(
                        at,
                        format!("{n} is not a number with at most 38 digits"),
                        None,
                    )
                })?;
                let precision = (digit_count(d.mantissa()) as u8).max(d.scale()).max(1);
                (
                    Expr::Literal(Value::Decimal(d)),
                    Type::Decimal {
                        precision,
                        scale: d.scale(),
                    },
                )
            }
        }
        ast::Value::SingleQuotedString(s) => (Expr::Literal(Value::text(s)), Type::Text),
        ast::Value::Boolean(b) => (Expr::Literal(Value::Bool(*b)), Type::Boolean),
        ast::Value::Null => (Expr::Literal(Value::Null), Type::Text),
        other => {
            return Err(unsupported(
                at,
                &format!("the literal {other}"),
                "use 'text', numbers, TRUE, FALSE or NULL",
            ));
        }
    })
}

fn num_kind(ty: Type) -> Option<NumKind> {
    match ty {
        Type::BigInt => Some(NumKind::Int),
        Type::Double => Some(NumKind::Double),
        Type::Decimal { scale, .. } => Some(NumKind::Decimal { scale }),
        _ => None,
    }
}

fn as_decimal(ty: Type) -> (u8, u8) {
    match ty {
        Type::Decimal { precision, scale } => (precision, scale),
        _ => (19, 0),
    }
}

/// The operation and result type of arithmetic on two numeric types.
fn arith_types(op: ArithOp, l: Type, r: Type) -> (NumKind, Type) {
    match (l, r) {
        (Type::BigInt, Type::BigInt) => (NumKind::Int, Type::BigInt),
        (Type::Double, _) | (_, Type::Double) => (NumKind::Double, Type::Double),
        _ => {
            let (p1, s1) = as_decimal(l);
            let (p2, s2) = as_decimal(r);
            let int1 = p1 - s1;
            let int2 = p2 - s2;
            let (precision, scale) = match op {
                ArithOp::Add | ArithOp::Sub | ArithOp::Mod => {
                    let s = s1.max(s2);
                    ((int1.max(int2) + s + 1).min(MAX_PRECISION), s)
                }
                ArithOp::Mul => {
                    // The exact product has s1 + s2 decimals; when that does not fit beside the
                    // integer digits, keep as many decimals as fit, but never fewer than the
                    // larger operand scale (rounding half away from zero).
                    let exact = s1 + s2;
                    let int = int1 + int2;
                    if int + exact <= MAX_PRECISION {
                        (int + exact, exact)
                    } else {
                        let s = MAX_PRECISION.saturating_sub(int).max(s1.max(s2)).min(exact);
                        (MAX_PRECISION, s)
                    }
                }
                ArithOp::Div => (MAX_PRECISION, s1.max(s2).max(6)),
            };
            (
                NumKind::Decimal { scale },
                Type::Decimal { precision, scale },
            )
        }
    }
}

/// The type two values are compared or combined in, if any.
fn unify(a: Type, b: Type) -> Option<Type> {
    if a == b {
        return Some(a);
    }
    match (a, b) {
        (Type::Double, t) | (t, Type::Double) if t.is_numeric() => Some(Type::Double),
        (Type::Decimal { .. } | Type::BigInt, Type::Decimal { .. } | Type::BigInt) => {
            let (p1, s1) = as_decimal(a);
            let (p2, s2) = as_decimal(b);
            let scale = s1.max(s2);
            let precision = ((p1 - s1).max(p2 - s2) + scale).min(MAX_PRECISION);
            Some(Type::Decimal { precision, scale })
        }
        _ => None,
    }
}

/// Compiles a query-time filter (`tally query --where`) over a view's group columns. Column
/// references become `Column` indexes into the group key.
pub fn compile_key_filter(plan: &ViewPlan, text: &str) -> Result<Expr> {
    let dialect = PostgreSqlDialect {};
    let start = Location { line: 1, column: 1 };
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(text)
        .map_err(|e| parse_error(e, start))?;
    let ast = parser.parse_expr().map_err(|e| parse_error(e, start))?;
    let trailing = parser.peek_token();
    if trailing.token != Token::EOF {
        return Err(error_at(
            trailing.span.start,
            format!("unexpected {} after the condition", trailing.token),
            None,
        ));
    }
    let scope = Scope {
        columns: plan.keys.iter().map(|k| (k.name.clone(), k.ty)).collect(),
        qualifiers: vec![plan.name.clone()],
        target: ScopeTarget::Key,
    };
    let mut binder = Binder::new(&scope, start);
    binder.context = "--where";
    let (expr, ty) = binder.expr(&ast)?;
    if ty != Type::Boolean {
        return Err(error_at(
            start,
            format!("--where needs a condition, but {ast} is {ty}"),
            None,
        ));
    }
    Ok(expr)
}
