//! Rendering query results as a table, CSV or JSON.
//!
//! The forms follow DESIGN.md: timestamps as RFC 3339 UTC with `Z`, decimals as exact text (a
//! JSON string), NULL as an empty CSV field and JSON `null`. JSON columns are embedded as JSON.
//! The JSON shape `{"columns":[{"name","type"}],"rows":[[…]]}` is shared with the HTTP API.

use std::fmt::Write as _;

use serde_json::json;
use tally_views::{ResultSet, Type, Value};

/// An output format for query results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// A value as JSON.
pub fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Decimal(d) => json!(d.to_string()),
        Value::Timestamp(t) => json!(t.to_string()),
        Value::Text(s) => json!(s.as_str()),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s.as_ref())),
    }
}

/// The result as the JSON document of the query API.
pub fn result_json(result: &ResultSet) -> serde_json::Value {
    let columns: Vec<serde_json::Value> = result
        .columns
        .iter()
        .map(|(name, ty)| json!({"name": name, "type": ty.to_string()}))
        .collect();
    let rows: Vec<serde_json::Value> = result
        .rows
        .iter()
        .map(|row| serde_json::Value::Array(row.iter().map(json_value).collect()))
        .collect();
    json!({"columns": columns, "rows": rows})
}

/// [`result_json`] written straight to text, without the intermediate JSON tree (the query
/// API's hot path); the same document.
pub fn result_json_text(result: &ResultSet) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64 + result.rows.len() * 16 * result.columns.len());
    out.push_str("{\"columns\":[");
    for (i, (name, ty)) in result.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_json_str(&mut out, name);
        out.push_str(",\"type\":");
        push_json_str(&mut out, &ty.to_string());
        out.push('}');
    }
    out.push_str("],\"rows\":[");
    for (r, row) in result.rows.iter().enumerate() {
        if r > 0 {
            out.push(',');
        }
        out.push('[');
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match v {
                Value::Null => out.push_str("null"),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Text(s) => push_json_str(&mut out, s),
                Value::Decimal(d) => push_json_str(&mut out, &d.to_string()),
                Value::Timestamp(t) => push_json_str(&mut out, &t.to_string()),
                Value::Double(_) | Value::Json(_) => out.push_str(&json_value(v).to_string()),
            }
        }
        out.push(']');
    }
    out.push_str("]}");
    out
}

/// `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    // Serializing a &str into a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Renders a result.
pub fn render(result: &ResultSet, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let mut s = result_json_text(result);
            s.push('\n');
            s
        }
        OutputFormat::Csv => {
            let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
            // Writing to a Vec cannot fail.
            let _ = w.write_record(result.columns.iter().map(|(n, _)| n.as_str()));
            for row in &result.rows {
                let _ = w.write_record(row.iter().map(|v| v.to_string()));
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        OutputFormat::Table => table(result),
    }
}

fn table(result: &ResultSet) -> String {
    let cells: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect();
    let widths: Vec<usize> = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let right = |ty: &Type| ty.is_numeric();
    let mut out = String::new();
    let line = |out: &mut String, values: &[String]| {
        let mut parts = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let w = widths[i];
            let pad = w.saturating_sub(v.chars().count());
            parts.push(if right(&result.columns[i].1) {
                format!("{}{v}", " ".repeat(pad))
            } else {
                format!("{v}{}", " ".repeat(pad))
            });
        }
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    let header: Vec<String> = result.columns.iter().map(|(n, _)| n.clone()).collect();
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for row in &cells {
        line(&mut out, row);
    }
    let _ = writeln!(
        out,
        "({} row{})",
        result.rows.len(),
        if result.rows.len() == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_views::Timestamp;
    use tally_views::decimal::Decimal;

    fn sample() -> ResultSet {
        ResultSet {
            columns: vec![
                ("day".into(), Type::Timestamp),
                ("vault".into(), Type::Text),
                (
                    "total".into(),
                    Type::Decimal {
                        precision: 38,
                        scale: 2,
                    },
                ),
            ],
            rows: vec![
                vec![
                    Value::Timestamp(Timestamp::parse("2026-03-29T22:00:00Z").unwrap()),
                    Value::text("v1"),
                    Value::Decimal(Decimal::parse("10.50").unwrap()),
                ],
                vec![Value::Timestamp(Timestamp(0)), Value::Null, Value::Null],
            ],
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            render(&sample(), OutputFormat::Csv),
            "day,vault,total\n2026-03-29T22:00:00Z,v1,10.50\n1970-01-01T00:00:00Z,,\n"
        );
        assert_eq!(
            render(&sample(), OutputFormat::Json),
            "{\"columns\":[{\"name\":\"day\",\"type\":\"TIMESTAMP\"},{\"name\":\"vault\",\"type\":\"TEXT\"},{\"name\":\"total\",\"type\":\"DECIMAL(38,2)\"}],\"rows\":[[\"2026-03-29T22:00:00Z\",\"v1\",\"10.50\"],[\"1970-01-01T00:00:00Z\",null,null]]}\n"
        );
        assert_eq!(
            render(&sample(), OutputFormat::Table),
            "day                   vault  total\n--------------------  -----  -----\n2026-03-29T22:00:00Z  v1     10.50\n1970-01-01T00:00:00Z\n(2 rows)\n"
        );
    }

    #[test]
    fn the_written_document_is_the_json_tree() {
        let result = ResultSet {
            columns: vec![
                ("day".into(), Type::Timestamp),
                ("name \"q\"".into(), Type::Text),
                ("n".into(), Type::BigInt),
                ("x".into(), Type::Double),
                (
                    "d".into(),
                    Type::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                ),
                ("j".into(), Type::Json),
                ("b".into(), Type::Boolean),
            ],
            rows: vec![
                vec![
                    Value::Timestamp(Timestamp::parse("2026-03-29T22:00:00Z").unwrap()),
                    Value::text("é \"quoted\"\n\u{1}"),
                    Value::Int(-7),
                    Value::Double(0.1),
                    Value::Decimal(tally_views::decimal::Decimal::parse("12.50").unwrap()),
                    Value::Json("{\"k\": [1, 2]}".into()),
                    Value::Bool(true),
                ],
                vec![
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Double(f64::NAN),
                    Value::Null,
                    Value::Null,
                    Value::Bool(false),
                ],
            ],
        };
        assert_eq!(result_json_text(&result), result_json(&result).to_string());
    }
}
