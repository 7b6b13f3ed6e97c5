//! Tally's values and types to Arrow arrays and back.
//!
//! Into Arrow, every column has its declared type: `BIGINT` → `Int64`, `DOUBLE` → `Float64`,
//! `TEXT` and `JSON` → `Utf8`, `BOOLEAN` → `Boolean`, `DECIMAL(p,s)` → `Decimal128(38,s)` (Tally's
//! decimals hold up to 38 digits), `TIMESTAMP` → microseconds in the tenant's time zone, so that
//! `date_trunc`, `date_part` and `extract` work in local time.
//!
//! Out of Arrow, answers take the nearest Tally type; what has none (dates, intervals, lists) is
//! written as text by Arrow's own display.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Decimal128Builder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Decimal256Type, Field, Float16Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use tally_views::decimal::Decimal;
use tally_views::{Timestamp, Type, Value};

use crate::SqlError;

/// The Arrow type a Tally column is read as.
pub(crate) fn arrow_type(ty: Type, time_zone: &str) -> DataType {
    match ty {
        Type::Text | Type::Json => DataType::Utf8,
        Type::Boolean => DataType::Boolean,
        Type::BigInt => DataType::Int64,
        Type::Double => DataType::Float64,
        Type::Decimal { scale, .. } => DataType::Decimal128(38, scale as i8),
        Type::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(time_zone.into())),
    }
}

/// The schema of a relation with these columns.
pub(crate) fn schema(columns: &[(String, Type)], time_zone: &str) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, ty)| Field::new(name, arrow_type(*ty, time_zone), true))
            .collect::<Vec<_>>(),
    ))
}

/// Rows as one record batch of `schema`. A value of another type than its column's is
/// converted where that is exact (an integer in a `DOUBLE` column) and `NULL` otherwise.
pub(crate) fn batch(schema: SchemaRef, rows: &[Vec<Value>]) -> Result<RecordBatch, SqlError> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| column(field.data_type(), rows.iter().map(|r| &r[i])))
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| SqlError::Execution(e.to_string()))
}

fn column<'a>(
    ty: &DataType,
    values: impl ExactSizeIterator<Item = &'a Value>,
) -> Result<ArrayRef, SqlError> {
    let n = values.len();
    Ok(match ty {
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for v in values {
                b.append_option(match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            for v in values {
                b.append_option(v.as_f64());
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            for v in values {
                b.append_option(match v {
                    Value::Bool(x) => Some(*x),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Decimal128(precision, scale) => {
            let mut b = Decimal128Builder::with_capacity(n);
            for v in values {
                b.append_option(match v {
                    Value::Decimal(d) => d.rescale(*scale as u8).ok().map(Decimal::mantissa),
                    Value::Int(i) => Decimal::new(i128::from(*i), 0)
                        .rescale(*scale as u8)
                        .ok()
                        .map(Decimal::mantissa),
                    _ => None,
                });
            }
            Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| SqlError::Execution(e.to_string()))?,
            )
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n);
            for v in values {
                b.append_option(match v {
                    Value::Timestamp(t) => Some(t.0),
                    _ => None,
                });
            }
            Arc::new(b.finish().with_timezone_opt(tz.clone()))
        }
        _ => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for v in values {
                match v.as_str() {
                    Some(s) => b.append_value(s),
                    None if v.is_null() => b.append_null(),
                    None => b.append_value(v.to_string()),
                }
            }
            Arc::new(b.finish())
        }
    })
}

/// The Tally type of an answer column.
pub(crate) fn tally_type(ty: &DataType) -> Type {
    match ty {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Type::BigInt,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Type::Double,
        DataType::Boolean => Type::Boolean,
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if (0..=38).contains(s) => {
            Type::Decimal {
                precision: (*p).min(38),
                scale: *s as u8,
            }
        }
        DataType::Timestamp(_, _) => Type::Timestamp,
        _ => Type::Text,
    }
}

/// Appends the rows of `batch` to `rows`, each value as its column's [`tally_type`] says.
pub(crate) fn append_rows(batch: &RecordBatch, rows: &mut Vec<Vec<Value>>) -> Result<(), SqlError> {
    let start = rows.len();
    rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
    for array in batch.columns() {
        let values = values(array)?;
        for (row, v) in rows[start..].iter_mut().zip(values) {
            row.push(v);
        }
    }
    Ok(())
}

fn values(array: &ArrayRef) -> Result<Vec<Value>, SqlError> {
    let n = array.len();
    let each = |f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if array.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    Ok(match array.data_type() {
        DataType::Int8 => each(&|i| Value::Int(array.as_primitive::<Int8Type>().value(i).into())),
        DataType::Int16 => each(&|i| Value::Int(array.as_primitive::<Int16Type>().value(i).into())),
        DataType::Int32 => each(&|i| Value::Int(array.as_primitive::<Int32Type>().value(i).into())),
        DataType::Int64 => each(&|i| Value::Int(array.as_primitive::<Int64Type>().value(i))),
        DataType::UInt8 => each(&|i| Value::Int(array.as_primitive::<UInt8Type>().value(i).into())),
        DataType::UInt16 => {
            each(&|i| Value::Int(array.as_primitive::<UInt16Type>().value(i).into()))
        }
        DataType::UInt32 => {
            each(&|i| Value::Int(array.as_primitive::<UInt32Type>().value(i).into()))
        }
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            if (0..n).any(|i| !a.is_null(i) && a.value(i) > i64::MAX as u64) {
                return Err(SqlError::Execution(
                    "an unsigned integer of the answer is larger than BIGINT holds".into(),
                ));
            }
            each(&|i| Value::Int(a.value(i) as i64))
        }
        DataType::Float16 => {
            each(&|i| Value::Double(array.as_primitive::<Float16Type>().value(i).to_f64()))
        }
        DataType::Float32 => {
            each(&|i| Value::Double(array.as_primitive::<Float32Type>().value(i).into()))
        }
        DataType::Float64 => each(&|i| Value::Double(array.as_primitive::<Float64Type>().value(i))),
        DataType::Boolean => each(&|i| Value::Bool(array.as_boolean().value(i))),
        DataType::Utf8 => each(&|i| Value::text(array.as_string::<i32>().value(i))),
        DataType::LargeUtf8 => each(&|i| Value::text(array.as_string::<i64>().value(i))),
        DataType::Utf8View => each(&|i| Value::text(array.as_string_view().value(i))),
        DataType::Decimal128(_, s) if (0..=38).contains(s) => {
            let a = array.as_primitive::<Decimal128Type>();
            each(&|i| Value::Decimal(Decimal::new(a.value(i), *s as u8)))
        }
        DataType::Decimal256(_, s) if (0..=38).contains(s) => {
            let a = array.as_primitive::<Decimal256Type>();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if a.is_null(i) {
                    out.push(Value::Null);
                    continue;
                }
                let m = a.value(i).to_i128().ok_or_else(|| {
                    SqlError::Execution("a decimal of the answer has more than 38 digits".into())
                })?;
                out.push(Value::Decimal(Decimal::new(m, *s as u8)));
            }
            out
        }
        DataType::Timestamp(unit, _) => {
            let micros = |i: usize| -> i64 {
                match unit {
                    TimeUnit::Second => array
                        .as_primitive::<TimestampSecondType>()
                        .value(i)
                        .saturating_mul(1_000_000),
                    TimeUnit::Millisecond => array
                        .as_primitive::<TimestampMillisecondType>()
                        .value(i)
                        .saturating_mul(1_000),
                    TimeUnit::Microsecond => {
                        array.as_primitive::<TimestampMicrosecondType>().value(i)
                    }
                    TimeUnit::Nanosecond => array
                        .as_primitive::<TimestampNanosecondType>()
                        .value(i)
                        .div_euclid(1_000),
                }
            };
            each(&|i| Value::Timestamp(Timestamp(micros(i))))
        }
        DataType::Null => vec![Value::Null; n],
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
                .map_err(|e| SqlError::Execution(e.to_string()))?;
            each(&|i| Value::text(&formatter.value(i).to_string()))
        }
    })
}
