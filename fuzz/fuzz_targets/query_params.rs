//! Fuzz target: view query parameters as a URL would carry them (`from`, `to`, `grain`,
//! `group_by`, `where`, `order_by`, `limit`), checked and run over a few stored groups. Any
//! input must answer rows or a query error, never panic or exhaust the stack.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally::params::QueryParams;
use tally_views::{Catalog, Engine, Event, QueryPlan, TimeZone, Timestamp, Value};

const SCHEMA: &str = "
CREATE STREAM s (shop TEXT NOT NULL, n BIGINT, d DECIMAL(12,2), at TIMESTAMP NOT NULL)
  WITH (event_time = 'at');
CREATE MATERIALIZED VIEW v AS
SELECT time_bucket('1 hour', at) AS hour, shop, count(*) AS c, sum(d) AS total,
       sum(d) / nullif(count(*), 0) AS mean, approx_count_distinct(n) AS ns
FROM s GROUP BY 1, 2;
";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\u{1}');
    let mut next = || parts.next().map(str::to_owned).filter(|s| !s.is_empty());
    let params = QueryParams {
        from: next(),
        to: next(),
        grain: next(),
        group_by: next().map(|g| g.split(',').map(str::to_owned).collect()),
        filter: next(),
        order_by: next(),
        limit: next().and_then(|l| l.parse().ok()),
    };
    let Ok(request) = params.to_request() else {
        return;
    };
    static SETUP: OnceLock<(Catalog, Engine, TimeZone)> = OnceLock::new();
    let (catalog, engine, tz) = SETUP.get_or_init(|| {
        let catalog = tally_views::sql::apply(&Catalog::new(), SCHEMA)
            .unwrap()
            .catalog;
        let tz = TimeZone::get("America/New_York").unwrap();
        let engine = Engine::new(&catalog, tz.clone());
        (catalog, engine, tz)
    });
    let plan = catalog.view("v").unwrap();
    let Ok(query) = QueryPlan::new(plan, &request) else {
        return;
    };
    let mut delta = engine.delta(|_| 0);
    let rows: Vec<Event> = ["paris", "oslo", "rome"]
        .iter()
        .enumerate()
        .map(|(i, shop)| Event {
            seq: i as u64 + 1,
            row: vec![
                Value::text(shop),
                Value::Int(i as i64),
                Value::Decimal(tally_views::decimal::Decimal::parse("12.50").unwrap()),
                Value::Timestamp(Timestamp(1_774_000_000_000_000 + i as i64 * 3_600_000_000)),
            ],
        })
        .collect();
    engine.apply("s", &rows, &mut delta);
    let groups = delta.views[0].groups.iter().map(|(k, s)| (&k[..], &s[..]));
    let _ = query.run(groups, tz);
});
