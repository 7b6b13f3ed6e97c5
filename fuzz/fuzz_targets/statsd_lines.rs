//! Fuzz target: a StatsD packet (several lines, any bytes) parsed line by line, aggregated as
//! the listener does, and every row it makes decoded against the built-in `metrics` stream.
//! Any input must give rows or skipped lines, never a panic; and every row the aggregation
//! makes must be a valid `metrics` event (the listener never produces a row the stream rejects,
//! except an event time further in the future than the stream allows).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::decode::{Reason, RowDecoder};
use tally::server::statsd::aggregate::Aggregates;
use tally::server::statsd::parse::Line;
use tally::server::worker::Record;
use tally_views::{Catalog, Interval, Timestamp};

fuzz_target!(|data: &[u8]| {
    let catalog = Catalog::new();
    let metrics = catalog.stream("metrics").unwrap();
    let now = Timestamp::parse("2026-03-30T12:00:00Z").unwrap();
    let mut aggregates = Aggregates::default();
    let mut key = String::new();
    for line in data.split(|b| *b == b'\n') {
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(parsed) = Line::parse(text.trim()) {
            aggregates.add(&parsed, now.0, Some("tenant"), &mut key);
        }
    }
    let decoder = RowDecoder::new(metrics, now, Interval::Days(1));
    for record in aggregates.take() {
        let Record::Json(row) = record else {
            panic!("the aggregation made a rejected record");
        };
        if let Err(rejection) = decoder.json(&row) {
            assert!(
                rejection.reason == Reason::TimeOutOfRange,
                "the metrics stream rejected {row}: {}",
                rejection.message
            );
        }
    }
});
