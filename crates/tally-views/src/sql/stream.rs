//! `CREATE STREAM`: columns, their types and `NOT NULL`, and the options `event_time`,
//! `dedupe_key`, `retention` and `person`.

use sqlparser::ast::{self, Spanned};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;

use super::{
    Compiled, LocationExt, Result, data_type, error_at, ident_name, key_values, new_object_name,
    parse_error, unsupported,
};
use crate::plan::{Catalog, ColumnDef, StreamDef};
use crate::time::Interval;
use crate::value::Type;

pub(super) fn create_stream(
    parser: &mut Parser<'_>,
    catalog: &Catalog,
    at: Location,
) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    let name_at = parser.peek_token().span.start;
    let name = new_object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
    if catalog.stream(&name).is_some_and(|s| s.builtin) {
        return Err(error_at(
            name_at,
            format!("{name} is a built-in stream"),
            Some("choose another name for your stream"),
        ));
    }
    if catalog.view(&name).is_some() || catalog.saved_query(&name).is_some() {
        return Err(error_at(name_at, format!("{name} is already a view"), None));
    }
    if catalog.table(&name).is_some() {
        return Err(error_at(
            name_at,
            format!("{name} is already a table"),
            None,
        ));
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
    let mut dedupe_key = Vec::new();
    let mut retention = None;
    let mut person = Vec::new();
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
                // One column, or several separated by commas: a composite key.
                for part in value.split(',') {
                    let part = part.trim();
                    let idx = defs.iter().position(|d| d.name == part).ok_or_else(|| {
                        error_at(
                            value_at,
                            format!("dedupe_key names '{part}', which is not a column of {name}"),
                            Some("write dedupe_key = 'column' or dedupe_key = 'column1, column2'"),
                        )
                    })?;
                    if matches!(defs[idx].ty, Type::Json | Type::Double) {
                        return Err(error_at(
                            value_at,
                            format!("dedupe_key column {part} cannot be {}", defs[idx].ty),
                            None,
                        ));
                    }
                    if dedupe_key.contains(&idx) {
                        return Err(error_at(
                            value_at,
                            format!("dedupe_key names {part} twice"),
                            None,
                        ));
                    }
                    dedupe_key.push(idx);
                }
            }
            "retention" => {
                retention = Some(Interval::parse(&value).map_err(|e| error_at(value_at, e, None))?);
            }
            "person" => {
                let idx = defs.iter().position(|d| d.name == value).ok_or_else(|| {
                    error_at(
                        value_at,
                        format!("person names '{value}', which is not a column of {name}"),
                        Some("write person = 'column', the TEXT column of the person's id"),
                    )
                })?;
                if defs[idx].ty != Type::Text {
                    return Err(error_at(
                        value_at,
                        format!(
                            "person column {value} must be TEXT (a person's id), not {}",
                            defs[idx].ty
                        ),
                        None,
                    ));
                }
                person = vec![idx];
            }
            other => {
                return Err(error_at(
                    value_at,
                    format!("unknown stream option {other}"),
                    Some("stream options are event_time, dedupe_key, retention and person"),
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
            person,
            builtin: false,
        },
        at,
    ))
}
