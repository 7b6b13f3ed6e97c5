//! An analysis request: its kind and parameters, checked and converted once, with errors that
//! name the parameter at fault.
//!
//! The parameters are the same from the CLI (`tally analyze KIND --name value`) and over HTTP
//! (`GET /v1/analyses/KIND?name=value`); both edges pass them here as name/value pairs.

use jiff::tz::TimeZone;

use super::calendar::{self, Period};
use crate::time::Interval;
use crate::value::Timestamp;

/// The most periods (days, weeks, months) an analysis reports.
pub const MAX_PERIODS: usize = 10_000;
/// The most steps of a funnel.
pub const MAX_STEPS: usize = 20;
/// The most periods a retention row counts after its cohort.
pub const MAX_RETENTION_PERIODS: u32 = 400;

/// Which analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ActiveUsers,
    Retention,
    Funnel,
    Sessions,
    Lifecycle,
}

impl Kind {
    pub const NAMES: &str = "active_users, retention, funnel, sessions and lifecycle";

    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "active_users" => Kind::ActiveUsers,
            "retention" => Kind::Retention,
            "funnel" => Kind::Funnel,
            "sessions" => Kind::Sessions,
            "lifecycle" => Kind::Lifecycle,
            _ => return None,
        })
    }

    /// The parameters the kind takes besides `from` and `to`.
    fn params(self) -> &'static [&'static str] {
        match self {
            Kind::ActiveUsers | Kind::Lifecycle => &["interval"],
            Kind::Retention => &["period", "periods", "start_event", "return_event"],
            Kind::Funnel => &["steps", "window", "breakdown"],
            Kind::Sessions => &["gap", "by", "limit"],
        }
    }
}

/// What a sessions analysis groups by instead of days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageBy {
    Landing,
    Exit,
}

/// A checked analysis request.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub kind: Kind,
    /// The range `[from, to)`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// The period of rows: `interval` (active users, lifecycle), `period` (retention), days
    /// (sessions).
    pub period: Period,
    /// The periods whose start lies in the range: the first and how many.
    pub first: i32,
    pub count: usize,
    /// Retention: how many periods after the cohort's.
    pub periods: u32,
    pub start_event: Option<String>,
    pub return_event: Option<String>,
    /// Funnel.
    pub steps: Vec<String>,
    pub window: Interval,
    pub breakdown: Option<String>,
    /// Sessions: the gap that starts a new session, in microseconds.
    pub gap: i64,
    pub by: Option<PageBy>,
    pub limit: Option<usize>,
}

/// A bad request: which parameter and what is wrong (`param` is `kind` for an unknown
/// analysis).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct AnalysisError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> AnalysisError {
    AnalysisError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// A `from`/`to` value: a date is local midnight in `tz`, anything else an RFC 3339 instant.
pub fn parse_time(param: &str, text: &str, tz: &TimeZone) -> Result<Timestamp, AnalysisError> {
    let t = text.trim();
    if let Ok(date) = t.parse::<jiff::civil::Date>()
        && t.len() == 10
    {
        let day = calendar::days_from_civil(
            i32::from(date.year()),
            date.month() as u32,
            date.day() as u32,
        );
        return Ok(calendar::day_start(day, tz));
    }
    match Timestamp::parse(t) {
        Some(ts) if ts.is_storable() => Ok(ts),
        _ => Err(bad(
            param,
            format!(
                "'{t}' is not a date (2026-03-01, local midnight) or an RFC 3339 time (2026-03-01T10:00:00Z)"
            ),
        )),
    }
}

impl Analysis {
    /// Checks the parameters of analysis `kind`. Without `to` the range ends at the end of
    /// today (local); without `from` it starts 30 days before `to`'s day.
    pub fn parse(
        kind: &str,
        params: &[(String, String)],
        tz: &TimeZone,
        now: Timestamp,
    ) -> Result<Analysis, AnalysisError> {
        let kind = Kind::parse(kind).ok_or_else(|| {
            bad(
                "kind",
                format!(
                    "there is no analysis '{kind}'; the analyses are {}",
                    Kind::NAMES
                ),
            )
        })?;
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in params {
            if name != "from" && name != "to" && !kind.params().contains(&name.as_str()) {
                let mut all = vec!["from", "to"];
                all.extend(kind.params());
                return Err(bad(
                    name,
                    format!("unknown parameter; this analysis takes {}", all.join(", ")),
                ));
            }
            if seen.contains(&name.as_str()) {
                return Err(bad(name, "given twice"));
            }
            seen.push(name);
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        let to = match get("to") {
            Some(t) => parse_time("to", t, tz)?,
            None => calendar::day_start(calendar::local_day(now, tz) + 1, tz),
        };
        let from = match get("from") {
            Some(t) => parse_time("from", t, tz)?,
            None => calendar::day_start(calendar::local_day(to, tz) - 30, tz),
        };
        if from >= to {
            return Err(bad("to", format!("{to} is not after from ({from})")));
        }
        let period_param = |name: &str, default: Period| match get(name) {
            None => Ok(default),
            Some(p) => Period::parse(p)
                .ok_or_else(|| bad(name, format!("'{p}' is not day, week or month"))),
        };
        let period = match kind {
            Kind::ActiveUsers | Kind::Lifecycle => period_param("interval", Period::Day)?,
            Kind::Retention => period_param("period", Period::Week)?,
            Kind::Funnel | Kind::Sessions => Period::Day,
        };
        let (first, count) = period.within(from, to, tz, MAX_PERIODS).ok_or_else(|| {
            bad(
                "from",
                format!("the range holds more than {MAX_PERIODS} periods; narrow it"),
            )
        })?;
        let periods = match get("periods") {
            None => 8,
            Some(n) => n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_RETENTION_PERIODS).contains(n))
                .ok_or_else(|| {
                    bad(
                        "periods",
                        format!("'{n}' is not a whole number from 1 to {MAX_RETENTION_PERIODS}"),
                    )
                })?,
        };
        let steps: Vec<String> = match get("steps") {
            None if kind == Kind::Funnel => {
                return Err(bad(
                    "steps",
                    "a funnel needs steps, event names separated by commas (steps=Signed Up,Purchased)",
                ));
            }
            None => Vec::new(),
            Some(s) => s.split(',').map(|s| s.trim().to_owned()).collect(),
        };
        if steps.iter().any(String::is_empty) {
            return Err(bad("steps", "an event name is empty"));
        }
        if steps.len() > MAX_STEPS {
            return Err(bad(
                "steps",
                format!("a funnel has at most {MAX_STEPS} steps"),
            ));
        }
        let window = match get("window") {
            None => Interval::Days(1),
            Some(w) => Interval::parse(w).map_err(|e| bad("window", e))?,
        };
        let gap = match get("gap") {
            None => 30 * 60 * 1_000_000,
            Some(g) => match Interval::parse(g).map_err(|e| bad("gap", e))? {
                Interval::Micros(us) if us <= 365 * 86_400 * 1_000_000 => us,
                Interval::Days(d) if d <= 365 => d * 86_400 * 1_000_000,
                _ => {
                    return Err(bad(
                        "gap",
                        format!("'{g}' is too long; use seconds, minutes, hours or days"),
                    ));
                }
            },
        };
        let by = match get("by") {
            None => None,
            Some("landing_page") => Some(PageBy::Landing),
            Some("exit_page") => Some(PageBy::Exit),
            Some(other) => {
                return Err(bad(
                    "by",
                    format!("'{other}' is not landing_page or exit_page"),
                ));
            }
        };
        let limit = match get("limit") {
            None => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| bad("limit", format!("'{l}' is not a whole number")))?,
            ),
        };
        let name = |param: &str| get(param).map(str::to_owned);
        Ok(Analysis {
            kind,
            from,
            to,
            period,
            first,
            count,
            periods,
            start_event: name("start_event"),
            return_event: name("return_event"),
            steps,
            window,
            breakdown: name("breakdown"),
            gap,
            by,
            limit,
        })
    }

    /// The property column a funnel's breakdown reads: `(property, name of the first step)`.
    pub fn property_column(&self) -> Option<(&str, &str)> {
        match (&self.breakdown, self.steps.first()) {
            (Some(p), Some(first)) if self.kind == Kind::Funnel => Some((p, first)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: &str, params: &[(&str, &str)]) -> Result<Analysis, AnalysisError> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tz = TimeZone::get("America/New_York").unwrap();
        Analysis::parse(
            kind,
            &params,
            &tz,
            Timestamp::parse("2026-03-10T12:00:00Z").unwrap(),
        )
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let err = |kind, params: &[(&str, &str)]| parse(kind, params).unwrap_err().to_string();
        assert_eq!(
            err("funnel", &[]),
            "steps: a funnel needs steps, event names separated by commas (steps=Signed Up,Purchased)"
        );
        assert_eq!(
            err("active_users", &[("interval", "hour")]),
            "interval: 'hour' is not day, week or month"
        );
        assert_eq!(
            err("retention", &[("interval", "day")]),
            "interval: unknown parameter; this analysis takes from, to, period, periods, start_event, return_event"
        );
        assert_eq!(
            err("lifecycle", &[("from", "2026-03-10"), ("to", "2026-03-01")]),
            "to: 2026-03-01T05:00:00Z is not after from (2026-03-10T04:00:00Z)"
        );
        assert!(
            err("sessions", &[("from", "yesterday")])
                .starts_with("from: 'yesterday' is not a date")
        );
        assert!(err("churn", &[]).starts_with("kind: there is no analysis 'churn'"));
        assert_eq!(
            err("sessions", &[("gap", "1 month")]),
            "gap: '1 month' is too long; use seconds, minutes, hours or days"
        );
    }

    #[test]
    fn defaults_cover_the_last_30_local_days() {
        let a = parse("active_users", &[]).unwrap();
        assert_eq!(a.to, Timestamp::parse("2026-03-11T04:00:00Z").unwrap());
        assert_eq!(a.from, Timestamp::parse("2026-02-09T05:00:00Z").unwrap());
        assert_eq!(a.count, 30);
        let r = parse("retention", &[("from", "2026-02-01"), ("to", "2026-03-01")]).unwrap();
        assert_eq!((r.period, r.periods, r.count), (Period::Week, 8, 4));
    }
}
