//! What every pack's generator shares: a small deterministic random generator, time and money
//! helpers, and the files a pack is loaded from.
//!
//! This file is compiled twice: into the `seed_data` example (which writes the files for
//! `examples/<pack>/run.sh`) and into the `examples` integration test (which ingests the same
//! files and checks the saved queries against a recomputation).

use std::fmt::Write as _;

/// SplitMix64: a tiny, well-mixed generator; the same seed gives the same data everywhere.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One element of `items` (not empty).
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as i64) as usize]
    }

    /// `n` hexadecimal digits.
    pub(crate) fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        s.truncate(n);
        s
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as i64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

pub(crate) const MINUTE: i64 = 60;
pub(crate) const HOUR: i64 = 3_600;
pub(crate) const DAY: i64 = 86_400;

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-15T12:00:00Z`).
pub(crate) fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .expect("a time in range")
        .to_string()
}

/// `minor` units with `scale` decimals as exact text: `money(12345, 2)` is `"123.45"`.
pub(crate) fn money(minor: i64, scale: u32) -> String {
    let unit = 10i64.pow(scale);
    let sign = if minor < 0 { "-" } else { "" };
    let (int, frac) = (minor.abs() / unit, minor.abs() % unit);
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac:0width$}", width = scale as usize)
    }
}

/// One input file of a pack: its name, the stream or table it is loaded into, and its text.
pub(crate) struct File {
    /// The file name; its extension gives the format (`.csv`, `.json`, else NDJSON), as for
    /// `tally ingest` and `tally table upsert`.
    pub(crate) name: String,
    pub(crate) target: &'static str,
    pub(crate) text: String,
}

/// Everything a pack loads: events per stream, rows per table.
#[derive(Default)]
pub(crate) struct Files {
    pub(crate) streams: Vec<File>,
    pub(crate) tables: Vec<File>,
}

impl Files {
    /// Adds a stream file of NDJSON lines.
    pub(crate) fn stream(&mut self, target: &'static str, lines: Vec<String>) {
        self.streams.push(File {
            name: format!("{target}.ndjson"),
            target,
            text: lines.join("\n") + "\n",
        });
    }

    /// Adds a table file (`name` ends in `.csv`, `.json` or `.ndjson`).
    pub(crate) fn table(&mut self, target: &'static str, name: &str, text: String) {
        self.tables.push(File {
            name: name.to_owned(),
            target,
            text,
        });
    }
}

/// A JSON object of `(field, value)` pairs as one compact line, fields in the order given;
/// `None` values are left out.
pub(crate) fn object(fields: &[(&str, Option<serde_json::Value>)]) -> String {
    let mut line = String::from("{");
    for (name, value) in fields {
        if let Some(value) = value {
            if line.len() > 1 {
                line.push(',');
            }
            let _ = write!(line, "{}:{value}", serde_json::Value::from(*name));
        }
    }
    line.push('}');
    line
}

/// A JSON string value.
pub(crate) fn s(text: impl Into<String>) -> Option<serde_json::Value> {
    Some(serde_json::Value::String(text.into()))
}

/// A JSON integer value.
pub(crate) fn n(value: i64) -> Option<serde_json::Value> {
    Some(serde_json::Value::from(value))
}
