//! The Segment HTTP Tracking API, mapped onto the built-in `events` stream.
//!
//! Segment's libraries send `POST /v1/batch` (`{"batch":[…],"sentAt":…}`) or one message to
//! `/v1/track`, `/identify`, `/page`, `/screen`, `/group` or `/alias`, authenticated with the write
//! key as the HTTP Basic user name (or `writeKey` in the body, as browsers do with `text/plain`).
//! Each message becomes one `events` row:
//!
//! | column | from |
//! |---|---|
//! | `id` | `messageId` (the dedupe key; generated when missing) |
//! | `event_type` | `type` (or the route) |
//! | `event_name` | `event` for track, `name` for page/screen (else the type), the type otherwise |
//! | `timestamp` | `timestamp` (or `originalTimestamp`), corrected for clock skew by `receivedAt − sentAt` |
//! | `user_id`, `anonymous_id` | `userId`, `anonymousId` (numbers become text) |
//! | `session_id` | `context.sessionId`, else `properties.session_id` |
//! | `properties` | `properties`; `traits` for identify and group (with `groupId`); `previousId` for alias |
//! | `context` | `context` (the batch's context, if the message has none) |
//! | `page_url`, `referrer` | `context.page.url` / `.referrer`, else `properties.url` / `.referrer` |

use serde_json::{Map, Value as Json, json};
use tally_views::Timestamp;

use crate::decode::Reason;
use crate::server::worker::Record;

pub mod routes;

/// Segment's own limit per message.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// The message types and their routes.
pub const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

fn text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time(v: Option<&Json>) -> Option<Timestamp> {
    match v? {
        Json::String(s) => Timestamp::parse(s),
        _ => None,
    }
}

/// Maps one message to the JSON text of an `events` row, or a reason to reject it.
/// `route_type` is the type of a single-message route; `sent_at` and `context` come from a batch.
pub fn message_to_event(
    message: &Json,
    route_type: Option<&str>,
    batch_sent_at: Option<Timestamp>,
    batch_context: Option<&Json>,
    received_at: Timestamp,
) -> Result<String, String> {
    let Json::Object(m) = message else {
        return Err("a Segment message must be a JSON object".into());
    };
    let kind = match (m.get("type").and_then(Json::as_str), route_type) {
        (Some(t), _) => t.to_ascii_lowercase(),
        (None, Some(r)) => r.to_owned(),
        (None, None) => {
            return Err(
                "the message has no \"type\" (track, identify, page, screen, group or alias)"
                    .into(),
            );
        }
    };
    if !TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "unknown message type '{kind}'; Segment types are track, identify, page, screen, group and alias"
        ));
    }
    if let Some(r) = route_type
        && r != kind
    {
        return Err(format!(
            "a {kind} message sent to /v1/{r}; send it to /v1/{kind} or /v1/batch"
        ));
    }
    let user_id = text(m.get("userId"));
    let anonymous_id = text(m.get("anonymousId"));
    if user_id.is_none() && anonymous_id.is_none() {
        return Err("the message needs a userId or an anonymousId".into());
    }
    let event_name = match kind.as_str() {
        "track" => match text(m.get("event")) {
            Some(e) => e,
            None => return Err("a track message needs \"event\", the name of the event".into()),
        },
        "page" | "screen" => text(m.get("name")).unwrap_or_else(|| kind.clone()),
        _ => kind.clone(),
    };
    // Clock skew: the client's clock was off by sentAt − receivedAt.
    let sent_at = time(m.get("sentAt")).or(batch_sent_at);
    let stated = match m.get("timestamp").or(m.get("originalTimestamp")) {
        None | Some(Json::Null) => None,
        Some(v) => match time(Some(v)) {
            Some(t) => Some(t),
            None => {
                return Err(format!(
                    "timestamp {v} is not an ISO 8601 time such as \"2026-03-29T22:00:00.000Z\""
                ));
            }
        },
    };
    let timestamp = match (stated, sent_at) {
        (Some(t), Some(sent)) => {
            // The correction is bounded by the range every store keeps: a result outside it
            // (a client clock centuries off) rejects the message rather than store nonsense.
            let corrected = (received_at.0 - sent.0)
                .checked_add(t.0)
                .map(Timestamp)
                .filter(|c| c.is_storable() && t.is_storable() && sent.is_storable());
            match corrected {
                Some(c) => c,
                None => {
                    return Err(format!(
                        "timestamp {t} corrected for the client's clock (sentAt {sent}, received {received_at}) falls outside the supported time range, {} to {}",
                        Timestamp::MIN_STORED,
                        Timestamp::MAX_STORED
                    ));
                }
            }
        }
        (Some(t), None) => t,
        (None, _) => received_at,
    };
    let context = match m.get("context") {
        Some(c @ Json::Object(_)) => Some(c.clone()),
        _ => batch_context.filter(|c| c.is_object()).cloned(),
    };
    let properties = match kind.as_str() {
        "identify" => m.get("traits").cloned(),
        "group" => {
            let mut p = match m.get("traits") {
                Some(Json::Object(t)) => t.clone(),
                _ => Map::new(),
            };
            if let Some(g) = m.get("groupId") {
                p.insert("groupId".into(), g.clone());
            }
            Some(Json::Object(p))
        }
        "alias" => m.get("previousId").map(|p| json!({ "previousId": p })),
        _ => m.get("properties").cloned(),
    }
    .filter(|p| !p.is_null());
    let prop = |name: &str| properties.as_ref().and_then(|p| p.get(name));
    let page = context.as_ref().and_then(|c| c.get("page"));
    let session_id = text(context.as_ref().and_then(|c| c.get("sessionId")))
        .or_else(|| text(prop("session_id")));
    let page_url = text(page.and_then(|p| p.get("url"))).or_else(|| text(prop("url")));
    let referrer = text(page.and_then(|p| p.get("referrer"))).or_else(|| text(prop("referrer")));
    let mut row = Map::new();
    if let Some(id) = text(m.get("messageId")) {
        row.insert("id".into(), Json::String(id));
    }
    row.insert("event_type".into(), Json::String(kind));
    row.insert("event_name".into(), Json::String(event_name));
    row.insert("timestamp".into(), Json::String(timestamp.to_string()));
    row.insert("received_at".into(), Json::String(received_at.to_string()));
    for (column, value) in [
        ("user_id", user_id),
        ("anonymous_id", anonymous_id),
        ("session_id", session_id),
        ("page_url", page_url),
        ("referrer", referrer),
    ] {
        if let Some(v) = value {
            row.insert(column.into(), Json::String(v));
        }
    }
    if let Some(p) = properties {
        row.insert("properties".into(), p);
    }
    if let Some(c) = context {
        row.insert("context".into(), c);
    }
    serde_json::to_string(&Json::Object(row)).map_err(|e| e.to_string())
}

/// The records of a Segment request body: a batch, or one message of `route_type`.
pub fn records(
    body: &Json,
    route_type: Option<&str>,
    received_at: Timestamp,
) -> Result<Vec<Record>, String> {
    let Json::Object(top) = body else {
        return Err("the body must be a JSON object".into());
    };
    let sent_at = time(top.get("sentAt"));
    match route_type {
        None => {
            let Some(Json::Array(batch)) = top.get("batch") else {
                return Err("a batch body needs \"batch\", an array of messages".into());
            };
            let context = top.get("context");
            Ok(batch
                .iter()
                .map(|message| {
                    let payload = serde_json::to_string(message).unwrap_or_default();
                    if payload.len() > MAX_MESSAGE_BYTES {
                        let message = format!(
                            "the message is {} bytes; Segment's limit is {MAX_MESSAGE_BYTES}",
                            payload.len()
                        );
                        return Record::rejected(Reason::TooLarge, message, payload);
                    }
                    match message_to_event(message, None, sent_at, context, received_at) {
                        Ok(text) => Record::Json(text),
                        Err(reason) => Record::rejected(Reason::InvalidMessage, reason, payload),
                    }
                })
                .collect())
        }
        Some(kind) => Ok(vec![
            match message_to_event(body, Some(kind), None, None, received_at) {
                Ok(text) => Record::Json(text),
                Err(reason) => Record::rejected(
                    Reason::InvalidMessage,
                    reason,
                    serde_json::to_string(body).unwrap_or_default(),
                ),
            },
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn track_with_clock_skew_is_corrected() {
        // The client's clock is 10 minutes ahead: it stamped 12:10 and sent at 12:10:05, the
        // server received at 12:00:05. The event happened at 12:00.
        let message = json!({
            "type": "track", "event": "Signed Up", "userId": 42, "messageId": "m1",
            "timestamp": "2026-03-01T12:10:00Z", "properties": {"plan": "pro", "url": "https://x/a"},
            "context": {"page": {"referrer": "https://ref"}}
        });
        let text = message_to_event(
            &message,
            None,
            Some(at("2026-03-01T12:10:05Z")),
            None,
            at("2026-03-01T12:00:05Z"),
        )
        .unwrap();
        let row: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(row["id"], "m1");
        assert_eq!(row["event_type"], "track");
        assert_eq!(row["event_name"], "Signed Up");
        assert_eq!(row["user_id"], "42");
        assert_eq!(row["timestamp"], "2026-03-01T12:00:00Z");
        assert_eq!(row["page_url"], "https://x/a");
        assert_eq!(row["referrer"], "https://ref");
        assert_eq!(row["properties"]["plan"], "pro");
    }

    #[test]
    fn identify_group_alias_and_errors() {
        let now = at("2026-03-01T12:00:00Z");
        let identify = json!({"type": "identify", "userId": "u1", "traits": {"email": "a@b"}});
        let row: Json =
            serde_json::from_str(&message_to_event(&identify, None, None, None, now).unwrap())
                .unwrap();
        assert_eq!(row["event_name"], "identify");
        assert_eq!(row["properties"]["email"], "a@b");
        assert_eq!(row["timestamp"], "2026-03-01T12:00:00Z");
        let group = json!({"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}});
        let row: Json = serde_json::from_str(
            &message_to_event(&group, Some("group"), None, None, now).unwrap(),
        )
        .unwrap();
        assert_eq!(row["properties"]["groupId"], "g1");
        assert_eq!(
            message_to_event(
                &json!({"type": "track", "userId": "u"}),
                None,
                None,
                None,
                now
            ),
            Err("a track message needs \"event\", the name of the event".into())
        );
        assert_eq!(
            message_to_event(
                &json!({"type": "track", "event": "x"}),
                None,
                None,
                None,
                now
            ),
            Err("the message needs a userId or an anonymousId".into())
        );
        assert!(
            message_to_event(
                &json!({"type": "fly", "userId": "u"}),
                None,
                None,
                None,
                now
            )
            .unwrap_err()
            .starts_with("unknown message type 'fly'")
        );
        assert!(
            message_to_event(
                &json!({"type": "page", "userId": "u"}),
                Some("track"),
                None,
                None,
                now
            )
            .unwrap_err()
            .contains("send it to /v1/page")
        );
    }
}
