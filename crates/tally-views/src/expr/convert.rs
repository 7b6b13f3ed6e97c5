//! Value conversions of expressions: casts between column types (which can fail, and which
//! are checked at ingest), text parsed as a type, and JSON field access.

use std::sync::Arc;

use crate::decimal::{Decimal, FitError};
use crate::value::{SmolStr, Timestamp, Type, Value};

use super::{EvalError, JsonKey};

/// Whether a cast between these types can fail at run time.
pub fn cast_can_fail(from: Type, to: Type) -> bool {
    match (from, to) {
        _ if from == to => false,
        (_, Type::Text)
        | (Type::BigInt, Type::Double)
        | (Type::Boolean, Type::BigInt)
        | (Type::BigInt, Type::Boolean) => false,
        // Widening keeps every digit; a smaller scale rounds, which can carry into a new digit.
        (
            Type::Decimal {
                precision: p1,
                scale: s1,
            },
            Type::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => !(s2 >= s1 && p2 - s2 >= p1 - s1),
        (Type::BigInt, Type::Decimal { precision, scale }) => precision - scale < 19,
        (Type::Decimal { .. }, Type::Double) => false,
        _ => true,
    }
}

/// Whether a cast between these types exists at all.
pub fn cast_exists(from: Type, to: Type) -> bool {
    use Type::*;
    if from == to || to == Text || from == Text || from == Json {
        return true;
    }
    matches!(
        (from, to),
        (
            BigInt | Double | Decimal { .. },
            BigInt | Double | Decimal { .. }
        ) | (Boolean, BigInt)
            | (BigInt, Boolean)
    )
}

/// Casts a value, following PostgreSQL: numbers round half away from zero to integers and to
/// the target decimal scale; text is parsed.
pub fn cast(v: Value, from: Type, to: Type) -> Result<Value, EvalError> {
    if v.is_null() || from == to {
        return Ok(v);
    }
    let invalid = |v: &Value| EvalError::InvalidCast {
        value: v.to_string(),
        to,
    };
    Ok(match (v, to) {
        (Value::Json(doc), _) => {
            // A JSON scalar casts like its text: a string by its content, others by their JSON.
            let scalar = json_get_scalar(&doc);
            match scalar {
                Value::Null => Value::Null,
                Value::Text(_) if to == Type::Json => Value::Json(doc),
                s => cast(s, Type::Text, to)?,
            }
        }
        (v, Type::Text) => Value::Text(SmolStr::from(v.to_string())),
        (Value::Text(s), to) => {
            parse_text(&s, to).ok_or_else(|| invalid(&Value::Text(s.clone())))?
        }
        (Value::Int(i), Type::Double) => Value::Double(i as f64),
        (Value::Int(i), Type::Decimal { precision, scale }) => {
            fit_decimal(Decimal::new(i128::from(i), 0), precision, scale)?
        }
        (Value::Int(i), Type::Boolean) => Value::Bool(i != 0),
        (Value::Bool(b), Type::BigInt) => Value::Int(i64::from(b)),
        (Value::Double(d), Type::BigInt) => {
            let r = d.round();
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
                Value::Int(r as i64)
            } else {
                return Err(EvalError::Overflow(Type::BigInt));
            }
        }
        (Value::Double(d), Type::Decimal { precision, scale }) => {
            let exact = Decimal::parse(&format!("{d}")).map_err(|_| EvalError::Overflow(to))?;
            fit_decimal(exact, precision, scale)?
        }
        (Value::Decimal(d), Type::BigInt) => {
            let r = d.rescale(0).map_err(|_| EvalError::Overflow(to))?;
            Value::Int(i64::try_from(r.mantissa()).map_err(|_| EvalError::Overflow(to))?)
        }
        (Value::Decimal(d), Type::Double) => Value::Double(d.to_f64()),
        (Value::Decimal(d), Type::Decimal { precision, scale }) => {
            fit_decimal(d, precision, scale)?
        }
        (v, _) => return Err(invalid(&v)),
    })
}

/// Rounds to `scale` and checks the precision, as a cast to `DECIMAL(p,s)` does.
fn fit_decimal(d: Decimal, precision: u8, scale: u8) -> Result<Value, EvalError> {
    let overflow = EvalError::Overflow(Type::Decimal { precision, scale });
    let rounded = d.rescale(scale).map_err(|_| overflow.clone())?;
    match rounded.fit(precision, scale) {
        Ok(v) => Ok(Value::Decimal(v)),
        Err(FitError::Overflow | FitError::TooManyDecimals { .. }) => Err(overflow),
    }
}

/// Parses text as a value of type `to`, the way casts and CSV ingest read text.
pub fn parse_text(s: &str, to: Type) -> Option<Value> {
    let t = s.trim();
    Some(match to {
        Type::Text => Value::Text(SmolStr::from(s)),
        Type::BigInt => Value::Int(t.parse().ok()?),
        Type::Double => {
            let d: f64 = t.parse().ok()?;
            if !d.is_finite() {
                return None;
            }
            Value::Double(d)
        }
        Type::Decimal { precision, scale } => {
            let d = Decimal::parse(t).ok()?;
            fit_decimal(d, precision, scale).ok()?
        }
        Type::Boolean => Value::Bool(match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" | "on" => true,
            "false" | "f" | "0" | "no" | "n" | "off" => false,
            _ => return None,
        }),
        Type::Timestamp => Value::Timestamp(Timestamp::parse(t)?),
        Type::Json => {
            let parsed: serde_json::Value = serde_json::from_str(t).ok()?;
            Value::Json(Arc::from(parsed.to_string()))
        }
    })
}

pub(super) fn json_get(doc: &str, key: &JsonKey, as_text: bool) -> Value {
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(doc) else {
        return Value::Null;
    };
    let found = match (key, &parsed) {
        (JsonKey::Field(name), serde_json::Value::Object(map)) => map.get(name),
        (JsonKey::Index(i), serde_json::Value::Array(items)) => {
            let idx = if *i < 0 { items.len() as i64 + i } else { *i };
            usize::try_from(idx).ok().and_then(|i| items.get(i))
        }
        _ => None,
    };
    match found {
        None | Some(serde_json::Value::Null) => Value::Null,
        Some(serde_json::Value::String(s)) if as_text => Value::Text(SmolStr::from(s.as_str())),
        Some(other) if as_text => Value::Text(SmolStr::from(other.to_string())),
        Some(other) => Value::Json(Arc::from(other.to_string())),
    }
}

/// A JSON document's scalar as text: strings by content, other scalars by their JSON text.
fn json_get_scalar(doc: &str) -> Value {
    match serde_json::from_str::<serde_json::Value>(doc) {
        Ok(serde_json::Value::Null) | Err(_) => Value::Null,
        Ok(serde_json::Value::String(s)) => Value::Text(SmolStr::from(s.as_str())),
        Ok(other) => Value::Text(SmolStr::from(other.to_string())),
    }
}
