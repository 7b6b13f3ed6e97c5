//! The example packs of `examples/` (the seed artifacts of issue 12), checked on generated data.
//!
//! Each test applies `examples/<pack>/schema.sql` to a Tally in memory with a fixed clock,
//! loads the files `examples/<pack>/run.sh` loads (made by the same generator, the `seed_data`
//! example) through the library calls of `tally ingest` and `tally table upsert`, runs every
//! saved query as `tally query NAME --param …` does, and compares the answers with a
//! recomputation in plain Rust from the generated records: exact decimals, exact timestamps,
//! ranks and quintiles by their definitions. Each comparison is also run once against a
//! deliberately wrong expectation, which must fail.

#[path = "../examples/seed_data/audifi.rs"]
mod audifi;
#[path = "../examples/seed_data/common.rs"]
mod common;
#[path = "../examples/seed_data/shadow.rs"]
mod shadow;
#[path = "../examples/seed_data/spec355.rs"]
mod spec355;
#[path = "../examples/seed_data/ticketing.rs"]
mod ticketing;
#[path = "../examples/seed_data/vaults.rs"]
mod vaults;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tally::app::{Clock, Config, DEFAULT_TENANT, Location, Tally};
use tally::ingest::{Format, ingest};
use tally::runtime::TenantRuntime;
use tally_views::decimal::Decimal;
use tally_views::{Timestamp, Value};

use common::{DAY, Files};

// ── The harness ─────────────────────────────────────────────────────────────────────────────

/// An expected value.
#[derive(Clone, Debug)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    /// Seconds since the epoch.
    Ts(i64),
    /// Compared by value, whatever the scale the answer has.
    Dec(Decimal),
}

impl Cell {
    fn matches(&self, actual: &Value) -> bool {
        match (self, actual) {
            (Cell::Null, Value::Null) => true,
            (Cell::Int(e), Value::Int(a)) => e == a,
            (Cell::Text(e), Value::Text(a)) => e.as_str() == &**a,
            (Cell::Ts(e), Value::Timestamp(a)) => a.0 == e * 1_000_000,
            (Cell::Dec(e), Value::Decimal(a)) => e == a,
            _ => false,
        }
    }
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn ts(seconds: i64) -> Cell {
    Cell::Ts(seconds)
}

fn opt_ts(seconds: Option<i64>) -> Cell {
    seconds.map_or(Cell::Null, Cell::Ts)
}

/// `minor` units with `scale` decimals.
fn dec(minor: i128, scale: u32) -> Cell {
    Cell::Dec(Decimal::new(minor, scale as u8))
}

fn int(n: impl TryInto<i64, Error: std::fmt::Debug>) -> Cell {
    Cell::Int(n.try_into().expect("fits an i64"))
}

/// `p / q` rounded half away from zero to `scale` decimals; `NULL` when `q` is 0. This is what
/// `round(CAST(p AS DECIMAL(20,6)) / nullif(q, 0), scale)` answers: DataFusion truncates the
/// quotient to the dividend's scale + 4 decimals, which never moves a value across a rounding
/// boundary of fewer decimals (the boundary itself has few enough digits to survive).
fn ratio(p: i128, q: i128, scale: u32) -> Cell {
    if q == 0 {
        return Cell::Null;
    }
    let num = p * 10i128.pow(scale);
    let sign = if (num < 0) != (q < 0) { -1 } else { 1 };
    let (num, q) = (num.abs(), q.abs());
    dec(sign * ((2 * num + q) / (2 * q)), scale)
}

/// A Tally in memory with its clock stopped at `now`, the pack's schema applied.
fn open(pack: &str, now: i64) -> Tally {
    let config = Config {
        clock: Clock::fixed(Timestamp(now * 1_000_000)),
        ..Config::default()
    };
    let mut tally = Tally::open(&Location::Memory, config).expect("open");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(pack)
        .join("schema.sql");
    let schema = std::fs::read_to_string(&path).expect("the pack's schema.sql");
    tally.apply_schema(&schema).expect("schema applies");
    tally
}

/// What loading a file did: accepted and duplicate events (or upserted rows).
#[derive(Debug, Default)]
struct Loaded {
    accepted: BTreeMap<String, u64>,
    duplicates: BTreeMap<String, u64>,
}

/// Loads a pack's files into a tenant, as `tally ingest` and `tally table upsert` do; every
/// event and row must be accepted.
fn load(tally: &Tally, runtime: &mut TenantRuntime, files: &Files) -> Loaded {
    let mut loaded = Loaded::default();
    for file in &files.streams {
        let stream = tally.stream(file.target).expect("the stream exists");
        let format = Format::from_path(Path::new(&file.name));
        let report = ingest(
            runtime,
            &stream,
            tally.config(),
            format,
            file.text.as_bytes(),
            &|_| {},
        )
        .expect("ingest");
        assert_eq!(report.rejected, 0, "{}: {:?}", file.name, report.errors);
        loaded
            .accepted
            .insert(file.target.to_owned(), report.accepted);
        loaded
            .duplicates
            .insert(file.target.to_owned(), report.duplicates);
    }
    for file in &files.tables {
        let format = Format::from_path(Path::new(&file.name));
        let records = tally::tables::file_records(&file.text, format).expect("records");
        let outcome = runtime.upsert_rows(file.target, &records).expect("upsert");
        assert!(
            outcome.rejected.is_empty(),
            "{}: {:?}",
            file.name,
            outcome.rejected
        );
        loaded
            .accepted
            .insert(file.target.to_owned(), outcome.upserted);
    }
    loaded
}

/// A saved query's answer, as `tally query NAME --param k=v` gives it.
fn query(
    tally: &Tally,
    runtime: &TenantRuntime,
    name: &str,
    params: &[(&str, &str)],
) -> tally_views::ResultSet {
    let saved = tally
        .catalog()
        .saved_query(name)
        .unwrap_or_else(|| panic!("the schema defines the saved query {name}"))
        .clone();
    let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tally::sql::run_saved_blocking(runtime, &saved, &pairs, None, tally.now())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares an answer with the expected columns and rows, in order.
fn compare(
    name: &str,
    answer: &tally_views::ResultSet,
    columns: &[&str],
    expected: &[Vec<Cell>],
) -> Result<(), String> {
    let names: Vec<&str> = answer.columns.iter().map(|(n, _)| n.as_str()).collect();
    if names != columns {
        return Err(format!("{name}: columns {names:?}, expected {columns:?}"));
    }
    if answer.rows.len() != expected.len() {
        return Err(format!(
            "{name}: {} rows, expected {}",
            answer.rows.len(),
            expected.len()
        ));
    }
    for (i, (row, want)) in answer.rows.iter().zip(expected).enumerate() {
        for ((value, cell), column) in row.iter().zip(want).zip(columns) {
            if !cell.matches(value) {
                return Err(format!(
                    "{name}: row {i}, column {column}: got {value:?}, expected {cell:?}\n  row: {row:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Checks a saved query against the recomputation, then checks that the comparison would catch
/// a wrong value: the first non-NULL cell of the expectation, changed, must fail.
fn check(
    tally: &Tally,
    runtime: &TenantRuntime,
    name: &str,
    params: &[(&str, &str)],
    columns: &[&str],
    expected: Vec<Vec<Cell>>,
) {
    let answer = query(tally, runtime, name, params);
    if let Err(e) = compare(name, &answer, columns, &expected) {
        panic!("tenant {}, {params:?}: {e}", runtime.name());
    }
    let mut wrong = expected;
    let Some(cell) = wrong
        .iter_mut()
        .flat_map(|r| r.iter_mut())
        .rev()
        .find(|c| !matches!(c, Cell::Null))
    else {
        return;
    };
    *cell = match cell {
        Cell::Int(n) => Cell::Int(*n + 1),
        Cell::Text(s) => Cell::Text(format!("{s}!")),
        Cell::Ts(t) => Cell::Ts(*t + 1),
        Cell::Dec(d) => Cell::Dec(Decimal::new(d.mantissa() + 1, d.scale())),
        Cell::Null => unreachable!(),
    };
    assert!(
        compare(name, &answer, columns, &wrong).is_err(),
        "{name}: a wrong expectation passed"
    );
}

/// `1 + the number of values greater than v`: SQL's `rank() OVER (ORDER BY v DESC)`.
fn rank_desc<T: Ord>(values: &[T], v: &T) -> i64 {
    1 + values.iter().filter(|x| *x > v).count() as i64
}

/// SQL's `ntile(n)` for the row at 0-based `position` of `rows` ordered rows: the first
/// `rows % n` buckets have one row more.
fn ntile(n: usize, rows: usize, position: usize) -> i64 {
    let (base, extra) = (rows / n, rows % n);
    let large = extra * (base + 1);
    if position < large {
        (position / (base + 1) + 1) as i64
    } else {
        (extra + (position - large) / base + 1) as i64
    }
}

/// The instant local midnight starts the day of `seconds` in `tz`, as seconds.
fn local_day_start(seconds: i64, tz: &str) -> i64 {
    let zone = jiff::tz::TimeZone::get(tz).expect("time zone");
    jiff::Timestamp::from_second(seconds)
        .expect("time")
        .to_zoned(zone)
        .start_of_day()
        .expect("day start")
        .timestamp()
        .as_second()
}

// ── 000 vaults ─────────────────────────────────────────────────────────────────────────────

const VAULTS_NOW: i64 = 1_794_744_000; // 2026-11-15T12:00:00Z

#[test]
fn vaults() {
    let now = VAULTS_NOW;
    let data = vaults::generate(now);
    let tally = open("vaults", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    let loaded = load(&tally, &mut runtime, &data.files());
    assert_eq!(loaded.accepted["capital_flow"], data.flows.len() as u64);
    assert_eq!(loaded.duplicates["capital_flow"], data.duplicates as u64);
    assert_eq!(loaded.accepted["vaults"], data.vaults.len() as u64);

    let scale = vaults::SCALE;
    let money = |m: i64| dec(i128::from(m), scale);
    let sum = |flows: &mut dyn Iterator<Item = &vaults::Flow>, kind: &str| -> i64 {
        flows
            .filter(|f| kind == "*" || f.flow_type == kind)
            .map(|f| f.amount)
            .sum()
    };
    let signed = |f: &vaults::Flow| match f.flow_type {
        "deposit" | "yield" => f.amount,
        _ => -f.amount,
    };
    let status = |v: &vaults::Vault| {
        // The status of the latest lifecycle event.
        [
            (Some(v.created_at), "pending"),
            (v.activated_at, "active"),
            (v.completed_at, "completed"),
            (v.cancelled_at, "cancelled"),
        ]
        .into_iter()
        .filter_map(|(t, s)| t.map(|t| (t, s)))
        .max()
        .map(|(_, s)| s)
        .expect("created")
    };
    let milestones_of = |id: &str| -> Vec<&vaults::Milestone> {
        data.milestones
            .iter()
            .filter(|m| m.vault_id == id)
            .collect()
    };
    let completed_at = |m: &vaults::Milestone| {
        m.outcome
            .as_ref()
            .filter(|o| o.kind == "completed")
            .map(|o| o.at)
    };
    let mut by_id: Vec<&vaults::Vault> = data.vaults.iter().collect();
    by_id.sort_by(|a, b| a.id.cmp(&b.id));

    // vault_lifecycle_summary
    let expected: Vec<Vec<Cell>> = by_id
        .iter()
        .map(|v| {
            let flows = || data.flows.iter().filter(|f| f.vault_id == v.id);
            let has_flows = flows().next().is_some();
            let deposited = sum(&mut flows(), "deposit");
            let yielded = sum(&mut flows(), "yield");
            let milestones = milestones_of(&v.id);
            let count = milestones.len() as i128;
            let done = milestones
                .iter()
                .filter(|m| completed_at(m).is_some())
                .count() as i128;
            vec![
                text(&v.id),
                text(&v.name),
                text(status(v)),
                text(&v.creator),
                ts(v.created_at),
                opt_ts(v.activated_at),
                opt_ts(v.completed_at),
                opt_ts(v.cancelled_at),
                money(deposited),
                money(sum(&mut flows(), "withdrawal")),
                money(yielded),
                money(flows().map(signed).sum()),
                int(count),
                int(done),
                ratio(done, count, 4),
                if has_flows {
                    ratio(yielded.into(), deposited.into(), 4)
                } else {
                    Cell::Null
                },
                v.activated_at.map_or(Cell::Null, |a| {
                    int(v.completed_at.or(v.cancelled_at).unwrap_or(now) - a)
                }),
            ]
        })
        .collect();
    check(
        &tally,
        &runtime,
        "vault_lifecycle_summary",
        &[],
        &[
            "vault_id",
            "name",
            "status",
            "creator_address",
            "created_at",
            "activated_at",
            "completed_at",
            "cancelled_at",
            "total_deposited",
            "total_withdrawn",
            "total_yield_generated",
            "current_tvl",
            "milestone_count",
            "milestones_completed",
            "completion_rate",
            "capital_efficiency_score",
            "active_duration_seconds",
        ],
        expected,
    );

    // milestone_performance, for every vault
    for v in &by_id {
        let mut ms = milestones_of(&v.id);
        ms.sort_by_key(|m| m.index);
        let expected: Vec<Vec<Cell>> = ms
            .iter()
            .map(|m| {
                let actual = match &m.outcome {
                    Some(o) => o.actual,
                    None => m.progress.last().map_or(0, |p| p.1),
                };
                let done = completed_at(m);
                vec![
                    text(&m.id),
                    text(&m.vault_id),
                    int(m.index),
                    text(m.outcome.as_ref().map_or("pending", |o| o.kind)),
                    money(m.target),
                    money(actual),
                    ratio(actual.into(), m.target.into(), 4),
                    ts(m.due_at),
                    opt_ts(done),
                    done.map_or(Cell::Null, |t| int(t - m.due_at)),
                ]
            })
            .collect();
        check(
            &tally,
            &runtime,
            "milestone_performance",
            &[("vault_id", &v.id)],
            &[
                "id",
                "vault_id",
                "milestone_index",
                "status",
                "target_amount",
                "actual_amount",
                "achievement_ratio",
                "due_at",
                "completed_at",
                "completion_lag_seconds",
            ],
            expected,
        );
    }
    // Some milestones completed early and some late, so the sign of the lag is exercised.
    let lags: Vec<i64> = data
        .milestones
        .iter()
        .filter_map(|m| completed_at(m).map(|t| t - m.due_at))
        .collect();
    assert!(lags.iter().any(|&l| l < 0) && lags.iter().any(|&l| l > 0));

    // vault_performance: the 30 days are today (UTC, the default tenant's zone) and the 29
    // before.
    let since = local_day_start(now, "UTC") - 29 * DAY;
    let net_30d = |id: &str| -> i64 {
        data.flows
            .iter()
            .filter(|f| f.vault_id == id && f.at >= since)
            .map(signed)
            .sum()
    };
    let nets: Vec<i64> = by_id.iter().map(|v| net_30d(&v.id)).collect();
    let mut rows: Vec<(i64, &vaults::Vault)> = by_id
        .iter()
        .map(|v| (rank_desc(&nets, &net_30d(&v.id)), *v))
        .collect();
    rows.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    let expected: Vec<Vec<Cell>> = rows
        .iter()
        .map(|(rank, v)| {
            let recent = || {
                data.flows
                    .iter()
                    .filter(|f| f.vault_id == v.id && f.at >= since)
            };
            let users: BTreeSet<&str> = recent().map(|f| f.user.as_str()).collect();
            vec![
                text(&v.id),
                text(&v.name),
                text(status(v)),
                money(
                    data.flows
                        .iter()
                        .filter(|f| f.vault_id == v.id)
                        .map(signed)
                        .sum(),
                ),
                money(sum(&mut recent(), "deposit")),
                money(sum(&mut recent(), "withdrawal")),
                money(sum(&mut recent(), "yield")),
                money(recent().map(signed).sum()),
                int(recent().count()),
                int(users.len()),
                int(*rank),
            ]
        })
        .collect();
    assert!(
        rows.iter().any(|(r, _)| *r > 1) && data.flows.iter().any(|f| f.at >= since),
        "the window must hold activity"
    );
    check(
        &tally,
        &runtime,
        "vault_performance",
        &[],
        &[
            "vault_id",
            "name",
            "status",
            "current_tvl",
            "deposits_30d",
            "withdrawals_30d",
            "yield_30d",
            "net_flow_30d",
            "flows_30d",
            "active_users_30d",
            "net_flow_rank",
        ],
        expected,
    );

    // user_leaderboard
    let users: BTreeSet<&str> = data.flows.iter().map(|f| f.user.as_str()).collect();
    let deposited = |u: &str| -> i64 {
        data.flows
            .iter()
            .filter(|f| f.user == u && f.flow_type == "deposit")
            .map(|f| f.amount)
            .sum()
    };
    let all: Vec<i64> = users.iter().map(|u| deposited(u)).collect();
    let mut rows: Vec<(i64, &str)> = users
        .iter()
        .map(|u| (rank_desc(&all, &deposited(u)), *u))
        .collect();
    rows.sort();
    let expected: Vec<Vec<Cell>> = rows
        .iter()
        .map(|&(rank, u)| {
            let flows = || data.flows.iter().filter(move |f| f.user == u);
            let created: Vec<&vaults::Vault> =
                data.vaults.iter().filter(|v| v.creator == u).collect();
            let completed = created.iter().filter(|v| status(v) == "completed").count();
            let cancelled = created.iter().filter(|v| status(v) == "cancelled").count();
            let vaults: BTreeSet<&str> = flows().map(|f| f.vault_id.as_str()).collect();
            vec![
                int(rank),
                text(u),
                money(sum(&mut flows(), "deposit")),
                money(sum(&mut flows(), "withdrawal")),
                money(sum(&mut flows(), "yield")),
                int(vaults.len()),
                int(created.len()),
                int(completed),
                int(cancelled),
                ratio(completed as i128, created.len() as i128, 4),
                ts(flows().map(|f| f.at).min().expect("a flow")),
                ts(flows().map(|f| f.at).max().expect("a flow")),
            ]
        })
        .collect();
    check(
        &tally,
        &runtime,
        "user_leaderboard",
        &[],
        &[
            "rank",
            "user_address",
            "total_deposited_lifetime",
            "total_withdrawn_lifetime",
            "total_yield_earned_lifetime",
            "vaults_participated",
            "vaults_created",
            "vaults_completed",
            "vaults_abandoned",
            "creator_completion_rate",
            "first_activity_at",
            "last_activity_at",
        ],
        expected,
    );
}

// ── 001 AudiFi ─────────────────────────────────────────────────────────────────────────────

const AUDIFI_NOW: i64 = 1_794_744_000; // 2026-11-15T12:00:00Z

#[test]
fn audifi() {
    let now = AUDIFI_NOW;
    let data = audifi::generate(now);
    let tally = open("audifi", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    let loaded = load(&tally, &mut runtime, &data.files());
    assert_eq!(
        loaded.accepted["token_transfers"],
        data.transfers.len() as u64
    );
    assert_eq!(loaded.duplicates["token_transfers"], data.duplicates as u64);

    let token = |m: i128| dec(m, audifi::TOKEN_SCALE);
    let usd = |m: i128| dec(m, audifi::USD_SCALE);
    // Balances per token and wallet: received − sent.
    let mut balances: BTreeMap<(&str, &str), i128> = BTreeMap::new();
    for t in &data.transfers {
        *balances.entry((&t.token_id, &t.to)).or_default() += i128::from(t.amount);
        *balances.entry((&t.token_id, &t.from)).or_default() -= i128::from(t.amount);
    }
    let holders = |token_id: &str| -> Vec<(&str, i128)> {
        balances
            .iter()
            .filter(|((t, w), b)| *t == token_id && *w != audifi::ZERO_ADDRESS && **b > 0)
            .map(|((_, w), b)| (*w, *b))
            .collect()
    };
    let artist_name = |id: &str| {
        &data
            .artists
            .iter()
            .find(|a| a.id == id)
            .expect("the token's artist")
            .name
    };

    // token_holders
    let mut rows: Vec<(usize, &audifi::Token)> = data
        .tokens
        .iter()
        .map(|t| (holders(&t.id).len(), t))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    assert!(rows.first().is_some_and(|r| r.0 > 0) && rows.last().is_some_and(|r| r.0 == 0));
    let expected: Vec<Vec<Cell>> = rows
        .iter()
        .map(|(count, t)| {
            let h = holders(&t.id);
            vec![
                text(&t.id),
                text(&t.symbol),
                text(artist_name(&t.artist_id)),
                int(*count),
                token(h.iter().map(|x| x.1).sum()),
                h.iter().map(|x| x.1).max().map_or(Cell::Null, token),
            ]
        })
        .collect();
    check(
        &tally,
        &runtime,
        "token_holders",
        &[],
        &[
            "artist_token_id",
            "symbol",
            "artist_name",
            "holders_count",
            "circulating_supply",
            "largest_balance",
        ],
        expected,
    );
    // Wallets that sold or burned everything are no longer holders.
    assert!(balances.values().any(|&b| b == 0));

    // token_holder_balances, for every token
    for t in &data.tokens {
        let h = holders(&t.id);
        let all: Vec<i128> = h.iter().map(|x| x.1).collect();
        let mut rows: Vec<(i64, &str, i128)> = h
            .iter()
            .map(|&(w, b)| (rank_desc(&all, &b), w, b))
            .collect();
        rows.sort();
        let expected = rows
            .iter()
            .map(|&(rank, w, b)| vec![text(w), token(b), int(rank)])
            .collect();
        check(
            &tally,
            &runtime,
            "token_holder_balances",
            &[("artist_token_id", &t.id)],
            &["wallet", "balance", "rank"],
            expected,
        );
    }

    // artist_performance
    let mut artists: Vec<&audifi::Artist> = data.artists.iter().collect();
    artists.sort_by(|a, b| a.id.cmp(&b.id));
    let expected: Vec<Vec<Cell>> = artists
        .iter()
        .map(|a| {
            let events = |kind: &str| -> Vec<&audifi::MasterEvent> {
                data.master_events
                    .iter()
                    .filter(|e| e.artist_id == a.id && e.event_type == kind)
                    .collect()
            };
            let created = events("master_created");
            let masters: BTreeSet<&str> = created.iter().map(|e| e.master_id.as_str()).collect();
            let ipos: BTreeSet<&str> = events("ipo_launched")
                .iter()
                .filter_map(|e| e.ipo_id.as_deref())
                .collect();
            let mints = events("nft_minted");
            let revenue: i128 = data
                .revenue
                .iter()
                .filter(|r| r.artist_id == a.id && r.status == "distributed")
                .map(|r| i128::from(r.amount))
                .sum();
            let dividends: i128 = data
                .dividends
                .iter()
                .filter(|d| d.artist_id == a.id && d.event_type == "distribution")
                .map(|d| i128::from(d.amount))
                .sum();
            let votes: Vec<&audifi::Vote> =
                data.votes.iter().filter(|v| v.artist_id == a.id).collect();
            let sessions: BTreeSet<&str> = votes.iter().map(|v| v.session_id.as_str()).collect();
            vec![
                text(&a.id),
                text(&a.name),
                int(masters.len()),
                int(ipos.len()),
                if mints.is_empty() {
                    Cell::Null
                } else {
                    int(mints.iter().filter_map(|e| e.quantity).sum::<i64>())
                },
                usd(revenue),
                usd(dividends),
                int(sessions.len()),
                if votes.is_empty() {
                    Cell::Null
                } else {
                    int(votes.len())
                },
                opt_ts(created.iter().map(|e| e.at).min()),
                opt_ts(created.iter().map(|e| e.at).max()),
            ]
        })
        .collect();
    check(
        &tally,
        &runtime,
        "artist_performance",
        &[],
        &[
            "artist_id",
            "artist_name",
            "total_masters",
            "total_ipos",
            "total_nfts_minted",
            "total_revenue_usd",
            "total_dividends_distributed",
            "total_vstudio_sessions",
            "total_vstudio_votes",
            "first_master_created_at",
            "last_master_created_at",
        ],
        expected,
    );
}

// ── 002 Shadow ─────────────────────────────────────────────────────────────────────────────

const SHADOW_NOW: i64 = 1_794_992_400; // 2026-11-18T09:00:00Z, a Wednesday

/// The instant the local week (from Monday 00:00) of `seconds` starts in `tz`, as seconds.
fn local_week_start(seconds: i64, tz: &str) -> i64 {
    let zone = jiff::tz::TimeZone::get(tz).expect("time zone");
    let date = jiff::Timestamp::from_second(seconds)
        .expect("time")
        .to_zoned(zone.clone())
        .date();
    let back = i64::from(date.weekday().to_monday_zero_offset());
    date.checked_sub(jiff::Span::new().days(back))
        .expect("date")
        .to_zoned(zone)
        .expect("midnight")
        .timestamp()
        .as_second()
}

/// One agent's week: runs, successful runs, users, credits (thousandths).
#[derive(Default)]
struct Week<'a> {
    runs: i64,
    successful: i64,
    users: BTreeSet<&'a str>,
    credits: i64,
}

/// Runs per (agent, local week start) in `tz`, of one workspace or all.
fn weekly_runs<'a>(
    data: &'a shadow::Data,
    tz: &str,
    workspace: Option<&str>,
) -> BTreeMap<(&'a str, i64), Week<'a>> {
    let mut weeks: BTreeMap<(&str, i64), Week> = BTreeMap::new();
    for a in &data.activity {
        let Some(agent) = a.agent_id.as_deref() else {
            continue;
        };
        if a.event_type != "agent_run" || workspace.is_some_and(|w| w != a.workspace_id) {
            continue;
        }
        let week = weeks
            .entry((agent, local_week_start(a.at, tz)))
            .or_default();
        week.runs += 1;
        week.successful += i64::from(a.status == Some("success"));
        week.users.insert(&a.user_id);
        week.credits += a.credits.unwrap_or(0);
    }
    weeks
}

/// A percentage with one decimal: `round(CAST(part AS DECIMAL(20,6)) * 100 / whole, 1)`.
fn pct(part: i64, whole: i64) -> Cell {
    ratio(i128::from(part) * 100, whole.into(), 1)
}

#[test]
fn shadow() {
    let now = SHADOW_NOW;
    let data = shadow::generate(now);
    let tally = open("shadow", now);
    // The same events for a tenant in UTC and one in Berlin, whose weeks start at its own
    // Monday midnight (22:00 or 23:00 UTC) and whose week of 26 October 2026 follows a 169-hour
    // week (the switch back from summer time).
    tally
        .create_tenant("berlin", "Europe/Berlin")
        .expect("tenant");
    let files = data.files();
    let mut answers = Vec::new();
    for (tenant, tz) in [(DEFAULT_TENANT, "UTC"), ("berlin", "Europe/Berlin")] {
        let mut runtime = tally.open_tenant(tenant).expect("tenant");
        let loaded = load(&tally, &mut runtime, &files);
        assert_eq!(loaded.accepted["user_activity"], data.activity.len() as u64);

        // agent_usage_trends
        let weeks = weekly_runs(&data, tz, None);
        let mut expected = Vec::new();
        for (&(agent, week), w) in &weeks {
            let prev = weeks.get(&(agent, local_week_start(week - 1, tz)));
            let prev_runs = prev.map_or(0, |p| p.runs);
            let prev_users = prev.map_or(0, |p| p.users.len() as i64);
            let users = w.users.len() as i64;
            let name = data
                .agents
                .iter()
                .find(|a| a.id == agent)
                .expect("agent")
                .name;
            expected.push(vec![
                ts(week),
                text(agent),
                text(name),
                int(w.runs),
                pct(w.successful, w.runs),
                int(users),
                dec(w.credits.into(), shadow::CREDIT_SCALE),
                int(prev_runs),
                int(w.runs - prev_runs),
                pct(w.runs - prev_runs, prev_runs),
                int(prev_users),
                int(users - prev_users),
            ]);
        }
        // The data has weeks after a gap (compared with 0) and, in Berlin, a comparison across
        // the 169-hour week.
        assert!(weeks.iter().any(|(&(a, w), _)| w
            > weeks.keys().find(|k| k.0 == a).expect("first").1
            && !weeks.contains_key(&(a, local_week_start(w - 1, tz)))));
        if tz != "UTC" {
            let after_dst = local_week_start(1_793_145_600, tz); // 2026-10-28
            assert_eq!(after_dst, 1_792_969_200); // 2026-10-25T23:00:00Z
            assert!(
                weeks.keys().any(|&(a, w)| w == after_dst
                    && weeks.contains_key(&(a, after_dst - 7 * DAY - 3_600)))
            );
        }
        let answer = query(&tally, &runtime, "agent_usage_trends", &[]);
        check(
            &tally,
            &runtime,
            "agent_usage_trends",
            &[],
            &[
                "week",
                "agent_id",
                "agent_name",
                "runs",
                "success_rate_pct",
                "active_users",
                "credits_used",
                "prev_week_runs",
                "runs_change",
                "runs_change_pct",
                "prev_week_users",
                "users_change",
            ],
            expected,
        );
        answers.push(answer.rows);

        // workspace_agent_usage, for every workspace
        let workspaces: BTreeSet<&str> = data
            .activity
            .iter()
            .map(|a| a.workspace_id.as_str())
            .collect();
        for ws in workspaces {
            let weeks = weekly_runs(&data, tz, Some(ws));
            let expected = weeks
                .iter()
                .map(|(&(agent, week), w)| {
                    let prev = weeks
                        .get(&(agent, local_week_start(week - 1, tz)))
                        .map_or(0, |p| p.runs);
                    vec![
                        ts(week),
                        text(agent),
                        int(w.runs),
                        int(w.users.len()),
                        int(prev),
                        int(w.runs - prev),
                        pct(w.runs - prev, prev),
                    ]
                })
                .collect();
            check(
                &tally,
                &runtime,
                "workspace_agent_usage",
                &[("workspace_id", ws)],
                &[
                    "week",
                    "agent_id",
                    "runs",
                    "active_users",
                    "prev_week_runs",
                    "runs_change",
                    "runs_change_pct",
                ],
                expected,
            );
        }
    }
    // The time zone changes the answer, not just its labels.
    assert_ne!(format!("{:?}", answers[0]), format!("{:?}", answers[1]));

    // The analyses (mv_active_users, new vs returning): each user's anonymous landing counts
    // for them once linked, in Berlin's days.
    let tz = "Europe/Berlin";
    let mut runtime = tally.open_tenant("berlin").expect("tenant");
    let zone = jiff::tz::TimeZone::get(tz).expect("zone");
    let date = |t: i64| {
        jiff::Timestamp::from_second(t)
            .expect("time")
            .to_zoned(zone.clone())
            .date()
    };
    let mut days: BTreeMap<String, BTreeSet<jiff::civil::Date>> = BTreeMap::new();
    for t in data.tracked() {
        if t.event_type == "identify" {
            continue;
        }
        let person = match (&t.user_id, &t.anonymous_id) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => a.trim_start_matches("anon-").to_owned(),
            (None, None) => unreachable!(),
        };
        days.entry(person).or_default().insert(date(t.at));
    }
    let today = date(now);
    let from = today.checked_sub(jiff::Span::new().days(14)).expect("date");
    let params = vec![
        ("from".to_owned(), from.to_string()),
        ("to".to_owned(), today.to_string()),
    ];
    let answer = runtime
        .analyze("active_users", &params, tally.now())
        .expect("active users");
    let mut expected = Vec::new();
    let mut d = from;
    while d < today {
        let active = |back: i64| {
            let start = d.checked_sub(jiff::Span::new().days(back)).expect("date");
            days.values()
                .filter(|ds| ds.range(start..=d).next().is_some())
                .count() as i64
        };
        let start = d
            .to_zoned(zone.clone())
            .expect("zoned")
            .start_of_day()
            .expect("day start")
            .timestamp()
            .as_second();
        expected.push((start, active(0), active(6), active(29)));
        d = d.tomorrow().expect("date");
    }
    let actual: Vec<(i64, i64, i64, i64)> = answer
        .rows
        .iter()
        .map(|r| match (&r[0], &r[1], &r[2], &r[3]) {
            (Value::Timestamp(t), Value::Int(a), Value::Int(b), Value::Int(c)) => {
                (t.0 / 1_000_000, *a, *b, *c)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(actual, expected);
    assert!(expected.iter().all(|e| e.1 > 0 && e.3 >= e.2 && e.2 >= e.1));
}

// ── 003 spec355 ────────────────────────────────────────────────────────────────────────────

const SPEC355_NOW: i64 = 1_794_744_000; // 2026-11-15T12:00:00Z

/// The analyses of the spec355 pack against the generator's own records: its visits are the
/// sessions (events of a visit lie minutes apart, visits a day or more), the first page of a
/// visit its landing page, and each user's funnel events its steps, in order.
#[test]
fn spec355() {
    let now = SPEC355_NOW;
    let data = spec355::generate(now);
    let tally = open("spec355", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    let loaded = load(&tally, &mut runtime, &data.files());
    assert_eq!(loaded.accepted["events"], data.events.len() as u64);
    assert_eq!(loaded.accepted["metrics"], data.metrics.len() as u64);
    let whole = |extra: &[(&str, &str)]| {
        let mut p = vec![
            ("from".to_owned(), "2026-09-01".to_owned()),
            ("to".to_owned(), "2026-11-16".to_owned()),
        ];
        p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p
    };
    let activity: Vec<&spec355::Event> = data
        .events
        .iter()
        .filter(|e| e.event_type != "identify")
        .collect();

    // user_activity: every activity event once.
    let answer = runtime
        .query("user_activity", &tally_views::QueryRequest::default())
        .expect("user_activity");
    let events: i64 = answer
        .rows
        .iter()
        .map(|r| match r[2] {
            Value::Int(n) => n,
            _ => panic!("event_count"),
        })
        .sum();
    assert_eq!(events, activity.len() as i64);

    // Sessions: one per visit.
    let mut visits: BTreeMap<&str, Vec<&spec355::Event>> = BTreeMap::new();
    for e in &activity {
        visits.entry(&e.session_id).or_default().push(e);
    }
    let answer = runtime
        .analyze("sessions", &whole(&[]), tally.now())
        .expect("sessions");
    let sessions: i64 = answer
        .rows
        .iter()
        .map(|r| match r[1] {
            Value::Int(n) => n,
            _ => panic!("sessions"),
        })
        .sum();
    assert_eq!(sessions, visits.len() as i64);
    let mut landings: BTreeMap<&str, i64> = BTreeMap::new();
    for events in visits.values() {
        let first = events.iter().min_by_key(|e| e.at).expect("an event");
        *landings.entry(first.page_url.expect("a page")).or_default() += 1;
    }
    let answer = runtime
        .analyze("sessions", &whole(&[("by", "landing_page")]), tally.now())
        .expect("landing pages");
    let actual: BTreeMap<String, i64> = answer
        .rows
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(p), Value::Int(n)) => (p.to_string(), *n),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: BTreeMap<String, i64> =
        landings.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    assert_eq!(actual, expected);

    // The funnel over the whole range with a window longer than the data: each user reaches
    // as many steps as they have funnel events (the generator sends them in order).
    let mut reached: BTreeMap<String, usize> = BTreeMap::new();
    for e in &data.events {
        if let Some(step) = spec355::FUNNEL.iter().position(|f| *f == e.event_name) {
            let person = e.user_id.clone().unwrap_or_else(|| {
                e.anonymous_id
                    .as_ref()
                    .expect("an id")
                    .replace("anon-", "user-")
            });
            let r = reached.entry(person).or_default();
            *r = (*r).max(step + 1);
        }
    }
    let steps = spec355::FUNNEL.join(",");
    let answer = runtime
        .analyze(
            "funnel",
            &whole(&[("steps", &steps), ("window", "90 days")]),
            tally.now(),
        )
        .expect("funnel");
    let persons: Vec<i64> = answer
        .rows
        .iter()
        .map(|r| match r[2] {
            Value::Int(n) => n,
            _ => panic!("persons"),
        })
        .collect();
    let expected: Vec<i64> = (1..=spec355::FUNNEL.len())
        .map(|k| reached.values().filter(|r| **r >= k).count() as i64)
        .collect();
    assert_eq!(persons, expected);
    assert!(expected[0] > 100 && expected[3] > 0, "{expected:?}");
}

// ── 004 ticketing ──────────────────────────────────────────────────────────────────────────

const TICKETING_NOW: i64 = 1_794_744_000; // 2026-11-15T12:00:00Z

/// A customer's completed purchase history at one venue (or at all of them).
#[derive(Clone, Copy)]
struct History {
    purchases: i64,
    /// Cents: purchases − refunds.
    net: i64,
    first: i64,
    last: i64,
}

fn histories<'a>(
    data: &'a ticketing::Data,
    key: impl Fn(&'a ticketing::Payment) -> (&'a str, &'a str),
) -> BTreeMap<(&'a str, &'a str), History> {
    let mut out: BTreeMap<(&str, &str), History> = BTreeMap::new();
    for p in data.payments.iter().filter(|p| p.status == "completed") {
        let h = out.entry(key(p)).or_insert(History {
            purchases: 0,
            net: 0,
            first: i64::MAX,
            last: i64::MIN,
        });
        if p.kind == "purchase" {
            h.purchases += 1;
            h.net += p.amount;
            h.first = h.first.min(p.at);
            h.last = h.last.max(p.at);
        } else {
            h.net -= p.amount;
        }
    }
    out
}

fn churn_risk(recency_days: i64) -> &'static str {
    if recency_days > 180 {
        "high"
    } else if recency_days > 60 {
        "medium"
    } else {
        "low"
    }
}

#[test]
fn ticketing() {
    let now = TICKETING_NOW;
    let data = ticketing::generate(now);
    let tally = open("ticketing", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    let loaded = load(&tally, &mut runtime, &data.files());
    assert_eq!(
        loaded.accepted["payment_transactions"],
        data.payments.len() as u64
    );
    let cents = |m: i64| dec(m.into(), ticketing::SCALE);
    let per_venue = histories(&data, |p| (&p.venue_id, &p.customer_id));
    let segments: BTreeMap<&str, &str> = data
        .segments
        .iter()
        .map(|(code, name)| (code.as_str(), *name))
        .collect();

    // customer_rfm: quintiles per venue, ties ordered by customer_id.
    let mut rows = Vec::new();
    for venue in data.venues.iter().map(|v| v.id.as_str()) {
        let customers: Vec<(&str, History)> = per_venue
            .iter()
            .filter(|((v, _), _)| *v == venue)
            .map(|((_, c), h)| (*c, *h))
            .collect();
        let quintile = |key: &dyn Fn(&History) -> i64, customer: &str| -> i64 {
            let mut order: Vec<(i64, &str)> = customers.iter().map(|(c, h)| (key(h), *c)).collect();
            order.sort();
            let position = order
                .iter()
                .position(|(_, c)| *c == customer)
                .expect("in the venue");
            ntile(5, order.len(), position)
        };
        for (customer, h) in &customers {
            let r = quintile(&|h| h.last, customer);
            let f = quintile(&|h| h.purchases, customer);
            let m = quintile(&|h| h.net, customer);
            let recency_days = (now - h.last) / DAY;
            rows.push((venue, r + f + m, *customer, recency_days, *h, r, f, m));
        }
    }
    rows.sort_by(|a, b| (a.0, -a.1, a.2).cmp(&(b.0, -b.1, b.2)));
    let expected: Vec<Vec<Cell>> = rows
        .iter()
        .map(|&(venue, total, customer, recency_days, h, r, f, m)| {
            vec![
                text(venue),
                text(customer),
                int(recency_days),
                int(h.purchases),
                cents(h.net),
                int(r),
                int(f),
                int(m),
                int(total),
                text(segments[format!("{r}{f}").as_str()]),
                text(churn_risk(recency_days)),
            ]
        })
        .collect();
    let found: BTreeSet<&str> = expected
        .iter()
        .filter_map(|r| match &r[9] {
            Cell::Text(s) => segments.values().find(|v| **v == s.as_str()).copied(),
            _ => None,
        })
        .collect();
    assert!(found.len() >= 8, "the data covers most segments: {found:?}");
    check(
        &tally,
        &runtime,
        "customer_rfm",
        &[],
        &[
            "venue_id",
            "customer_id",
            "recency_days",
            "frequency",
            "monetary",
            "recency_score",
            "frequency_score",
            "monetary_score",
            "total_score",
            "segment",
            "churn_risk",
        ],
        expected,
    );

    // churn_risk_dashboard
    let mut expected = Vec::new();
    for venue in &data.venues {
        let customers: Vec<&History> = per_venue
            .iter()
            .filter(|((v, _), _)| *v == venue.id)
            .map(|(_, h)| h)
            .collect();
        for risk in ["high", "medium", "low"] {
            let at_risk: Vec<&&History> = customers
                .iter()
                .filter(|h| churn_risk((now - h.last) / DAY) == risk)
                .collect();
            if at_risk.is_empty() {
                continue;
            }
            expected.push(vec![
                text(&venue.id),
                text(venue.name),
                text(risk),
                int(at_risk.len()),
                pct(at_risk.len() as i64, customers.len() as i64),
                cents(at_risk.iter().map(|h| h.net).sum()),
            ]);
        }
    }
    assert_eq!(expected.len(), 9, "every venue has customers at every risk");
    check(
        &tally,
        &runtime,
        "churn_risk_dashboard",
        &[],
        &[
            "venue_id",
            "venue_name",
            "churn_risk",
            "customers",
            "pct_of_customers",
            "net_revenue",
        ],
        expected,
    );

    // customer_lifetime_value: per customer, over every venue.
    let per_customer = histories(&data, |p| ("", &p.customer_id));
    // Net revenue per day since the first purchase (at least 30) × 1095, in cents, rounded.
    let clv = |h: &History| -> i128 {
        let days = ((now - h.first) / DAY).max(30);
        let (num, den) = (i128::from(h.net) * 1095, i128::from(days));
        (2 * num.abs() + den) / (2 * den) * num.signum()
    };
    let values: Vec<i128> = per_customer.values().map(clv).collect();
    let mut rows: Vec<(i64, &str, History)> = per_customer
        .iter()
        .map(|((_, c), h)| (rank_desc(&values, &clv(h)), *c, *h))
        .collect();
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let expected = rows
        .iter()
        .map(|&(rank, customer, h)| {
            vec![
                int(rank),
                text(customer),
                int(h.purchases),
                cents(h.net),
                ratio(h.net.into(), i128::from(h.purchases) * 100, 2),
                ts(h.first),
                ts(h.last),
                int((now - h.first) / DAY),
                dec(clv(&h), ticketing::SCALE),
            ]
        })
        .collect();
    // Some customers buy at several venues: the per-customer rows merge them.
    assert!(per_customer.len() < per_venue.len());
    check(
        &tally,
        &runtime,
        "customer_lifetime_value",
        &[],
        &[
            "clv_rank",
            "customer_id",
            "purchase_count",
            "historic_clv",
            "avg_order_value",
            "first_purchase_at",
            "last_purchase_at",
            "tenure_days",
            "clv",
        ],
        expected,
    );
}

// ── Alerts of the packs (shadow, ticketing) ────────────────────────────────────────────────

/// Creates a pack's alerts (`examples/<pack>/alerts/*.json`, as `tally alert create` does);
/// their ids by file stem.
fn create_alerts(runtime: &mut TenantRuntime, pack: &str, now: i64) -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(pack)
        .join("alerts");
    let mut ids = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("the pack's alerts") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("alert file");
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let created = tally::alerts::AlertOp::Create(body)
            .run(runtime, Timestamp(now * 1_000_000))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        ids.insert(stem, created["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// The values of `column` in the groups of an alert that are firing.
fn firing(runtime: &mut TenantRuntime, id: &str, column: &str) -> BTreeSet<String> {
    let shown = tally::alerts::AlertOp::Show(id.to_owned())
        .run(runtime, Timestamp(0))
        .expect("show");
    shown["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"][column].as_str().unwrap().to_owned())
        .collect()
}

/// Replays time: the pack's alerts evaluated at each of `times` (seconds, oldest first) over
/// the loaded events, each alert's firing groups compared with `expected(time)` for those
/// that have one.
fn replay_alerts(
    runtime: &mut TenantRuntime,
    ids: &BTreeMap<String, String>,
    column: &str,
    times: impl Iterator<Item = i64>,
    expected: &dyn Fn(&str, i64) -> Option<BTreeSet<String>>,
) -> usize {
    let mut fired = 0;
    for t in times {
        runtime
            .evaluate_alerts(Timestamp(t * 1_000_000), None)
            .expect("evaluate");
        for (stem, id) in ids {
            let got = firing(runtime, id, column);
            if let Some(want) = expected(stem, t) {
                assert_eq!(got, want, "alert {stem} at {t}");
                fired += got.len();
            }
        }
    }
    fired
}

#[test]
fn shadow_alerts() {
    let now = SHADOW_NOW;
    let data = shadow::generate(now);
    let tally = open("shadow", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    load(&tally, &mut runtime, &data.files());
    let ids = create_alerts(&mut runtime, "shadow", now);
    assert_eq!(ids.len(), 2);
    // error_rate: per agent, the error rate of runs above 10 % in the 15 minutes filling now
    // and in the 15 minutes before.
    let above = |agent: &str, from: i64| {
        let runs: Vec<&shadow::Activity> = data
            .activity
            .iter()
            .filter(|a| a.event_type == "agent_run" && a.agent_id.as_deref() == Some(agent))
            .filter(|a| (from..from + 900).contains(&a.at))
            .collect();
        let failed = runs.iter().filter(|a| a.status == Some("failure")).count();
        !runs.is_empty() && failed as f64 * 100.0 / runs.len() as f64 > 10.0
    };
    let expected = |stem: &str, t: i64| {
        (stem == "error_rate").then(|| {
            let current = t - t.rem_euclid(900);
            data.agents
                .iter()
                .map(|a| a.id.clone())
                .filter(|a| above(a, current) && above(a, current - 900))
                .collect()
        })
    };
    // Every 7 minutes over the last 3 days.
    let times = (0..3 * 24 * 60 / 7).rev().map(|k| now - k * 420);
    let fired = replay_alerts(&mut runtime, &ids, "agent_id", times, &expected);
    assert!(
        fired > 0,
        "the error rate alert never fired: the replay checks nothing"
    );
}

#[test]
fn ticketing_alerts() {
    let now = TICKETING_NOW;
    let data = ticketing::generate(now);
    let tally = open("ticketing", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    load(&tally, &mut runtime, &data.files());
    let ids = create_alerts(&mut runtime, "ticketing", now);
    assert_eq!(ids.len(), 2);
    // sales_drop: per venue, completed purchases of the last complete day (UTC) down by more
    // than half from the day before (which had some).
    let purchases = |venue: &str, day: i64| {
        data.payments
            .iter()
            .filter(|p| p.venue_id == venue && p.kind == "purchase" && p.status == "completed")
            .filter(|p| (day..day + DAY).contains(&p.at))
            .count() as f64
    };
    let expected = |stem: &str, t: i64| {
        (stem == "sales_drop").then(|| {
            let last = t - t.rem_euclid(DAY) - DAY;
            data.venues
                .iter()
                .map(|v| v.id.clone())
                .filter(|v| {
                    let (cur, prev) = (purchases(v, last), purchases(v, last - DAY));
                    prev > 0.0 && (cur - prev) / prev * 100.0 < -50.0
                })
                .collect()
        })
    };
    // Every 8 hours over the last 120 days.
    let times = (0..120 * 3).rev().map(|k| now - k * 8 * 3600);
    let fired = replay_alerts(&mut runtime, &ids, "venue_id", times, &expected);
    assert!(
        fired > 0,
        "the sales drop alert never fired: the replay checks nothing"
    );
}

/// Creates a pack's dashboards (`examples/<pack>/dashboards/*.json`, as `tally dashboard
/// create` does) and reads every widget's data: each answers, and a `number` widget's value and
/// previous value equal the sum of its column over the rows of the same view and range, read
/// as a plain view query (no re-grouping).
fn check_dashboards(tally: &Tally, runtime: &mut TenantRuntime, pack: &str, now: i64) {
    use tally::dashboards::{DashboardOp, Range, resolve_range, widget_data_blocking};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(pack)
        .join("dashboards");
    let at = Timestamp(now * 1_000_000);
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("the pack's dashboards") {
        let path = entry.unwrap().path();
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let created = DashboardOp::Create(body)
            .run(runtime, at)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let id = created["id"].as_str().unwrap();
        let widgets = created["widgets"].as_array().unwrap();
        for (n, widget) in widgets.iter().enumerate() {
            let data = widget_data_blocking(runtime, id, n, (None, None), at, Default::default())
                .unwrap_or_else(|e| panic!("{} widget {n}: {e}", path.display()));
            if widget["kind"] != "number" {
                assert!(
                    !data["rows"].as_array().unwrap().is_empty(),
                    "{} widget {n} has no rows",
                    path.display()
                );
                continue;
            }
            let q = &widget["query"];
            let value = q["value"].as_str().unwrap();
            if value.starts_with('p') {
                // A percentile merges sketches: not a sum of rows.
                assert!(!data["value"].is_null(), "{} widget {n}", path.display());
                continue;
            }
            let range = resolve_range(
                q["from"].as_str(),
                q["to"].as_str(),
                at,
                runtime.engine().tz(),
            )
            .unwrap();
            let sum = |r: Range| {
                let req = tally_views::QueryRequest {
                    from: r.from,
                    to: r.to,
                    filter: q["where"].as_str().map(str::to_owned),
                    ..Default::default()
                };
                let answer = runtime.query(q["view"].as_str().unwrap(), &req).unwrap();
                let i = answer.columns.iter().position(|(c, _)| c == value).unwrap();
                answer
                    .rows
                    .iter()
                    .filter_map(|row| match &row[i] {
                        Value::Int(v) => Some(Decimal::new(i128::from(*v), 0)),
                        Value::Decimal(d) => Some(*d),
                        _ => None,
                    })
                    .fold(Decimal::new(0, 0), |a, b| a.checked_add(b).unwrap())
            };
            let as_decimal = |v: &serde_json::Value| match v {
                serde_json::Value::Number(n) => Decimal::parse(&n.to_string()).unwrap(),
                serde_json::Value::String(s) => Decimal::parse(s).unwrap(),
                _ => Decimal::new(0, 0),
            };
            assert_eq!(
                as_decimal(&data["value"]),
                sum(range),
                "{} widget {n}",
                path.display()
            );
            assert_eq!(
                as_decimal(&data["previous"]),
                sum(range.previous().unwrap()),
                "{} widget {n}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "{pack}: {checked} number widgets checked");
    let _ = tally;
}

#[test]
fn spec355_dashboards() {
    let now = SPEC355_NOW;
    let data = spec355::generate(now);
    let tally = open("spec355", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    load(&tally, &mut runtime, &data.files());
    check_dashboards(&tally, &mut runtime, "spec355", now);
}

#[test]
fn ticketing_dashboards() {
    let now = TICKETING_NOW;
    let data = ticketing::generate(now);
    let tally = open("ticketing", now);
    let mut runtime = tally.open_tenant(DEFAULT_TENANT).expect("tenant");
    load(&tally, &mut runtime, &data.files());
    check_dashboards(&tally, &mut runtime, "ticketing", now);
}
