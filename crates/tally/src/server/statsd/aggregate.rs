//! A tenant's StatsD metrics of one flush interval, aggregated in memory as StatsD does, then
//! turned into rows of the built-in `metrics` stream.
//!
//! A series is one (type, name, tags, explicit timestamp). Per interval it becomes:
//! - a counter: one row, the sum of its values each divided by its sample rate;
//! - a gauge: one row, its last value (a `+`/`-` value changes the last value, carried over
//!   from earlier intervals; a series never set starts at 0);
//! - a timer, histogram or distribution: one row per sample (percentiles need them all);
//! - a set: one row per distinct member, the member in `tags.member`, the value how often it
//!   was sent.
//!
//! A row's `timestamp` is the DogStatsD timestamp when the line had one, else the time the
//! series was first seen in the interval. Nothing here allocates per line once a series exists.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value as Json};

use super::parse::{Kind, Line};
use crate::server::worker::Record;

type Hasher = foldhash::fast::RandomState;

/// Gauges whose last value a tenant remembers; past it they are forgotten (a change then
/// applies to 0, as after a restart).
const MAX_GAUGES: usize = 100_000;

/// One series' state within an interval.
enum State {
    Counter(f64),
    Gauge(f64),
    Samples(Vec<f64>),
    Set(HashMap<Box<str>, u64, Hasher>),
}

struct Series {
    name: Box<str>,
    kind: Kind,
    /// The tags as a JSON object (`None` without tags).
    tags: Option<Map<String, Json>>,
    /// Microseconds since the epoch: the line's timestamp, or when the interval first saw it.
    at: i64,
    /// The line's own timestamp (DogStatsD `|T`), if it had one.
    timestamped: Option<i64>,
    state: State,
}

/// The metrics of one tenant not yet committed.
#[derive(Default)]
pub struct Aggregates {
    series: HashMap<Box<str>, Series, Hasher>,
    /// Each gauge's last value, for `+`/`-` changes in later intervals.
    gauges: HashMap<Box<str>, f64, Hasher>,
    /// The rows the series would make now.
    rows: usize,
    /// Lines aggregated since the last take.
    lines: u64,
}

impl Aggregates {
    /// Adds one line received at `now_us`; the number of rows it adds. `skip_tag` names a tag
    /// left out of the stored tags (the tenant tag). `key` is scratch space, reused across lines.
    pub fn add(
        &mut self,
        line: &Line<'_>,
        now_us: i64,
        skip_tag: Option<&str>,
        key: &mut String,
    ) -> usize {
        key.clear();
        key.push(line.kind.tag_byte() as char);
        key.push_str(line.name);
        key.push('\u{1f}');
        key.push_str(line.tags);
        if let Some(ts) = line.timestamp {
            key.push('\u{1f}');
            let _ = write!(key, "{ts}");
        }
        self.lines += 1;
        let rows_before = self.rows;
        let series = match self.series.get_mut(key.as_str()) {
            Some(s) => s,
            None => {
                let tags: Map<String, Json> = line
                    .tag_pairs()
                    .filter(|(k, _)| Some(*k) != skip_tag)
                    .map(|(k, v)| (k.to_owned(), Json::String(v.to_owned())))
                    .collect();
                let state = match line.kind {
                    Kind::Counter => State::Counter(0.0),
                    Kind::Gauge => {
                        State::Gauge(self.gauges.get(key.as_str()).copied().unwrap_or(0.0))
                    }
                    Kind::Timer | Kind::Histogram | Kind::Distribution => {
                        State::Samples(Vec::new())
                    }
                    Kind::Set => State::Set(HashMap::default()),
                };
                if !matches!(state, State::Samples(_) | State::Set(_)) {
                    self.rows += 1;
                }
                self.series.entry(key.as_str().into()).or_insert(Series {
                    name: line.name.into(),
                    kind: line.kind,
                    tags: (!tags.is_empty()).then_some(tags),
                    at: line.timestamp.map_or(now_us, |s| s * 1_000_000),
                    timestamped: line.timestamp,
                    state,
                })
            }
        };
        match &mut series.state {
            State::Counter(sum) => {
                for v in line.samples().flatten() {
                    *sum = saturating_add(*sum, v / line.rate);
                }
            }
            State::Gauge(last) => {
                // Each value with a sign changes the last value; one without sets it.
                for (text, v) in line.values.split(':').zip(line.samples()) {
                    let Ok(v) = v else { continue };
                    if text.starts_with('+') || text.starts_with('-') {
                        *last = saturating_add(*last, v);
                    } else {
                        *last = v;
                    }
                }
            }
            State::Samples(samples) => {
                let before = samples.len();
                samples.extend(line.samples().flatten());
                self.rows += samples.len() - before;
            }
            State::Set(members) => match members.get_mut(line.values) {
                Some(n) => *n += 1,
                None => {
                    members.insert(line.values.into(), 1);
                    self.rows += 1;
                }
            },
        }
        self.rows - rows_before
    }

    /// Whether nothing is aggregated and no gauge value is remembered.
    pub fn is_idle(&self) -> bool {
        self.series.is_empty() && self.gauges.is_empty()
    }

    /// The rows the aggregated series would make now.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Lines aggregated since the last [`Aggregates::take`].
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Ends the interval: the rows of every series, as events of the `metrics` stream. Gauges
    /// keep their last value for later changes.
    pub fn take(&mut self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.rows);
        for (key, series) in self.series.drain() {
            let timestamped = series.timestamped;
            let at = timestamp_text(series.at);
            let unit = (series.kind == Kind::Timer).then_some("ms");
            let row = |value: f64, tags: Option<&Map<String, Json>>| {
                let mut row = Map::new();
                // Its own id: a batch the store takes twice (a commit offered again after its
                // answer was lost) counts once. Time-ordered, so the dedupe index appends.
                row.insert("id".into(), Json::String(uuid::Uuid::now_v7().to_string()));
                row.insert("name".into(), Json::String(series.name.to_string()));
                row.insert(
                    "metric_type".into(),
                    Json::String(series.kind.metric_type().into()),
                );
                row.insert("value".into(), Json::from(value));
                row.insert("timestamp".into(), Json::String(at.clone()));
                if let Some(tags) = tags {
                    row.insert("tags".into(), Json::Object(tags.clone()));
                }
                if let Some(unit) = unit {
                    row.insert("unit".into(), Json::String(unit.into()));
                }
                Record::Json(Json::Object(row).to_string())
            };
            match series.state {
                State::Counter(sum) => out.push(row(sum, series.tags.as_ref())),
                State::Gauge(last) => {
                    out.push(row(last, series.tags.as_ref()));
                    // Remembered for later changes; a gauge with its own timestamp is not
                    // (each timestamp would be a new entry).
                    if timestamped.is_none() {
                        if self.gauges.len() >= MAX_GAUGES && !self.gauges.contains_key(&key) {
                            self.gauges.clear();
                        }
                        self.gauges.insert(key, last);
                    }
                }
                State::Samples(samples) => {
                    out.extend(samples.into_iter().map(|v| row(v, series.tags.as_ref())));
                }
                State::Set(members) => {
                    for (member, n) in members {
                        let mut tags = series.tags.clone().unwrap_or_default();
                        tags.insert("member".into(), Json::String(member.into()));
                        out.push(row(n as f64, Some(&tags)));
                    }
                }
            }
        }
        self.rows = 0;
        self.lines = 0;
        out
    }
}

/// Microseconds since the epoch as Tally's timestamp text.
fn timestamp_text(us: i64) -> String {
    tally_views::Timestamp(us).to_string()
}

/// `a + b` held within f64's finite range: a counter or gauge past it (values near f64::MAX,
/// tiny sample rates) stays at the largest finite value of its sign and never becomes infinite
/// or, by adding opposite infinities, NaN (which the `metrics` stream would refuse).
fn saturating_add(a: f64, b: f64) -> f64 {
    (a + b).clamp(f64::MIN, f64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(agg: &mut Aggregates) -> Vec<Json> {
        let mut rows: Vec<Json> = agg
            .take()
            .into_iter()
            .map(|r| match r {
                Record::Json(text) => serde_json::from_str(&text).unwrap(),
                Record::Rejected { .. } => unreachable!(),
            })
            .collect();
        rows.sort_by_key(|r| r.to_string());
        rows
    }

    fn add(agg: &mut Aggregates, lines: &str) {
        let mut key = String::new();
        for l in lines.lines() {
            agg.add(&Line::parse(l).unwrap(), 0, Some("tenant"), &mut key);
        }
    }

    #[test]
    fn counters_sum_with_sample_rates_and_gauges_keep_the_last_value() {
        let mut agg = Aggregates::default();
        add(
            &mut agg,
            "jobs:1|c|@0.1\njobs:2|c\njobs:1|c|#q:mail,tenant:acme\ntemp:5|g\ntemp:+2|g\ntemp:-1|g",
        );
        assert_eq!(agg.rows(), 3);
        let first = rows(&mut agg);
        assert_eq!(first.len(), 3);
        let value = |name: &str, tags: Option<Json>| {
            first
                .iter()
                .find(|r| r["name"] == name && r.get("tags").cloned() == tags)
                .unwrap()["value"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(value("jobs", None), 12.0);
        assert_eq!(value("jobs", Some(serde_json::json!({"q": "mail"}))), 1.0);
        assert_eq!(value("temp", None), 6.0);
        // A change in a later interval starts from the last value; in a line of several
        // values each one with a sign is a change.
        add(&mut agg, "temp:+4|g\nmulti:5:+2:-1|g");
        let later = rows(&mut agg);
        let value = |name: &str| later.iter().find(|r| r["name"] == name).unwrap()["value"].clone();
        assert_eq!((value("temp"), value("multi")), (10.0.into(), 6.0.into()));
        // Every row has its own id.
        assert!(
            later
                .iter()
                .all(|r| r["id"].as_str().is_some_and(|id| id.len() == 36))
        );
        assert_ne!(later[0]["id"], later[1]["id"]);
    }

    #[test]
    fn sums_past_the_range_of_f64_stay_finite() {
        let mut agg = Aggregates::default();
        // 1e308 / 0.001 is past f64::MAX; an infinite sum and its opposite would make NaN.
        add(
            &mut agg,
            "up:1e308|c|@0.001\nboth:1e308|c|@0.001\nboth:-1e308|c|@0.001\ng:1e308|g\ng:+1e308|g",
        );
        let rows = rows(&mut agg);
        let value = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap()["value"].clone();
        assert_eq!(value("up"), f64::MAX);
        assert_eq!(value("both"), f64::MIN);
        assert_eq!(value("g"), f64::MAX);
    }

    #[test]
    fn samples_and_set_members_become_rows() {
        let mut agg = Aggregates::default();
        add(
            &mut agg,
            "lat:1:2|ms\nlat:3|ms|T1700000000\nu:a|s\nu:b|s\nu:a|s\nsize:7|h\nsize:8|d",
        );
        assert_eq!(agg.rows(), 7);
        let rows = rows(&mut agg);
        assert_eq!(rows.len(), 7);
        let timers: Vec<_> = rows
            .iter()
            .filter(|r| r["metric_type"] == "timer")
            .collect();
        assert_eq!(timers.len(), 3);
        assert!(timers.iter().all(|r| r["unit"] == "ms"));
        assert!(
            timers
                .iter()
                .any(|r| r["timestamp"] == "2023-11-14T22:13:20Z" && r["value"] == 3.0)
        );
        let sets: Vec<_> = rows.iter().filter(|r| r["metric_type"] == "set").collect();
        let mut members: Vec<_> = sets
            .iter()
            .map(|r| {
                (
                    r["tags"]["member"].as_str().unwrap(),
                    r["value"].as_f64().unwrap(),
                )
            })
            .collect();
        // Members come out in hash order; the test names them in sorted order.
        members.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(members, [("a", 2.0), ("b", 1.0)]);
        assert!(rows.iter().any(|r| r["metric_type"] == "histogram"));
        assert!(rows.iter().any(|r| r["metric_type"] == "distribution"));
        assert!(agg.take().is_empty());
    }
}
