//! Fuzzing `prepare` and `describe` with proptest: SQL assembled from fragments users and
//! attackers write (DDL, DML, `view_at`, parameters, schema-qualified names, comments, unbalanced
//! quotes) and arbitrary text. Whatever the input: no panic; a query `prepare` accepts reads
//! only plain names (never another schema's) and plans or fails with an error.
//!
//! (A libFuzzer target would build DataFusion with sanitizers under nightly, longer than the
//! whole CI budget allows; this runs in `cargo test`.)

use proptest::prelude::*;
use tally_sql::{Context, Limits, Relation, RelationRequest, describe, prepare};
use tally_views::{Timestamp, Type};

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "vaults",
    "v",
    "deposits_daily",
    "d",
    "WHERE",
    "(",
    ")",
    ",",
    ":p",
    ":vault_id",
    "$1",
    "view_at('deposits_daily', grain => 'month')",
    "view_at('vaults', group_by => 'a, b')",
    "view_at(",
    "=>",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "=",
    "1",
    "0.5",
    "'x'",
    "'",
    "\"",
    "ORDER BY",
    "LIMIT",
    "OFFSET",
    "WITH",
    "AS",
    "x",
    "UNION",
    "UNION ALL",
    "INSERT INTO",
    "VALUES",
    "DELETE",
    "UPDATE",
    "SET",
    "DROP TABLE",
    "COPY",
    "CREATE TABLE",
    "EXPLAIN",
    "ANALYZE",
    ";",
    "--",
    "/*",
    "*/",
    "OVER (",
    "PARTITION BY",
    "rank()",
    "ntile(5)",
    "lag(amount)",
    "now()",
    "interval '1 day'",
    "::",
    "BIGINT",
    "count(*)",
    "sum(amount)",
    "GROUP BY",
    "HAVING",
    "information_schema.tables",
    "pg_catalog.pg_tables",
    "beta.vaults",
    "a.b.c",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "date_trunc('month', day)",
    "extract(epoch FROM day)",
    "repeat('x', 5)",
    "NULL",
    "IS NULL",
    "NOT",
    "AND",
    "OR",
    "IN",
    "EXISTS",
    "LATERAL",
    "unnest(ARRAY[1,2])",
    "generate_series(1, 3)",
    "read_csv('/etc/passwd')",
    "'/etc/passwd'",
    "vault_id",
    "amount",
    "day",
    "target",
];

/// Pieces of queries that plan, and some that do not.
const SELECTS: &[&str] = &[
    "*",
    "vault_id, sum(amount) AS s",
    "vault_id, rank() OVER (ORDER BY amount DESC) AS r",
    "count(DISTINCT vault_id), max(day)",
    "date_trunc('week', day) AS w, ntile(5) OVER (ORDER BY target) AS q",
    "extract(epoch FROM now() - day) AS age",
    "lag(amount) OVER (PARTITION BY vault_id ORDER BY day) AS prev",
    "CAST(amount AS DOUBLE) / nullif(target, 0) AS ratio",
    "repeat(vault_id, 3)",
    "nope",
];
const FROMS: &[&str] = &[
    "vaults",
    "vaults v JOIN deposits_daily d USING (vault_id)",
    "view_at('deposits_daily', grain => 'month', group_by => 'vault_id')",
    "(SELECT * FROM vaults) s",
    "vaults v LEFT JOIN deposits_daily d ON d.vault_id = v.vault_id",
    "beta.vaults",
    "information_schema.tables",
    "missing",
];
const CONDITIONS: &[&str] = &[
    "true",
    "vault_id = :vault_id",
    "day > now() - interval '30 days'",
    "amount > :min AND target < $1",
    "vault_id IN (SELECT vault_id FROM deposits_daily)",
    "vault_id = 1",
];
const TAILS: &[&str] = &[
    "",
    "GROUP BY vault_id",
    "ORDER BY 1 DESC NULLS LAST LIMIT 10 OFFSET 2",
    "UNION ALL SELECT * FROM vaults",
    "; DROP TABLE vaults",
    "GROUP BY 1 HAVING count(*) > 1",
];

fn relation(name: &str) -> Relation {
    Relation {
        name: name.to_owned(),
        columns: vec![
            ("vault_id".into(), Type::Text),
            (
                "amount".into(),
                Type::Decimal {
                    precision: 36,
                    scale: 18,
                },
            ),
            ("day".into(), Type::Timestamp),
            ("target".into(), Type::BigInt),
        ],
        rows: Vec::new(),
    }
}

fn check(sql: &str) {
    let Ok(prepared) = prepare(sql) else {
        return;
    };
    let mut relations = Vec::new();
    for request in &prepared.relations {
        let name = match request {
            RelationRequest::Named(n) => n,
            RelationRequest::ViewAt { view, .. } => view,
        };
        assert!(
            !name.is_empty() && !name.contains('.'),
            "{sql}: reads {name:?}"
        );
        relations.push(relation(request.name()));
    }
    let context = Context {
        time_zone: "Europe/Berlin".into(),
        now: Timestamp(1_774_000_000_000_000),
        limits: Limits::default(),
    };
    let _ = describe(prepared, relations, &context);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn fragments_never_panic(parts in prop::collection::vec(0..FRAGMENTS.len(), 0..24)) {
        let sql: Vec<&str> = parts.iter().map(|&i| FRAGMENTS[i]).collect();
        check(&sql.join(" "));
    }

    #[test]
    fn queries_with_noise_never_panic(
        prefix in "(SELECT|WITH x AS \\(SELECT 1\\) SELECT|VALUES) ",
        noise in "\\PC{0,60}",
    ) {
        check(&format!("{prefix}{noise}"));
    }

    #[test]
    fn shaped_queries_never_panic(
        select in prop::sample::select(SELECTS),
        from in prop::sample::select(FROMS),
        condition in prop::sample::select(CONDITIONS),
        tail in prop::sample::select(TAILS),
    ) {
        check(&format!("SELECT {select} FROM {from} WHERE {condition} {tail}"));
    }

    #[test]
    fn any_text_never_panics(text in "\\PC{0,200}") {
        check(&text);
    }
}
