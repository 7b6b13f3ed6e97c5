//! An alert as a user defines it: read from JSON field by field (each error names the field),
//! checked against the tenant's catalog (the view, its value column, the grain, `where` and
//! `group_by` exactly as a view query checks them), and stored as JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tally_views::{Catalog, Interval, QueryPlan, QueryRequest, Type, ViewPlan};

use crate::error::{Error, Result};
use crate::params::Spelling;

/// The most consecutive buckets `for` may ask for.
const MAX_FOR: u32 = 1_000;
/// The longest alert name.
const MAX_NAME: usize = 200;

/// When an alert's condition holds for a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The current bucket's value is above the threshold.
    Above,
    /// The last complete bucket's value is below the threshold.
    Below,
    /// The current bucket's change against the previous bucket, in %, is above the threshold.
    ChangePctAbove,
    /// The last complete bucket's change against the one before, in %, is below the threshold.
    ChangePctBelow,
}

impl Condition {
    const NAMES: &'static str = "above, below, change_pct_above or change_pct_below";

    fn parse(text: &str) -> Option<Condition> {
        Some(match text {
            "above" => Condition::Above,
            "below" => Condition::Below,
            "change_pct_above" => Condition::ChangePctAbove,
            "change_pct_below" => Condition::ChangePctBelow,
            _ => return None,
        })
    }

    /// Whether the condition reads the bucket still filling (else the last complete one).
    pub fn reads_current(self) -> bool {
        matches!(self, Condition::Above | Condition::ChangePctAbove)
    }

    /// Whether the condition compares a bucket with the one before it.
    pub fn is_change(self) -> bool {
        matches!(self, Condition::ChangePctAbove | Condition::ChangePctBelow)
    }
}

/// Where an alert's notifications go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSpec {
    pub url: String,
    /// The signing secret: `whsec_<base64>` (its decoded bytes) or any other text (its bytes).
    pub secret: String,
}

/// An alert's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertSpec {
    pub name: String,
    pub view: String,
    /// A condition on the view's group columns, as the `where` of a view query.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The group columns that make an alert group (comma separated), as a view query's
    /// `group_by`; by default every group column of the view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// The bucket width; by default the view's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grain: Option<String>,
    /// The output column compared.
    pub value: String,
    pub condition: Condition,
    pub threshold: f64,
    /// How many consecutive buckets the condition must hold for.
    #[serde(rename = "for")]
    pub for_buckets: u32,
    pub webhook: WebhookSpec,
    pub enabled: bool,
}

/// An alert's definition checked against the catalog: what evaluating it needs.
#[derive(Clone, Debug)]
pub struct Checked {
    pub grain: Interval,
    /// The view's group columns that make an alert group, in view order.
    pub group_columns: Vec<String>,
}

fn text(obj: &Map<String, Json>, field: &str) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("{field}: expected text, got {other}"))),
    }
}

fn required(value: Option<String>, field: &str) -> Result<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(bad(format!("{field}: required"))),
    }
}

fn bad(message: String) -> Error {
    Error::Request(message)
}

impl AlertSpec {
    /// An alert read from a JSON object; with `base`, the fields the object has replace those
    /// of `base` (`PATCH`), `null` clearing an optional one.
    pub fn from_json(body: &Json, base: Option<&AlertSpec>) -> Result<AlertSpec> {
        let Json::Object(obj) = body else {
            return Err(bad("the alert must be a JSON object".into()));
        };
        const FIELDS: [&str; 11] = [
            "name",
            "view",
            "where",
            "group_by",
            "grain",
            "value",
            "condition",
            "threshold",
            "for",
            "webhook",
            "enabled",
        ];
        if let Some(unknown) = obj
            .keys()
            .find(|k| !FIELDS.contains(&k.as_str()) && !matches!(k.as_str(), "id"))
        {
            return Err(bad(format!(
                "{unknown}: not a field of an alert; the fields are {}",
                FIELDS.join(", ")
            )));
        }
        let keep = |field: &str| base.is_some() && !obj.contains_key(field);
        let name = if keep("name") {
            base.map(|b| b.name.clone()).unwrap_or_default()
        } else {
            required(text(obj, "name")?, "name")?
        };
        if name.len() > MAX_NAME {
            return Err(bad(format!("name: longer than {MAX_NAME} bytes")));
        }
        let view = if keep("view") {
            base.map(|b| b.view.clone()).unwrap_or_default()
        } else {
            required(text(obj, "view")?, "view")?
        };
        let optional = |field: &str, old: Option<&Option<String>>| -> Result<Option<String>> {
            if keep(field) {
                Ok(old.cloned().flatten())
            } else {
                Ok(text(obj, field)?.filter(|s| !s.trim().is_empty()))
            }
        };
        let filter = optional("where", base.map(|b| &b.filter))?;
        // An empty `group_by` merges every group into one; absent (or null), each group of
        // the view is an alert group.
        let group_by = if keep("group_by") {
            base.and_then(|b| b.group_by.clone())
        } else {
            text(obj, "group_by")?
        };
        let grain = optional("grain", base.map(|b| &b.grain))?;
        let value = if keep("value") {
            base.map(|b| b.value.clone()).unwrap_or_default()
        } else {
            required(text(obj, "value")?, "value")?
        };
        let condition = if keep("condition") {
            base.map_or(Condition::Above, |b| b.condition)
        } else {
            let c = required(text(obj, "condition")?, "condition")?;
            Condition::parse(&c)
                .ok_or_else(|| bad(format!("condition: '{c}' is not {}", Condition::NAMES)))?
        };
        let threshold = if keep("threshold") {
            base.map_or(0.0, |b| b.threshold)
        } else {
            match obj.get("threshold") {
                Some(Json::Number(n)) => n
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| bad("threshold: not a finite number".into()))?,
                None | Some(Json::Null) => return Err(bad("threshold: required".into())),
                Some(other) => {
                    return Err(bad(format!("threshold: expected a number, got {other}")));
                }
            }
        };
        let for_buckets = if keep("for") {
            base.map_or(1, |b| b.for_buckets)
        } else {
            match obj.get("for") {
                None | Some(Json::Null) => 1,
                Some(Json::Number(n)) => n
                    .as_u64()
                    .filter(|n| (1..=u64::from(MAX_FOR)).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        bad(format!(
                            "for: expected a whole number of buckets from 1 to {MAX_FOR}, got {n}"
                        ))
                    })?,
                Some(other) => {
                    return Err(bad(format!(
                        "for: expected a whole number of buckets from 1 to {MAX_FOR}, got {other}"
                    )));
                }
            }
        };
        let webhook = if keep("webhook") {
            base.map(|b| b.webhook.clone())
                .ok_or_else(|| bad("webhook: required".into()))?
        } else {
            let Some(Json::Object(w)) = obj.get("webhook") else {
                return Err(bad(
                    "webhook: required, an object {\"url\": …, \"secret\": …}".into(),
                ));
            };
            if let Some(unknown) = w.keys().find(|k| !matches!(k.as_str(), "url" | "secret")) {
                return Err(bad(format!(
                    "webhook.{unknown}: not a field of a webhook; the fields are url and secret"
                )));
            }
            let url = required(
                text(w, "url").map_err(|e| prefix("webhook.", e))?,
                "webhook.url",
            )?;
            // A PATCH that changes only the address keeps the secret.
            let secret = match (text(w, "secret").map_err(|e| prefix("webhook.", e))?, base) {
                (Some(s), _) => s,
                (None, Some(b)) => b.webhook.secret.clone(),
                (None, None) => return Err(bad("webhook.secret: required".into())),
            };
            WebhookSpec { url, secret }
        };
        super::webhook::check_url(&webhook.url).map_err(|e| bad(format!("webhook.url: {e}")))?;
        super::webhook::secret_bytes(&webhook.secret)
            .map_err(|e| bad(format!("webhook.secret: {e}")))?;
        let enabled = if keep("enabled") {
            base.is_none_or(|b| b.enabled)
        } else {
            match obj.get("enabled") {
                None | Some(Json::Null) => true,
                Some(Json::Bool(b)) => *b,
                Some(other) => {
                    return Err(bad(format!("enabled: expected true or false, got {other}")));
                }
            }
        };
        Ok(AlertSpec {
            name,
            view,
            filter,
            group_by,
            grain,
            value,
            condition,
            threshold,
            for_buckets,
            webhook,
            enabled,
        })
    }

    /// Checks the alert against the catalog: the view has a time bucket, `value` is a numeric
    /// output column, and `grain`, `where` and `group_by` make a valid view query.
    pub fn check(&self, catalog: &Catalog) -> Result<Checked> {
        let Some(plan) = catalog.view(&self.view) else {
            let names: Vec<&str> = catalog.views().map(|v| v.name.as_str()).collect();
            return Err(bad(format!(
                "view: there is no view {}; the views are {}",
                self.view,
                if names.is_empty() {
                    "(none)".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        };
        let Some(bucket) = plan.bucket else {
            return Err(bad(format!(
                "view: {} has no time bucket column; an alert compares buckets of time",
                self.view
            )));
        };
        let Some(output) = plan.outputs.iter().find(|o| o.name == self.value) else {
            let names: Vec<&str> = plan.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(bad(format!(
                "value: {} is not an output column of {}; its output columns are {}",
                self.value,
                self.view,
                names.join(", ")
            )));
        };
        if !matches!(
            output.ty,
            Type::BigInt | Type::Double | Type::Decimal { .. }
        ) {
            return Err(bad(format!(
                "value: {} is {}, not a number",
                self.value, output.ty
            )));
        }
        let grain = match &self.grain {
            Some(g) => Interval::parse(g).map_err(|e| bad(format!("grain: {e}")))?,
            None => plan.keys[bucket]
                .bucket
                .ok_or_else(|| bad("grain: required for this view".into()))?,
        };
        let request = self.request(grain, None, None);
        QueryPlan::new(plan, &request).map_err(|e| bad(Spelling::Url.message(&e)))?;
        Ok(Checked {
            grain,
            group_columns: group_columns(plan, &request),
        })
    }

    /// The view query reading buckets starting in `[from, to)`.
    pub fn request(
        &self,
        grain: Interval,
        from: Option<tally_views::Timestamp>,
        to: Option<tally_views::Timestamp>,
    ) -> QueryRequest {
        QueryRequest {
            from,
            to,
            grain: Some(grain),
            group_by: self.group_by.as_ref().map(|g| {
                g.split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect()
            }),
            filter: self.filter.clone(),
            order_by: None,
            limit: None,
        }
    }
}

fn prefix(p: &str, e: Error) -> Error {
    match e {
        Error::Request(m) => Error::Request(format!("{p}{m}")),
        other => other,
    }
}

/// The view's group columns an alert's answer keeps, other than the time bucket.
fn group_columns(plan: &ViewPlan, request: &QueryRequest) -> Vec<String> {
    plan.keys
        .iter()
        .enumerate()
        .filter(|(i, _)| plan.bucket != Some(*i))
        .map(|(_, k)| k.name.clone())
        .filter(|name| {
            request
                .group_by
                .as_ref()
                .is_none_or(|g| g.iter().any(|c| c == name))
        })
        .collect()
}
