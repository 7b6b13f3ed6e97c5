//! Seed 002 (Shadow): user activity in the workspaces of an AI-agent platform — agent runs
//! (with status, runtime and credits), page views, feature use and errors — over the ten weeks
//! before `now`.
//!
//! Agents grow or shrink week over week; one pauses for two weeks and one starts late, so
//! week-over-week comparisons meet gaps. Event times are spread over whole UTC days, so a
//! tenant in another time zone puts some of them in another day and week.

use super::common::{DAY, Files, Rng, money, n, object, rfc3339, s};

/// Decimals of `credits_used`.
pub(crate) const CREDIT_SCALE: u32 = 3;

pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) name: &'static str,
    pub(crate) category: &'static str,
}

pub(crate) struct Activity {
    pub(crate) id: String,
    pub(crate) workspace_id: String,
    pub(crate) user_id: String,
    pub(crate) session_id: String,
    pub(crate) event_type: &'static str,
    pub(crate) agent_id: Option<String>,
    /// For agent runs: `success` or `failure`.
    pub(crate) status: Option<&'static str>,
    pub(crate) runtime_ms: Option<i64>,
    /// In thousandths of a credit.
    pub(crate) credits: Option<i64>,
    pub(crate) at: i64,
}

pub(crate) struct Data {
    pub(crate) agents: Vec<Agent>,
    pub(crate) activity: Vec<Activity>,
}

const AGENTS: [(&str, &str); 6] = [
    ("Research Assistant", "research"),
    ("Code Reviewer", "engineering"),
    ("SQL Copilot", "data"),
    ("Support Triage", "support"),
    ("Meeting Notes", "productivity"),
    ("Data Cleaner", "data"),
];

const DAYS: i64 = 70;

pub(crate) fn generate(now: i64) -> Data {
    let mut rng = Rng::new(0x0002_5ead_0002);
    let users: Vec<(String, String)> = (0..40)
        .map(|u| (format!("u-{u:02}"), format!("ws-{}", u % 4 + 1)))
        .collect();
    let agents: Vec<Agent> = AGENTS
        .iter()
        .enumerate()
        .map(|(i, (name, category))| Agent {
            id: format!("ag-{}", i + 1),
            name,
            category,
        })
        .collect();
    // Runs per day at the start, and the change per week in percent.
    let trends: Vec<(i64, i64)> = agents
        .iter()
        .map(|_| (rng.range(3, 12), rng.range(-12, 25)))
        .collect();
    let first_day = (now / DAY - DAYS) * DAY;
    let mut activity = Vec::new();
    // Users join over the first eight weeks and some leave after a while (for the analyses:
    // weekly cohorts, new, returning and dormant users); eight are there from the start.
    let joins = |u: usize| if u < 8 { 0 } else { (u as i64 * 37) % 56 };
    let leaves = |u: usize| joins(u) + 21 + (u as i64 * 13) % 60;
    for d in 0..=DAYS {
        let day = first_day + d * DAY;
        let week = d / 7;
        let present: Vec<(String, String)> = users
            .iter()
            .enumerate()
            .filter(|(u, _)| joins(*u) <= d && d < leaves(*u))
            .map(|(_, user)| user.clone())
            .collect();
        for (a, agent) in agents.iter().enumerate() {
            // ag-6 pauses for two weeks; ag-5 starts in the fourth week.
            if (a == 5 && (21..35).contains(&d)) || (a == 4 && d < 24) {
                continue;
            }
            let (base, growth) = trends[a];
            let runs = (base * (100 + growth * week) / 100 + rng.range(-2, 3)).max(0);
            for _ in 0..runs {
                let at = day + rng.range(0, DAY);
                if at >= now {
                    continue;
                }
                let (user, workspace) = rng.pick(&present).clone();
                let success = rng.chance(88);
                activity.push(Activity {
                    id: String::new(),
                    workspace_id: workspace,
                    session_id: format!("s-{user}-{}", d),
                    user_id: user,
                    event_type: "agent_run",
                    agent_id: Some(agent.id.clone()),
                    status: Some(if success { "success" } else { "failure" }),
                    runtime_ms: Some(rng.range(300, 45_000)),
                    credits: Some(rng.range(10, 5_000)),
                    at,
                });
                // Around the runs: page views, feature use, errors (not runs).
                if rng.chance(60) {
                    let (user, workspace) = rng.pick(&present).clone();
                    let event_type = *rng.pick(&["page_view", "page_view", "feature_use", "error"]);
                    activity.push(Activity {
                        id: String::new(),
                        workspace_id: workspace,
                        session_id: format!("s-{user}-{}", d),
                        user_id: user,
                        event_type,
                        agent_id: rng.chance(50).then(|| agent.id.clone()),
                        status: None,
                        runtime_ms: None,
                        credits: None,
                        at: (at + rng.range(1, 600)).min(now - 1),
                    });
                }
            }
        }
    }
    for (i, a) in activity.iter_mut().enumerate() {
        a.id = format!("evt-{i:06}");
    }
    Data { agents, activity }
}

/// One row of the built-in `events` stream (for the analyses: DAU/WAU/MAU, new vs returning,
/// cohorts).
pub(crate) struct Tracked {
    pub(crate) id: String,
    pub(crate) event_type: &'static str,
    pub(crate) event_name: &'static str,
    pub(crate) user_id: Option<String>,
    pub(crate) anonymous_id: Option<String>,
    pub(crate) at: i64,
}

impl Data {
    /// The activity as product events: page views as `page`, the rest as `track` events named
    /// by their type. Each user first browses anonymously (a landing page ten minutes before
    /// their first activity), then is identified (`identify` with both ids), so the landing
    /// belongs to the user once linked.
    pub(crate) fn tracked(&self) -> Vec<Tracked> {
        let mut out = Vec::new();
        let mut first: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for a in &self.activity {
            let t = first.entry(&a.user_id).or_insert(a.at);
            *t = (*t).min(a.at);
            out.push(Tracked {
                id: format!("ev-{}", a.id),
                event_type: if a.event_type == "page_view" {
                    "page"
                } else {
                    "track"
                },
                event_name: a.event_type,
                user_id: Some(a.user_id.clone()),
                anonymous_id: None,
                at: a.at,
            });
        }
        for (user, at) in first {
            let anonymous = Some(format!("anon-{user}"));
            out.push(Tracked {
                id: format!("land-{user}"),
                event_type: "page",
                event_name: "Landing",
                user_id: None,
                anonymous_id: anonymous.clone(),
                at: at - 600,
            });
            out.push(Tracked {
                id: format!("identify-{user}"),
                event_type: "identify",
                event_name: "identify",
                user_id: Some(user.to_owned()),
                anonymous_id: anonymous,
                at: at - 300,
            });
        }
        out
    }

    /// The files `run.sh` loads: the `user_activity` stream and the `agents` table.
    pub(crate) fn files(&self) -> Files {
        let mut files = Files::default();
        let lines = self
            .activity
            .iter()
            .map(|a| {
                object(&[
                    ("id", s(&a.id)),
                    ("workspace_id", s(&a.workspace_id)),
                    ("user_id", s(&a.user_id)),
                    ("session_id", s(&a.session_id)),
                    ("event_type", s(a.event_type)),
                    ("agent_id", a.agent_id.as_ref().and_then(s)),
                    ("status", a.status.and_then(s)),
                    ("runtime_ms", a.runtime_ms.and_then(n)),
                    (
                        "credits_used",
                        a.credits.and_then(|c| s(money(c, CREDIT_SCALE))),
                    ),
                    ("created_at", s(rfc3339(a.at))),
                ])
            })
            .collect();
        files.stream("user_activity", lines);
        let lines = self
            .tracked()
            .iter()
            .map(|t| {
                object(&[
                    ("id", s(&t.id)),
                    ("event_type", s(t.event_type)),
                    ("event_name", s(t.event_name)),
                    ("timestamp", s(rfc3339(t.at))),
                    ("user_id", t.user_id.as_ref().and_then(s)),
                    ("anonymous_id", t.anonymous_id.as_ref().and_then(s)),
                ])
            })
            .collect();
        files.stream("events", lines);
        let mut csv = String::from("agent_id,agent_name,category\n");
        for a in &self.agents {
            csv.push_str(&format!("{},{},{}\n", a.id, a.name, a.category));
        }
        files.table("agents", "agents.csv", csv);
        files
    }
}
