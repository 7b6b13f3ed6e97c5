//! Seed 003 (Spec 355): product analytics of a mission-planning app — page views and tracked
//! events in the built-in `events` stream, with anonymous visitors who sign up later (an
//! `identify` links their anonymous id to their new user id), sessions with landing and exit
//! pages, a sign-up → mission → invite → upgrade funnel, and application metrics (a query-time
//! timer, a missions counter, an active-users gauge) in the built-in `metrics` stream — over
//! the 45 days before `now`.

use super::common::{DAY, Files, HOUR, MINUTE, Rng, object, rfc3339, s};

/// One `events` row.
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) event_type: &'static str,
    pub(crate) event_name: String,
    pub(crate) user_id: Option<String>,
    pub(crate) anonymous_id: Option<String>,
    pub(crate) session_id: String,
    pub(crate) page_url: Option<&'static str>,
    pub(crate) plan: Option<&'static str>,
    pub(crate) at: i64,
}

/// One `metrics` row.
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) metric_type: &'static str,
    /// Thousandths, so that sums are exact.
    pub(crate) milli: i64,
    pub(crate) tag: Option<(&'static str, &'static str)>,
    pub(crate) at: i64,
}

pub(crate) struct Data {
    pub(crate) events: Vec<Event>,
    pub(crate) metrics: Vec<Metric>,
}

pub(crate) const DAYS: i64 = 45;
const PAGES: [&str; 5] = ["/", "/pricing", "/docs", "/missions", "/blog/launch"];
pub(crate) const FUNNEL: [&str; 4] = [
    "Signed Up",
    "Created Mission",
    "Invited Teammate",
    "Upgraded",
];

pub(crate) fn generate(now: i64) -> Data {
    let mut rng = Rng::new(0x0003_5ead_0355);
    let first_day = (now / DAY - DAYS) * DAY;
    let mut events = Vec::new();
    let mut session = 0;
    // Visitors: each arrives on some day, browses anonymously, maybe signs up (identified in
    // the same session), then comes back on later days as a user.
    for v in 0..400 {
        let anonymous = format!("anon-{v:04}");
        let user = format!("user-{v:04}");
        let plan = *rng.pick(&["free", "free", "team", "pro"]);
        let arrival = first_day + rng.range(0, DAYS) * DAY;
        let signs_up = rng.chance(45);
        let loyalty = rng.range(5, 70);
        let mut day = arrival;
        let mut signed_up = false;
        let mut step = 0;
        while day < now {
            session += 1;
            let session_id = format!("s-{session:06}");
            let mut at = day + rng.range(6 * HOUR, 22 * HOUR);
            let views = rng.range(1, 6);
            let mut carry = |event_type, name: String, page, plan, at: i64, signed: bool| {
                if at < now {
                    events.push(Event {
                        id: String::new(),
                        event_type,
                        event_name: name,
                        user_id: signed.then(|| user.clone()),
                        anonymous_id: Some(anonymous.clone()),
                        session_id: session_id.clone(),
                        page_url: page,
                        plan,
                        at,
                    });
                }
            };
            for _ in 0..views {
                let page = *rng.pick(&PAGES);
                carry(
                    "page",
                    "Page Viewed".into(),
                    Some(page),
                    None,
                    at,
                    signed_up,
                );
                at += rng.range(20, 12 * MINUTE);
            }
            if !signed_up && signs_up {
                signed_up = true;
                // Signed up anonymously; the app then identifies the visitor (both ids).
                carry("track", FUNNEL[0].into(), None, Some(plan), at, false);
                at += rng.range(1, 30);
                carry("identify", "identify".into(), None, None, at, true);
                step = 1;
            } else if signed_up && step < FUNNEL.len() && rng.chance(55) {
                at += rng.range(MINUTE, 15 * MINUTE);
                carry("track", FUNNEL[step].into(), None, None, at, true);
                step += 1;
            }
            if signed_up && rng.chance(40) {
                at += rng.range(MINUTE, 3 * MINUTE);
                carry(
                    "track",
                    "Viewed Report".into(),
                    Some("/missions"),
                    None,
                    at,
                    true,
                );
            }
            // Back after a few days, less often for the less loyal.
            day += rng.range(1, 8) * DAY;
            if !rng.chance(loyalty.max(5) as u64) && !signed_up {
                break;
            }
            if !rng.chance(85) {
                break;
            }
        }
    }
    events.sort_by_key(|e| e.at);
    for (i, e) in events.iter_mut().enumerate() {
        e.id = format!("evt-{i:06}");
    }
    let mut metrics = Vec::new();
    let mut at = first_day;
    while at < now {
        let hour_load = rng.range(2, 12);
        for _ in 0..hour_load {
            let t = at + rng.range(0, HOUR);
            if t >= now {
                continue;
            }
            let kind = *rng.pick(&["select", "select", "insert", "update"]);
            metrics.push(Metric {
                name: "database.query.duration",
                metric_type: "timer",
                milli: rng.range(200, 90_000),
                tag: Some(("query_type", kind)),
                at: t,
            });
        }
        if rng.chance(50) && at + 30 * MINUTE < now {
            metrics.push(Metric {
                name: "missions.created",
                metric_type: "counter",
                milli: 1_000,
                tag: None,
                at: at + 30 * MINUTE,
            });
        }
        metrics.push(Metric {
            name: "users.active",
            metric_type: "gauge",
            milli: rng.range(10, 120) * 1_000,
            tag: None,
            at,
        });
        at += HOUR;
    }
    Data { events, metrics }
}

impl Data {
    /// The files `run.sh` loads: the built-in `events` and `metrics` streams.
    pub(crate) fn files(&self) -> Files {
        let mut files = Files::default();
        let lines = self
            .events
            .iter()
            .map(|e| {
                object(&[
                    ("id", s(&e.id)),
                    ("event_type", s(e.event_type)),
                    ("event_name", s(&e.event_name)),
                    ("timestamp", s(rfc3339(e.at))),
                    ("user_id", e.user_id.as_ref().and_then(s)),
                    ("anonymous_id", e.anonymous_id.as_ref().and_then(s)),
                    ("session_id", s(&e.session_id)),
                    ("page_url", e.page_url.and_then(s)),
                    (
                        "properties",
                        e.plan.map(|p| serde_json::json!({ "plan": p })),
                    ),
                ])
            })
            .collect();
        files.stream("events", lines);
        let lines = self
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                object(&[
                    ("id", s(format!("m-{i:06}"))),
                    ("name", s(m.name)),
                    ("metric_type", s(m.metric_type)),
                    (
                        "value",
                        Some(serde_json::Value::from(m.milli as f64 / 1000.0)),
                    ),
                    ("timestamp", s(rfc3339(m.at))),
                    ("tags", m.tag.map(|(k, v)| serde_json::json!({ k: v }))),
                    (
                        "unit",
                        (m.metric_type == "timer").then_some("ms").and_then(s),
                    ),
                ])
            })
            .collect();
        files.stream("metrics", lines);
        files
    }
}
