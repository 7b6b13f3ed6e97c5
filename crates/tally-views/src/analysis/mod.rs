//! Behavioural analyses of the built-in `events` stream: active users, retention, funnels,
//! sessions and lifecycle, per *person*, with identity links applied retroactively.
//!
//! [`Activity`] is the state. It keeps each retained event of `events` reduced to what the
//! analyses read (time, local day, name, page, whether it is activity, its sequence number),
//! filed under the identity that sent it (a `user_id`, else an `anonymous_id`) in time order,
//! plus the identity links (`identify` with both ids, `alias`). It is caught up from the log by
//! position ([`Activity::position`], [`Activity::absorb`]), so any process that reads the log —
//! a lone writer, a leader or a follower — holds the same state, and a late link or a late event
//! only changes what the next analysis sees. Persons are resolved when links or identities
//! change ([`Activity::settle`]); an analysis is then one pass over persons, each seeing its
//! identities' events merged in time order.
//!
//! The semantics (what a person, a session, a funnel step is) are in `docs/analyses.md`; the
//! request parameters in [`request`].

pub mod calendar;
mod passes;
pub mod request;

use crate::value::SmolStr;

use jiff::tz::TimeZone;

use crate::engine::Event;
use crate::plan::StreamDef;
use crate::query::ResultSet;
use crate::value::Value;

pub use calendar::Period;
pub use request::{Analysis, AnalysisError, Kind};

/// The hash maps of the analyses (hashbrown with foldhash, as the engine's).
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// The event types that count as activity.
pub const ACTIVITY_TYPES: [&str; 3] = ["track", "page", "screen"];

/// One event as the analyses see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ev {
    pub ts: i64,
    pub seq: u64,
    /// The local calendar day (see [`calendar::local_day`]).
    pub day: i32,
    /// The interned `event_name`.
    pub name: u32,
    /// The interned `page_url`; 0 when it has none.
    pub page: u32,
    /// Whether the event type is activity (`track`, `page`, `screen`).
    pub activity: bool,
}

/// Who sent an event: its `user_id` when set, else its `anonymous_id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity {
    anonymous: bool,
    id: SmolStr,
}

/// A link of an anonymous id to a user id, and when it was made: the earliest wins.
#[derive(Clone, Debug)]
struct Link {
    at: i64,
    user: SmolStr,
}

/// Strings numbered in order of first sight.
#[derive(Default)]
struct Interner {
    index: HashMap<SmolStr, u32>,
    strings: Vec<SmolStr>,
}

impl Interner {
    fn intern(&mut self, s: &SmolStr) -> u32 {
        if let Some(&i) = self.index.get(&**s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.clone());
        self.index.insert(s.clone(), i);
        i
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied()
    }
}

/// The positions of the columns the analyses read, in the `events` stream.
#[derive(Clone, Copy)]
struct Columns {
    event_type: usize,
    event_name: usize,
    timestamp: usize,
    user_id: usize,
    anonymous_id: usize,
    properties: usize,
    page_url: usize,
}

/// The values of one top-level property on the events of one name, by sequence number: what a
/// funnel's `breakdown` reads. Built when first asked for; at most [`PROPERTY_COLUMNS`] are
/// kept (the least recently asked for goes first).
struct PropertyColumn {
    property: String,
    /// The interned event name.
    name: u32,
    /// Per event, its value's number in `values_text` (`None`: absent or null).
    values: HashMap<u64, Option<u32>>,
    values_text: Interner,
}

/// How many breakdown property columns a tenant keeps.
pub const PROPERTY_COLUMNS: usize = 8;

/// Persons resolved from identities: each person's identities.
#[derive(Default)]
struct Persons {
    /// `members[offsets[p]..offsets[p + 1]]` are person `p`'s identities.
    offsets: Vec<u32>,
    members: Vec<u32>,
}

impl Persons {
    fn count(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
}

/// The analyses' state for one tenant: see the module documentation.
pub struct Activity {
    tz: TimeZone,
    columns: Columns,
    position: u64,
    identities: HashMap<Identity, u32>,
    /// Per identity: its events, in `(ts, seq)` order once settled.
    logs: Vec<Vec<Ev>>,
    /// Identities whose log got an event out of order since the last settle.
    unsorted: Vec<u32>,
    names: Interner,
    /// Page 0 is "no page".
    pages: Interner,
    links: HashMap<SmolStr, Link>,
    property_columns: Vec<PropertyColumn>,
    /// Bumped when identities or links change; persons are resolved for `resolved`.
    version: u64,
    resolved: u64,
    persons: Persons,
    events: u64,
}

impl Activity {
    /// An empty state for the `events` stream `stream`, with days in `tz`.
    pub fn new(stream: &StreamDef, tz: TimeZone) -> Activity {
        let at = |name: &str| {
            stream
                .columns
                .iter()
                .position(|c| c.name == name)
                .expect("the built-in events stream has the column")
        };
        let mut pages = Interner::default();
        pages.intern(&SmolStr::from(""));
        Activity {
            tz,
            columns: Columns {
                event_type: at("event_type"),
                event_name: at("event_name"),
                timestamp: at("timestamp"),
                user_id: at("user_id"),
                anonymous_id: at("anonymous_id"),
                properties: at("properties"),
                page_url: at("page_url"),
            },
            position: 0,
            identities: HashMap::default(),
            logs: Vec::new(),
            unsorted: Vec::new(),
            names: Interner::default(),
            pages,
            links: HashMap::default(),
            property_columns: Vec::new(),
            version: 1,
            resolved: 0,
            persons: Persons::default(),
            events: 0,
        }
    }

    /// The sequence number of the last event absorbed: read the log after it.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// How many events the state holds.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The time zone of days, weeks and months.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// Takes in events of the log after [`Activity::position`], in sequence order.
    pub fn absorb(&mut self, events: &[Event]) {
        let c = self.columns;
        for event in events {
            if event.seq <= self.position {
                continue;
            }
            self.position = event.seq;
            let row = &event.row;
            let text = |i: usize| match &row[i] {
                Value::Text(s) if !s.is_empty() => Some(s),
                _ => None,
            };
            let Value::Timestamp(ts) = row[c.timestamp] else {
                continue;
            };
            let Some(kind) = text(c.event_type) else {
                continue;
            };
            let is = |t: &str| kind.eq_ignore_ascii_case(t);
            let user = text(c.user_id);
            let anonymous = text(c.anonymous_id);
            if is("identify")
                && let (Some(user), Some(anonymous)) = (user, anonymous)
            {
                self.link(anonymous.clone(), ts.0, user.clone());
            }
            if is("alias")
                && let Some(user) = user
                && let Value::Json(p) = &row[c.properties]
                && let Some(previous) = previous_id(p)
            {
                self.link(previous, ts.0, user.clone());
            }
            let identity = match (user, anonymous) {
                (Some(u), _) => Identity {
                    anonymous: false,
                    id: u.clone(),
                },
                (None, Some(a)) => Identity {
                    anonymous: true,
                    id: a.clone(),
                },
                (None, None) => continue,
            };
            let name = match &row[c.event_name] {
                Value::Text(n) => self.names.intern(n),
                _ => self.names.intern(&SmolStr::from("")),
            };
            for column in &mut self.property_columns {
                if column.name == name {
                    let value = property_text(&row[c.properties], &column.property)
                        .map(|v| column.values_text.intern(&v));
                    column.values.insert(event.seq, value);
                }
            }
            let page = text(c.page_url).map_or(0, |p| self.pages.intern(p));
            let ev = Ev {
                ts: ts.0,
                seq: event.seq,
                day: calendar::local_day(ts, &self.tz),
                name,
                page,
                activity: ACTIVITY_TYPES.iter().any(|t| is(t)),
            };
            let next = self.logs.len() as u32;
            let index = *self.identities.entry(identity).or_insert(next);
            if index == next {
                self.logs.push(Vec::new());
                self.version += 1;
            }
            let log = &mut self.logs[index as usize];
            if log.last().is_some_and(|last| last.ts > ev.ts) {
                self.unsorted.push(index);
            }
            log.push(ev);
            self.events += 1;
        }
    }

    fn link(&mut self, anonymous: SmolStr, at: i64, user: SmolStr) {
        let earlier = |old: &Link| (at, &*user) < (old.at, &*old.user);
        match self.links.get_mut(&anonymous) {
            Some(old) if !earlier(old) => {}
            Some(old) => {
                *old = Link { at, user };
                self.version += 1;
            }
            None => {
                self.links.insert(anonymous, Link { at, user });
                self.version += 1;
            }
        }
    }

    /// Whether the column of `property` on events named `name` (a funnel's breakdown) is built;
    /// if so, it becomes the most recently used. If not, [`Activity::add_property_column`] and
    /// feed it the log up to the position.
    pub fn has_property_column(&mut self, property: &str, name: &str) -> bool {
        let Some(name) = self.names.get(name) else {
            // No event has the name: the column is empty, and absorb fills it if one comes.
            self.add_property_column(property, name);
            return true;
        };
        match self
            .property_columns
            .iter()
            .position(|c| c.property == property && c.name == name)
        {
            Some(i) => {
                let column = self.property_columns.remove(i);
                self.property_columns.push(column);
                true
            }
            None => false,
        }
    }

    /// Starts a property column (dropping the least recently used past
    /// [`PROPERTY_COLUMNS`]); fill it with [`Activity::fill_property_column`] from the start of
    /// the log up to [`Activity::position`] (later events fill it as they are absorbed).
    pub fn add_property_column(&mut self, property: &str, name: &str) {
        let name = self.names.intern(&SmolStr::from(name));
        if self.property_columns.len() >= PROPERTY_COLUMNS {
            self.property_columns.remove(0);
        }
        self.property_columns.push(PropertyColumn {
            property: property.to_owned(),
            name,
            values: HashMap::default(),
            values_text: Interner::default(),
        });
    }

    /// Fills the last added property column from events at or below the position.
    pub fn fill_property_column(&mut self, events: &[Event]) {
        let c = self.columns;
        let Some(column) = self.property_columns.last_mut() else {
            return;
        };
        let name = &self.names.strings[column.name as usize];
        for event in events.iter().filter(|e| e.seq <= self.position) {
            if matches!(&event.row[c.event_name], Value::Text(n) if n == name) {
                let value = property_text(&event.row[c.properties], &column.property)
                    .map(|v| column.values_text.intern(&v));
                column.values.insert(event.seq, value);
            }
        }
    }

    /// Puts every identity's events in time order and resolves persons if links or identities
    /// changed. Call before [`Activity::run`].
    pub fn settle(&mut self) {
        self.unsorted.sort_unstable();
        self.unsorted.dedup();
        for &i in &self.unsorted {
            // Nearly sorted (a few late events): a stable sort is close to linear there.
            self.logs[i as usize].sort_by_key(|e| (e.ts, e.seq));
        }
        self.unsorted.clear();
        if self.resolved != self.version {
            self.persons = self.resolve();
            self.resolved = self.version;
        }
    }

    /// Each identity's person: a user id is its own person; an anonymous id is the person of
    /// the user id it was linked to, else its own (keyed by the id's text, as the semantics
    /// name persons by id).
    fn resolve(&self) -> Persons {
        let mut by_name: HashMap<&str, u32> = HashMap::default();
        by_name.reserve(self.identities.len());
        let mut of_identity = vec![0u32; self.logs.len()];
        for (identity, &index) in &self.identities {
            let name: &str = match (identity.anonymous, self.links.get(&identity.id)) {
                (true, Some(link)) => &link.user,
                _ => &identity.id,
            };
            let next = by_name.len() as u32;
            of_identity[index as usize] = *by_name.entry(name).or_insert(next);
        }
        let count = by_name.len();
        let mut offsets = vec![0u32; count + 1];
        for &p in &of_identity {
            offsets[p as usize + 1] += 1;
        }
        for p in 0..count {
            offsets[p + 1] += offsets[p];
        }
        let mut fill = offsets.clone();
        let mut members = vec![0u32; of_identity.len()];
        for (identity, &p) in of_identity.iter().enumerate() {
            members[fill[p as usize] as usize] = identity as u32;
            fill[p as usize] += 1;
        }
        Persons { offsets, members }
    }

    /// Every id of the person `id` names, as the analyses resolve persons: the user id itself
    /// (or, for an anonymous id linked to a user id, that user id; an anonymous id never linked
    /// is its own person) and every anonymous id linked to it. Sorted, `id` always among them.
    pub fn person_ids(&self, id: &str) -> Vec<SmolStr> {
        let mut persons: Vec<&str> = vec![id];
        if let Some(link) = self.links.get(id) {
            persons.push(&link.user);
        }
        let mut ids: Vec<SmolStr> = persons.iter().map(|p| SmolStr::from(*p)).collect();
        ids.extend(
            self.links
                .iter()
                .filter(|(_, link)| persons.contains(&&*link.user))
                .map(|(anonymous, _)| anonymous.clone()),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Calls `f` with each person's events in `(ts, seq)` order.
    pub(crate) fn for_each_person(&self, mut f: impl FnMut(&[Ev])) {
        let p = &self.persons;
        let mut merged = Vec::new();
        for person in 0..p.count() {
            let ids = &p.members[p.offsets[person] as usize..p.offsets[person + 1] as usize];
            if let [one] = ids {
                f(&self.logs[*one as usize]);
            } else {
                merged.clear();
                for &id in ids {
                    merged.extend_from_slice(&self.logs[id as usize]);
                }
                merged.sort_unstable_by_key(|e| (e.ts, e.seq));
                f(&merged);
            }
        }
    }

    /// The number of an event name, if any event has it.
    pub(crate) fn name(&self, name: &str) -> Option<u32> {
        self.names.get(name)
    }

    /// The text of page number `page` (`None` for 0).
    pub(crate) fn page(&self, page: u32) -> Option<&SmolStr> {
        (page != 0).then(|| &self.pages.strings[page as usize])
    }

    /// The breakdown value of event `seq` from the column of `property` on events named `name`.
    pub(crate) fn property(&self, property: &str, name: &str, seq: u64) -> Option<&SmolStr> {
        let name = self.names.get(name)?;
        let column = self
            .property_columns
            .iter()
            .find(|c| c.property == property && c.name == name)?;
        let value = (*column.values.get(&seq)?)?;
        Some(&column.values_text.strings[value as usize])
    }

    /// Runs an analysis over the settled state.
    pub fn run(&self, analysis: &Analysis) -> ResultSet {
        passes::run(self, analysis)
    }
}

/// `previousId` of an alias event's properties.
fn previous_id(properties: &str) -> Option<SmolStr> {
    match serde_json::from_str::<serde_json::Value>(properties).ok()? {
        serde_json::Value::Object(m) => match m.get("previousId")? {
            serde_json::Value::String(s) if !s.is_empty() => Some(SmolStr::from(s.as_str())),
            serde_json::Value::Number(n) => Some(SmolStr::from(n.to_string())),
            _ => None,
        },
        _ => None,
    }
}

/// A top-level property of a JSON object as text: strings as they are, other values as JSON,
/// `None` when absent or null.
fn property_text(properties: &Value, property: &str) -> Option<SmolStr> {
    let Value::Json(p) = properties else {
        return None;
    };
    match serde_json::from_str::<serde_json::Value>(p).ok()? {
        serde_json::Value::Object(mut m) => match m.remove(property)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(SmolStr::from(s)),
            other => Some(SmolStr::from(other.to_string())),
        },
        _ => None,
    }
}
