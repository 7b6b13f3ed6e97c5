//! Fuzz target: one event's JSON text decoded against a stream with every column type, and the
//! row applied to views of it. Any input must give a row or a rejection, never a panic, and the
//! flat decoding path must decide exactly as the general (serde) one.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally::decode::RowDecoder;
use tally_views::{Catalog, Engine, Event, Interval, TimeZone, Timestamp};

const SCHEMA: &str = "
CREATE STREAM s (id TEXT NOT NULL, n BIGINT, x DOUBLE, d DECIMAL(12,4), ok BOOLEAN, j JSON,
                 seen TIMESTAMP, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW v AS
SELECT time_bucket('1 day', at) AS day, id, count(*) AS c, sum(d) AS total, avg(x) AS mean,
       count(DISTINCT n) AS ns, percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS p90,
       sum(CAST(j->>'k' AS BIGINT)) AS ks, last(seen, at) AS last_seen
FROM s WHERE ok IS NOT FALSE GROUP BY 1, 2;
";

fn setup() -> &'static (Catalog, Engine) {
    static SETUP: OnceLock<(Catalog, Engine)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let catalog = tally_views::sql::apply(&Catalog::new(), SCHEMA)
            .unwrap()
            .catalog;
        let engine = Engine::new(&catalog, TimeZone::get("Europe/Berlin").unwrap());
        (catalog, engine)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (catalog, engine) = setup();
    let stream = catalog.stream("s").unwrap();
    let now = Timestamp::parse("2026-03-30T12:00:00Z").unwrap();
    let decoder = RowDecoder::new(stream, now, Interval::Days(1));
    let decided = decoder.json(text);
    let general = decoder.general(text);
    let same = match (&decided, &general) {
        (Ok(a), Ok(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| match (x, y) {
                    (tally_views::Value::Double(p), tally_views::Value::Double(q)) => {
                        p.to_bits() == q.to_bits()
                    }
                    _ => x == y,
                })
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    assert!(same, "{text}\n{decided:?}\n{general:?}");
    if let Ok(row) = decided {
        let mut delta = engine.delta(|_| 0);
        engine.apply("s", &[Event { seq: 1, row }], &mut delta);
    }
});
