//! Seed 000 (vaults): vaults with a lifecycle (created → activated → completed or cancelled),
//! milestones with targets and due dates, and the capital that flows in and out of them.
//!
//! Amounts are kept in micro-units (6 decimals, as USDC has) so that the test recomputes every
//! sum exactly.

use super::common::{DAY, Files, HOUR, MINUTE, Rng, money, n, object, rfc3339, s};

/// Decimals of every amount of this pack.
pub(crate) const SCALE: u32 = 6;
const UNIT: i64 = 1_000_000;

pub(crate) struct Vault {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) token: &'static str,
    pub(crate) category: &'static str,
    /// In micro-units.
    pub(crate) target: i64,
    pub(crate) creator: String,
    pub(crate) created_at: i64,
    pub(crate) activated_at: Option<i64>,
    pub(crate) completed_at: Option<i64>,
    pub(crate) cancelled_at: Option<i64>,
}

/// How a milestone ended: `completed` or `missed`, when, and the amount reached (micro-units).
pub(crate) struct Outcome {
    pub(crate) kind: &'static str,
    pub(crate) at: i64,
    pub(crate) actual: i64,
}

pub(crate) struct Milestone {
    pub(crate) id: String,
    pub(crate) vault_id: String,
    pub(crate) index: i64,
    /// In micro-units.
    pub(crate) target: i64,
    pub(crate) due_at: i64,
    pub(crate) defined_at: i64,
    /// Progress reports before the outcome: (time, amount reached so far).
    pub(crate) progress: Vec<(i64, i64)>,
    pub(crate) outcome: Option<Outcome>,
}

pub(crate) struct Flow {
    pub(crate) vault_id: String,
    pub(crate) user: String,
    pub(crate) flow_type: &'static str,
    /// In micro-units, always positive; `flow_type` gives the direction.
    pub(crate) amount: i64,
    pub(crate) token: &'static str,
    pub(crate) tx_hash: String,
    pub(crate) at: i64,
}

pub(crate) struct Data {
    pub(crate) vaults: Vec<Vault>,
    pub(crate) milestones: Vec<Milestone>,
    pub(crate) flows: Vec<Flow>,
    /// Capital flows sent twice (a retried delivery): Tally counts them once.
    pub(crate) duplicates: usize,
}

const VAULTS: usize = 24;
const USERS: usize = 80;

/// The data of the pack, all of it before `now` (seconds since the epoch).
pub(crate) fn generate(now: i64) -> Data {
    let mut rng = Rng::new(0x000d_a7a0_5eed);
    let users: Vec<String> = (0..USERS).map(|_| format!("0x{}", rng.hex(40))).collect();
    let mut vaults = Vec::new();
    let mut milestones = Vec::new();
    let mut flows = Vec::new();
    for i in 0..VAULTS {
        let (token, category) = *rng.pick(&[
            ("USDC", "savings"),
            ("USDC", "goal"),
            ("DAI", "goal"),
            ("WETH", "growth"),
        ]);
        let created_at = now - rng.range(35 * DAY, 220 * DAY);
        let mut vault = Vault {
            id: format!("v-{:02}", i + 1),
            name: format!(
                "{} {}",
                rng.pick(&["Alpine", "Harbor", "Summit", "Meadow", "Cobalt", "Juniper"]),
                rng.pick(&["Fund", "Goal", "Reserve", "Circle", "Pot"])
            ),
            token,
            category,
            target: rng.range(5_000, 200_000) * UNIT,
            creator: rng.pick(&users[..30]).clone(),
            created_at,
            activated_at: None,
            completed_at: None,
            cancelled_at: None,
        };
        if rng.chance(85) {
            let activated = created_at + rng.range(HOUR, 5 * DAY);
            vault.activated_at = Some(activated);
            let r = rng.range(0, 100);
            let end = activated
                + if r < 40 {
                    rng.range(20 * DAY, 150 * DAY)
                } else {
                    rng.range(5 * DAY, 120 * DAY)
                };
            if r < 40 && end < now - HOUR {
                vault.completed_at = Some(end);
            } else if (40..55).contains(&r) && end < now - HOUR {
                vault.cancelled_at = Some(end);
            }
        } else if rng.chance(50) {
            vault.cancelled_at = Some(created_at + rng.range(DAY, 20 * DAY));
        }
        milestones.extend(vault_milestones(&mut rng, &vault, now));
        flows.extend(vault_flows(&mut rng, &vault, &users, now));
        vaults.push(vault);
    }
    Data {
        vaults,
        milestones,
        flows,
        duplicates: 5,
    }
}

fn vault_milestones(rng: &mut Rng, vault: &Vault, now: i64) -> Vec<Milestone> {
    let horizon = vault.completed_at.or(vault.cancelled_at).unwrap_or(now);
    let mut due_at = vault.created_at;
    let mut out = Vec::new();
    for index in 0..rng.range(2, 6) {
        due_at += rng.range(10 * DAY, 35 * DAY);
        let target = rng.range(1_000, 50_000) * UNIT + rng.range(0, 100) * 10_000;
        let mut m = Milestone {
            id: format!("{}-m{index}", vault.id),
            vault_id: vault.id.clone(),
            index,
            target,
            due_at,
            defined_at: vault.created_at + index + 1,
            progress: Vec::new(),
            outcome: None,
        };
        if let Some(activated) = vault.activated_at {
            // The earliest and latest instants a completion may have.
            let (lo, hi) = (activated + HOUR, horizon - MINUTE);
            let completion = |rng: &mut Rng, from: i64, to: i64| {
                let t = due_at + rng.range(from, to);
                (lo < hi).then(|| t.clamp(lo, hi))
            };
            let ended = if vault.completed_at.is_some() {
                completion(rng, -6 * DAY, 6 * DAY).map(|t| ("completed", t))
            } else if due_at + 7 * DAY < horizon {
                if rng.chance(65) {
                    completion(rng, -6 * DAY, 6 * DAY).map(|t| ("completed", t))
                } else {
                    Some(("missed", due_at + DAY))
                }
            } else if due_at < horizon {
                rng.chance(50)
                    .then(|| completion(rng, -6 * DAY, 0))
                    .flatten()
                    .map(|t| ("completed", t))
            } else if rng.chance(25) && lo < hi {
                Some(("completed", rng.range(lo, hi)))
            } else {
                None
            };
            let until = ended.map_or(horizon, |(_, t)| t);
            // Progress reports strictly between the activation and the outcome.
            let mut times: Vec<i64> = (0..rng.range(0, 4))
                .filter(|_| activated + MINUTE < until - MINUTE)
                .map(|_| rng.range(activated + MINUTE, until - MINUTE))
                .collect();
            times.sort_unstable();
            times.dedup();
            let mut fractions: Vec<i64> = times.iter().map(|_| rng.range(5, 95)).collect();
            fractions.sort_unstable();
            m.progress = times
                .into_iter()
                .zip(fractions)
                .map(|(t, f)| (t, target / 100 * f))
                .collect();
            m.outcome = ended.map(|(kind, at)| Outcome {
                kind,
                at,
                actual: if kind == "completed" {
                    target + rng.range(0, target / 10)
                } else {
                    // A missed milestone reached at least its last report.
                    let reached = m.progress.last().map_or(0, |p| p.1);
                    reached.max(target / 100 * rng.range(20, 96))
                },
            });
        }
        out.push(m);
    }
    out
}

fn vault_flows(rng: &mut Rng, vault: &Vault, users: &[String], now: i64) -> Vec<Flow> {
    let Some(activated) = vault.activated_at else {
        return Vec::new();
    };
    let horizon = vault.completed_at.or(vault.cancelled_at).unwrap_or(now);
    let participants: Vec<&String> = (0..rng.range(3, 14)).map(|_| rng.pick(users)).collect();
    (0..rng.range(15, 90))
        .map(|_| {
            let r = rng.range(0, 100);
            let (flow_type, lo, hi) = match r {
                0..55 => ("deposit", 10, 20_000),
                55..75 => ("withdrawal", 5, 8_000),
                75..92 => ("yield", 1, 500),
                92..97 => ("fee", 1, 50),
                _ => ("penalty", 5, 200),
            };
            Flow {
                vault_id: vault.id.clone(),
                user: (*rng.pick(&participants)).clone(),
                flow_type,
                amount: rng.range(lo, hi) * UNIT + rng.range(0, UNIT),
                token: vault.token,
                tx_hash: format!("0x{}", rng.hex(64)),
                at: rng.range(activated, horizon),
            }
        })
        .collect()
}

impl Data {
    /// The files `run.sh` loads: three streams and the `vaults` table.
    pub(crate) fn files(&self) -> Files {
        let mut rng = Rng::new(0x5eed_f11e);
        let mut files = Files::default();

        let mut lifecycle = Vec::new();
        for v in &self.vaults {
            let mut event = |event_type: &str, status: &str, at: i64, creator: bool| {
                lifecycle.push(object(&[
                    ("event_id", s(format!("{}:{event_type}", v.id))),
                    ("vault_id", s(&v.id)),
                    ("event_type", s(event_type)),
                    ("status", s(status)),
                    ("creator_address", creator.then(|| s(&v.creator)).flatten()),
                    ("occurred_at", s(rfc3339(at))),
                ]));
            };
            event("created", "pending", v.created_at, true);
            if let Some(t) = v.activated_at {
                event("activated", "active", t, false);
            }
            if let Some(t) = v.completed_at {
                event("completed", "completed", t, false);
            }
            if let Some(t) = v.cancelled_at {
                event("cancelled", "cancelled", t, false);
            }
        }
        // Events arrive in any order: `last(status, occurred_at)` goes by event time.
        rng.shuffle(&mut lifecycle);
        files.stream("vault_events", lifecycle);

        let mut milestone_events = Vec::new();
        for m in &self.milestones {
            let event = |seq: usize, event_type: &str, status: &str, at: i64, amounts| {
                let mut fields = vec![
                    ("event_id", s(format!("{}:{seq}", m.id))),
                    ("milestone_id", s(&m.id)),
                    ("vault_id", s(&m.vault_id)),
                    ("milestone_index", n(m.index)),
                    ("event_type", s(event_type)),
                    ("status", s(status)),
                    ("occurred_at", s(rfc3339(at))),
                ];
                fields.extend::<Vec<_>>(amounts);
                object(&fields)
            };
            milestone_events.push(event(
                0,
                "defined",
                "pending",
                m.defined_at,
                vec![
                    ("target_amount", s(money(m.target, SCALE))),
                    ("due_at", s(rfc3339(m.due_at))),
                ],
            ));
            let reports = m
                .progress
                .iter()
                .map(|&(at, actual)| ("progress", "pending", at, actual))
                .chain(m.outcome.iter().map(|o| (o.kind, o.kind, o.at, o.actual)));
            for (seq, (event_type, status, at, actual)) in reports.enumerate() {
                milestone_events.push(event(
                    seq + 1,
                    event_type,
                    status,
                    at,
                    vec![("actual_amount", s(money(actual, SCALE)))],
                ));
            }
        }
        rng.shuffle(&mut milestone_events);
        files.stream("milestone_events", milestone_events);

        let mut flows: Vec<String> = self
            .flows
            .iter()
            .map(|f| {
                object(&[
                    ("vault_id", s(&f.vault_id)),
                    ("user_address", s(&f.user)),
                    ("flow_type", s(f.flow_type)),
                    ("amount", s(money(f.amount, SCALE))),
                    ("token_symbol", s(f.token)),
                    ("tx_hash", s(&f.tx_hash)),
                    ("occurred_at", s(rfc3339(f.at))),
                ])
            })
            .collect();
        rng.shuffle(&mut flows);
        // A retried delivery: the same transactions again.
        let again: Vec<String> = flows[..self.duplicates].to_vec();
        flows.extend(again);
        files.stream("capital_flow", flows);

        let mut csv = String::from("vault_id,name,token_symbol,category,target_amount\n");
        for v in &self.vaults {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                v.id,
                v.name,
                v.token,
                v.category,
                money(v.target, SCALE)
            ));
        }
        files.table("vaults", "vaults.csv", csv);
        files
    }
}
