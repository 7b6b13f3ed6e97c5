//! Binding parameters: typed, never spliced into the SQL text.
//!
//! The plan infers each parameter's type from where it stands (`vault_id = :vault_id` makes it
//! the column's type); the value given is converted to that type, or refused with the
//! parameter's name. Values come as JSON (`POST /v1/sql`) or as text (`--param name=value`, URL
//! parameters of saved queries); text is read as the type asks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use tally_views::Timestamp;
use tally_views::decimal::Decimal;

use crate::SqlError;

/// A parameter's value as given.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Json(serde_json::Value),
    Text(String),
}

pub(crate) fn bind(
    plan: LogicalPlan,
    names: &BTreeSet<String>,
    given: &BTreeMap<String, ParamValue>,
) -> Result<LogicalPlan, SqlError> {
    if let Some(name) = given.keys().find(|n| !names.contains(*n)) {
        let known = if names.is_empty() {
            "the query has no parameters".to_owned()
        } else {
            let list: Vec<String> = names.iter().map(|n| format!(":{n}")).collect();
            format!("the query's parameters are {}", list.join(", "))
        };
        return Err(SqlError::Param {
            name: name.clone(),
            message: format!("not a parameter of the query ({known})"),
        });
    }
    if names.is_empty() {
        return Ok(plan);
    }
    let types = plan
        .get_parameter_types()
        .map_err(|e| SqlError::Plan(e.to_string()))?;
    let mut values = HashMap::new();
    for name in names {
        let value = given.get(name).ok_or_else(|| SqlError::Param {
            name: name.clone(),
            message: "missing; give it a value".into(),
        })?;
        let ty = types.get(&format!("${name}")).cloned().flatten();
        let scalar = scalar(value, ty.as_ref()).map_err(|message| SqlError::Param {
            name: name.clone(),
            message,
        })?;
        values.insert(name.clone(), scalar.into());
    }
    plan.with_param_values(ParamValues::Map(values))
        .map_err(|e| SqlError::Plan(e.to_string()))
}

/// `value` as a scalar of type `ty` (or of its own type when the plan leaves it open).
fn scalar(value: &ParamValue, ty: Option<&DataType>) -> Result<ScalarValue, String> {
    use serde_json::Value as J;
    let Some(ty) = ty else {
        return Ok(match value {
            ParamValue::Text(s) => ScalarValue::Utf8(Some(s.clone())),
            ParamValue::Json(J::Null) => ScalarValue::Null,
            ParamValue::Json(J::Bool(b)) => ScalarValue::Boolean(Some(*b)),
            ParamValue::Json(J::Number(n)) => match n.as_i64() {
                Some(i) => ScalarValue::Int64(Some(i)),
                None => ScalarValue::Float64(n.as_f64()),
            },
            ParamValue::Json(J::String(s)) => ScalarValue::Utf8(Some(s.clone())),
            ParamValue::Json(other) => ScalarValue::Utf8(Some(other.to_string())),
        });
    };
    if matches!(value, ParamValue::Json(J::Null)) {
        return ScalarValue::try_from(ty).map_err(|e| e.to_string());
    }
    // The value as text, for the types that are read from text.
    let text = match value {
        ParamValue::Text(s) => s.clone(),
        ParamValue::Json(J::String(s)) => s.clone(),
        ParamValue::Json(J::Number(n)) => n.to_string(),
        ParamValue::Json(J::Bool(b)) => b.to_string(),
        ParamValue::Json(other) => {
            return Err(format!("expected a {}, got {other}", type_name(ty)));
        }
    };
    let text = text.trim();
    let wrong = || format!("expected a {}, got '{text}'", type_name(ty));
    Ok(match ty {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let i: i64 = text.parse().map_err(|_| wrong())?;
            ScalarValue::Int64(Some(i))
                .cast_to(ty)
                .map_err(|_| wrong())?
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let i: u64 = text.parse().map_err(|_| wrong())?;
            ScalarValue::UInt64(Some(i))
                .cast_to(ty)
                .map_err(|_| wrong())?
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f: f64 = text.parse().map_err(|_| wrong())?;
            ScalarValue::Float64(Some(f))
                .cast_to(ty)
                .map_err(|_| wrong())?
        }
        DataType::Decimal128(p, s) => {
            let d = Decimal::parse(text).map_err(|_| wrong())?;
            let m = d.rescale(*s as u8).map_err(|_| wrong())?.mantissa();
            ScalarValue::Decimal128(Some(m), *p, *s)
        }
        DataType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => ScalarValue::Boolean(Some(true)),
            "false" | "f" | "0" | "no" => ScalarValue::Boolean(Some(false)),
            _ => return Err(wrong()),
        },
        DataType::Timestamp(_, tz) => {
            let t = Timestamp::parse(text).ok_or_else(|| {
                format!("expected a timestamp (RFC 3339, e.g. 2026-03-29T22:00:00Z), got '{text}'")
            })?;
            ScalarValue::TimestampMicrosecond(Some(t.0), tz.clone())
                .cast_to(ty)
                .map_err(|_| wrong())?
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            ScalarValue::Utf8(Some(text.to_owned()))
                .cast_to(ty)
                .map_err(|_| wrong())?
        }
        other => ScalarValue::Utf8(Some(text.to_owned()))
            .cast_to(other)
            .map_err(|_| wrong())?,
    })
}

fn type_name(ty: &DataType) -> String {
    match ty {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            "non-negative integer".into()
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _) => "TIMESTAMP".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT".into(),
        other => other.to_string(),
    }
}
