//! The tenant's alerts in the runtime: definitions, the groups firing, the deliveries still to
//! make, and every operation on them (define, change, evaluate, record an attempt, trim).
//!
//! Records (`tally_records`):
//! - `alert/{id}` — the definition ([`StoredAlert`]);
//! - `alert_state/{id}/{group}` — a group that is firing ([`GroupState`]); a group that is not
//!   firing has no record (its state is `ok`);
//! - `alert_history/{id}/{at µs, 20 digits}/{notification}` — every state change, with its
//!   delivery's progress ([`HistoryEntry`]);
//! - `alert_delivery/{notification}` — a delivery still to make ([`PendingDelivery`]): the exact
//!   body, so every retry sends the same message under the same id.
//!
//! The runtime reads them all again at every timer tick (they are few), so definitions made by
//! another process (the CLI, another node) are seen within a tick; in between, the book in
//! memory is the truth, since only the tenant's worker (its leader, on a shared store) writes
//! states, history and deliveries.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tally_store::RecordWrite;
use tally_views::Timestamp;

use super::eval::{self, Window};
use super::spec::{AlertSpec, Checked};
use super::webhook;
use super::{ALERT, DELIVERY, HISTORY, KEY_END, STATE};
use crate::error::{Error, Result};
use crate::runtime::TenantRuntime;

/// The most alerts a tenant may define.
const MAX_ALERTS: usize = 1_000;
/// The most history entries one answer lists.
const MAX_HISTORY: usize = 10_000;

/// An alert as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredAlert {
    pub id: String,
    #[serde(flatten)]
    pub spec: AlertSpec,
    #[serde(with = "stamp")]
    pub created_at: Timestamp,
    #[serde(with = "stamp")]
    pub updated_at: Timestamp,
}

/// A group that is firing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GroupState {
    pub group: Map<String, Json>,
    #[serde(with = "stamp")]
    pub since: Timestamp,
    pub value: Option<f64>,
    #[serde(default, with = "stamp::opt")]
    pub acknowledged_at: Option<Timestamp>,
}

/// How a notification's delivery is going.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DeliveryStatus {
    /// `pending`, `delivered` or `failed` (retried for a day without success).
    pub outcome: String,
    pub attempts: u32,
    #[serde(default, with = "stamp::opt")]
    pub last_attempt_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[serde(default, with = "stamp::opt")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, with = "stamp::opt")]
    pub delivered_at: Option<Timestamp>,
}

/// One state change of one group of an alert.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HistoryEntry {
    /// The notification's id (`webhook-id`).
    pub id: String,
    pub alert: String,
    /// `firing`, `resolved`, or `acknowledged` (no notification).
    pub state: String,
    pub group: Map<String, Json>,
    pub value: Option<f64>,
    pub threshold: f64,
    #[serde(with = "stamp")]
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
}

/// A delivery still to make.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PendingDelivery {
    pub id: String,
    pub alert: String,
    pub history_key: String,
    pub url: String,
    pub secret: String,
    pub body: String,
    #[serde(with = "stamp")]
    pub created_at: Timestamp,
    pub attempts: u32,
    #[serde(with = "stamp")]
    pub next_attempt_at: Timestamp,
}

/// A delivery handed to the sender.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub tenant: String,
    pub id: String,
    pub url: String,
    pub secret: String,
    pub body: String,
}

/// What an attempt did, as the sender reports it back.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: String,
    pub at: Timestamp,
    pub outcome: webhook::Outcome,
}

/// The tenant's alerts as read from the store.
#[derive(Debug, Default)]
pub struct Book {
    alerts: Vec<(StoredAlert, Option<Checked>)>,
    /// Firing groups by (alert, group id).
    firing: BTreeMap<(String, String), GroupState>,
    pending: BTreeMap<String, PendingDelivery>,
}

/// Timestamps in records as RFC 3339 text.
mod stamp {
    use serde::{Deserialize, Deserializer, Serializer};
    use tally_views::Timestamp;

    pub(crate) fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {text}")))
    }

    pub(crate) mod opt {
        use serde::{Deserialize, Deserializer, Serializer};
        use tally_views::Timestamp;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<Timestamp>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(t),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Timestamp>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => Timestamp::parse(&text)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {text}"))),
            }
        }
    }
}

fn put(kind: &str, key: String, body: &impl Serialize) -> RecordWrite {
    RecordWrite::Put {
        kind: kind.to_owned(),
        key,
        body: serde_json::to_string(body).unwrap_or_default(),
    }
}

fn delete(kind: &str, key: String) -> RecordWrite {
    RecordWrite::Delete {
        kind: kind.to_owned(),
        key,
    }
}

fn history_key(alert: &str, at: Timestamp, id: &str) -> String {
    format!("{alert}/{:020}/{id}", at.0.max(0))
}

fn new_id(prefix: &str) -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn parse<T: serde::de::DeserializeOwned>(kind: &str, key: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| {
        Error::Failed(format!(
            "the stored record {kind}/{key} cannot be read: {e}"
        ))
    })
}

impl StoredAlert {
    /// The alert as the API shows it: the secret is never shown.
    pub(crate) fn public(&self, firing: usize) -> Json {
        let s = &self.spec;
        json!({
            "id": self.id,
            "name": s.name,
            "view": s.view,
            "where": s.filter,
            "group_by": s.group_by,
            "grain": s.grain,
            "value": s.value,
            "condition": s.condition,
            "threshold": s.threshold,
            "for": s.for_buckets,
            "webhook": {"url": s.webhook.url},
            "enabled": s.enabled,
            "created_at": self.created_at.to_string(),
            "updated_at": self.updated_at.to_string(),
            "firing": firing,
        })
    }
}

impl Book {
    fn firing_count(&self, alert: &str) -> usize {
        self.firing.keys().filter(|(a, _)| a == alert).count()
    }

    fn find(&self, id: &str) -> Result<usize> {
        self.alerts
            .iter()
            .position(|(a, _)| a.id == id)
            .ok_or_else(|| Error::NotFound(format!("there is no alert {id}")))
    }

    /// Whether the tenant has alerts.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

impl TenantRuntime {
    /// Reads the alerts, firing groups and pending deliveries from the store.
    pub fn reload_alerts(&mut self) -> Result<()> {
        let store = self.store();
        let mut book = Book::default();
        for (key, body) in store.records(ALERT, "", KEY_END, MAX_ALERTS)? {
            let alert: StoredAlert = parse(ALERT, &key, &body)?;
            let checked = alert.spec.check(self.catalog()).ok();
            book.alerts.push((alert, checked));
        }
        for (key, body) in store.records(STATE, "", KEY_END, usize::MAX)? {
            let state: GroupState = parse(STATE, &key, &body)?;
            let Some((alert, group)) = key.split_once('/') else {
                continue;
            };
            book.firing
                .insert((alert.to_owned(), group.to_owned()), state);
        }
        for (key, body) in store.records(DELIVERY, "", KEY_END, usize::MAX)? {
            let pending: PendingDelivery = parse(DELIVERY, &key, &body)?;
            book.pending.insert(key, pending);
        }
        self.alerts = Some(book);
        Ok(())
    }

    fn book(&mut self) -> Result<&mut Book> {
        if self.alerts.is_none() {
            self.reload_alerts()?;
        }
        Ok(self.alerts.get_or_insert_with(Book::default))
    }

    /// Whether the tenant has alerts (read from the store if not known).
    pub fn has_alerts(&mut self) -> Result<bool> {
        Ok(!self.book()?.is_empty())
    }

    /// Defines an alert from its JSON; the alert as the API shows it.
    pub fn create_alert(&mut self, body: &Json, now: Timestamp) -> Result<Json> {
        let spec = AlertSpec::from_json(body, None)?;
        let checked = spec.check(self.catalog())?;
        if self.book()?.alerts.len() >= MAX_ALERTS {
            return Err(Error::Conflict(format!(
                "a tenant may define at most {MAX_ALERTS} alerts; delete one first"
            )));
        }
        let alert = StoredAlert {
            id: new_id("alr_"),
            spec,
            created_at: now,
            updated_at: now,
        };
        self.store_mut()
            .write_records(&[put(ALERT, alert.id.clone(), &alert)])?;
        let shown = alert.public(0);
        self.book()?.alerts.push((alert, Some(checked)));
        Ok(shown)
    }

    /// Every alert, as the API shows them.
    pub fn list_alerts(&mut self) -> Result<Json> {
        let book = self.book()?;
        Ok(Json::Array(
            book.alerts
                .iter()
                .map(|(a, _)| a.public(book.firing_count(&a.id)))
                .collect(),
        ))
    }

    /// One alert with its firing groups.
    pub fn show_alert(&mut self, id: &str) -> Result<Json> {
        let book = self.book()?;
        let i = book.find(id)?;
        let alert = &book.alerts[i].0;
        let mut shown = alert.public(book.firing_count(id));
        let groups: Vec<Json> = book
            .firing
            .iter()
            .filter(|((a, _), _)| a == id)
            .map(|(_, g)| {
                json!({
                    "group": g.group,
                    "state": "firing",
                    "since": g.since.to_string(),
                    "value": g.value,
                    "acknowledged_at": g.acknowledged_at.map(|t| t.to_string()),
                })
            })
            .collect();
        shown["groups"] = Json::Array(groups);
        Ok(shown)
    }

    /// Changes an alert: the fields `body` has replace the alert's.
    pub fn patch_alert(&mut self, id: &str, body: &Json, now: Timestamp) -> Result<Json> {
        let i = self.book()?.find(id)?;
        let old = self.book()?.alerts[i].0.clone();
        let spec = AlertSpec::from_json(body, Some(&old.spec))?;
        let checked = spec.check(self.catalog())?;
        let alert = StoredAlert {
            spec,
            updated_at: now,
            ..old
        };
        self.store_mut()
            .write_records(&[put(ALERT, alert.id.clone(), &alert)])?;
        let book = self.book()?;
        let shown = alert.public(book.firing_count(id));
        book.alerts[i] = (alert, Some(checked));
        Ok(shown)
    }

    /// Deletes an alert with its states, history and pending deliveries.
    pub fn delete_alert(&mut self, id: &str) -> Result<()> {
        let i = self.book()?.find(id)?;
        let pending: Vec<RecordWrite> = self
            .book()?
            .pending
            .values()
            .filter(|p| p.alert == id)
            .map(|p| delete(DELIVERY, p.id.clone()))
            .chain([delete(ALERT, id.to_owned())])
            .collect();
        let store = self.store_mut();
        store.write_records(&pending)?;
        let (from, to) = (format!("{id}/"), format!("{id}/{KEY_END}"));
        store.delete_records(STATE, &from, &to)?;
        store.delete_records(HISTORY, &from, &to)?;
        let book = self.book()?;
        book.alerts.remove(i);
        book.firing.retain(|(a, _), _| a != id);
        book.pending.retain(|_, p| p.alert != id);
        Ok(())
    }

    /// An alert's history in time order: the latest `limit` entries.
    pub fn alert_history(&mut self, id: &str, limit: usize) -> Result<Json> {
        self.book()?.find(id)?;
        let (from, to) = (format!("{id}/"), format!("{id}/{KEY_END}"));
        let records = self.store().records(HISTORY, &from, &to, usize::MAX)?;
        let skip = records.len().saturating_sub(limit.min(MAX_HISTORY));
        let entries = records
            .iter()
            .skip(skip)
            .map(|(key, body)| parse::<HistoryEntry>(HISTORY, key, body))
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({ "alert": id, "history": entries }))
    }

    /// Acknowledges an alert's firing groups (no notification; recorded in the history).
    pub fn ack_alert(&mut self, id: &str, now: Timestamp) -> Result<Json> {
        let i = self.book()?.find(id)?;
        let threshold = self.book()?.alerts[i].0.spec.threshold;
        let mut writes = Vec::new();
        let mut acked = Vec::new();
        for ((alert, group), state) in &self.book()?.firing {
            if alert != id || state.acknowledged_at.is_some() {
                continue;
            }
            let mut state = state.clone();
            state.acknowledged_at = Some(now);
            let entry = HistoryEntry {
                id: new_id("ack_"),
                alert: id.to_owned(),
                state: "acknowledged".into(),
                group: state.group.clone(),
                value: state.value,
                threshold,
                at: now,
                delivery: None,
            };
            writes.push(put(STATE, format!("{id}/{group}"), &state));
            writes.push(put(HISTORY, history_key(id, now, &entry.id), &entry));
            acked.push(((alert.clone(), group.clone()), state));
        }
        self.store_mut().write_records(&writes)?;
        let n = acked.len();
        let book = self.book()?;
        for (key, state) in acked {
            book.firing.insert(key, state);
        }
        Ok(json!({ "alert": id, "acknowledged": n }))
    }

    /// Evaluates the enabled alerts (of views over `stream`, or all) as of `now`: each group
    /// whose state changes gets its new state, a history entry and a pending delivery, written
    /// in one transaction. Returns the deliveries to send now. Only the leader evaluates.
    pub fn evaluate_alerts(
        &mut self,
        now: Timestamp,
        stream: Option<&str>,
    ) -> Result<Vec<Dispatch>> {
        // Without alerts (most tenants), an ingest pays this check and nothing more.
        if !self.leads() || self.book()?.is_empty() {
            return Ok(Vec::new());
        }
        let tz = self.engine().tz().clone();
        let alerts: Vec<(StoredAlert, Checked)> = self
            .book()?
            .alerts
            .iter()
            .filter(|(a, _)| a.spec.enabled)
            .filter_map(|(a, c)| Some((a.clone(), c.clone()?)))
            .collect();
        let mut writes = Vec::new();
        let mut changes: Vec<(String, String, Option<GroupState>)> = Vec::new();
        let mut created: Vec<PendingDelivery> = Vec::new();
        for (alert, checked) in alerts {
            let Some(plan) = self.catalog().view(&alert.spec.view).cloned() else {
                continue;
            };
            if stream.is_some_and(|s| s != plan.stream) {
                continue;
            }
            let spec = &alert.spec;
            let window = Window::new(spec.condition, spec.for_buckets, checked.grain, &tz, now);
            let (from, to) = window.range(checked.grain, &tz);
            let answer = match self.query(
                &spec.view,
                &spec.request(checked.grain, Some(from), Some(to)),
            ) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(tenant = self.name(), alert = alert.id, error = %e, "an alert's view query failed");
                    continue;
                }
            };
            let Some(bucket) = plan.bucket else { continue };
            let empty = eval::empty_value(&plan, &spec.value, &tz);
            let mut series = eval::series(
                &answer,
                &plan.keys[bucket].name,
                &checked.group_columns,
                &spec.value,
                &window,
                empty,
            );
            // Firing groups with no row in the window still count: every bucket is empty.
            let book = self.book()?;
            for ((a, group), state) in book.firing.range((alert.id.clone(), String::new())..) {
                if a != &alert.id {
                    break;
                }
                series.entry(group.clone()).or_insert_with(|| eval::Series {
                    group: state.group.clone(),
                    values: vec![empty; window.starts.len()],
                });
            }
            for (group, s) in series {
                let verdict =
                    eval::verdict(spec.condition, spec.threshold, spec.for_buckets, &s.values);
                let firing = book.firing.contains_key(&(alert.id.clone(), group.clone()));
                if verdict.holds == firing {
                    continue;
                }
                let (state, kind) = if verdict.holds {
                    ("firing", "alert.firing")
                } else {
                    ("resolved", "alert.resolved")
                };
                let id = new_id("msg_");
                let body = json!({
                    "type": kind,
                    "id": id,
                    "alert": alert.id,
                    "alert_name": spec.name,
                    "view": spec.view,
                    "value_column": spec.value,
                    "condition": spec.condition,
                    "group": s.group,
                    "value": verdict.value,
                    "threshold": spec.threshold,
                    "bucket": window.starts[usize::from(!spec.condition.reads_current())].to_string(),
                    "at": now.to_string(),
                })
                .to_string();
                let hkey = history_key(&alert.id, now, &id);
                let entry = HistoryEntry {
                    id: id.clone(),
                    alert: alert.id.clone(),
                    state: state.into(),
                    group: s.group.clone(),
                    value: verdict.value,
                    threshold: spec.threshold,
                    at: now,
                    delivery: Some(DeliveryStatus {
                        outcome: "pending".into(),
                        next_attempt_at: Some(now),
                        ..DeliveryStatus::default()
                    }),
                };
                let pending = PendingDelivery {
                    id: id.clone(),
                    alert: alert.id.clone(),
                    history_key: hkey.clone(),
                    url: spec.webhook.url.clone(),
                    secret: spec.webhook.secret.clone(),
                    body,
                    created_at: now,
                    attempts: 0,
                    next_attempt_at: now,
                };
                let state_key = format!("{}/{group}", alert.id);
                if verdict.holds {
                    let g = GroupState {
                        group: s.group.clone(),
                        since: now,
                        value: verdict.value,
                        acknowledged_at: None,
                    };
                    writes.push(put(STATE, state_key, &g));
                    changes.push((alert.id.clone(), group, Some(g)));
                } else {
                    writes.push(delete(STATE, state_key));
                    changes.push((alert.id.clone(), group, None));
                }
                writes.push(put(HISTORY, hkey, &entry));
                writes.push(put(DELIVERY, id, &pending));
                created.push(pending);
            }
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.store_mut().write_records(&writes)?;
        let book = self.book()?;
        for (alert, group, state) in changes {
            match state {
                Some(s) => {
                    book.firing.insert((alert, group), s);
                }
                None => {
                    book.firing.remove(&(alert, group));
                }
            }
        }
        for p in created {
            book.pending.insert(p.id.clone(), p);
        }
        self.due_deliveries(now)
    }

    /// The pending deliveries due at `now` that are not in flight, now marked in flight.
    pub fn due_deliveries(&mut self, now: Timestamp) -> Result<Vec<Dispatch>> {
        if !self.leads() {
            return Ok(Vec::new());
        }
        let tenant = self.name().to_owned();
        let in_flight = std::mem::take(&mut self.in_flight);
        let due: Vec<Dispatch> = self
            .book()?
            .pending
            .values()
            .filter(|p| p.next_attempt_at <= now && !in_flight.contains(&p.id))
            .map(|p| Dispatch {
                tenant: tenant.clone(),
                id: p.id.clone(),
                url: p.url.clone(),
                secret: p.secret.clone(),
                body: p.body.clone(),
            })
            .collect();
        self.in_flight = in_flight;
        self.in_flight.extend(due.iter().map(|d| d.id.clone()));
        Ok(due)
    }

    /// Records what an attempt did: delivered, given up (retried for a day), or the next retry.
    pub fn record_attempt(&mut self, attempt: &Attempt) -> Result<()> {
        self.in_flight.remove(&attempt.id);
        let Some(mut pending) = self.book()?.pending.get(&attempt.id).cloned() else {
            return Ok(());
        };
        pending.attempts += 1;
        let at = attempt.at;
        let expired = at.0 - pending.created_at.0 >= webhook::RETRY_FOR.as_micros() as i64;
        let (outcome, next) = if attempt.outcome.ok() {
            ("delivered", None)
        } else if expired {
            ("failed", None)
        } else {
            let delay = webhook::backoff(pending.attempts);
            ("pending", Some(Timestamp(at.0 + delay.as_micros() as i64)))
        };
        let mut writes = Vec::new();
        let history = self.store().records(
            HISTORY,
            &pending.history_key,
            &format!("{}{KEY_END}", pending.history_key),
            1,
        )?;
        if let Some((key, body)) = history.first() {
            let mut entry: HistoryEntry = parse(HISTORY, key, body)?;
            entry.delivery = Some(DeliveryStatus {
                outcome: outcome.into(),
                attempts: pending.attempts,
                last_attempt_at: Some(at),
                last_status: attempt.outcome.status,
                last_error: attempt.outcome.error.clone(),
                next_attempt_at: next,
                delivered_at: attempt.outcome.ok().then_some(at),
            });
            writes.push(put(HISTORY, key.clone(), &entry));
        }
        match next {
            Some(next) => {
                pending.next_attempt_at = next;
                writes.push(put(DELIVERY, pending.id.clone(), &pending));
            }
            None => writes.push(delete(DELIVERY, pending.id.clone())),
        }
        self.store_mut().write_records(&writes)?;
        let book = self.book()?;
        match next {
            Some(_) => {
                book.pending.insert(pending.id.clone(), pending);
            }
            None => {
                book.pending.remove(&attempt.id);
            }
        }
        Ok(())
    }

    /// Deletes history entries older than `before` (entries whose delivery is still pending
    /// stay); how many went.
    pub fn trim_alert_history(&mut self, before: Timestamp) -> Result<u64> {
        let ids: Vec<String> = self
            .book()?
            .alerts
            .iter()
            .map(|(a, _)| a.id.clone())
            .collect();
        let keep: HashMap<String, Timestamp> = self
            .book()?
            .pending
            .values()
            .map(|p| (p.alert.clone(), p.created_at))
            .fold(HashMap::new(), |mut m, (a, t)| {
                let e = m.entry(a).or_insert(t);
                *e = (*e).min(t);
                m
            });
        let mut n = 0;
        for id in ids {
            let cut = keep
                .get(&id)
                .map_or(before, |t| Timestamp(before.0.min(t.0)));
            let from = format!("{id}/");
            let to = history_key(&id, cut, "");
            n += self.store_mut().delete_records(HISTORY, &from, &to)?;
        }
        Ok(n)
    }
}

/// An operation on a tenant's alerts, as the API and the CLI ask for it.
#[derive(Debug)]
pub enum AlertOp {
    Create(Json),
    List,
    Show(String),
    Patch(String, Json),
    Delete(String),
    History { id: String, limit: usize },
    Ack(String),
}

impl AlertOp {
    /// Runs the operation as of `now`; the answer as the API shows it.
    pub fn run(self, runtime: &mut TenantRuntime, now: Timestamp) -> Result<Json> {
        match self {
            AlertOp::Create(body) => runtime.create_alert(&body, now),
            AlertOp::List => runtime.list_alerts(),
            AlertOp::Show(id) => runtime.show_alert(&id),
            AlertOp::Patch(id, body) => runtime.patch_alert(&id, &body, now),
            AlertOp::Delete(id) => {
                runtime.delete_alert(&id)?;
                Ok(json!({ "deleted": id, "alerts_left": runtime.book()?.alerts.len() }))
            }
            AlertOp::History { id, limit } => runtime.alert_history(&id, limit),
            AlertOp::Ack(id) => runtime.ack_alert(&id, now),
        }
    }

    /// Whether the operation may change whether the tenant has alerts.
    pub fn changes_count(&self) -> bool {
        matches!(self, AlertOp::Create(_) | AlertOp::Delete(_))
    }
}
