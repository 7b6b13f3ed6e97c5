//! Intervals and time buckets aligned in a tenant's time zone.
//!
//! Buckets are aligned to local wall-clock time, so a `1 day` bucket starts at local midnight
//! and lasts 23 or 25 hours on DST days. Three kinds of width behave differently:
//! - sub-day widths (`15 minutes`, `1 hour`) floor the local wall-clock time at the event's own
//!   UTC offset, so the repeated hour of a fall-back night is two distinct buckets;
//! - day widths (`1 day`, `1 week`) floor the local calendar date;
//! - month widths (`1 month`, `1 year`) floor the local year and month.
//!
//! Every bucket is stored as the UTC instant it starts at. All widths count from one origin,
//! Monday 2000-01-03 local time (as TimescaleDB does), so weeks start on Mondays and a bucket of
//! width `a` nests in a bucket of width `b` whenever `a` divides `b` (see [`Interval::nests_in`]).

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::value::Timestamp;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// 2000-01-03T00:00:00 (a Monday) as microseconds of "local time read as if it were UTC".
const ORIGIN_LOCAL_MICROS: i64 = 946_857_600 * MICROS_PER_SECOND;

fn origin_date() -> Date {
    jiff::civil::date(2000, 1, 3)
}

/// A length of time: an exact number of microseconds, a number of calendar days, or a number of
/// calendar months. Weeks are 7 days, quarters 3 months and years 12 months.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interval {
    Micros(i64),
    Days(i64),
    Months(i64),
}

impl Interval {
    /// Parses `'<n> <unit>'`, such as `'15 minutes'`, `'1 day'`, `'2 weeks'`, `'3 months'`.
    pub fn parse(text: &str) -> Result<Interval, String> {
        let text = text.trim();
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(0) => {
                return Err(format!(
                    "interval '{text}' must start with a whole number, as in '1 day'"
                ));
            }
            Some(split) => (&text[..split], text[split..].trim()),
            None => {
                return Err(format!(
                    "interval '{text}' needs a unit, as in '{text} days'"
                ));
            }
        };
        let n: i64 = number
            .parse()
            .map_err(|_| format!("interval '{text}' is too large"))?;
        if n <= 0 {
            return Err(format!("interval '{text}' must be positive"));
        }
        let unit = unit.to_ascii_lowercase();
        let unit = unit.strip_suffix('s').unwrap_or(&unit);
        let micros = |per: i64| {
            n.checked_mul(per)
                .map(Interval::Micros)
                .ok_or_else(|| format!("interval '{text}' is too large"))
        };
        let interval = match unit {
            "microsecond" | "u" => micros(1)?,
            "millisecond" | "m" => micros(1_000)?,
            "second" | "sec" => micros(MICROS_PER_SECOND)?,
            "minute" | "min" => micros(60 * MICROS_PER_SECOND)?,
            "hour" | "h" => micros(3_600 * MICROS_PER_SECOND)?,
            "day" | "d" => Interval::Days(n),
            "week" | "w" => Interval::Days(n.checked_mul(7).ok_or("interval is too large")?),
            "month" | "mon" => Interval::Months(n),
            "quarter" => Interval::Months(n.checked_mul(3).ok_or("interval is too large")?),
            "year" | "y" => Interval::Months(n.checked_mul(12).ok_or("interval is too large")?),
            _ => {
                return Err(format!(
                    "unknown unit in interval '{text}'; use seconds, minutes, hours, days, weeks, months, quarters or years"
                ));
            }
        };
        if let Interval::Days(d) | Interval::Months(d) = interval
            && d > 1_000_000
        {
            return Err(format!("interval '{text}' is too large"));
        }
        Ok(interval)
    }

    /// The interval of a `date_trunc` unit: `minute`, `hour`, `day`, `week`, `month`, `quarter`,
    /// `year` (and `second`).
    pub fn of_unit(unit: &str) -> Option<Interval> {
        Some(match unit.to_ascii_lowercase().as_str() {
            "second" => Interval::Micros(MICROS_PER_SECOND),
            "minute" => Interval::Micros(60 * MICROS_PER_SECOND),
            "hour" => Interval::Micros(3_600 * MICROS_PER_SECOND),
            "day" => Interval::Days(1),
            "week" => Interval::Days(7),
            "month" => Interval::Months(1),
            "quarter" => Interval::Months(3),
            "year" => Interval::Months(12),
            _ => return None,
        })
    }

    /// The start of the bucket of this width that holds `ts`, in the time zone `tz`.
    pub fn floor(self, ts: Timestamp, tz: &TimeZone) -> Timestamp {
        match self {
            Interval::Micros(width) => {
                let offset = i64::from(tz.to_offset(ts.to_jiff()).seconds()) * MICROS_PER_SECOND;
                let local = ts.0 + offset;
                let start =
                    ORIGIN_LOCAL_MICROS + (local - ORIGIN_LOCAL_MICROS).div_euclid(width) * width;
                Timestamp(start - offset)
            }
            Interval::Days(days) => {
                let date = tz.to_datetime(ts.to_jiff()).date();
                let since = origin_date()
                    .until(date)
                    .map(|s| i64::from(s.get_days()))
                    .unwrap_or(0);
                let start = since.div_euclid(days) * days;
                let start_date = origin_date()
                    .checked_add(jiff::Span::new().days(start))
                    .unwrap_or(date);
                start_of_day(start_date, tz).unwrap_or(ts)
            }
            Interval::Months(months) => {
                let date = tz.to_datetime(ts.to_jiff()).date();
                let index = (i64::from(date.year()) - 2000) * 12 + i64::from(date.month()) - 1;
                let start = index.div_euclid(months) * months;
                let year = 2000 + start.div_euclid(12);
                let month = start.rem_euclid(12) + 1;
                let start_date = Date::new(year as i16, month as i8, 1).unwrap_or(date);
                start_of_day(start_date, tz).unwrap_or(ts)
            }
        }
    }

    /// The bucket of `ts` as `(start, end)`, where every instant in `[start, end)` has the same
    /// bucket, so callers may cache it. When an offset change of the time zone falls inside the
    /// bucket, `end` is `start`: such a bucket is never cached, and each instant is floored anew.
    pub fn bucket(self, ts: Timestamp, tz: &TimeZone) -> (Timestamp, Timestamp) {
        let start = self.floor(ts, tz);
        let next = match self {
            Interval::Micros(width) => Some(Timestamp(start.0.saturating_add(width))),
            Interval::Days(days) => {
                let date = tz.to_datetime(start.to_jiff()).date();
                date.checked_add(jiff::Span::new().days(days))
                    .ok()
                    .and_then(|d| start_of_day(d, tz))
            }
            Interval::Months(months) => {
                let date = tz.to_datetime(start.to_jiff()).date();
                date.checked_add(jiff::Span::new().months(months))
                    .ok()
                    .and_then(|d| start_of_day(d, tz))
            }
        };
        let Some(next) = next.filter(|n| *n > start) else {
            return (start, start);
        };
        let transition = tz
            .following(start.to_jiff())
            .next()
            .map(|t| Timestamp::from_jiff(t.timestamp()));
        match transition {
            Some(t) if t < next => (start, start),
            _ => (start, next),
        }
    }

    /// Whether every bucket of this width lies inside one bucket of width `coarser`, so that
    /// states can be re-grouped from this width to `coarser` by merging.
    pub fn nests_in(self, coarser: Interval) -> bool {
        match (self, coarser) {
            (Interval::Micros(a), Interval::Micros(b)) => b % a == 0,
            (Interval::Micros(a), Interval::Days(_) | Interval::Months(_)) => {
                MICROS_PER_DAY % a == 0
            }
            (Interval::Days(a), Interval::Days(b)) => b % a == 0,
            (Interval::Days(a), Interval::Months(_)) => a == 1,
            (Interval::Months(a), Interval::Months(b)) => b % a == 0,
            (Interval::Days(_) | Interval::Months(_), Interval::Micros(_)) => false,
            (Interval::Months(_), Interval::Days(_)) => false,
        }
    }

    /// `ts + self`, with calendar units counted in UTC.
    pub fn after(self, ts: Timestamp) -> Timestamp {
        match self {
            Interval::Micros(us) => Timestamp(ts.0.saturating_add(us)),
            Interval::Days(days) => {
                Timestamp(ts.0.saturating_add(days.saturating_mul(MICROS_PER_DAY)))
            }
            Interval::Months(months) => {
                let zoned = ts.to_jiff().to_zoned(TimeZone::UTC);
                zoned
                    .checked_add(jiff::Span::new().months(months))
                    .map(|z| Timestamp::from_jiff(z.timestamp()))
                    .unwrap_or(Timestamp(i64::MAX / 2))
            }
        }
    }

    /// `ts - self`, with calendar units counted in UTC.
    pub fn before(self, ts: Timestamp) -> Timestamp {
        match self {
            Interval::Micros(us) => Timestamp(ts.0.saturating_sub(us)),
            Interval::Days(days) => {
                Timestamp(ts.0.saturating_sub(days.saturating_mul(MICROS_PER_DAY)))
            }
            Interval::Months(months) => {
                let zoned = ts.to_jiff().to_zoned(TimeZone::UTC);
                zoned
                    .checked_sub(jiff::Span::new().months(months))
                    .map(|z| Timestamp::from_jiff(z.timestamp()))
                    .unwrap_or(Timestamp(i64::MIN / 2))
            }
        }
    }
}

fn start_of_day(date: Date, tz: &TimeZone) -> Option<Timestamp> {
    let zoned = date.to_zoned(tz.clone()).ok()?;
    let start = zoned.start_of_day().ok()?;
    Some(Timestamp::from_jiff(start.timestamp()))
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match *self {
            Interval::Micros(us) if us % (3_600 * MICROS_PER_SECOND) == 0 => {
                (us / (3_600 * MICROS_PER_SECOND), "hour")
            }
            Interval::Micros(us) if us % (60 * MICROS_PER_SECOND) == 0 => {
                (us / (60 * MICROS_PER_SECOND), "minute")
            }
            Interval::Micros(us) if us % MICROS_PER_SECOND == 0 => {
                (us / MICROS_PER_SECOND, "second")
            }
            Interval::Micros(us) => (us, "microsecond"),
            Interval::Days(d) if d % 7 == 0 => (d / 7, "week"),
            Interval::Days(d) => (d, "day"),
            Interval::Months(m) if m % 12 == 0 => (m / 12, "year"),
            Interval::Months(m) => (m, "month"),
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn floor(width: &str, at: &str, zone: &str) -> String {
        let tz = TimeZone::get(zone).unwrap();
        Interval::parse(width)
            .unwrap()
            .floor(ts(at), &tz)
            .to_string()
    }

    #[test]
    fn parses_intervals() {
        assert_eq!(Interval::parse("1 day"), Ok(Interval::Days(1)));
        assert_eq!(Interval::parse("2 weeks"), Ok(Interval::Days(14)));
        assert_eq!(
            Interval::parse("15 minutes"),
            Ok(Interval::Micros(900_000_000))
        );
        assert_eq!(Interval::parse("1 year"), Ok(Interval::Months(12)));
        assert_eq!(Interval::parse("90 days").unwrap().to_string(), "90 days");
        assert!(Interval::parse("day").is_err());
        assert!(Interval::parse("0 days").is_err());
        assert!(Interval::parse("3 fortnights").is_err());
    }

    #[test]
    fn days_follow_local_midnight_across_dst() {
        // Europe/Berlin springs forward on 2026-03-29: that day is 23 hours long.
        assert_eq!(
            floor("1 day", "2026-03-29T12:00:00Z", "Europe/Berlin"),
            "2026-03-28T23:00:00Z"
        );
        assert_eq!(
            floor("1 day", "2026-03-29T21:59:59Z", "Europe/Berlin"),
            "2026-03-28T23:00:00Z"
        );
        assert_eq!(
            floor("1 day", "2026-03-29T22:00:00Z", "Europe/Berlin"),
            "2026-03-29T22:00:00Z"
        );
        // It falls back on 2026-10-25: 25 hours.
        assert_eq!(
            floor("1 day", "2026-10-25T22:59:59Z", "Europe/Berlin"),
            "2026-10-24T22:00:00Z"
        );
        assert_eq!(
            floor("1 day", "2026-10-25T23:00:00Z", "Europe/Berlin"),
            "2026-10-25T23:00:00Z"
        );
        // New York springs forward on 2026-03-08.
        assert_eq!(
            floor("1 day", "2026-03-08T12:00:00Z", "America/New_York"),
            "2026-03-08T05:00:00Z"
        );
        assert_eq!(
            floor("1 day", "2026-03-09T03:59:00Z", "America/New_York"),
            "2026-03-08T05:00:00Z"
        );
        assert_eq!(
            floor("1 day", "2026-03-09T04:00:00Z", "America/New_York"),
            "2026-03-09T04:00:00Z"
        );
    }

    #[test]
    fn repeated_hour_is_two_buckets() {
        // 02:00-03:00 local happens twice in Berlin on 2026-10-25: at +02:00 and at +01:00.
        assert_eq!(
            floor("1 hour", "2026-10-25T00:30:00Z", "Europe/Berlin"),
            "2026-10-25T00:00:00Z"
        );
        assert_eq!(
            floor("1 hour", "2026-10-25T01:30:00Z", "Europe/Berlin"),
            "2026-10-25T01:00:00Z"
        );
        // Nepal is UTC+05:45: hours start at :15 UTC.
        assert_eq!(
            floor("1 hour", "2026-01-01T10:20:00Z", "Asia/Kathmandu"),
            "2026-01-01T10:15:00Z"
        );
    }

    #[test]
    fn weeks_start_monday_and_months_at_the_first() {
        // 2026-03-29 is a Sunday.
        assert_eq!(
            floor("1 week", "2026-03-29T12:00:00Z", "UTC"),
            "2026-03-23T00:00:00Z"
        );
        assert_eq!(
            floor("1 month", "2026-03-29T12:00:00Z", "Europe/Berlin"),
            "2026-02-28T23:00:00Z"
        );
        assert_eq!(
            floor("1 month", "2026-04-01T12:00:00Z", "Europe/Berlin"),
            "2026-03-31T22:00:00Z"
        );
        assert_eq!(
            floor("3 months", "2026-05-15T00:00:00Z", "UTC"),
            "2026-04-01T00:00:00Z"
        );
        assert_eq!(
            floor("1 year", "1999-05-15T00:00:00Z", "UTC"),
            "1999-01-01T00:00:00Z"
        );
    }

    #[test]
    fn bucket_ranges_are_cacheable_only_without_offset_changes() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let day = Interval::Days(1);
        let (s, e) = day.bucket(ts("2026-03-20T12:00:00Z"), &berlin);
        assert_eq!(
            (s.to_string(), e.to_string()),
            ("2026-03-19T23:00:00Z".into(), "2026-03-20T23:00:00Z".into())
        );
        // The DST day holds an offset change: its range is empty, never cached.
        let (s, e) = day.bucket(ts("2026-03-29T12:00:00Z"), &berlin);
        assert_eq!(s, e);
        // Every instant of a cacheable range floors to its start.
        let (s, e) = Interval::parse("1 hour")
            .unwrap()
            .bucket(ts("2026-10-25T00:10:00Z"), &berlin);
        for probe in [s.0, s.0 + 1, e.0 - 1] {
            assert_eq!(
                Interval::parse("1 hour")
                    .unwrap()
                    .floor(Timestamp(probe), &berlin),
                s
            );
        }
    }

    #[test]
    fn nesting() {
        let p = |s| Interval::parse(s).unwrap();
        assert!(p("15 minutes").nests_in(p("1 hour")));
        assert!(p("1 hour").nests_in(p("1 day")));
        assert!(!p("7 hours").nests_in(p("1 day")));
        assert!(p("1 day").nests_in(p("1 week")));
        assert!(p("1 day").nests_in(p("1 month")));
        assert!(!p("1 week").nests_in(p("1 month")));
        assert!(p("1 month").nests_in(p("1 year")));
        assert!(!p("1 day").nests_in(p("1 hour")));
    }
}
