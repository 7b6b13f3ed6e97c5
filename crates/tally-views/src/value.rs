//! Column types and the values of events, group keys and results.
//!
//! A [`Value`] is 32 bytes. Text is a [`SmolStr`]: up to 23 bytes (event names, countries, user
//! ids) held in the value itself, so decoding, copying into a group key, comparing and dropping it
//! touch no heap and no reference count; longer text is an `Arc<str>`, so copying it is a
//! reference-count increment, not an allocation. Timestamps are UTC microseconds. Values of one
//! type are totally ordered (doubles by `total_cmp`, which is safe because NaN and infinities
//! never get past ingest), which is what `min`, `max`, exact distinct sets and result ordering use.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use smol_str::SmolStr;

use crate::decimal::Decimal;

/// The type of a stream column, an expression or a view column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Text,
    Boolean,
    BigInt,
    Double,
    Decimal { precision: u8, scale: u8 },
    Timestamp,
    Json,
}

impl Type {
    /// Whether arithmetic and numeric aggregates accept the type.
    pub fn is_numeric(self) -> bool {
        matches!(self, Type::BigInt | Type::Double | Type::Decimal { .. })
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Text => f.write_str("TEXT"),
            Type::Boolean => f.write_str("BOOLEAN"),
            Type::BigInt => f.write_str("BIGINT"),
            Type::Double => f.write_str("DOUBLE"),
            Type::Decimal { precision, scale } => write!(f, "DECIMAL({precision},{scale})"),
            Type::Timestamp => f.write_str("TIMESTAMP"),
            Type::Json => f.write_str("JSON"),
        }
    }
}

/// A UTC instant in microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The instant as a `jiff` timestamp.
    pub fn to_jiff(self) -> jiff::Timestamp {
        // Every stored timestamp passed `from_jiff` or parsing, so it is in jiff's range.
        jiff::Timestamp::from_microsecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// The earliest instant every store keeps: 0001-01-01T00:00:00Z.
    pub const MIN_STORED: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// The latest instant every store keeps, and every time computation handles (the time zone
    /// library stops a day later): 9999-12-30T00:00:00Z.
    pub const MAX_STORED: Timestamp = Timestamp(253_402_128_000_000_000);

    /// Whether every store keeps this instant: from 0001-01-01T00:00:00Z to
    /// 9999-12-30T00:00:00Z.
    pub fn is_storable(self) -> bool {
        (Timestamp::MIN_STORED..=Timestamp::MAX_STORED).contains(&self)
    }

    /// The instant of a `jiff` timestamp, truncated to microseconds.
    pub fn from_jiff(ts: jiff::Timestamp) -> Timestamp {
        Timestamp(ts.as_microsecond())
    }

    /// Parses RFC 3339 (`2026-03-29T22:00:00Z`, any offset) or, without an offset, a civil
    /// date-time or date taken as UTC (`2026-03-29 22:00:00`, `2026-03-29`).
    pub fn parse(text: &str) -> Option<Timestamp> {
        let text = text.trim();
        if let Some(t) = Timestamp::parse_utc_fast(text.as_bytes()) {
            return Some(t);
        }
        if let Ok(ts) = text.parse::<jiff::Timestamp>() {
            return Some(Timestamp::from_jiff(ts));
        }
        if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
            return dt
                .to_zoned(jiff::tz::TimeZone::UTC)
                .ok()
                .map(|z| Timestamp::from_jiff(z.timestamp()));
        }
        None
    }
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, the form nearly every client sends, without the general
    /// parser; `None` for anything else (the general parser then decides). What it accepts,
    /// [`Timestamp::parse`] reads alike.
    pub fn parse_utc_fast(b: &[u8]) -> Option<Timestamp> {
        Timestamp::parse_utc_fast_cached(b, &mut DateCache::default())
    }

    /// [`Timestamp::parse_utc_fast`], with the date's digits and calendar arithmetic skipped when
    /// the date is the one `cache` read last (the events of a batch mostly share their date). The
    /// answer is the same with any cache.
    #[inline]
    pub fn parse_utc_fast_cached(b: &[u8], cache: &mut DateCache) -> Option<Timestamp> {
        let (date, rest) = b.split_first_chunk::<10>()?;
        let (last, time) = rest.split_last()?;
        if *last != b'Z' {
            return None;
        }
        let time = time_of_day(time)?;
        let day = match cache.0 {
            Some((cached, micros)) if cached == *date => micros,
            _ => {
                let micros = day_start(date)?;
                cache.0 = Some((*date, micros));
                micros
            }
        };
        Some(Timestamp(day + time))
    }
}

/// The date a [`Timestamp::parse_utc_fast_cached`] read last, and the microsecond its day starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct DateCache(Option<([u8; 10], i64)>);

/// The decimal number of `b`'s digits; `None` if any byte is not a digit.
#[inline(always)]
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// The microsecond (since the epoch) a day `YYYY-MM-DD` starts, if it is a valid date.
fn day_start(b: &[u8; 10]) -> Option<i64> {
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400_000_000)
}

/// The microseconds since midnight of `THH:MM:SS[.f{1,9}]` (fractions past microseconds
/// dropped), if it is a valid time of day.
#[inline(always)]
fn time_of_day(b: &[u8]) -> Option<i64> {
    let (head, fraction) = b.split_first_chunk::<9>()?;
    if head[0] != b'T' || head[3] != b':' || head[6] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        digits(&head[1..3])?,
        digits(&head[4..6])?,
        digits(&head[7..9])?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let micros = match fraction {
        [] => 0,
        [b'.', digits @ ..]
            if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) =>
        {
            let mut value = 0i64;
            for (i, d) in digits.iter().enumerate().take(6) {
                value += i64::from(d - b'0') * 10i64.pow(5 - i as u32);
            }
            value
        }
        _ => return None,
    };
    Some((hour * 3_600 + minute * 60 + second) * 1_000_000 + micros)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff prints `2026-03-29T22:00:00Z`, with fractional seconds only when there are some.
        write!(f, "{}", self.to_jiff())
    }
}

/// One value of a row.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Decimal(Decimal),
    Timestamp(Timestamp),
    Text(SmolStr),
    /// A JSON document in compact text form.
    Json(Arc<str>),
}

// Every cell of every row is a `Value`: keep it at 32 bytes (a decimal's 16-byte alignment made
// it 48).
const _: () = assert!(std::mem::size_of::<Value>() == 32);

impl Value {
    /// A text value.
    pub fn text(s: &str) -> Value {
        Value::Text(SmolStr::new(s))
    }

    /// What the value holds on the heap, approximately: text longer than 23 bytes and JSON
    /// their bytes and the shared allocation's two counts; shorter text is held in the value.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::Text(s) if s.is_heap_allocated() => s.len() + 16,
            Value::Json(s) => s.len() + 16,
            _ => 0,
        }
    }

    /// The text of a text or JSON value; `None` for any other.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Json(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The boolean, or `None` for NULL and non-booleans.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a double, for numeric values.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            Value::Decimal(d) => Some(d.to_f64()),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Double(_) => 3,
            Value::Decimal(_) => 4,
            Value::Timestamp(_) => 5,
            Value::Text(_) => 6,
            Value::Json(_) => 7,
        }
    }
}

impl PartialEq for Value {
    /// Inlined: group lookups and exact distinct sets compare values on every event.
    #[inline]
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Json(a), Value::Json(b)) => Arc::ptr_eq(a, b) || a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            _ => self.cmp(other) == Ordering::Equal,
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// A total order: values of one type by their natural order, NULL before everything, and
    /// values of different types by a fixed type rank (they never meet in one column).
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Double(a), Value::Double(b)) => {
                normalize_zero(*a).total_cmp(&normalize_zero(*b))
            }
            (Value::Decimal(a), Value::Decimal(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Json(a), Value::Json(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

fn normalize_zero(d: f64) -> f64 {
    if d == 0.0 { 0.0 } else { d }
}

impl Hash for Value {
    /// Without a type byte first (one write for integers, times and doubles): values of
    /// different types are never equal, so equal values still hash alike, and the values of one
    /// column (a group key's, a distinct set's) share a type. Only maps in memory use it;
    /// stored hashes (HyperLogLog's) have their own. Always inlined: a group lookup hashes
    /// every key value, and as a call it cost 188 more instructions an event (the rollups
    /// workload; docs/performance.md, eleventh round).
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => state.write_u8(1 + u8::from(*b)),
            Value::Int(i) => state.write_i64(*i),
            Value::Double(d) => state.write_u64(normalize_zero(*d).to_bits()),
            Value::Decimal(d) => d.hash(state),
            Value::Timestamp(t) => state.write_i64(t.0),
            Value::Text(s) => s.as_str().hash(state),
            Value::Json(s) => s.hash(state),
        }
    }
}

impl fmt::Display for Value {
    /// The output form of DESIGN.md: RFC 3339 UTC timestamps, exact decimals, `NULL` as empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Timestamp(t) => write!(f, "{t}"),
            Value::Text(s) => f.write_str(s),
            Value::Json(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_print_in_utc() {
        let t = Timestamp::parse("2026-03-29T22:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-03-29T22:00:00Z");
        let t = Timestamp::parse("2026-03-30T00:00:00+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-03-29T22:00:00Z");
        let t = Timestamp::parse("2026-03-29 22:00:00.5").unwrap();
        assert_eq!(t.to_string(), "2026-03-29T22:00:00.5Z");
        assert_eq!(
            Timestamp::parse("2026-03-29").unwrap().to_string(),
            "2026-03-29T00:00:00Z"
        );
        assert!(Timestamp::parse("yesterday").is_none());
        assert!(Timestamp::parse("1711749600").is_none());
    }

    proptest::proptest! {
        #[test]
        fn fast_timestamp_parse_agrees_with_jiff(secs in -62_000_000_000i64..250_000_000_000, micros in 0i64..1_000_000, digits in 0usize..7) {
            let t = jiff::Timestamp::from_microsecond(secs * 1_000_000 + micros - micros % 10i64.pow(6 - digits as u32)).unwrap();
            let text = format!("{}", t.strftime(&format!("%Y-%m-%dT%H:%M:%S{}Z", if digits == 0 { String::new() } else { format!("%.{digits}f") })));
            let general = text.parse::<jiff::Timestamp>().ok().map(Timestamp::from_jiff);
            proptest::prop_assert_eq!(Timestamp::parse_utc_fast(text.as_bytes()), general, "{}", text);
        }
    }

    /// A cache carried from text to text never changes an answer: valid and invalid dates
    /// and times, the same date again with another time, a valid date after an invalid one of
    /// the same digits.
    #[test]
    fn the_date_cache_changes_no_answer() {
        let dates = [
            "2026-06-01",
            "2026-06-02",
            "2024-02-29",
            "2026-02-29",
            "2026-13-01",
            "0001-01-01",
            "9999-12-29",
            "2026-06-0x",
            "2026/06/01",
        ];
        let times = [
            "T00:00:00Z",
            "T23:59:59.999999Z",
            "T12:34:56.5Z",
            "T24:00:00Z",
            "T12:60:00Z",
            "T12:00:00",
            "T12:00:00.Z",
            "T1:00:00Z",
            "T12:00:00.1234567891Z",
        ];
        let mut cache = DateCache::default();
        let (mut some, mut none) = (0, 0);
        let mut pick = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5_000 {
            pick ^= pick << 13;
            pick ^= pick >> 7;
            pick ^= pick << 17;
            let text = format!(
                "{}{}",
                dates[(pick % dates.len() as u64) as usize],
                times[((pick >> 20) % times.len() as u64) as usize]
            );
            let fresh = Timestamp::parse_utc_fast(text.as_bytes());
            let general = text
                .parse::<jiff::Timestamp>()
                .ok()
                .map(Timestamp::from_jiff);
            assert_eq!(
                Timestamp::parse_utc_fast_cached(text.as_bytes(), &mut cache),
                fresh,
                "{text}"
            );
            if let Some(t) = fresh {
                assert_eq!(Some(t), general, "{text}");
                some += 1;
            } else {
                none += 1;
            }
        }
        assert!(some > 500 && none > 500, "{some} parsed, {none} not");
    }

    #[test]
    fn fast_path_rejects_what_it_does_not_know() {
        for text in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01 00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_utc_fast(text.as_bytes()), None, "{text}");
        }
        assert_eq!(
            Timestamp::parse("2024-02-29T23:59:59.123456789Z")
                .unwrap()
                .to_string(),
            "2024-02-29T23:59:59.123456Z"
        );
    }

    #[test]
    fn values_order_within_a_type() {
        assert!(Value::Int(-1) < Value::Int(2));
        assert!(Value::Null < Value::Int(i64::MIN));
        assert!(Value::text("a") < Value::text("b"));
        assert_eq!(Value::Double(0.0), Value::Double(-0.0));
    }
}
