//! Compiler tests: every case goes through [`check`], which applies schema text to a catalog
//! that already has the `capital_flow` stream of DESIGN.md and prints the changes and the plan of
//! the last view, or the error. Update the snapshots with `UPDATE_EXPECT=1 cargo test`.

use expect_test::{Expect, expect};

use crate::plan::Catalog;
use crate::sql::apply;

const CAPITAL_FLOW: &str = "
CREATE STREAM capital_flow (
  vault_id     TEXT NOT NULL,
  user_address TEXT NOT NULL,
  flow_type    TEXT NOT NULL,
  amount       DECIMAL(36,18) NOT NULL,
  token_symbol TEXT,
  tx_hash      TEXT NOT NULL,
  occurred_at  TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'tx_hash', retention = '90 days');
";

fn base() -> Catalog {
    apply(&Catalog::new(), CAPITAL_FLOW)
        .expect("base schema compiles")
        .catalog
}

#[track_caller]
fn check(sql: &str, expect: Expect) {
    let actual = match apply(&base(), sql) {
        Ok(applied) => {
            let mut out: Vec<String> = applied.changes.iter().map(|c| c.to_string()).collect();
            let last_view = applied
                .catalog
                .order()
                .iter()
                .rev()
                .find_map(|n| applied.catalog.view(n));
            if let Some(plan) = last_view {
                out.push(plan.to_string());
            }
            out.join("\n")
        }
        Err(e) => format!("error: {e}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn design_example_view() {
    check(
        "
CREATE MATERIALIZED VIEW vault_flows_daily WITH (retention = '2 years') AS
SELECT time_bucket('1 day', occurred_at)                         AS day,
       vault_id,
       sum(amount) FILTER (WHERE flow_type = 'deposit')            AS deposited,
       sum(amount) FILTER (WHERE flow_type = 'withdrawal')         AS withdrawn,
       count(DISTINCT user_address)                                AS depositors,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY amount)        AS p95_amount,
       last(amount, occurred_at)                                   AS last_amount
FROM capital_flow
GROUP BY 1, 2;",
        expect![[r#"
            created view vault_flows_daily
            view vault_flows_daily on capital_flow
              retention: 2 years
              group by:
                day = time_bucket('1 day', occurred_at)  [TIMESTAMP, time bucket 1 day]
                vault_id = vault_id  [TEXT]
              aggregates:
                #0 sum(amount) FILTER (WHERE flow_type = 'deposit')  [accumulable, DECIMAL(38,18)]
                #1 sum(amount) FILTER (WHERE flow_type = 'withdrawal')  [accumulable, DECIMAL(38,18)]
                #2 count(DISTINCT user_address)  [exact set, BIGINT]
                #3 percentile_cont(0.95) WITHIN GROUP (ORDER BY amount)  [quantile sketch, DOUBLE]
                #4 last(amount, occurred_at)  [extremum, DECIMAL(36,18)]
              outputs:
                deposited = #0  [DECIMAL(38,18)]
                withdrawn = #1  [DECIMAL(38,18)]
                depositors = #2  [BIGINT]
                p95_amount = #3  [DOUBLE]
                last_amount = #4  [DECIMAL(36,18)]
              columns: day, vault_id, deposited, withdrawn, depositors, p95_amount, last_amount
        "#]],
    );
}

#[test]
fn output_expressions_share_aggregates() {
    check(
        "CREATE MATERIALIZED VIEW rates AS
         SELECT vault_id, count(*) AS n,
                sum(amount) / nullif(count(*), 0) AS avg_amount,
                count(*) FILTER (WHERE flow_type = 'deposit') * 100 / nullif(count(*), 0) AS deposit_pct
         FROM capital_flow GROUP BY vault_id",
        expect![[r#"
            created view rates
            view rates on capital_flow
              group by:
                vault_id = vault_id  [TEXT]
              aggregates:
                #0 count(*)  [accumulable, BIGINT]
                #1 sum(amount)  [accumulable, DECIMAL(38,18)]
                #2 count(*) FILTER (WHERE flow_type = 'deposit')  [accumulable, BIGINT]
              outputs:
                n = #0  [BIGINT]
                avg_amount = #1 / CAST(nullif(#0, 0) AS DECIMAL(19,0))  [DECIMAL(38,18)]
                deposit_pct = (#2 * 100) / nullif(#0, 0)  [BIGINT]
              columns: vault_id, n, avg_amount, deposit_pct
        "#]],
    );
}

#[test]
fn where_json_case_and_casts() {
    check(
        "CREATE MATERIALIZED VIEW plans AS
         SELECT date_trunc('week', timestamp) AS week,
                coalesce(properties->>'plan', 'free') AS plan,
                CASE WHEN event_name IN ('signup', 'upgrade') THEN 'growth' ELSE 'other' END AS kind,
                sum(CAST(properties->>'price' AS DECIMAL(10,2))) AS revenue,
                approx_count_distinct(user_id) AS users,
                avg((properties->>'ms')::double) AS avg_ms
         FROM events
         WHERE event_type = 'track' AND page_url NOT LIKE '/admin/%' AND user_id IS NOT NULL
           AND timestamp >= '2026-01-01'
         GROUP BY 1, 2, 3",
        expect![[r#"
            created view plans
            view plans on events
              where: (((event_type = 'track') AND (page_url NOT LIKE '/admin/%')) AND (user_id IS NOT NULL)) AND (timestamp >= TIMESTAMP '2026-01-01T00:00:00Z')
              group by:
                week = date_trunc('week', timestamp)  [TIMESTAMP, time bucket 1 week]
                plan = coalesce(properties->>'plan', 'free')  [TEXT]
                kind = CASE WHEN event_name IN ('signup', 'upgrade') THEN 'growth' ELSE 'other' END  [TEXT]
              aggregates:
                #0 sum(CAST(properties->>'price' AS DECIMAL(10,2)))  [accumulable, DECIMAL(38,2)]
                #1 approx_count_distinct(user_id)  [hll sketch, BIGINT]
                #2 avg(CAST(properties->>'ms' AS DOUBLE))  [accumulable, DOUBLE]
              outputs:
                revenue = #0  [DECIMAL(38,2)]
                users = #1  [BIGINT]
                avg_ms = #2  [DOUBLE]
              columns: week, plan, kind, revenue, users, avg_ms
              checked at ingest: yes
        "#]],
    );
}

#[test]
fn applying_twice_changes_nothing_and_changes_rebuild() {
    let view = "CREATE MATERIALIZED VIEW n AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY vault_id;";
    let once = apply(&base(), view).unwrap().catalog;
    let twice = apply(&once, &format!("{CAPITAL_FLOW}\n{view}")).unwrap();
    let changes: Vec<String> = twice.changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        changes,
        ["unchanged stream capital_flow", "unchanged view n"]
    );
    // Whitespace and case do not matter; the definition does.
    let same = apply(&once, "create materialized view n as select VAULT_ID, COUNT(*) as n from capital_flow group by vault_id").unwrap();
    assert_eq!(same.changes[0].to_string(), "unchanged view n");
    let changed = apply(&once, "CREATE MATERIALIZED VIEW n AS SELECT vault_id, count(*) AS n FROM capital_flow WHERE amount > 0 GROUP BY vault_id").unwrap();
    assert_eq!(changed.changes[0].to_string(), "replaced view n");
}

#[test]
fn streams_may_only_grow_nullable_columns() {
    check(
        "CREATE STREAM capital_flow (
           vault_id TEXT NOT NULL, user_address TEXT NOT NULL, flow_type TEXT NOT NULL,
           amount DECIMAL(36,18) NOT NULL, token_symbol TEXT, tx_hash TEXT NOT NULL,
           occurred_at TIMESTAMP NOT NULL, chain TEXT
         ) WITH (event_time = 'occurred_at', dedupe_key = 'tx_hash', retention = '30 days')",
        expect!["altered stream capital_flow (added chain)"],
    );
    check(
        "CREATE STREAM capital_flow (vault_id BIGINT NOT NULL, occurred_at TIMESTAMP NOT NULL) WITH (event_time = 'occurred_at')",
        expect![
            "error: line 1, column 1: stream capital_flow cannot change this way: columns cannot be removed; hint: a stream may only gain nullable columns at the end or change its retention or person column; to change more, DROP STREAM (which deletes its events) and create it again"
        ],
    );
}

#[test]
fn a_person_column_is_one_text_column_and_may_change() {
    let with = "CREATE STREAM capital_flow (
           vault_id TEXT NOT NULL, user_address TEXT NOT NULL, flow_type TEXT NOT NULL,
           amount DECIMAL(36,18) NOT NULL, token_symbol TEXT, tx_hash TEXT NOT NULL,
           occurred_at TIMESTAMP NOT NULL
         ) WITH (event_time = 'occurred_at', dedupe_key = 'tx_hash', retention = '90 days', person = 'user_address')";
    let applied = apply(&base(), with).unwrap();
    assert_eq!(
        applied.changes[0].to_string(),
        "altered stream capital_flow"
    );
    let stream = applied.catalog.stream("capital_flow").unwrap();
    assert_eq!(stream.person, vec![1]);
    assert!(
        stream.sql().ends_with("person = 'user_address')"),
        "{}",
        stream.sql()
    );
    assert_eq!(crate::sql::parse_stream(&stream.sql()).unwrap(), **stream);
    // The built-in events name persons by user_id and anonymous_id, outside its stored text.
    let events = applied.catalog.stream("events").unwrap();
    assert_eq!(events.person, vec![4, 5]);
    assert!(!events.sql().contains("person"));
    check(
        "CREATE STREAM s (who BIGINT, ts TIMESTAMP NOT NULL) WITH (event_time = 'ts', person = 'who')",
        expect![
            "error: line 1, column 87: person column who must be TEXT (a person's id), not BIGINT"
        ],
    );
    check(
        "CREATE STREAM s (who TEXT, ts TIMESTAMP NOT NULL) WITH (event_time = 'ts', person = 'whom')",
        expect![
            "error: line 1, column 85: person names 'whom', which is not a column of s; hint: write person = 'column', the TEXT column of the person's id"
        ],
    );
}

#[test]
fn stream_definition_errors() {
    check(
        "CREATE STREAM s (a TEXT, ts TIMESTAMP)",
        expect![
            "error: line 1, column 1: stream s needs an event time; hint: add WITH (event_time = 'column') naming a TIMESTAMP NOT NULL column, or a column called timestamp"
        ],
    );
    check(
        "CREATE STREAM s (a TEXT PRIMARY KEY, ts TIMESTAMP NOT NULL) WITH (event_time = 'ts')",
        expect![
            "error: line 1, column 18: column option PRIMARY KEY is not supported in a live view; hint: declare WITH (dedupe_key = 'column') to count repeated events once"
        ],
    );
    check(
        "CREATE STREAM s (a DECIMAL, ts TIMESTAMP NOT NULL) WITH (event_time = 'ts')",
        expect![
            "error: line 1, column 18: DECIMAL needs a precision and scale; hint: write DECIMAL(p,s) with p ≤ 38, e.g. DECIMAL(36,18)"
        ],
    );
    check(
        "CREATE STREAM s (a DECIMAL(40,2), ts TIMESTAMP NOT NULL) WITH (event_time = 'ts')",
        expect!["error: line 1, column 18: DECIMAL precision 40 is outside 1..=38"],
    );
    check(
        "CREATE STREAM s (ts TIMESTAMP NOT NULL) WITH (event_time = 'ts', retention = 'forever')",
        expect![
            "error: line 1, column 78: interval 'forever' must start with a whole number, as in '1 day'"
        ],
    );
    check(
        "CREATE STREAM events (ts TIMESTAMP NOT NULL) WITH (event_time = 'ts')",
        expect![
            "error: line 1, column 15: events is a built-in stream; hint: choose another name for your stream"
        ],
    );
}

#[test]
fn unsupported_sql_names_the_construct_and_position() {
    check(
        "CREATE MATERIALIZED VIEW v AS\nSELECT c.vault_id, count(*) AS n\nFROM capital_flow c\n  JOIN vaults v ON v.id = c.vault_id\nGROUP BY 1",
        expect![
            "error: line 4, column 8: JOIN is not supported in a live view; hint: a live view reads one stream; send the joined fields on each event, or join views in your BI tool"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1\nHAVING count(*) > 5",
        expect![
            "error: line 2, column 8: HAVING is not supported in a live view; hint: filter groups when you read the view: a saved query (CREATE VIEW name AS SELECT … FROM this_view WHERE …), POST /v1/sql, or tally query --where"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1 ORDER BY n",
        expect![
            "error: line 1, column 100: ORDER BY is not supported in a live view; hint: order the rows when you read the view; a view query takes an order column"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1 LIMIT 10",
        expect![
            "error: line 1, column 97: LIMIT is not supported in a live view; hint: limit the rows when you read the view; a view query takes a row limit"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, sum(amount) OVER (PARTITION BY vault_id) AS s FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 48: a window function (OVER) is not supported in a live view; hint: window functions (rank, ntile, lag, running sums) run at query time: keep this view grouped and write them in a saved query (CREATE VIEW name AS SELECT …, rank() OVER (…) FROM this_view) or POST /v1/sql"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT user_address, rank() OVER (ORDER BY amount DESC) AS r FROM capital_flow",
        expect![
            "error: line 1, column 52: a window function (OVER) is not supported in a live view; hint: window functions (rank, ntile, lag, running sums) run at query time: keep this view grouped and write them in a saved query (CREATE VIEW name AS SELECT …, rank() OVER (…) FROM this_view) or POST /v1/sql"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 34: TimescaleDB options are not needed; hint: every Tally view is continuous: it is kept up to date on every event; drop WITH (timescaledb.…) (the only view option is retention = '…')"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1 WITH NO DATA",
        expect![
            "error: line 1, column 91: WITH [NO] DATA is not needed; hint: a live view is filled from the stream's retained events when it is created, and kept up to date from then on; drop the clause"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow WHERE occurred_at > now() GROUP BY 1",
        expect![
            "error: line 1, column 100: now() is not allowed in a live view; hint: a view must give the same result when it is rebuilt from its events; use the event's own time"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM (SELECT * FROM capital_flow) t GROUP BY 1",
        expect![
            "error: line 1, column 68: a subquery or derived table in FROM is not supported in a live view; hint: a live view reads one stream directly"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow WHERE vault_id IN (SELECT 1) GROUP BY 1",
        expect![
            "error: line 1, column 86: a subquery is not supported in a live view; hint: a live view reads one stream; compare with literal values"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1 UNION SELECT vault_id, 1 FROM capital_flow",
        expect![
            "error: line 1, column 31: UNION is not supported in a live view; hint: define one view per SELECT"
        ],
    );
}

#[test]
fn binding_errors() {
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, user_address, count(*) AS n FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 48: user_address must appear in GROUP BY or be used inside an aggregate"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vaultid, count(*) AS n FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 38: there is no column vaultid; hint: the columns are: vault_id, user_address, flow_type, amount, token_symbol, tx_hash, occurred_at"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, sum(flow_type) AS s FROM capital_flow GROUP BY 1",
        expect!["error: line 1, column 48: sum needs a number, but its argument is TEXT"],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow WHERE count(*) > 1 GROUP BY 1",
        expect![
            "error: line 1, column 86: aggregate functions are not allowed in WHERE; hint: use FILTER (WHERE …) on the aggregate, or a view query's condition on group columns"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM capital_flow WHERE amount > 'lots' GROUP BY 1",
        expect!["error: line 1, column 95: 'lots' is not a valid DECIMAL(36,18)"],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, percentile_cont(1.5) WITHIN GROUP (ORDER BY amount) AS p FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 48: the fraction of percentile_cont must be between 0 and 1, not 1.5"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n, count(*) AS n FROM capital_flow",
        expect![
            "error: line 1, column 53: two columns are called n; hint: give one of them another name with AS"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT time_bucket('1 day', occurred_at, 'Europe/Berlin') AS d, count(*) AS n FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 38: time_bucket takes 2 arguments; hint: buckets follow the tenant's time zone; write time_bucket('1 day', ts)"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n FROM capital_flow GROUP BY vault_id",
        expect![
            "error: line 1, column 79: GROUP BY vault_id is not a column of the SELECT; hint: add it to the SELECT list with a name, so the view table has a column for it"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v WITH (retention = '1 year') AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY 1",
        expect![
            "error: line 1, column 46: view retention needs a time bucket column; hint: group by time_bucket(…) or date_trunc(…), or drop the retention option"
        ],
    );
    check(
        "CREATE MATERIALIZED VIEW v AS SELECT vault_id, count(*) AS n FROM vault_flows GROUP BY 1",
        expect![
            "error: line 1, column 67: there is no stream vault_flows; hint: create the stream first with CREATE STREAM, or read the built-in events or metrics stream"
        ],
    );
}

#[test]
fn syntax_errors_carry_positions() {
    check(
        "CREATE MATERIALIZED VIEW v AS\nSELECT vault_id, count(* AS n\nFROM capital_flow GROUP BY 1",
        expect!["error: line 2, column 26: syntax error: Expected: ), found: AS"],
    );
    check(
        "INSERT INTO capital_flow VALUES (1)",
        expect![
            "error: line 1, column 1: INSERT statements cannot be applied; hint: send events with `tally ingest` or POST /v1/streams/{stream}/events"
        ],
    );
    check(
        "CREATE INDEX i ON capital_flow (vault_id)",
        expect![
            "error: line 1, column 8: CREATE INDEX is not needed; hint: Tally keeps the indexes its streams and views need (event time, dedupe key, group keys); drop the statement"
        ],
    );
    check(
        "CREATE POLICY p ON capital_flow USING (true)",
        expect![
            "error: line 1, column 8: CREATE POLICY is not needed; hint: tenant isolation is Tally's job: every tenant reads only its own rows (row-level security on PostgreSQL); drop the statement"
        ],
    );
    let deep = format!(
        "CREATE MATERIALIZED VIEW v AS SELECT count(*) FILTER (WHERE {}amount > 0{}) AS n FROM capital_flow",
        "(".repeat(200),
        ")".repeat(200)
    );
    let err = apply(&base(), &deep).unwrap_err();
    assert!(err.to_string().contains("nests too deeply"), "{err}");
    // A view's or saved query's stored text puts each nested prefix operation in parentheses,
    // which count toward the parser's limits: a definition within them as written but not as
    // stored is refused (found by the `view_sql` fuzz target), and one within them both ways
    // is stored and compiles again from its stored text.
    let query = |n: usize| {
        format!(
            "CREATE VIEW q AS SELECT {}amount AS a FROM capital_flow",
            "@@ ".repeat(n)
        )
    };
    let view = |n: usize| {
        format!(
            "CREATE MATERIALIZED VIEW v AS SELECT vault_id, sum({}amount) AS s FROM capital_flow GROUP BY vault_id",
            "- ".repeat(n)
        )
    };
    // As written each is within the limits; the tokens' limit counts the stored text whole.
    let many = format!(
        "CREATE VIEW q AS SELECT {} FROM capital_flow",
        vec!["- - amount"; 1_666].join(", ")
    );
    for (text, what) in [
        (query(50), "nests too deeply"),
        (view(40), "nests too deeply"),
        (many, "longer than 10000 tokens"),
    ] {
        let err = apply(&base(), &text).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(
                "line 1, column 1: the definition as stored would not compile again: "
            ) && message.contains(what),
            "{message}"
        );
    }
    for text in [query(8), view(8)] {
        let applied = apply(&base(), &text).unwrap();
        let mut again = Catalog::new();
        for (_, sql) in applied.catalog.definitions() {
            again = apply(&again, &sql).unwrap().catalog;
        }
        assert_eq!(again.definitions(), applied.catalog.definitions());
    }
}

#[test]
fn drops() {
    let with_view = apply(
        &base(),
        "CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n FROM capital_flow",
    )
    .unwrap()
    .catalog;
    let err = apply(&with_view, "DROP STREAM capital_flow").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 1: stream capital_flow is read by views v; hint: drop those views first"
    );
    let applied = apply(
        &with_view,
        "DROP MATERIALIZED VIEW v; DROP STREAM capital_flow; DROP STREAM IF EXISTS nothing",
    )
    .unwrap();
    let changes: Vec<String> = applied.changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        changes,
        [
            "dropped view v",
            "dropped stream capital_flow",
            "unchanged stream nothing"
        ]
    );
    assert!(apply(&applied.catalog, "DROP STREAM events").is_err());
}

#[test]
fn key_filters_bind_group_columns() {
    let catalog = apply(
        &base(),
        "CREATE MATERIALIZED VIEW v AS SELECT time_bucket('1 hour', occurred_at) AS hour, vault_id, count(*) AS n FROM capital_flow GROUP BY 1, 2",
    )
    .unwrap()
    .catalog;
    let plan = catalog.view("v").unwrap();
    let f = crate::sql::compile_key_filter(plan, "vault_id IN ('a', 'b') AND hour >= '2026-03-01'")
        .unwrap();
    assert_eq!(
        f.to_string(),
        "(vault_id IN ('a', 'b')) AND (hour >= TIMESTAMP '2026-03-01T00:00:00Z')"
    );
    let err = crate::sql::compile_key_filter(plan, "n > 5").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 1: there is no group column n; hint: the group columns are: hour, vault_id"
    );
}

#[test]
fn saved_queries_keep_their_text_and_parameters() {
    let applied = apply(
        &base(),
        "CREATE VIEW vault_activity AS
           SELECT vault_id, count(*) AS flows FROM capital_flow
           WHERE vault_id = :vault_id AND occurred_at > now() - interval '30 days'
             AND amount >= :min::DECIMAL(36,18) OR vault_id = :vault_id
           GROUP BY vault_id",
    )
    .unwrap();
    assert_eq!(
        applied
            .changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["created saved query vault_activity"]
    );
    let q = applied.catalog.saved_query("vault_activity").unwrap();
    assert_eq!(q.params, ["vault_id", "min"]);
    assert!(
        q.query.starts_with("SELECT vault_id, count(*) AS flows"),
        "{}",
        q.query
    );
    // The stored definition applies again to the same query, unchanged.
    let again = apply(&applied.catalog, &q.sql()).unwrap();
    assert_eq!(
        again.changes[0].to_string(),
        "unchanged saved query vault_activity"
    );
    let dropped = apply(&applied.catalog, "DROP VIEW vault_activity").unwrap();
    assert_eq!(
        dropped.changes[0].to_string(),
        "dropped saved query vault_activity"
    );
    assert!(dropped.catalog.saved_query("vault_activity").is_none());
    // One name, one object.
    let e = apply(&base(), "CREATE VIEW capital_flow AS SELECT 1").unwrap_err();
    assert!(
        e.to_string()
            .contains("already a stream, live view or table"),
        "{e}"
    );
    let e = apply(
        &applied.catalog,
        "CREATE MATERIALIZED VIEW vault_activity AS SELECT vault_id, count(*) AS n FROM capital_flow GROUP BY vault_id",
    )
    .unwrap_err();
    assert!(e.to_string().contains("already a saved query"), "{e}");
}

/// Stored definitions compile again to the same plans when a prefix operator's operand is
/// itself a prefix operation: printed as the parser prints them, `- + x` read back as one
/// operator `-+` and `- - x` as a comment (found by the `view_sql` fuzzer).
#[test]
fn nested_prefix_operators_are_stored_so_that_they_compile_again() {
    let schema = "
        CREATE STREAM s (id TEXT NOT NULL, n BIGINT, x DOUBLE, at TIMESTAMP NOT NULL)
            WITH (event_time = 'at');
        CREATE MATERIALIZED VIEW v AS SELECT id, sum(n / - + abs(x)) AS s, sum(- - n) AS t,
            min(- - - x) AS u FROM s GROUP BY id;
        CREATE VIEW q AS SELECT id, - - s AS s FROM v WHERE - + t > 0;";
    let first = apply(&Catalog::new(), schema).unwrap().catalog;
    let mut again = Catalog::new();
    for (_, sql) in first.definitions() {
        again = apply(&again, &sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .catalog;
    }
    assert_eq!(
        first.view("v").unwrap().fingerprint(),
        again.view("v").unwrap().fingerprint()
    );
    assert_eq!(first.definitions(), again.definitions());
    let stored = first.view("v").unwrap().sql.clone();
    assert!(stored.contains("n / -(+abs(x))"), "{stored}");
    assert!(stored.contains("-(-n)"), "{stored}");
}
