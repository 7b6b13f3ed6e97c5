//! Query-time SQL end to end over hand-made relations: joins, windows, `now()`, local time,
//! typed parameters, exact decimals, and the limits.

use std::collections::BTreeMap;
use std::time::Duration;

use tally_sql::{Context, Limits, ParamValue, Relation, SqlError, execute, prepare};
use tally_views::decimal::Decimal;
use tally_views::{ResultSet, Timestamp, Type, Value};

fn ts(s: &str) -> Value {
    Value::Timestamp(Timestamp::parse(s).unwrap())
}

fn dec(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).unwrap())
}

fn vaults() -> Relation {
    let row = |id: &str, name: &str, status: &str, target: &str, opened: &str| {
        vec![
            Value::text(id),
            Value::text(name),
            Value::text(status),
            dec(target),
            ts(opened),
        ]
    };
    Relation {
        name: "vaults".into(),
        columns: vec![
            ("vault_id".into(), Type::Text),
            ("name".into(), Type::Text),
            ("status".into(), Type::Text),
            (
                "target".into(),
                Type::Decimal {
                    precision: 36,
                    scale: 18,
                },
            ),
            ("opened_at".into(), Type::Timestamp),
        ],
        rows: vec![
            row("v1", "Rent", "active", "1000.5", "2026-03-01T00:00:00Z"),
            row("v2", "Holiday", "active", "250", "2026-03-20T12:00:00Z"),
            row(
                "v3",
                "Car",
                "closed",
                "9000.000000000000000001",
                "2026-01-01T00:00:00Z",
            ),
        ],
    }
}

/// Deposits per vault and day, as a live view keeps them.
fn deposits() -> Relation {
    let row = |day: &str, vault: &str, n: i64, amount: &str| {
        vec![ts(day), Value::text(vault), Value::Int(n), dec(amount)]
    };
    Relation {
        name: "deposits_daily".into(),
        columns: vec![
            ("day".into(), Type::Timestamp),
            ("vault_id".into(), Type::Text),
            ("deposits".into(), Type::BigInt),
            (
                "amount".into(),
                Type::Decimal {
                    precision: 36,
                    scale: 18,
                },
            ),
        ],
        rows: vec![
            row("2026-03-28T23:00:00Z", "v1", 2, "100.1"),
            row("2026-03-29T22:00:00Z", "v1", 1, "0.2"),
            row("2026-03-29T22:00:00Z", "v2", 5, "50"),
            row("2026-03-30T22:00:00Z", "v3", 1, "0.000000000000000001"),
        ],
    }
}

fn context() -> Context {
    Context {
        time_zone: "Europe/Berlin".into(),
        now: Timestamp::parse("2026-03-31T10:00:00Z").unwrap(),
        limits: Limits::default(),
    }
}

async fn run_with(
    sql: &str,
    params: &[(&str, ParamValue)],
    context: &Context,
) -> Result<ResultSet, SqlError> {
    let prepared = prepare(sql)?;
    let all = [vaults(), deposits()];
    let relations = prepared
        .relations
        .iter()
        .filter_map(|r| all.iter().find(|a| a.name == r.name()).cloned())
        .collect();
    let params: BTreeMap<String, ParamValue> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    execute(prepared, relations, &params, context).await
}

async fn run(sql: &str) -> Result<ResultSet, SqlError> {
    run_with(sql, &[], &context()).await
}

fn text(result: &ResultSet) -> Vec<String> {
    result
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::Null => "NULL".to_owned(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

#[tokio::test]
async fn joins_aggregates_and_exact_decimals() {
    let r = run(
        "SELECT v.name, sum(d.deposits) AS n, sum(d.amount) AS total \
         FROM deposits_daily d JOIN vaults v USING (vault_id) \
         GROUP BY v.name ORDER BY v.name",
    )
    .await
    .unwrap();
    assert_eq!(r.columns[0], ("name".into(), Type::Text));
    assert_eq!(r.columns[1], ("n".into(), Type::BigInt));
    assert!(matches!(r.columns[2].1, Type::Decimal { scale: 18, .. }));
    assert_eq!(
        text(&r),
        [
            "Car | 1 | 0.000000000000000001",
            "Holiday | 5 | 50.000000000000000000",
            "Rent | 3 | 100.300000000000000000",
        ]
    );
    // Every kind of join.
    let r = run(
        "SELECT v.vault_id, count(d.day) FROM vaults v LEFT JOIN deposits_daily d \
         ON d.vault_id = v.vault_id AND d.deposits > 1 GROUP BY 1 ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(text(&r), ["v1 | 1", "v2 | 1", "v3 | 0"]);
}

#[tokio::test]
async fn windows_rank_ntile_and_lag() {
    let r = run("SELECT vault_id, day, deposits, \
                rank() OVER (ORDER BY deposits DESC) AS rank, \
                ntile(2) OVER (ORDER BY deposits DESC, vault_id) AS half, \
                lag(deposits) OVER (PARTITION BY vault_id ORDER BY day) AS previous \
         FROM deposits_daily ORDER BY rank, vault_id, day")
    .await
    .unwrap();
    assert_eq!(
        text(&r),
        [
            "v2 | 2026-03-29T22:00:00Z | 5 | 1 | 1 | NULL",
            "v1 | 2026-03-28T23:00:00Z | 2 | 2 | 1 | NULL",
            "v1 | 2026-03-29T22:00:00Z | 1 | 3 | 2 | 2",
            "v3 | 2026-03-30T22:00:00Z | 1 | 3 | 2 | NULL",
        ]
    );
}

#[tokio::test]
async fn now_is_tallys_clock_and_time_is_local() {
    // now() is the context's instant; durations in seconds.
    let r = run(
        "SELECT vault_id, extract(epoch FROM now() - opened_at) AS age \
         FROM vaults WHERE opened_at > now() - interval '30 days' ORDER BY 1",
    )
    .await
    .unwrap();
    // v1 opened 30 days and 10 hours before now, v2 10 days and 22 hours before.
    assert_eq!(text(&r), ["v2 | 943200"]);
    let r = run(
        "SELECT vault_id, extract(epoch FROM now() - opened_at) AS age \
         FROM vaults WHERE opened_at > now() - interval '31 days' ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(text(&r), ["v1 | 2628000", "v2 | 943200"]);
    // Days begin at local midnight: 2026-03-29 (the day DST began in Berlin) at 22:00 UTC is
    // 00:00 on the 30th, local.
    let r = run(
        "SELECT date_trunc('day', day) AS local_day, date_part('hour', day) AS hour, \
                sum(deposits) FROM deposits_daily GROUP BY 1, 2 ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(
        text(&r),
        [
            "2026-03-28T23:00:00Z | 0 | 2",
            "2026-03-29T22:00:00Z | 0 | 6",
            "2026-03-30T22:00:00Z | 0 | 1",
        ]
    );
    assert_eq!(r.columns[0].1, Type::Timestamp);
}

#[tokio::test]
async fn parameters_are_typed_and_bound() {
    let r = run_with(
        "SELECT vault_id FROM vaults WHERE status = :status AND target > :min ORDER BY 1",
        &[
            ("status", ParamValue::Text("active".into())),
            ("min", ParamValue::Json(serde_json::json!(300))),
        ],
        &context(),
    )
    .await
    .unwrap();
    assert_eq!(text(&r), ["v1"]);
    // Text that tries to escape its quotes is a value, never SQL.
    let r = run_with(
        "SELECT count(*) FROM vaults WHERE status = :status",
        &[("status", ParamValue::Text("x' OR '1'='1".into()))],
        &context(),
    )
    .await
    .unwrap();
    assert_eq!(text(&r), ["0"]);
    let e = run_with(
        "SELECT * FROM vaults WHERE target > :min",
        &[("min", ParamValue::Text("lots".into()))],
        &context(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, SqlError::Param { name, .. } if name == "min"),
        "{e}"
    );
    assert!(e.to_string().contains("DECIMAL(38,18)"), "{e}");
    let e = run_with(
        "SELECT * FROM vaults WHERE status = :status",
        &[],
        &context(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("parameter status: missing"), "{e}");
    let e = run_with(
        "SELECT 1",
        &[("extra", ParamValue::Text("1".into()))],
        &context(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not a parameter"), "{e}");
}

#[tokio::test]
async fn limits_answer_errors_not_crashes() {
    let tight = |limits: Limits| Context {
        limits,
        ..context()
    };
    let e = run_with(
        "SELECT * FROM deposits_daily",
        &[],
        &tight(Limits {
            max_rows: 3,
            ..Limits::default()
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SqlError::TooManyRows(3)), "{e}");
    // A cross join far too large for the time limit.
    let many = "SELECT count(*) FROM deposits_daily a, deposits_daily b, deposits_daily c, \
                deposits_daily d, deposits_daily e, deposits_daily f, deposits_daily g, \
                deposits_daily h, deposits_daily i, deposits_daily j, deposits_daily k, \
                deposits_daily l, deposits_daily m WHERE a.amount + m.amount > 0";
    let e = run_with(
        many,
        &[],
        &tight(Limits {
            time: Duration::from_millis(50),
            ..Limits::default()
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SqlError::Timeout(_)), "{e}");
    // Sorting a large cross join within 1 MB.
    let e = run_with(
        "SELECT a.vault_id, b.name, c.name, d.name FROM vaults a, vaults b, vaults c, vaults d, \
         vaults e, vaults f, vaults g, vaults h, vaults i \
         ORDER BY a.name || b.name || c.name || d.name || e.name || f.name || g.name",
        &[],
        &tight(Limits {
            memory_bytes: 1024 * 1024,
            max_rows: 10_000_000,
            time: Duration::from_secs(60),
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SqlError::Memory { .. }), "{e}");
}

#[tokio::test]
async fn functions_cannot_allocate_without_bound() {
    // Values past 16 MB are refused before they are made; small ones work as usual.
    for sql in [
        "SELECT length(repeat('x', 2000000000))",
        "SELECT length(repeat(name, 10000000)) FROM vaults",
        "SELECT length(lpad('x', 1000000000))",
        "SELECT length(rpad(name, 1000000000, 'ab')) FROM vaults",
    ] {
        let e = run(sql).await.unwrap_err();
        assert!(
            matches!(&e, SqlError::Execution(m) if m.contains("the limit is 16777216 bytes")),
            "{sql}: {e}"
        );
    }
    let r = run("SELECT repeat('ab', 3), lpad('7', 3, '0'), rpad(name, 6, '.') FROM vaults ORDER BY 1, 3 LIMIT 1")
        .await
        .unwrap();
    assert_eq!(text(&r), ["ababab | 007 | Car..."]);
}

#[tokio::test]
async fn only_what_was_supplied_can_be_read() {
    let e = run("SELECT * FROM other_tenants_view").await.unwrap_err();
    assert!(e.to_string().contains("other_tenants_view"), "{e}");
    for sql in [
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM datafusion.public.vaults",
        "COPY (SELECT 1) TO '/tmp/out.csv'",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM '/etc/passwd'",
        "SET datafusion.execution.time_zone = 'UTC'",
    ] {
        assert!(run(sql).await.is_err(), "{sql}");
    }
}
