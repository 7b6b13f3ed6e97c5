//! Builders for every message: Segment's `track`, `identify`, `page`, `screen`, `group` and
//! `alias` (sent to `POST /v1/batch`), and metrics of every type (sent to the built-in
//! `metrics` stream). A builder checks what it needs when it is queued; its message id (a
//! UUID, unless one is set) is fixed then, so a retried batch is deduplicated by the server.

use serde_json::{Map, Value as Json};

use crate::Error;

/// A new message id: a random (version 4) UUID from the thread's generator (no system call).
fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /v1/batch` (Segment's batch format).
    Segment,
    /// `POST /v1/streams/metrics/events`.
    Metrics,
}

/// A message ready to queue: its route and JSON text.
pub(crate) struct Encoded {
    pub(crate) route: Route,
    pub(crate) json: String,
}

/// What every Segment message has: who, when, its id and context.
#[derive(Clone, Debug, Default)]
struct Common {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    message_id: Option<String>,
    timestamp: Option<jiff::Timestamp>,
    context: Map<String, Json>,
}

impl Common {
    /// The message's JSON: the common fields plus `fields`.
    fn encode(
        self,
        kind: &str,
        mut fields: Map<String, Json>,
        needs_identity: bool,
    ) -> Result<Encoded, Error> {
        if needs_identity && self.user_id.is_none() && self.anonymous_id.is_none() {
            return Err(Error::Invalid(format!(
                "a {kind} message needs a user id or an anonymous id (.user_id(…) or .anonymous_id(…))"
            )));
        }
        fields.insert("type".into(), kind.into());
        if let Some(u) = self.user_id {
            fields.insert("userId".into(), u.into());
        }
        if let Some(a) = self.anonymous_id {
            fields.insert("anonymousId".into(), a.into());
        }
        fields.insert(
            "messageId".into(),
            self.message_id.unwrap_or_else(new_id).into(),
        );
        fields.insert(
            "timestamp".into(),
            self.timestamp
                .unwrap_or_else(jiff::Timestamp::now)
                .to_string()
                .into(),
        );
        let mut context = self.context;
        context.insert(
            "library".into(),
            serde_json::json!({"name": "tally-client", "version": env!("CARGO_PKG_VERSION")}),
        );
        fields.insert("context".into(), Json::Object(context));
        Ok(Encoded {
            route: Route::Segment,
            json: Json::Object(fields).to_string(),
        })
    }
}

/// The setters every Segment message builder has.
macro_rules! common_setters {
    () => {
        /// The user's id in your system.
        pub fn user_id(mut self, id: impl Into<String>) -> Self {
            self.common.user_id = Some(id.into());
            self
        }
        /// An id for a user not known yet (a device or session id).
        pub fn anonymous_id(mut self, id: impl Into<String>) -> Self {
            self.common.anonymous_id = Some(id.into());
            self
        }
        /// The message id the server deduplicates by (a new UUID when not set).
        pub fn message_id(mut self, id: impl Into<String>) -> Self {
            self.common.message_id = Some(id.into());
            self
        }
        /// When it happened (the time it was queued when not set).
        pub fn timestamp(mut self, at: jiff::Timestamp) -> Self {
            self.common.timestamp = Some(at);
            self
        }
        /// A field of the message's `context` (`ip`, `userAgent`, `page`, …).
        pub fn context(mut self, key: impl Into<String>, value: impl Into<Json>) -> Self {
            self.common.context.insert(key.into(), value.into());
            self
        }
    };
}

/// A `track` message: something a user did.
#[derive(Clone, Debug)]
pub struct EventBuilder {
    event: String,
    properties: Map<String, Json>,
    common: Common,
}

impl EventBuilder {
    /// A track of the event `event` (`"Signed Up"`).
    pub fn new(event: impl Into<String>) -> EventBuilder {
        EventBuilder {
            event: event.into(),
            properties: Map::new(),
            common: Common::default(),
        }
    }
    common_setters!();
    /// A property of the event.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Json>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        if self.event.trim().is_empty() {
            return Err(Error::Invalid("a track message needs an event name".into()));
        }
        let mut fields = Map::new();
        fields.insert("event".into(), self.event.into());
        fields.insert("properties".into(), Json::Object(self.properties));
        self.common.encode("track", fields, true)
    }
}

/// An `identify` message: who a user is.
#[derive(Clone, Debug, Default)]
pub struct IdentifyBuilder {
    traits: Map<String, Json>,
    common: Common,
}

impl IdentifyBuilder {
    pub fn new() -> IdentifyBuilder {
        IdentifyBuilder::default()
    }
    common_setters!();
    /// A trait of the user (`email`, `plan`, …).
    pub fn trait_(mut self, key: impl Into<String>, value: impl Into<Json>) -> Self {
        self.traits.insert(key.into(), value.into());
        self
    }
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        let mut fields = Map::new();
        fields.insert("traits".into(), Json::Object(self.traits));
        self.common.encode("identify", fields, true)
    }
}

/// A `page` message (web) or, with [`PageBuilder::screen`], a `screen` message (mobile).
#[derive(Clone, Debug)]
pub struct PageBuilder {
    kind: &'static str,
    name: Option<String>,
    properties: Map<String, Json>,
    common: Common,
}

impl PageBuilder {
    /// A page view of the page `name`.
    pub fn new(name: impl Into<String>) -> PageBuilder {
        PageBuilder {
            kind: "page",
            name: Some(name.into()),
            properties: Map::new(),
            common: Common::default(),
        }
    }
    /// A screen view of the screen `name`.
    pub fn screen(name: impl Into<String>) -> PageBuilder {
        PageBuilder {
            kind: "screen",
            ..PageBuilder::new(name)
        }
    }
    common_setters!();
    /// A property of the view (`url`, `referrer`, `title`, …).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Json>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        let mut fields = Map::new();
        if let Some(name) = self.name {
            fields.insert("name".into(), name.into());
        }
        fields.insert("properties".into(), Json::Object(self.properties));
        self.common.encode(self.kind, fields, true)
    }
}

/// A `group` message: a user joins a group (an account, a company).
#[derive(Clone, Debug)]
pub struct GroupBuilder {
    group_id: String,
    traits: Map<String, Json>,
    common: Common,
}

impl GroupBuilder {
    pub fn new(group_id: impl Into<String>) -> GroupBuilder {
        GroupBuilder {
            group_id: group_id.into(),
            traits: Map::new(),
            common: Common::default(),
        }
    }
    common_setters!();
    /// A trait of the group.
    pub fn trait_(mut self, key: impl Into<String>, value: impl Into<Json>) -> Self {
        self.traits.insert(key.into(), value.into());
        self
    }
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        if self.group_id.is_empty() {
            return Err(Error::Invalid("a group message needs a group id".into()));
        }
        let mut fields = Map::new();
        fields.insert("groupId".into(), self.group_id.into());
        fields.insert("traits".into(), Json::Object(self.traits));
        self.common.encode("group", fields, true)
    }
}

/// An `alias` message: `previous_id` (an anonymous id, an old user id) is now `user_id`.
#[derive(Clone, Debug)]
pub struct AliasBuilder {
    previous_id: String,
    common: Common,
}

impl AliasBuilder {
    pub fn new(user_id: impl Into<String>, previous_id: impl Into<String>) -> AliasBuilder {
        AliasBuilder {
            previous_id: previous_id.into(),
            common: Common {
                user_id: Some(user_id.into()),
                ..Common::default()
            },
        }
    }
    common_setters!();
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        if self.previous_id.is_empty() || self.common.user_id.as_deref().unwrap_or("").is_empty() {
            return Err(Error::Invalid(
                "an alias message needs a user id and a previous id".into(),
            ));
        }
        let mut fields = Map::new();
        fields.insert("previousId".into(), self.previous_id.into());
        self.common.encode("alias", fields, false)
    }
}

/// A metric of the built-in `metrics` stream, of one of its types.
#[derive(Clone, Debug)]
pub struct MetricBuilder {
    name: String,
    metric_type: &'static str,
    value: f64,
    tags: Map<String, Json>,
    unit: Option<String>,
    timestamp: Option<jiff::Timestamp>,
    id: Option<String>,
}

impl MetricBuilder {
    fn of(metric_type: &'static str, name: impl Into<String>, value: f64) -> MetricBuilder {
        MetricBuilder {
            name: name.into(),
            metric_type,
            value,
            tags: Map::new(),
            unit: None,
            timestamp: None,
            id: None,
        }
    }
    /// A counter (value 1 unless set): views sum it.
    pub fn counter(name: impl Into<String>) -> MetricBuilder {
        MetricBuilder::of("counter", name, 1.0)
    }
    /// A gauge: a level at a moment; views keep its last value (`last(value, timestamp)`).
    pub fn gauge(name: impl Into<String>) -> MetricBuilder {
        MetricBuilder::of("gauge", name, 0.0)
    }
    /// A histogram sample.
    pub fn histogram(name: impl Into<String>) -> MetricBuilder {
        MetricBuilder::of("histogram", name, 0.0)
    }
    /// A timer sample, in milliseconds (unit `ms`).
    pub fn timer(name: impl Into<String>) -> MetricBuilder {
        MetricBuilder {
            unit: Some("ms".into()),
            ..MetricBuilder::of("timer", name, 0.0)
        }
    }
    /// A distribution sample (DogStatsD's global percentiles).
    pub fn distribution(name: impl Into<String>) -> MetricBuilder {
        MetricBuilder::of("distribution", name, 0.0)
    }
    /// A member of a set (value 1, the member in the tag `member`), for distinct counts.
    pub fn set(name: impl Into<String>, member: impl Into<String>) -> MetricBuilder {
        MetricBuilder::of("set", name, 1.0).tag("member", member.into())
    }
    /// The value (a count, a level, a sample).
    pub fn value(mut self, value: f64) -> Self {
        self.value = value;
        self
    }
    /// A tag (`queue` = `mail`), into the `tags` JSON column.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), Json::String(value.into()));
        self
    }
    /// The unit (`ms`, `bytes`, …).
    pub fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }
    /// When it was measured (the time it was queued when not set).
    pub fn timestamp(mut self, at: jiff::Timestamp) -> Self {
        self.timestamp = Some(at);
        self
    }
    /// The id the server deduplicates by (a new UUID when not set).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        if self.name.is_empty() {
            return Err(Error::Invalid("a metric needs a name".into()));
        }
        if !self.value.is_finite() {
            return Err(Error::Invalid(format!(
                "the value of metric '{}' is not a finite number",
                self.name
            )));
        }
        let mut fields = Map::new();
        fields.insert("id".into(), self.id.unwrap_or_else(new_id).into());
        fields.insert("name".into(), self.name.into());
        fields.insert("metric_type".into(), self.metric_type.into());
        fields.insert("value".into(), self.value.into());
        fields.insert(
            "timestamp".into(),
            self.timestamp
                .unwrap_or_else(jiff::Timestamp::now)
                .to_string()
                .into(),
        );
        if !self.tags.is_empty() {
            fields.insert("tags".into(), Json::Object(self.tags));
        }
        if let Some(unit) = self.unit {
            fields.insert("unit".into(), unit.into());
        }
        Ok(Encoded {
            route: Route::Metrics,
            json: Json::Object(fields).to_string(),
        })
    }
}

/// Any message, for [`Client::send`](crate::Client::send).
#[derive(Clone, Debug)]
pub enum Message {
    Track(EventBuilder),
    Identify(IdentifyBuilder),
    Page(PageBuilder),
    Group(GroupBuilder),
    Alias(AliasBuilder),
    Metric(MetricBuilder),
}

impl Message {
    pub(crate) fn encode(self) -> Result<Encoded, Error> {
        match self {
            Message::Track(m) => m.encode(),
            Message::Identify(m) => m.encode(),
            Message::Page(m) => m.encode(),
            Message::Group(m) => m.encode(),
            Message::Alias(m) => m.encode(),
            Message::Metric(m) => m.encode(),
        }
    }
}

macro_rules! into_message {
    ($($builder:ident => $variant:ident),*) => {
        $(impl From<$builder> for Message {
            fn from(b: $builder) -> Message {
                Message::$variant(b)
            }
        })*
    };
}
into_message!(EventBuilder => Track, IdentifyBuilder => Identify, PageBuilder => Page,
    GroupBuilder => Group, AliasBuilder => Alias, MetricBuilder => Metric);

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: Result<Encoded, Error>) -> Json {
        serde_json::from_str(&e.unwrap().json).unwrap()
    }

    #[test]
    fn segment_messages_follow_the_spec() {
        let t = json(
            EventBuilder::new("Signed Up")
                .user_id("u1")
                .property("plan", "pro")
                .message_id("m1")
                .encode(),
        );
        assert_eq!(t["type"], "track");
        assert_eq!(t["event"], "Signed Up");
        assert_eq!(t["userId"], "u1");
        assert_eq!(t["properties"]["plan"], "pro");
        assert_eq!(t["messageId"], "m1");
        assert_eq!(t["context"]["library"]["name"], "tally-client");
        assert!(t["timestamp"].as_str().unwrap().ends_with('Z'));
        let i = json(
            IdentifyBuilder::new()
                .anonymous_id("a1")
                .trait_("email", "x@y")
                .encode(),
        );
        assert_eq!(
            (i["type"].as_str(), i["traits"]["email"].as_str()),
            (Some("identify"), Some("x@y"))
        );
        assert_eq!(
            json(PageBuilder::screen("Home").user_id("u").encode())["type"],
            "screen"
        );
        assert_eq!(
            json(GroupBuilder::new("g1").user_id("u").encode())["groupId"],
            "g1"
        );
        let a = json(AliasBuilder::new("u1", "a1").encode());
        assert_eq!(
            (a["userId"].as_str(), a["previousId"].as_str()),
            (Some("u1"), Some("a1"))
        );
        // Two messages get two ids.
        let (m1, m2) = (
            json(EventBuilder::new("e").user_id("u").encode()),
            json(EventBuilder::new("e").user_id("u").encode()),
        );
        assert_ne!(m1["messageId"], m2["messageId"]);
    }

    #[test]
    fn what_is_missing_is_named() {
        let err = |e: Result<Encoded, Error>| e.err().unwrap().to_string();
        assert!(err(EventBuilder::new("e").encode()).contains("user id or an anonymous id"));
        assert!(err(EventBuilder::new(" ").user_id("u").encode()).contains("event name"));
        assert!(err(AliasBuilder::new("u", "").encode()).contains("previous id"));
        assert!(err(MetricBuilder::gauge("g").value(f64::NAN).encode()).contains("finite"));
    }

    #[test]
    fn metrics_of_every_type() {
        let c = json(MetricBuilder::counter("jobs").tag("queue", "mail").encode());
        assert_eq!(
            (c["metric_type"].as_str(), c["value"].as_f64()),
            (Some("counter"), Some(1.0))
        );
        assert_eq!(c["tags"]["queue"], "mail");
        let t = json(MetricBuilder::timer("lat").value(12.5).encode());
        assert_eq!(
            (t["unit"].as_str(), t["value"].as_f64()),
            (Some("ms"), Some(12.5))
        );
        let s = json(MetricBuilder::set("users", "u1").encode());
        assert_eq!(
            (s["metric_type"].as_str(), s["tags"]["member"].as_str()),
            (Some("set"), Some("u1"))
        );
        for (m, ty) in [
            (MetricBuilder::gauge("g"), "gauge"),
            (MetricBuilder::histogram("h"), "histogram"),
            (MetricBuilder::distribution("d"), "distribution"),
        ] {
            assert_eq!(json(m.encode())["metric_type"], ty);
        }
    }
}
