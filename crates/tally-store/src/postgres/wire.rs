//! How values, types and names travel between Tally and PostgreSQL: [`Wire`], a value as a
//! binary parameter (of COPY and of queries); [`WireArray`], a column of a block of events as
//! one binary array parameter; [`PgTime`], a timestamp as PostgreSQL sends it;
//! the column types of raw, view and staging tables; cells read back ([`to_read`],
//! [`read_cell`]); names and literals written into SQL text; and the time constants.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres::types::{FromSql, IsNull, ToSql, Type as PgType, to_sql_checked};

use tally_views::{Timestamp, Type, Value};

use crate::error::{Result, StoreError};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const DAY_MICROS: i64 = 86_400_000_000;
pub(super) const WEEK_MICROS: i64 = 7 * DAY_MICROS;
/// 1970-01-05, the first Monday after the Unix epoch: weeks start on Mondays.
pub(super) const FIRST_MONDAY: i64 = 4 * DAY_MICROS;

/// A name as a quoted identifier.
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Text as a string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A time (microseconds from the Unix epoch) as a `timestamptz` literal.
pub(super) fn pg_time_literal(micros: i64) -> String {
    literal(&Timestamp(micros).to_string())
}

/// The column type of a raw event table.
pub(super) fn raw_type(ty: Type) -> &'static str {
    match ty {
        Type::Text => "text",
        Type::Decimal { .. } => "numeric",
        Type::Json => "json",
        Type::Boolean => "boolean",
        Type::BigInt => "bigint",
        Type::Double => "double precision",
        Type::Timestamp => "timestamptz",
    }
}

/// How a column travels in binary COPY: decimals and JSON as text, cast on insert.
pub(super) fn stage_type(ty: Type) -> (&'static str, PgType) {
    match ty {
        Type::Text | Type::Decimal { .. } | Type::Json => ("text", PgType::TEXT),
        Type::Boolean => ("boolean", PgType::BOOL),
        Type::BigInt => ("bigint", PgType::INT8),
        Type::Double => ("double precision", PgType::FLOAT8),
        Type::Timestamp => ("timestamptz", PgType::TIMESTAMPTZ),
    }
}

/// A staged column as the target column's type.
pub(super) fn from_stage(column: &str, ty: Type) -> String {
    match ty {
        Type::Decimal { .. } => format!("{column}::numeric"),
        Type::Json => format!("{column}::json"),
        _ => column.to_owned(),
    }
}

/// For an `INSERT … SELECT` from a staging table `s`: the quoted target columns, and the staged
/// values cast to their types.
pub(super) fn insert_columns<'a>(
    columns: impl Iterator<Item = (&'a str, Type)>,
) -> (Vec<String>, Vec<String>) {
    columns
        .map(|(name, ty)| {
            let name = quote(name);
            let cast = from_stage(&format!("s.{name}"), ty);
            (name, cast)
        })
        .unzip()
}

/// A column read back in a form [`read_cell`] understands.
pub(super) fn to_read(column: &str, ty: Type) -> String {
    match ty {
        Type::Decimal { .. } | Type::Json => format!("{column}::text"),
        _ => column.to_owned(),
    }
}

/// A dedupe key as text, for PostgreSQL to read back as the column's type.
pub(super) fn key_text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// A value on the wire: binary encodings of what the staging and view columns hold.
#[derive(Debug)]
pub(super) struct Wire<'a>(pub(super) &'a Value);

impl ToSql for Wire<'_> {
    fn to_sql(
        &self,
        ty: &PgType,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match (self.0, ty) {
            (Value::Null, _) => return Ok(IsNull::Yes),
            (Value::Text(s), &PgType::TEXT) => out.put_slice(s.as_bytes()),
            (Value::Json(s), &PgType::TEXT) => out.put_slice(s.as_bytes()),
            (Value::Decimal(d), &PgType::TEXT) => out.put_slice(d.to_string().as_bytes()),
            (Value::Bool(b), &PgType::BOOL) => out.put_u8(u8::from(*b)),
            (Value::Int(i), &PgType::INT8) => out.put_i64(*i),
            (Value::Double(d), &PgType::FLOAT8) => out.put_f64(*d),
            (Value::Int(i), &PgType::FLOAT8) => out.put_f64(*i as f64),
            (Value::Timestamp(t), &PgType::TIMESTAMPTZ) => out.put_i64(t.0 - PG_EPOCH_MICROS),
            (v, ty) => return Err(format!("cannot send {v:?} as {ty}").into()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &PgType) -> bool {
        true
    }

    to_sql_checked!();
}

/// A timestamp as PostgreSQL sends it.
#[derive(Debug)]
struct PgTime(i64);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(
        _: &PgType,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "a timestamp is 8 bytes")?;
        Ok(PgTime(i64::from_be_bytes(bytes) + PG_EPOCH_MICROS))
    }

    fn accepts(ty: &PgType) -> bool {
        *ty == PgType::TIMESTAMPTZ || *ty == PgType::TIMESTAMP
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(tally_views::codec::CodecError::Cell(what.to_owned()))
}

/// Reads cell `i` of a row written by [`to_read`] as a value of type `ty`.
pub(super) fn read_cell(row: &postgres::Row, i: usize, ty: Type) -> Result<Value> {
    use std::sync::Arc;
    Ok(match ty {
        Type::Text | Type::Json | Type::Decimal { .. } => {
            let Some(s) = row.try_get::<_, Option<&str>>(i)? else {
                return Ok(Value::Null);
            };
            match ty {
                Type::Text => Value::text(s),
                Type::Json => Value::Json(Arc::from(s)),
                _ => Value::Decimal(
                    tally_views::decimal::Decimal::parse(s).map_err(|_| corrupt("decimal"))?,
                ),
            }
        }
        Type::Boolean => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Bool),
        Type::BigInt => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int),
        Type::Double => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Double),
        Type::Timestamp => row
            .try_get::<_, Option<PgTime>>(i)?
            .map_or(Value::Null, |t| Value::Timestamp(Timestamp(t.0))),
    })
}

/// A column of a block of raw events as one binary array parameter: the values of `Wire`, each
/// as the element type the array is declared with (`$n::text[]`, `$n::bigint[]`, …).
#[derive(Debug)]
pub(super) struct WireArray<'a>(pub(super) Vec<&'a Value>);

impl ToSql for WireArray<'_> {
    fn to_sql(
        &self,
        ty: &PgType,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let postgres::types::Kind::Array(element) = ty.kind() else {
            return Err(format!("{ty} is not an array type").into());
        };
        let nulls = self.0.iter().any(|v| v.is_null());
        let len = i32::try_from(self.0.len()).map_err(|_| "an array of more than 2^31 values")?;
        out.put_i32(1);
        out.put_i32(i32::from(nulls));
        out.put_u32(element.oid());
        out.put_i32(len);
        out.put_i32(1);
        for v in &self.0 {
            let at = out.len();
            out.put_i32(0);
            match Wire(v).to_sql(element, out)? {
                IsNull::Yes => out[at..at + 4].copy_from_slice(&(-1_i32).to_be_bytes()),
                IsNull::No => {
                    let size = i32::try_from(out.len() - at - 4)
                        .map_err(|_| "an array element over 2 GiB")?;
                    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
                }
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &PgType) -> bool {
        matches!(ty.kind(), postgres::types::Kind::Array(_))
    }

    to_sql_checked!();
}
