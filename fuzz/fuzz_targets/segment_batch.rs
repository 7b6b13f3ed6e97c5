//! Fuzz target: a Segment request body (a batch, or one message of a route) mapped to `events`
//! rows and decoded. Any input must give records or a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::decode::RowDecoder;
use tally::server::segment::records;
use tally::server::worker::Record;
use tally_views::{Catalog, Interval, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let route = [
        None,
        Some("track"),
        Some("identify"),
        Some("page"),
        Some("alias"),
    ][usize::from(route) % 5];
    let now = Timestamp::parse("2026-03-30T12:00:00Z").unwrap();
    let Ok(records) = records(&body, route, now) else {
        return;
    };
    let catalog = Catalog::new();
    let stream = catalog.stream("events").unwrap();
    let decoder = RowDecoder::new(stream, now, Interval::Days(1));
    for record in &records {
        if let Record::Json(text) = record {
            let _ = decoder.json(text);
        }
    }
});
