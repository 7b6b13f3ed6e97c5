//! The ingest edge: turning one input record into a row of a stream, or a reason to reject it.
//!
//! Everything that can be wrong with an event is caught here, before the event is stored: size
//! (32 KB), JSON depth (64), NUL characters, unknown and missing fields, types, `DECIMAL`
//! precision, and event times too far in the future or older than the stream's retention. A
//! rejected event never reaches the store or the engine. Views never reject an event: an
//! expression that fails on one yields NULL for it and is counted by the view (see
//! `tally_views::engine`). Messages name the field and say what to send instead.
//!
//! JSON objects are read field by field as raw text (`serde_json::value::RawValue`) and each
//! field is parsed for its column's type, so numbers reach `DECIMAL` columns with every digit.

use std::borrow::Cow;
use std::cell::{Cell as Shared, RefCell};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use tally_views::decimal::{Decimal, FitError, ParseDecimalError};
use tally_views::expr::parse_text;
use tally_views::{
    ColumnDef, ColumnDefault, DateCache, Interval, StreamDef, TableDef, Timestamp, Type, Value,
};

/// The largest event accepted, in bytes of its JSON or CSV text.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// The deepest JSON nesting accepted.
pub const MAX_JSON_DEPTH: usize = 64;

/// What kind of problem rejected an event: the `reason` label of the rejection metric and log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not valid JSON, not an object, nested too deeply; a CSV record of the wrong shape.
    Malformed,
    /// Over the per-event size limit.
    TooLarge,
    /// A field the stream has no column for.
    UnknownField,
    /// A required field missing or null.
    MissingField,
    /// A field whose value does not fit its column (type, precision, range, NUL characters).
    InvalidValue,
    /// An event time too far in the future or older than the stream's retention.
    TimeOutOfRange,
    /// A Segment message that cannot become an event.
    InvalidMessage,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::UnknownField => "unknown_field",
            Reason::MissingField => "missing_field",
            Reason::InvalidValue => "invalid_value",
            Reason::TimeOutOfRange => "time_out_of_range",
            Reason::InvalidMessage => "invalid_message",
        }
    }
}

/// Why one event was rejected: its kind and a message that says what to send instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl PartialEq<&str> for Rejection {
    fn eq(&self, other: &&str) -> bool {
        self.message == *other
    }
}

/// Decodes and validates records for one stream.
pub struct RowDecoder<'a> {
    stream: &'a StreamDef,
    now: Timestamp,
    max_future: Interval,
    /// Event times after this are too far in the future.
    newest: Timestamp,
    /// Event times before this are past the stream's retention.
    oldest: Option<Timestamp>,
    /// What the flat path found for each column ([`Seen`]), reused from event to event.
    seen: RefCell<Vec<Seen>>,
    /// Per column, its name as the flat path compares it in place with a JSON key's raw text,
    /// `None` if the name could not be matched so (it holds a quote, a backslash or a control
    /// character).
    names: Vec<Option<Name>>,
    /// The columns with a list of allowed values.
    allowed: Vec<usize>,
    /// The columns an event without a value for them does not simply leave NULL: those with a
    /// default or `NOT NULL`.
    filled: Vec<usize>,
    /// The date of the event time read last (the events of a batch mostly share theirs).
    dates: Shared<DateCache>,
}

/// A column name as the flat path compares it with a key: names of up to eight bytes as one
/// word (their bytes and a mask), longer ones byte by byte.
struct Name {
    len: usize,
    word: u64,
    mask: u64,
}

impl Name {
    fn new(name: &str) -> Option<Name> {
        if name.bytes().any(|b| matches!(b, b'"' | b'\\' | 0..=0x1f)) {
            return None;
        }
        let len = name.len();
        let mut bytes = [0u8; 8];
        let head = len.min(8);
        bytes[..head].copy_from_slice(&name.as_bytes()[..head]);
        Some(Name {
            len,
            word: u64::from_le_bytes(bytes),
            mask: if len >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * len)) - 1
            },
        })
    }

    /// Whether the key starting at `b[at]` (after its opening quote) is this name: its bytes,
    /// then the closing quote. A plain name so followed is exactly the key the scan finds.
    #[inline(always)]
    fn matches(&self, b: &[u8], at: usize, name: &str) -> bool {
        if b.get(at + self.len) != Some(&b'"') {
            return false;
        }
        match b.get(at..at + 8) {
            Some(w) if self.len <= 8 => {
                u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) & self.mask == self.word
            }
            _ => &b[at..at + self.len] == name.as_bytes(),
        }
    }
}

/// What the flat path read for one column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Absent,
    Null,
    Value,
}

/// One cell as read from the input, before defaults.
enum Cell {
    Absent,
    Null,
    Value(Value),
}

impl<'a> RowDecoder<'a> {
    pub fn new(stream: &'a StreamDef, now: Timestamp, max_future: Interval) -> RowDecoder<'a> {
        let mut decoder = RowDecoder {
            stream,
            now,
            max_future,
            newest: now,
            oldest: None,
            seen: RefCell::default(),
            names: stream.columns.iter().map(|c| Name::new(&c.name)).collect(),
            allowed: (stream.columns.iter().enumerate())
                .filter(|(_, c)| c.allowed.is_some())
                .map(|(i, _)| i)
                .collect(),
            filled: (stream.columns.iter().enumerate())
                .filter(|(_, c)| c.default.is_some() || c.not_null)
                .map(|(i, _)| i)
                .collect(),
            dates: Shared::default(),
        };
        decoder.set_now(now);
        decoder
    }

    /// Moves the decoder's notion of now (for long imports).
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
        self.newest = self.max_future.after(now);
        self.oldest = self.stream.retention.map(|r| r.before(now));
    }

    /// Decodes one JSON object.
    pub fn json(&self, text: &str) -> Result<Vec<Value>, Rejection> {
        if text.len() > MAX_EVENT_BYTES {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "the event is {} bytes; the limit is {MAX_EVENT_BYTES}",
                    text.len()
                ),
            ));
        }
        // Most events are flat objects of plain strings, numbers and literals: read those in
        // one pass; anything else (escapes, nesting, a problem to explain) takes the general
        // path below, which decides exactly as before.
        let mut seen = self.seen.borrow_mut();
        let mut row = Vec::with_capacity(self.stream.columns.len());
        if let Some(values) = self.flat(text, &mut row, &mut seen) {
            return self.complete(row, &seen, values);
        }
        drop(seen);
        self.general(text)
    }

    /// [`RowDecoder::json`] without the flat path: every event through serde, as before the flat
    /// path existed. For differential tests and fuzzing: both must always decide alike.
    pub fn general(&self, text: &str) -> Result<Vec<Value>, Rejection> {
        if let Some(depth) = too_deep(text.as_bytes()) {
            return Err(Rejection::new(
                Reason::Malformed,
                format!("the event nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}"),
            ));
        }
        let kind = match text.trim_start().as_bytes().first() {
            Some(b'{') => None,
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b'n') => Some("null"),
            Some(b't' | b'f') => Some("a boolean"),
            Some(b'-' | b'0'..=b'9') => Some("a number"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Err(Rejection::new(
                Reason::Malformed,
                format!("an event must be a JSON object, not {kind}"),
            ));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let mut cells = match de.deserialize_map(RowVisitor { decoder: self }) {
            Ok(Ok(cells)) => cells,
            Ok(Err(rejection)) => return Err(rejection),
            Err(e) => return Err(Rejection::new(Reason::Malformed, json_error(&e, text))),
        };
        if let Err(e) = de.end() {
            return Err(Rejection::new(Reason::Malformed, json_error(&e, text)));
        }
        self.finish(&mut cells)
    }

    /// Reads into `row` (and `seen`) a flat JSON object whose every field converts for its
    /// column, in one pass, and returns how many fields had a value; `None` for anything else —
    /// escapes, nested values, numbers where text is expected, unknown or repeated fields,
    /// values that do not fit, invalid JSON — which the general path then reads (and explains).
    /// For the inputs it accepts it gives exactly the cells the general path gives.
    fn flat(&self, text: &str, row: &mut Vec<Value>, seen: &mut Vec<Seen>) -> Option<usize> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let columns = &self.stream.columns;
        row.clear();
        row.resize_with(columns.len(), || Value::Null);
        seen.clear();
        seen.resize(columns.len(), Seen::Absent);
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return (skip_ws(b, i + 1) == b.len()).then_some(0);
        }
        let (mut expected, mut values) = (0, 0);
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            // Fields mostly come in column order: the expected name is compared in place
            // (a plain name followed by the closing quote is exactly the key the scan finds).
            let (index, end) = match (columns.get(expected), self.names.get(expected)) {
                (Some(c), Some(Some(name))) if name.matches(b, i + 1, &c.name) => {
                    (expected, i + 1 + name.len)
                }
                _ => {
                    let end = plain_string_end(b, i + 1)?;
                    (self.stream.column(&text[i + 1..end])?, end)
                }
            };
            i = skip_ws(b, end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            if seen[index] != Seen::Absent {
                return None;
            }
            expected = index + 1;
            let (value, next) = self.flat_value(text, i, index, &mut row[index])?;
            if value {
                seen[index] = Seen::Value;
                values += 1;
            } else {
                seen[index] = Seen::Null;
            }
            i = skip_ws(b, next);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => break,
                _ => return None,
            }
        }
        (skip_ws(b, i + 1) == b.len()).then_some(values)
    }

    /// Reads the value at `i` for column `index` into `slot` (left NULL for JSON `null`):
    /// whether there was a value, and where it ends.
    #[inline(always)]
    fn flat_value(
        &self,
        text: &str,
        i: usize,
        index: usize,
        slot: &mut Value,
    ) -> Option<(bool, usize)> {
        let b = text.as_bytes();
        let column = &self.stream.columns[index];
        match *b.get(i)? {
            b'"' => {
                let end = plain_string_end(b, i + 1)?;
                // The text as `&str` only where it is needed (slicing a `str` checks both ends).
                let s = || &text[i + 1..end];
                let cell = match column.ty {
                    Type::Text => Value::text(s()),
                    Type::Json => Value::Json(text[i..=end].into()),
                    // The common form, read directly; a plain string holds no NUL.
                    Type::Timestamp => {
                        let mut dates = self.dates.get();
                        let t = Timestamp::parse_utc_fast_cached(&b[i + 1..end], &mut dates);
                        self.dates.set(dates);
                        match t {
                            Some(t) if t.is_storable() => Value::Timestamp(t),
                            _ => text_cell(column.ty, s()).ok()?,
                        }
                    }
                    ty => text_cell(ty, s()).ok()?,
                };
                *slot = cell;
                Some((true, end + 1))
            }
            b'n' => b[i..].starts_with(b"null").then_some((false, i + 4)),
            b't' | b'f' => {
                let (value, len) = if b[i..].starts_with(b"true") {
                    (true, 4)
                } else if b[i..].starts_with(b"false") {
                    (false, 5)
                } else {
                    return None;
                };
                let cell = match column.ty {
                    Type::Boolean => Value::Bool(value),
                    Type::Json => Value::Json(text[i..i + len].into()),
                    _ => return None,
                };
                *slot = cell;
                Some((true, i + len))
            }
            // `-0` is left to the general path, which reads it as serde does.
            b'-' | b'0'..=b'9' if !b[i..].starts_with(b"-0") => {
                let (end, integral) = number_end(b, i)?;
                let number = &text[i..end];
                let cell = match column.ty {
                    Type::BigInt if integral => Value::Int(number.parse().ok()?),
                    Type::Double => {
                        let d: f64 = number.parse().ok()?;
                        if !d.is_finite() {
                            return None;
                        }
                        Value::Double(d)
                    }
                    Type::Decimal { .. } => text_cell(column.ty, number).ok()?,
                    Type::Json => Value::Json(number.into()),
                    _ => return None,
                };
                *slot = cell;
                Some((true, end))
            }
            _ => None,
        }
    }

    /// Maps a CSV header to column indexes.
    pub fn csv_header(&self, header: &[&str]) -> Result<Vec<usize>, String> {
        let mut seen = Vec::new();
        for name in header {
            let name = name.trim();
            let Some(index) = self.stream.column(name) else {
                return Err(format!(
                    "the CSV header names column '{name}', {}",
                    self.columns_hint()
                ));
            };
            if seen.contains(&index) {
                return Err(format!("the CSV header names column '{name}' twice"));
            }
            seen.push(index);
        }
        Ok(seen)
    }

    /// Decodes one CSV record whose fields are in the order of `columns`. An empty field is NULL.
    pub fn csv(&self, columns: &[usize], fields: &[&str]) -> Result<Vec<Value>, Rejection> {
        let size: usize = fields.iter().map(|f| f.len() + 1).sum();
        if size > MAX_EVENT_BYTES {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!("the record is {size} bytes; the limit is {MAX_EVENT_BYTES}"),
            ));
        }
        if fields.len() != columns.len() {
            return Err(Rejection::new(
                Reason::Malformed,
                format!(
                    "the record has {} fields, the header has {}",
                    fields.len(),
                    columns.len()
                ),
            ));
        }
        let mut cells: Vec<Cell> = (0..self.stream.columns.len())
            .map(|_| Cell::Absent)
            .collect();
        for (&index, field) in columns.iter().zip(fields) {
            let column = &self.stream.columns[index];
            cells[index] = if field.is_empty() {
                Cell::Null
            } else {
                Cell::Value(text_cell(column.ty, field).map_err(|e| {
                    Rejection::new(
                        Reason::InvalidValue,
                        format!("field '{}': {e}", column.name),
                    )
                })?)
            };
        }
        self.finish(&mut cells)
    }

    fn columns_hint(&self) -> String {
        let names: Vec<&str> = self
            .stream
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        format!(
            "which stream {} does not have; its columns are {}",
            self.stream.name,
            names.join(", ")
        )
    }

    fn unknown_field(&self, key: &str) -> Rejection {
        Rejection::new(
            Reason::UnknownField,
            format!("unknown field '{key}', {}", self.columns_hint()),
        )
    }

    /// [`RowDecoder::complete`] for the cells the general path and CSV read.
    fn finish(&self, cells: &mut [Cell]) -> Result<Vec<Value>, Rejection> {
        let mut row = Vec::with_capacity(cells.len());
        let mut seen = Vec::with_capacity(cells.len());
        let mut values = 0;
        for cell in cells.iter_mut() {
            let (value, state) = match std::mem::replace(cell, Cell::Absent) {
                Cell::Value(v) => {
                    values += 1;
                    (v, Seen::Value)
                }
                Cell::Absent => (Value::Null, Seen::Absent),
                Cell::Null => (Value::Null, Seen::Null),
            };
            row.push(value);
            seen.push(state);
        }
        self.complete(row, &seen, values)
    }

    /// Applies defaults and NOT NULL, and checks allowed values and the event time, column by
    /// column, for a row of which `values` columns had a value (`seen` says which) and the
    /// others are NULL; no pass over the columns when every column with a default or `NOT NULL`
    /// had a value and no column has a list of allowed values.
    fn complete(
        &self,
        mut row: Vec<Value>,
        seen: &[Seen],
        values: usize,
    ) -> Result<Vec<Value>, Rejection> {
        let columns = &self.stream.columns;
        // A column without a value is left NULL by the flat path, which is what it gets unless
        // it has a default or must not be null.
        if values < columns.len() && self.filled.iter().any(|&i| seen[i] != Seen::Value) {
            for (index, column) in columns.iter().enumerate() {
                match seen[index] {
                    Seen::Value => {}
                    Seen::Absent => row[index] = self.missing(column, true)?,
                    Seen::Null => row[index] = self.missing(column, false)?,
                }
                if column.allowed.is_some() {
                    self.check_allowed(column, &row[index])?;
                }
            }
        } else {
            for &index in &self.allowed {
                self.check_allowed(&columns[index], &row[index])?;
            }
        }
        self.check_time(&row)?;
        Ok(row)
    }

    /// The value of a column without one in the event (`absent`) or with a null: its default,
    /// NULL, or the rejection of a required field.
    fn missing(&self, column: &ColumnDef, absent: bool) -> Result<Value, Rejection> {
        if column.default.is_some() {
            return Ok(self.default(column));
        }
        if column.not_null {
            return Err(Rejection::new(
                Reason::MissingField,
                if absent {
                    format!("missing required field '{}'", column.name)
                } else {
                    format!("field '{}' must not be null", column.name)
                },
            ));
        }
        Ok(Value::Null)
    }

    fn check_allowed(&self, column: &ColumnDef, value: &Value) -> Result<(), Rejection> {
        if let (Some(allowed), Value::Text(s)) = (column.allowed, value)
            && !allowed.contains(&s.as_ref())
        {
            return Err(Rejection::new(
                Reason::InvalidValue,
                format!(
                    "field '{}' is '{s}'; it must be one of {}",
                    column.name,
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The event time: not too far in the future, not older than the stream's retention.
    fn check_time(&self, row: &[Value]) -> Result<(), Rejection> {
        let time_column = &self.stream.columns[self.stream.event_time];
        if let Value::Timestamp(t) = row[self.stream.event_time] {
            if t > self.newest {
                return Err(Rejection::new(
                    Reason::TimeOutOfRange,
                    format!(
                        "field '{}': {t} is more than {} in the future (now is {})",
                        time_column.name, self.max_future, self.now
                    ),
                ));
            }
            if let (Some(retention), Some(oldest)) = (self.stream.retention, self.oldest)
                && t < oldest
            {
                return Err(Rejection::new(
                    Reason::TimeOutOfRange,
                    format!(
                        "field '{}': {t} is older than the stream's retention of {retention}",
                        time_column.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn default(&self, column: &ColumnDef) -> Value {
        match column.default {
            Some(ColumnDefault::Uuid) => Value::text(&uuid::Uuid::now_v7().to_string()),
            Some(ColumnDefault::ReceivedAt) => Value::Timestamp(self.now),
            Some(ColumnDefault::Text(s)) => Value::text(s),
            None => Value::Null,
        }
    }
}

/// Decodes one JSON object as a row of a table: every field a column of the table, each value
/// converted for its column's type as event fields are, `NOT NULL` columns (the key among them)
/// present. The same limits as events (size, depth, NUL characters).
pub fn table_row(table: &TableDef, text: &str) -> Result<Vec<Value>, Rejection> {
    if text.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!(
                "the row is {} bytes; the limit is {MAX_EVENT_BYTES}",
                text.len()
            ),
        ));
    }
    if let Some(depth) = too_deep(text.as_bytes()) {
        return Err(Rejection::new(
            Reason::Malformed,
            format!("the row nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}"),
        ));
    }
    let fields: Vec<(String, &RawValue)> =
        match serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(text) {
            Ok(map) => map.into_iter().collect(),
            Err(_) => {
                let message = match serde_json::from_str::<&RawValue>(text) {
                    Ok(_) => "a table row must be a JSON object".to_owned(),
                    Err(e) => json_error(&e, text),
                };
                return Err(Rejection::new(Reason::Malformed, message));
            }
        };
    let mut row = vec![Value::Null; table.columns.len()];
    let mut seen = vec![false; table.columns.len()];
    for (name, raw) in fields {
        let Some(index) = table.column(&name) else {
            let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(Rejection::new(
                Reason::UnknownField,
                format!(
                    "unknown field '{name}', which table {} does not have; its columns are {}",
                    table.name,
                    names.join(", ")
                ),
            ));
        };
        let column = &table.columns[index];
        seen[index] = true;
        match json_cell(column, raw) {
            Ok(Cell::Value(v)) => row[index] = v,
            Ok(_) => {}
            Err(e) => {
                return Err(Rejection::new(
                    Reason::InvalidValue,
                    format!("field '{}': {e}", column.name),
                ));
            }
        }
    }
    for (i, column) in table.columns.iter().enumerate() {
        if column.not_null && row[i] == Value::Null {
            let message = if seen[i] {
                format!("field '{}' must not be null", column.name)
            } else {
                format!("missing required field '{}'", column.name)
            };
            return Err(Rejection::new(Reason::MissingField, message));
        }
    }
    Ok(row)
}

/// Converts a JSON field for a column.
fn json_cell(column: &ColumnDef, raw: &RawValue) -> Result<Cell, String> {
    let text = raw.get();
    let ty = column.ty;
    let kind = match text.as_bytes().first() {
        Some(b'n') => return Ok(Cell::Null),
        Some(b'"') => {
            let s: Cow<'_, str> =
                serde_json::from_str(text).map_err(|e| format!("invalid string: {e}"))?;
            if s.contains('\0') {
                return Err("NUL characters are not allowed".into());
            }
            return Ok(Cell::Value(match ty {
                Type::Text => Value::text(&s),
                Type::Json => Value::Json(text.into()),
                _ => text_cell(ty, &s)?,
            }));
        }
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    };
    if ty == Type::Json {
        if has_nul_escape(text) {
            return Err("NUL characters are not allowed".into());
        }
        return Ok(Cell::Value(Value::Json(text.into())));
    }
    Ok(Cell::Value(match (kind, ty) {
        ("a boolean", Type::Boolean) => Value::Bool(text == "true"),
        ("a number", Type::Text) | ("a boolean", Type::Text) => Value::text(text),
        ("a number", Type::Timestamp) => {
            return Err(format!(
                "{text} is a number; send the time as RFC 3339 text such as \"2026-03-29T22:00:00Z\""
            ));
        }
        ("a number", _) => text_cell(ty, text)?,
        (kind, ty) => return Err(format!("expected {}, got {kind}", describe(ty))),
    }))
}

/// Whether valid JSON text holds an escaped NUL (`\\u0000`) in one of its strings. Escapes are
/// read in order, so an escaped backslash followed by `u0000` (the text `\\u0000`) is not one.
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            // The escaped character (or the `u` of a `\\uXXXX`, whose digits are not `\\`).
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fn describe(ty: Type) -> String {
    match ty {
        Type::Text => "text".into(),
        Type::Boolean => "true or false".into(),
        Type::BigInt => "a whole number".into(),
        Type::Double => "a number".into(),
        Type::Decimal { precision, scale } => format!("a DECIMAL({precision},{scale}) number"),
        Type::Timestamp => "an RFC 3339 timestamp".into(),
        Type::Json => "JSON".into(),
    }
}

/// Parses text (a CSV field, a JSON string or number) for a column type, explaining failures.
pub fn text_cell(ty: Type, text: &str) -> Result<Value, String> {
    if text.contains('\0') {
        return Err("NUL characters are not allowed".into());
    }
    let shown = || -> String { text.chars().take(60).collect() };
    match ty {
        Type::Decimal { precision, scale } => {
            let d = Decimal::parse(text.trim()).map_err(|e| match e {
                ParseDecimalError::Invalid => format!("'{}' is not a decimal number", shown()),
                ParseDecimalError::TooManyDigits => format!("{} has more than 38 digits", shown()),
            })?;
            d.fit(precision, scale).map(Value::Decimal).map_err(|e| match e {
                FitError::TooManyDecimals { decimals } => {
                    format!("{} has {decimals} decimal places; DECIMAL({precision},{scale}) keeps {scale}", shown())
                }
                FitError::Overflow => format!(
                    "{} overflows DECIMAL({precision},{scale}), which holds at most {} digits before the point",
                    shown(),
                    precision - scale
                ),
            })
        }
        Type::BigInt => parse_text(text, ty).ok_or_else(|| {
            if text.trim().parse::<f64>().is_ok_and(f64::is_finite)
                && !text.contains(['.', 'e', 'E'])
            {
                format!("{} is outside the BIGINT range", shown())
            } else {
                format!("'{}' is not a whole number", shown())
            }
        }),
        Type::Double => {
            parse_text(text, ty).ok_or_else(|| format!("'{}' is not a finite number", shown()))
        }
        Type::Boolean => parse_text(text, ty)
            .ok_or_else(|| format!("'{}' is not a boolean; use true or false", shown())),
        Type::Timestamp => {
            let value = parse_text(text, ty).ok_or_else(|| {
                format!(
                    "'{}' is not a timestamp; use RFC 3339 such as 2026-03-29T22:00:00Z",
                    shown()
                )
            })?;
            if let Value::Timestamp(t) = value
                && !t.is_storable()
            {
                return Err(format!(
                    "'{}' is outside the supported time range, {} to {}",
                    shown(),
                    Timestamp::MIN_STORED,
                    Timestamp::MAX_STORED
                ));
            }
            Ok(value)
        }
        Type::Json => {
            if too_deep(text.as_bytes()).is_some() {
                return Err(format!(
                    "the JSON nests deeper than {MAX_JSON_DEPTH} levels"
                ));
            }
            if has_nul_escape(text) {
                return Err("NUL characters are not allowed".into());
            }
            parse_text(text, ty).ok_or_else(|| format!("'{}' is not valid JSON", shown()))
        }
        Type::Text => Ok(Value::text(text)),
    }
}

/// The nesting depth of JSON text when it is deeper than [`MAX_JSON_DEPTH`].
pub fn too_deep(bytes: &[u8]) -> Option<usize> {
    // Nesting can be no deeper than the number of opening brackets; counting them vectorizes,
    // so typical events skip the exact scan.
    let opens = bytes.iter().filter(|&&b| b == b'{' || b == b'[').count();
    if opens <= MAX_JSON_DEPTH {
        return None;
    }
    let depth = nesting_depth(bytes);
    (depth > MAX_JSON_DEPTH).then_some(depth)
}

/// The deepest nesting of arrays and objects in JSON text, outside strings.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The index of the quote that closes a string starting at `start`, if the string has no
/// escape and no control character (the flat path's strings).
fn plain_string_end(b: &[u8], start: usize) -> Option<usize> {
    // Eight bytes at a time (no set-up, unlike a vectorized search, for short strings): the
    // lowest byte flagged as a quote, a backslash or a control character decides. Each flag
    // word's lowest set bit is exact (a false flag can only sit above a true one), so the
    // lowest bit of their union is the first such byte.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = start;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let flags = zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if flags != 0 {
            let at = i + (flags.trailing_zeros() / 8) as usize;
            return (b[at] == b'"').then_some(at);
        }
        i += 8;
    }
    for (j, &c) in b.get(i..)?.iter().enumerate() {
        match c {
            b'"' => return Some(i + j),
            b'\\' | 0..=0x1f => return None,
            _ => {}
        }
    }
    None
}

/// The end of a JSON number starting at `i` (strictly its grammar), and whether it is an
/// integer (no fraction, no exponent).
fn number_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let digits = |b: &[u8], mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    let mut integral = true;
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
        integral = false;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
        integral = false;
    }
    Some((i, integral))
}

/// A serde error as a reason, with the column where it happened.
pub fn json_error(e: &serde_json::Error, text: &str) -> String {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    if e.line() <= 1 && e.column() > 0 && text.len() > 1 {
        format!("invalid JSON at column {}: {message}", e.column())
    } else if e.line() > 1 {
        format!(
            "invalid JSON at line {} column {}: {message}",
            e.line(),
            e.column()
        )
    } else {
        format!("invalid JSON: {message}")
    }
}

/// Reads an event object into cells, each field parsed for its column's type. A field that is
/// wrong for its column is not a JSON error: the visitor keeps reading (the JSON must still be
/// valid) and returns the first reason.
struct RowVisitor<'d, 'a> {
    decoder: &'d RowDecoder<'a>,
}

impl<'de> Visitor<'de> for RowVisitor<'_, '_> {
    type Value = Result<Vec<Cell>, Rejection>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object (an event)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let stream = self.decoder.stream;
        let mut cells: Vec<Cell> = (0..stream.columns.len()).map(|_| Cell::Absent).collect();
        let mut error: Option<Rejection> = None;
        // Fields usually come in the stream's column order: try the next column first.
        let mut expected = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let index = match stream.columns.get(expected) {
                Some(c) if c.name == key => Some(expected),
                _ => stream.column(&key),
            };
            if let Some(i) = index {
                expected = i + 1;
            }
            match index {
                Some(i) if error.is_none() && matches!(cells[i], Cell::Absent) => {
                    let seed = CellSeed {
                        column: &stream.columns[i],
                    };
                    match map.next_value_seed(seed)? {
                        Ok(cell) => cells[i] = cell,
                        Err(reason) => {
                            error = Some(Rejection::new(
                                Reason::InvalidValue,
                                format!("field '{key}': {reason}"),
                            ));
                        }
                    }
                }
                Some(_) => {
                    map.next_value::<IgnoredAny>()?;
                    error.get_or_insert_with(|| {
                        Rejection::new(Reason::Malformed, format!("field '{key}' appears twice"))
                    });
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                    error.get_or_insert_with(|| self.decoder.unknown_field(&key));
                }
            }
        }
        Ok(match error {
            Some(reason) => Err(reason),
            None => Ok(cells),
        })
    }
}

/// Parses one field for its column.
struct CellSeed<'a> {
    column: &'a ColumnDef,
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = Result<Cell, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.column.ty {
            // Decimals need every digit of a number, and JSON keeps its text: read both raw.
            Type::Decimal { .. } | Type::Json => {
                let raw: &'de RawValue = serde::Deserialize::deserialize(d)?;
                Ok(json_cell(self.column, raw))
            }
            ty => d.deserialize_any(CellVisitor { ty }),
        }
    }
}

struct CellVisitor {
    ty: Type,
}

impl CellVisitor {
    fn wrong(&self, got: &str) -> Result<Cell, String> {
        Err(format!("expected {}, got {got}", describe(self.ty)))
    }

    fn number(&self, text: String) -> Result<Cell, String> {
        match self.ty {
            Type::Text => Ok(Cell::Value(Value::text(&text))),
            Type::Timestamp => Err(format!(
                "{text} is a number; send the time as RFC 3339 text such as \"2026-03-29T22:00:00Z\""
            )),
            Type::Boolean => self.wrong("a number"),
            ty => text_cell(ty, &text).map(Cell::Value),
        }
    }
}

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Result<Cell, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Cell::Null))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Cell::Null))
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(match self.ty {
            Type::Boolean => Ok(Cell::Value(Value::Bool(b))),
            Type::Text => Ok(Cell::Value(Value::text(if b { "true" } else { "false" }))),
            _ => self.wrong("a boolean"),
        })
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(match self.ty {
            Type::BigInt => Ok(Cell::Value(Value::Int(i))),
            Type::Double => Ok(Cell::Value(Value::Double(i as f64))),
            _ => self.number(i.to_string()),
        })
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Self::Value, E> {
        Ok(match self.ty {
            Type::BigInt => match i64::try_from(u) {
                Ok(i) => Ok(Cell::Value(Value::Int(i))),
                Err(_) => Err(format!("{u} is outside the BIGINT range")),
            },
            Type::Double => Ok(Cell::Value(Value::Double(u as f64))),
            _ => self.number(u.to_string()),
        })
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Self::Value, E> {
        Ok(match self.ty {
            Type::Double if f.is_finite() => Ok(Cell::Value(Value::Double(f))),
            Type::Double => Err("the number is out of the DOUBLE range".into()),
            Type::BigInt if f.fract() == 0.0 && f.abs() >= 9.2e18 => {
                Err(format!("{f} is outside the BIGINT range"))
            }
            Type::BigInt => Err(format!("'{f}' is not a whole number")),
            _ => self.number(f.to_string()),
        })
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        self.visit_str(s)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if s.contains('\0') {
            return Ok(Err("NUL characters are not allowed".into()));
        }
        Ok(match self.ty {
            Type::Text => Ok(Cell::Value(Value::text(s))),
            ty => text_cell(ty, s).map(Cell::Value),
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.wrong("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.wrong("an object"))
    }
}

/// Reads an object key without allocating when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_views::Catalog;
    use tally_views::sql::apply;

    fn with_decoder(f: impl FnOnce(&RowDecoder<'_>)) {
        let catalog = apply(
            &Catalog::new(),
            "CREATE STREAM pay (id TEXT NOT NULL, amount DECIMAL(10,2) NOT NULL, n BIGINT, ok BOOLEAN, meta JSON,
                                at TIMESTAMP NOT NULL) WITH (event_time = 'at', retention = '30 days');
             CREATE MATERIALIZED VIEW per AS SELECT id, sum(amount / n) AS r FROM pay GROUP BY id;",
        )
        .unwrap()
        .catalog;
        let stream = catalog.stream("pay").unwrap();
        let now = Timestamp::parse("2026-03-30T00:00:00Z").unwrap();
        f(&RowDecoder::new(stream, now, Interval::Days(1)));
    }

    #[track_caller]
    fn reject(line: &str, reason: &str) {
        with_decoder(|d| assert_eq!(d.json(line).unwrap_err(), reason));
    }

    #[test]
    fn accepts_good_events_exactly() {
        with_decoder(|d| {
            let row = d
                .json(r#"{"id":"a","amount":12.50,"n":2,"ok":true,"meta":{"k":[1,2]},"at":"2026-03-29T10:00:00+02:00"}"#)
                .unwrap();
            assert_eq!(row[1].to_string(), "12.50");
            assert_eq!(row[4], Value::Json("{\"k\":[1,2]}".into()));
            assert_eq!(row[5].to_string(), "2026-03-29T08:00:00Z");
            let row = d
                .json(r#"{"id":"b","amount":"0.1","at":"2026-03-29T00:00:00Z","n":null}"#)
                .unwrap();
            assert_eq!(row[2], Value::Null);
        });
    }

    #[test]
    fn rejects_with_reasons() {
        reject(
            r#"{"id":"a","at":"2026-03-29T00:00:00Z"}"#,
            "missing required field 'amount'",
        );
        reject(
            r#"{"id":"a","amount":null,"at":"2026-03-29T00:00:00Z"}"#,
            "field 'amount' must not be null",
        );
        reject(
            r#"{"id":"a","amount":1.234,"at":"2026-03-29T00:00:00Z"}"#,
            "field 'amount': 1.234 has 3 decimal places; DECIMAL(10,2) keeps 2",
        );
        reject(
            r#"{"id":"a","amount":123456789,"at":"2026-03-29T00:00:00Z"}"#,
            "field 'amount': 123456789 overflows DECIMAL(10,2), which holds at most 8 digits before the point",
        );
        reject(
            r#"{"id":"a","amount":1,"n":"x","at":"2026-03-29T00:00:00Z"}"#,
            "field 'n': 'x' is not a whole number",
        );
        reject(
            r#"{"id":"a","amount":1,"n":1.5,"at":"2026-03-29T00:00:00Z"}"#,
            "field 'n': '1.5' is not a whole number",
        );
        reject(
            r#"{"id":7,"amount":1,"ok":"maybe","at":"2026-03-29T00:00:00Z"}"#,
            "field 'ok': 'maybe' is not a boolean; use true or false",
        );
        reject(
            r#"{"id":"a","amount":1,"at":1711749600}"#,
            "field 'at': 1711749600 is a number; send the time as RFC 3339 text such as \"2026-03-29T22:00:00Z\"",
        );
        reject(
            r#"{"id":"a","amount":1,"at":"2026-03-31T12:00:00Z"}"#,
            "field 'at': 2026-03-31T12:00:00Z is more than 1 day in the future (now is 2026-03-30T00:00:00Z)",
        );
        reject(
            r#"{"id":"a","amount":1,"at":"2026-01-01T00:00:00Z"}"#,
            "field 'at': 2026-01-01T00:00:00Z is older than the stream's retention of 30 days",
        );
        reject(
            r#"{"id":"a\u0000","amount":1,"at":"2026-03-29T00:00:00Z"}"#,
            "field 'id': NUL characters are not allowed",
        );
        reject(
            r#"{"id":"a","amount":1,"meta":{"k\u0000":1},"at":"2026-03-29T00:00:00Z"}"#,
            "field 'meta': NUL characters are not allowed",
        );
        reject(
            r#"{"id":"a","amount":1,"at":"2026-03-29T00:00:00Z","Amount":2}"#,
            "unknown field 'Amount', which stream pay does not have; its columns are id, amount, n, ok, meta, at",
        );
        reject(r#"{"id":"a","id":"b"}"#, "field 'id' appears twice");
        reject(
            r#"["not","an","object"]"#,
            "an event must be a JSON object, not an array",
        );
        reject(
            "{not json",
            "invalid JSON at column 2: key must be a string",
        );
        reject(
            r#"{"id":"a","amount":1,}"#,
            "invalid JSON at column 22: trailing comma",
        );
        // A view whose expression fails on the event does not reject it (the view gets NULL).
        with_decoder(|d| {
            assert!(
                d.json(r#"{"id":"a","amount":2,"n":0,"at":"2026-03-29T00:00:00Z"}"#)
                    .is_ok()
            );
        });
        let deep = format!(
            r#"{{"id":"a","meta":{}1{}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        reject(&deep, "the event nests 71 levels deep; the limit is 64");
        let big = format!(r#"{{"id":"{}"}}"#, "x".repeat(40_000));
        reject(&big, "the event is 40009 bytes; the limit is 32768");
    }

    #[test]
    fn csv_records() {
        with_decoder(|d| {
            let cols = d.csv_header(&["id", "amount", "at", "n"]).unwrap();
            let row = d
                .csv(&cols, &["a", "3.10", "2026-03-29 12:00:00", ""])
                .unwrap();
            assert_eq!(row[1].to_string(), "3.10");
            assert_eq!(row[2], Value::Null);
            assert_eq!(
                d.csv(&cols, &["a", "3.10"]).unwrap_err(),
                "the record has 2 fields, the header has 4"
            );
            assert_eq!(
                d.csv_header(&["id", "amt"]).unwrap_err(),
                "the CSV header names column 'amt', which stream pay does not have; its columns are id, amount, n, ok, meta, at"
            );
        });
    }

    /// An escaped NUL in a JSON column is refused, from JSON and from CSV; an escaped backslash
    /// followed by `u0000` is text like any other (found by the `statsd_lines` fuzz target).
    #[test]
    fn nul_escapes_in_json_columns() {
        assert!(has_nul_escape(r#"{"a\u0000":1}"#));
        assert!(has_nul_escape(r#"["x\\\u0000"]"#));
        assert!(!has_nul_escape(r#"{"a\\u0000":1}"#));
        assert!(has_nul_escape(r#"{"a\u00001":1}"#));
        assert!(!has_nul_escape(r#"{"a":"\u0001"}"#));
        assert!(!has_nul_escape(r#"{"a":"\u0010\"\\"}"#));
        with_decoder(|d| {
            let row = d
                .json(r#"{"id":"a","amount":1,"meta":{"k\\u0000":"\\u0000"},"at":"2026-03-29T00:00:00Z"}"#)
                .unwrap();
            assert_eq!(row[4].to_string(), r#"{"k\\u0000":"\\u0000"}"#);
            let cols = d.csv_header(&["id", "amount", "at", "meta"]).unwrap();
            let refused = d
                .csv(
                    &cols,
                    &["a", "1", "2026-03-29 12:00:00", r#"{"k":"\u0000"}"#],
                )
                .unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("NUL characters are not allowed"),
                "{refused}"
            );
            d.csv(
                &cols,
                &["a", "1", "2026-03-29 12:00:00", r#"{"k":"\\u0000"}"#],
            )
            .unwrap();
        });
    }

    /// A deterministic source of indexes below `n` (xorshift), for the random events.
    fn below(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }

    /// The flat path decides exactly as the general one: random events, flat and not, valid
    /// and not, in any field order, with every kind of value for every column type.
    #[test]
    fn the_flat_path_agrees_with_the_general_one() {
        let catalog = apply(
            &Catalog::new(),
            "CREATE STREAM all_types (t TEXT NOT NULL, d DECIMAL(10,2), n BIGINT, x DOUBLE, ok BOOLEAN,
                                      j JSON, seen TIMESTAMP, at TIMESTAMP NOT NULL,
                                      eight_ch TEXT, a_long_column_name TEXT)
               WITH (event_time = 'at');",
        )
        .unwrap()
        .catalog;
        // A default and a list of allowed values, as built-in streams have them.
        let mut stream = StreamDef::clone(catalog.stream("all_types").unwrap());
        stream.columns[8].default = Some(ColumnDefault::Text("dflt"));
        stream.columns[9].allowed = Some(&["plain", "12.34"]);
        let stream = &stream;
        let now = Timestamp::parse("2026-03-30T00:00:00Z").unwrap();
        let decoder = RowDecoder::new(stream, now, Interval::Days(1));
        let values = [
            r#""plain""#,
            r#""with \"escape\"""#,
            r#""é unicode ✓""#,
            r#""12.34""#,
            r#""-0.5""#,
            r#""2026-03-29T10:00:00Z""#,
            r#""2026-03-29T10:00:00.123456Z""#,
            r#""2026-03-29T10:00:00.1234567891Z""#,
            r#""2026-02-30T10:00:00Z""#,
            r#""0000-01-01T00:00:00Z""#,
            r#""9999-12-31T00:00:00Z""#,
            r#""2026-03-29T10:00:00+02:00""#,
            r#""true""#,
            r#""""#,
            "0",
            "-0",
            "-0.0",
            "7",
            "-42",
            "9223372036854775807",
            "9223372036854775808",
            "1.5",
            "1e3",
            "1E-2",
            "-2.5e+10",
            "1e400",
            "01",
            "1.",
            ".5",
            "12.345",
            "123456789012.5",
            // More digits than a double holds: the nearest double is 1.5999999999999999 (the
            // event_json fuzz target found serde_json rounding it to 1.6 by default).
            "1.59999999999999990263",
            "0.1000000000000000055511151231257827021181583404541015625",
            "true",
            "false",
            "null",
            "nul",
            "tru",
            "[1,2]",
            r#"{"k":"v"}"#,
            r#"{"k":[{"a":null}]}"#,
            "[]",
            "{}",
            r#""\u0000""#,
        ];
        // Names of up to eight bytes and longer ones, and keys one byte short of or past them
        // (the flat path compares the expected name in place).
        let keys = [
            "t",
            "d",
            "n",
            "x",
            "ok",
            "j",
            "seen",
            "at",
            "other",
            "eight_ch",
            "eight_c",
            "eight_chx",
            "a_long_column_name",
            "a_long_column_nam",
            "a_long_column_namex",
            "t2",
        ];
        let mut next = below(0x9e37_79b9_7f4a_7c15);
        let spaces = ["", " ", "\n", " \t "];
        for _ in 0..20_000 {
            let mut fields = Vec::new();
            if next(3) > 0 {
                // Now is 2026-03-30T00:00:00Z and one day ahead is allowed: some are too new.
                let day = 29 + next(3);
                fields.push(format!(r#""at":"2026-03-{day}T{:02}:00:00Z""#, next(24)));
            }
            if next(3) > 0 {
                fields.push(r#""t":"x""#.to_owned());
            }
            // Up to every column once (and more, with repeats and unknown keys).
            for _ in 0..next(14) {
                let key = keys[next(keys.len())];
                let value = values[next(values.len())];
                let sp = spaces[next(spaces.len())];
                fields.push(format!(r#"{sp}"{key}"{sp}:{sp}{value}{sp}"#));
            }
            let n = fields.len();
            if next(2) == 0 {
                for k in 0..n {
                    fields.swap(k, next(n));
                }
            } else {
                // In column order, as most clients send them.
                let position = |f: &String| {
                    let key = f.trim_start().trim_start_matches('"');
                    let key = &key[..key.find('"').unwrap_or(0)];
                    stream.column(key).unwrap_or(usize::MAX)
                };
                fields.sort_by_key(position);
            }
            let text = format!(
                "{}{{{}}}{}",
                spaces[next(4)],
                fields.join(","),
                spaces[next(4)]
            );
            let fast = decoder.json(&text);
            let general = decoder.general(&text);
            let same = match (&fast, &general) {
                (Ok(a), Ok(b)) => {
                    a.len() == b.len()
                        && a.iter().zip(b).all(|(x, y)| match (x, y) {
                            (Value::Double(p), Value::Double(q)) => p.to_bits() == q.to_bits(),
                            _ => x == y,
                        })
                }
                (Err(a), Err(b)) => a == b,
                _ => false,
            };
            assert!(same, "{text}\nflat path: {fast:?}\ngeneral: {general:?}");
        }
        // What rows complete to: a default for the defaulted column (the pass over the
        // columns), NULL for the other columns without a value, allowed values checked when
        // every defaulted or NOT NULL column had a value (no pass over the columns).
        let at = r#""at":"2026-03-29T10:00:00Z""#;
        for text in [
            format!(r#"{{"t":"x",{at}}}"#),
            format!(r#"{{"t":"x",{at},"eight_ch":null}}"#),
        ] {
            let row = decoder.json(&text).unwrap();
            assert_eq!(
                (&row[8], &row[9]),
                (&Value::text("dflt"), &Value::Null),
                "{text}"
            );
        }
        let reason = |text: String| decoder.json(&text).unwrap_err().reason;
        assert_eq!(reason(format!("{{{at}}}")), Reason::MissingField);
        assert_eq!(
            reason(format!(r#"{{"t":null,{at}}}"#)),
            Reason::MissingField
        );
        assert_eq!(
            reason(format!(r#"{{"t":"x",{at},"a_long_column_name":"nope"}}"#)),
            Reason::InvalidValue
        );
        let row = decoder.json(&format!(r#"{{"t":"x",{at},"a_long_column_name":"plain"}}"#));
        assert_eq!(row.unwrap()[9], Value::text("plain"));
        let filled = format!(r#"{{"t":"x",{at},"eight_ch":"y","a_long_column_name":"#);
        assert_eq!(reason(format!(r#"{filled}"nope"}}"#)), Reason::InvalidValue);
        let row = decoder.json(&format!(r#"{filled}"plain"}}"#)).unwrap();
        assert_eq!(row[8], Value::text("y"));
        assert_eq!(
            row[1..8].iter().filter(|v| v.is_null()).count(),
            6,
            "{row:?}"
        );
    }

    /// The same agreement on a stream with a list of allowed values, defaults and `NOT NULL`
    /// columns (the built-in `metrics`): every field present (where only the allowed values are
    /// checked), some missing or null (defaults, required fields), values allowed or not.
    #[test]
    fn the_flat_path_agrees_on_allowed_values_and_defaults() {
        let streams = tally_views::builtin::streams();
        let stream = streams.iter().find(|s| s.name == "metrics").unwrap();
        let now = Timestamp::parse("2026-03-30T00:00:00Z").unwrap();
        let decoder = RowDecoder::new(stream, now, Interval::Days(1));
        let mut next = below(0x2545_f491_4f6c_dd1d);
        let choices: [(&str, &[&str]); 6] = [
            ("name", &[r#""cpu""#, "null", "1"]),
            (
                "metric_type",
                &[r#""gauge""#, r#""counter""#, r#""bogus""#, "null"],
            ),
            ("value", &["1.5", "-2", "null", r#""x""#]),
            (
                "timestamp",
                &[
                    r#""2026-03-29T10:00:00Z""#,
                    r#""2026-04-02T10:00:00Z""#,
                    "null",
                ],
            ),
            // JSON scalars are read by the flat path, objects and arrays by the general one.
            ("tags", &[r#""s""#, "2", "true", r#"{"a":"b"}"#, "null"]),
            ("unit", &[r#""ms""#, "null"]),
        ];
        for _ in 0..5_000 {
            // The id's default is a fresh UUID each time: always sent, so both paths agree.
            let mut fields = vec![r#""id":"m-1""#.to_owned()];
            for (name, values) in choices {
                // Most events carry every field, in column order.
                if next(5) > 0 {
                    fields.push(format!(r#""{name}":{}"#, values[next(values.len())]));
                }
            }
            let text = format!("{{{}}}", fields.join(","));
            let fast = decoder.json(&text);
            let general = decoder.general(&text);
            assert_eq!(fast, general, "{text}");
        }
    }
}
