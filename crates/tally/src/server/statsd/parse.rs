//! The StatsD line protocol, with the DogStatsD extensions: one metric per line,
//! `name:value[:value…]|type[|@rate][|#tag:value,tag][|T<unix seconds>][|c:…]`.
//!
//! Types: `c` counter, `g` gauge (a value with a leading `+` or `-` is a change of the last
//! value), `ms` timer, `h` histogram, `d` distribution, `s` set (the value is a member, any
//! text). Several values in one line (DogStatsD 1.1) are several samples. Fields this parser
//! does not know (DogStatsD's container id `c:`, external data `e:`) are ignored; DogStatsD
//! events (`_e{…}`) and service checks (`_sc|…`) are not metrics and are refused as
//! unsupported. Parsing borrows from the packet: nothing is allocated per line.

/// The StatsD metric types, with the `metric_type` each is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Timer,
    Histogram,
    Distribution,
    Set,
}

impl Kind {
    /// The `metrics.metric_type` of this kind.
    pub fn metric_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Timer => "timer",
            Kind::Histogram => "histogram",
            Kind::Distribution => "distribution",
            Kind::Set => "set",
        }
    }

    /// One byte naming the kind in an aggregation key.
    pub fn tag_byte(self) -> u8 {
        match self {
            Kind::Counter => b'c',
            Kind::Gauge => b'g',
            Kind::Timer => b't',
            Kind::Histogram => b'h',
            Kind::Distribution => b'd',
            Kind::Set => b's',
        }
    }
}

/// One parsed line, borrowing from the packet.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    /// The value text (`1`, `+3`, `-2.5`, `1:2:3` for several samples, any text for a set).
    pub values: &'a str,
    pub kind: Kind,
    /// The sample rate, in (0, 1]; 1 when the line has none.
    pub rate: f64,
    /// The DogStatsD tags as sent, comma-separated (empty without tags).
    pub tags: &'a str,
    /// A DogStatsD timestamp (`|T…`), in Unix seconds.
    pub timestamp: Option<i64>,
}

/// Why a line was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A DogStatsD event or service check: not a metric.
    Unsupported,
    /// Not a metric line; the text says what is wrong.
    Invalid(&'static str),
}

impl<'a> Line<'a> {
    /// Parses one line (without its line break).
    pub fn parse(line: &'a str) -> Result<Line<'a>, Malformed> {
        if line.starts_with("_e{") || line.starts_with("_sc|") {
            return Err(Malformed::Unsupported);
        }
        if line.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(Malformed::Invalid("a control character"));
        }
        let mut fields = line.split('|');
        let head = fields.next().unwrap_or_default();
        let (name, values) = head
            .split_once(':')
            .ok_or(Malformed::Invalid("no ':' between the name and the value"))?;
        if name.is_empty() {
            return Err(Malformed::Invalid("the metric name is empty"));
        }
        if values.is_empty() {
            return Err(Malformed::Invalid("the value is empty"));
        }
        let kind = match fields.next() {
            Some("c") => Kind::Counter,
            Some("g") => Kind::Gauge,
            Some("ms") => Kind::Timer,
            Some("h") => Kind::Histogram,
            Some("d") => Kind::Distribution,
            Some("s") => Kind::Set,
            Some(_) => return Err(Malformed::Invalid("unknown metric type")),
            None => return Err(Malformed::Invalid("no '|type' after the value")),
        };
        let mut parsed = Line {
            name,
            values,
            kind,
            rate: 1.0,
            tags: "",
            timestamp: None,
        };
        for field in fields {
            if let Some(rate) = field.strip_prefix('@') {
                let rate: f64 = rate
                    .parse()
                    .map_err(|_| Malformed::Invalid("the sample rate is not a number"))?;
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(Malformed::Invalid("the sample rate is not in (0, 1]"));
                }
                parsed.rate = rate;
            } else if let Some(tags) = field.strip_prefix('#') {
                parsed.tags = tags;
            } else if let Some(ts) = field.strip_prefix('T') {
                let ts: i64 = ts
                    .parse()
                    .map_err(|_| Malformed::Invalid("the timestamp is not Unix seconds"))?;
                // Years 1970 to 9999, as TIMESTAMP columns take them.
                if !(0..=253_402_300_799).contains(&ts) {
                    return Err(Malformed::Invalid("the timestamp is out of range"));
                }
                parsed.timestamp = Some(ts);
            } else if field.len() >= 2 && field.as_bytes()[1] == b':' {
                // DogStatsD's container id (`c:`), external data (`e:`) and the like.
            } else {
                return Err(Malformed::Invalid("unknown field after the type"));
            }
        }
        if kind != Kind::Set {
            for v in parsed.samples() {
                v?;
            }
        }
        Ok(parsed)
    }

    /// The numeric samples of the line (not for sets): each is a finite number; a gauge's may
    /// carry a `+` or `-` sign (a change of the last value).
    pub fn samples(&self) -> impl Iterator<Item = Result<f64, Malformed>> + '_ {
        self.values.split(':').map(|v| match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(Malformed::Invalid("the value is not a finite number")),
        })
    }

    /// The tags as `(key, value)` pairs; a tag without `:` has the value `""`.
    pub fn tag_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        split_tags(self.tags)
    }
}

/// `(key, value)` pairs of a DogStatsD tag list.
pub fn split_tags(tags: &str) -> impl Iterator<Item = (&str, &str)> {
    tags.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.split_once(':').unwrap_or((t, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type_and_field() {
        let l = Line::parse("jobs.done:3|c|@0.1|#queue:mail,beta").unwrap();
        assert_eq!(l.name, "jobs.done");
        assert_eq!(l.kind, Kind::Counter);
        assert_eq!(l.rate, 0.1);
        assert_eq!(
            l.tag_pairs().collect::<Vec<_>>(),
            [("queue", "mail"), ("beta", "")]
        );
        let g = Line::parse("temp:-2.5|g").unwrap();
        assert_eq!(g.samples().next(), Some(Ok(-2.5)));
        let t = Line::parse("latency:1:2:3|ms|T1700000000|c:abc").unwrap();
        assert_eq!(t.kind, Kind::Timer);
        assert_eq!(t.timestamp, Some(1_700_000_000));
        assert_eq!(
            t.samples().map(|s| s.unwrap()).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(Line::parse("h:1|h").unwrap().kind, Kind::Histogram);
        assert_eq!(Line::parse("d:1|d").unwrap().kind, Kind::Distribution);
        let s = Line::parse("users:u-1:x|s").unwrap();
        assert_eq!((s.kind, s.values), (Kind::Set, "u-1:x"));
    }

    #[test]
    fn refuses_what_is_not_a_metric() {
        for (line, why) in [
            ("novalue", "no ':' between the name and the value"),
            (":1|c", "the metric name is empty"),
            ("a:|c", "the value is empty"),
            ("a:1", "no '|type' after the value"),
            ("a:1|x", "unknown metric type"),
            ("a:x|c", "the value is not a finite number"),
            ("a:NaN|g", "the value is not a finite number"),
            ("a:inf|ms", "the value is not a finite number"),
            ("a:1|c|@0", "the sample rate is not in (0, 1]"),
            ("a:1|c|@2", "the sample rate is not in (0, 1]"),
            ("a:1|c|@x", "the sample rate is not a number"),
            ("a:1|c|Tx", "the timestamp is not Unix seconds"),
            ("a:1|c|T-1", "the timestamp is out of range"),
            ("a:1|c|zzz", "unknown field after the type"),
            ("a\u{1f}b:1|c", "a control character"),
        ] {
            assert_eq!(Line::parse(line), Err(Malformed::Invalid(why)), "{line}");
        }
        assert_eq!(
            Line::parse("_e{5,4}:title|text"),
            Err(Malformed::Unsupported)
        );
        assert_eq!(Line::parse("_sc|db|0"), Err(Malformed::Unsupported));
    }
}
