//! The built-in streams every tenant has: `events` and `metrics`.
//!
//! Their fields follow the Segment spec and the seed `003` schema. Unlike user streams they fill
//! some columns when an event leaves them out (a UUID `id`, the receive time), because clients
//! of a tracking API expect that. [`Catalog::new`], the catalog every schema starts from, is
//! built here.

use crate::plan::{Catalog, ColumnDef, ColumnDefault, StreamDef};
use crate::value::Type;

/// The metric types `metrics.metric_type` accepts: the StatsD types, with DogStatsD's
/// distributions and StatsD's sets (one row per member, the member in `tags.member`).
pub const METRIC_TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "timer",
    "distribution",
    "set",
];

fn col(name: &str, ty: Type, not_null: bool, default: Option<ColumnDefault>) -> ColumnDef {
    ColumnDef {
        name: name.to_owned(),
        ty,
        not_null,
        default,
        allowed: None,
    }
}

/// The definitions of `events` and `metrics`.
pub fn streams() -> Vec<StreamDef> {
    use ColumnDefault::{ReceivedAt, Uuid};
    use Type::{Double, Json, Text, Timestamp};
    let events = StreamDef {
        name: "events".into(),
        columns: vec![
            col("id", Text, true, Some(Uuid)),
            col("event_type", Text, true, Some(ColumnDefault::Text("track"))),
            col("event_name", Type::Text, true, None),
            col("timestamp", Timestamp, true, Some(ReceivedAt)),
            col("user_id", Type::Text, false, None),
            col("anonymous_id", Type::Text, false, None),
            col("session_id", Type::Text, false, None),
            col("properties", Json, false, None),
            col("context", Json, false, None),
            col("page_url", Type::Text, false, None),
            col("referrer", Type::Text, false, None),
            col("received_at", Timestamp, true, Some(ReceivedAt)),
        ],
        event_time: 3,
        dedupe_key: vec![0],
        retention: None,
        person: vec![4, 5],
        builtin: true,
    };
    let mut metric_type = col("metric_type", Type::Text, true, None);
    metric_type.allowed = Some(METRIC_TYPES);
    let metrics = StreamDef {
        name: "metrics".into(),
        columns: vec![
            col("id", Type::Text, true, Some(Uuid)),
            col("name", Type::Text, true, None),
            metric_type,
            col("value", Double, true, None),
            col("timestamp", Timestamp, true, Some(ReceivedAt)),
            col("tags", Json, false, None),
            col("unit", Type::Text, false, None),
        ],
        event_time: 4,
        dedupe_key: vec![0],
        retention: None,
        person: Vec::new(),
        builtin: true,
    };
    vec![events, metrics]
}

impl Catalog {
    /// A catalog with only the built-in streams.
    pub fn new() -> Catalog {
        let mut catalog = Catalog::empty();
        for s in streams() {
            catalog.put_builtin(s);
        }
        catalog
    }
}
