//! `CREATE TABLE`: a tenant's reference data. Columns with their types and `NOT NULL`, and
//! exactly one `PRIMARY KEY` column (inline or as a table constraint) that rows are upserted and
//! deleted by.

use sqlparser::ast::{self, Spanned};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;

use super::{
    Compiled, LocationExt, Result, appended_columns, data_type, error_at, ident_name,
    new_object_name, parse_error,
};
use crate::plan::{Catalog, ColumnDef, TableDef};
use crate::value::Type;

pub(super) fn create_table(
    parser: &mut Parser<'_>,
    catalog: &Catalog,
    at: Location,
) -> Result<Compiled> {
    let perr = |e| parse_error(e, at);
    let _ = parser.parse_keywords(&[
        sqlparser::keywords::Keyword::IF,
        sqlparser::keywords::Keyword::NOT,
        sqlparser::keywords::Keyword::EXISTS,
    ]);
    let name_at = parser.peek_token().span.start;
    let name = new_object_name(&parser.parse_object_name(false).map_err(perr)?, name_at)?;
    if catalog.table(&name).is_none() && catalog.has(&name) {
        return Err(error_at(
            name_at,
            format!("{name} is already a stream or view"),
            Some("a table needs a name of its own"),
        ));
    }
    let (columns, constraints) = parser.parse_columns().map_err(perr)?;
    if columns.is_empty() {
        return Err(error_at(at, format!("table {name} has no columns"), None));
    }
    let mut defs: Vec<ColumnDef> = Vec::new();
    let mut key: Option<(usize, Location)> = None;
    let set_key = |idx: usize, loc: Location, key: &mut Option<(usize, Location)>| {
        if key.is_some() {
            return Err(error_at(
                loc,
                format!("table {name} declares more than one primary key"),
                Some("a table has one primary-key column; keep the others UNIQUE in your data"),
            ));
        }
        *key = Some((idx, loc));
        Ok(())
    };
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
                ast::ColumnOption::PrimaryKey(_) => {
                    set_key(defs.len(), c.name.span.start, &mut key)?;
                    not_null = true;
                }
                other => {
                    return Err(error_at(
                        c.name.span.start,
                        format!("column option {other} is not supported in a table"),
                        Some("table columns take NOT NULL and PRIMARY KEY"),
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
    for constraint in &constraints {
        let loc = constraint.span().start.max_or(at);
        let ast::TableConstraint::PrimaryKey(pk) = constraint else {
            return Err(error_at(
                loc,
                "only a PRIMARY KEY constraint is supported in a table",
                Some("Tally checks NOT NULL and types; keep other constraints in your data"),
            ));
        };
        if pk.columns.len() != 1 {
            return Err(error_at(
                loc,
                "a table's primary key is one column",
                Some("add a TEXT column that joins the parts, e.g. 'a:b', and make it the key"),
            ));
        }
        let column = pk.columns[0].column.expr.to_string().to_lowercase();
        let column = column.trim_matches('"').to_owned();
        let idx = defs.iter().position(|d| d.name == column).ok_or_else(|| {
            error_at(
                loc,
                format!("PRIMARY KEY names {column}, which is not a column of {name}"),
                None,
            )
        })?;
        set_key(idx, loc, &mut key)?;
        defs[idx].not_null = true;
    }
    let Some((key, key_at)) = key else {
        return Err(error_at(
            at,
            format!("table {name} has no PRIMARY KEY"),
            Some("rows are upserted and deleted by their key: mark one column PRIMARY KEY"),
        ));
    };
    if matches!(defs[key].ty, Type::Json | Type::Double) {
        return Err(error_at(
            key_at,
            format!("a primary key cannot be {}", defs[key].ty),
            Some("use TEXT, BIGINT, DECIMAL, TIMESTAMP or BOOLEAN"),
        ));
    }
    Ok(Compiled::Table(
        TableDef {
            name,
            columns: defs,
            key,
        },
        at,
    ))
}

/// The columns `new` appends to `old`, or why the change is not allowed.
pub(super) fn alteration(
    old: &TableDef,
    new: &TableDef,
) -> std::result::Result<Vec<String>, String> {
    if old.key != new.key {
        return Err("the primary key changed".into());
    }
    appended_columns(&old.columns, &new.columns, "stored rows")
}
