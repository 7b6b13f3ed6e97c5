//! Calendar periods in a tenant's time zone, as whole numbers: a *day* is the local calendar
//! date counted from 1970-01-01, a *week* starts on Monday, a *month* is `year * 12 + month - 1`.
//!
//! An instant's local day is `floor((utc + offset at that instant) / 1 day)`, so the only time
//! zone lookup per event is its UTC offset; a period's start instant (local midnight of its first
//! day, DST-correct) is computed per period, not per event.

use jiff::tz::TimeZone;

use crate::value::Timestamp;

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// The local calendar day of `ts` in `tz`, counted from 1970-01-01.
pub fn local_day(ts: Timestamp, tz: &TimeZone) -> i32 {
    let offset = i64::from(tz.to_offset(ts.to_jiff()).seconds()) * 1_000_000;
    (ts.0 + offset).div_euclid(MICROS_PER_DAY) as i32
}

/// The UTC instant of local midnight (or the first instant) of `day`.
pub fn day_start(day: i32, tz: &TimeZone) -> Timestamp {
    let (y, m, d) = civil_from_days(day);
    jiff::civil::Date::new(y as i16, m as i8, d as i8)
        .ok()
        .and_then(|date| date.to_zoned(tz.clone()).ok())
        .and_then(|z| z.start_of_day().ok())
        .map(|z| Timestamp::from_jiff(z.timestamp()))
        .unwrap_or(Timestamp(i64::from(day) * MICROS_PER_DAY))
}

/// A calendar period: `day`, `week` (from Monday) or `month`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        match text.trim().to_ascii_lowercase().as_str() {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The period holding local day `day`.
    pub fn of_day(self, day: i32) -> i32 {
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Monday 1969-12-29 is day -3.
            Period::Week => (day + 3).div_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                y * 12 + m as i32 - 1
            }
        }
    }

    /// The first local day of period `index`.
    pub fn first_day(self, index: i32) -> i32 {
        match self {
            Period::Day => index,
            Period::Week => index * 7 - 3,
            Period::Month => {
                days_from_civil(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
            }
        }
    }

    /// The UTC instant period `index` starts at.
    pub fn start(self, index: i32, tz: &TimeZone) -> Timestamp {
        day_start(self.first_day(index), tz)
    }

    /// The periods whose start lies in `[from, to)`, as a first index and a count; `None` when
    /// there are more than `max`.
    pub fn within(
        self,
        from: Timestamp,
        to: Timestamp,
        tz: &TimeZone,
        max: usize,
    ) -> Option<(i32, usize)> {
        let mut first = self.of_day(local_day(from, tz));
        if self.start(first, tz) < from {
            first += 1;
        }
        let mut n = 0;
        while self.start(first + n as i32, tz) < to {
            n += 1;
            if n > max {
                return None;
            }
        }
        Some((first, n))
    }
}

/// `(year, month, day)` of a day counted from 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
pub fn civil_from_days(day: i32) -> (i32, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u32, d as u32)
}

/// The day counted from 1970-01-01 of a date.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip_against_jiff() {
        let epoch = jiff::civil::date(1970, 1, 1);
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            let date = epoch
                .checked_add(jiff::Span::new().days(i64::from(day)))
                .unwrap();
            assert_eq!(
                (y, m, d),
                (
                    i32::from(date.year()),
                    date.month() as u32,
                    date.day() as u32
                )
            );
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let tz = TimeZone::get("America/New_York").unwrap();
        // 2026-03-08 is a Sunday (and the spring-forward day in New York).
        let sunday = days_from_civil(2026, 3, 8);
        let week = Period::Week.of_day(sunday);
        assert_eq!(Period::Week.first_day(week), days_from_civil(2026, 3, 2));
        assert_eq!(
            Period::Week.start(week, &tz),
            Timestamp::parse("2026-03-02T05:00:00Z").unwrap()
        );
        let month = Period::Month.of_day(sunday);
        assert_eq!(
            Period::Month.start(month, &tz),
            Timestamp::parse("2026-03-01T05:00:00Z").unwrap()
        );
        // The day after spring-forward starts at 04:00 UTC.
        assert_eq!(
            day_start(sunday + 1, &tz),
            Timestamp::parse("2026-03-09T04:00:00Z").unwrap()
        );
        // 23:30 local on the 8th is 03:30 UTC on the 9th.
        let late = Timestamp::parse("2026-03-09T03:30:00Z").unwrap();
        assert_eq!(local_day(late, &tz), sunday);
        let from = Timestamp::parse("2026-03-08T12:00:00Z").unwrap();
        let to = Timestamp::parse("2026-03-11T05:00:00Z").unwrap();
        // Days starting in [from, to): the 9th and 10th (the 11th starts at 04:00 UTC: also).
        assert_eq!(
            Period::Day.within(from, to, &tz, 100),
            Some((sunday + 1, 3))
        );
    }
}
