//! What only PostgreSQL has: tenant isolation by row-level security (checked on the tables
//! themselves, through Tally's role, a BI reader role and a transaction without the setting),
//! the refusal of roles and tables that would bypass it, and retention by dropping partitions.

use postgres::{Client, NoTls};
use tally_store::testing::{PgScratch, admin, role_url};
use tally_store::{Erasure, KeyHashes, RowWrite, Store, StoreError, TenantStore, ViewFlush};
use tally_views::sql::apply;
use tally_views::{AggState, Catalog, Timestamp, Value};

const SCHEMA: &str = "
CREATE STREAM pay (id TEXT NOT NULL, who TEXT, amount DECIMAL(10,2) NOT NULL, at TIMESTAMP NOT NULL)
  WITH (event_time = 'at', dedupe_key = 'id');
CREATE MATERIALIZED VIEW daily AS
  SELECT time_bucket('1 day', at) AS day, who, sum(amount) AS total, count(*) AS n FROM pay GROUP BY 1, 2;
";

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn pay(id: &str, who: &str, at: &str) -> Vec<Value> {
    vec![
        Value::text(id),
        Value::text(who),
        Value::Decimal(tally_views::decimal::Decimal::parse("1.50").unwrap()),
        Value::Timestamp(ts(at)),
    ]
}

/// Two tenants with events and view rows each.
fn two_tenants(pg: &PgScratch) -> (Store, Catalog) {
    let store = Store::open_postgres(pg.config()).unwrap();
    store.migrations().up().unwrap();
    store.check_isolation().unwrap();
    let catalog = apply(&Catalog::new(), SCHEMA).unwrap().catalog;
    let stream = catalog.stream("pay").unwrap();
    let plan = catalog.view("daily").unwrap();
    for tenant in ["acme", "beta"] {
        store
            .create_tenant(tenant, "UTC", ts("2026-01-01T00:00:00Z"))
            .unwrap();
        let mut t = store.tenant(tenant).unwrap();
        t.create_stream(stream).unwrap();
        t.reset_view(plan).unwrap();
        t.append(
            stream,
            &[
                pay(&format!("{tenant}-1"), tenant, "2026-03-01T10:00:00Z"),
                pay(&format!("{tenant}-2"), tenant, "2026-03-09T10:00:00Z"),
            ],
        )
        .unwrap();
        let mut states: Vec<AggState> = plan.aggs.iter().map(|a| a.kind.new_state()).collect();
        states[1].update(plan.aggs[1].kind, &Value::Null, &Value::Null, 0);
        let key = vec![
            Value::Timestamp(ts("2026-03-01T00:00:00Z")),
            Value::text(tenant),
        ];
        t.flush(&[ViewFlush {
            failed: 0,
            plan,
            rows: vec![RowWrite {
                cells: vec![key[0].clone(), key[1].clone(), Value::Null, Value::Int(1)],
                key,
                states,
            }],
            position: 2,
        }])
        .unwrap();
    }
    (store, catalog)
}

/// Every table of the scratch schema that holds tenant rows (partitions included).
fn tenant_tables(pg: &PgScratch) -> Vec<String> {
    admin()
        .query(
            "SELECT c.relname::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname NOT IN ('tenants', 'api_keys')
              ORDER BY 1",
            &[&pg.schema()],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn tenants_seen(client: &mut Client, table: &str, setting: Option<&str>) -> Vec<String> {
    let mut tx = client.transaction().unwrap();
    if let Some(tenant) = setting {
        tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[&tenant])
            .unwrap();
    }
    let rows = tx
        .query(
            &format!("SELECT DISTINCT tenant_id FROM \"{table}\" ORDER BY 1"),
            &[],
        )
        .unwrap();
    tx.commit().unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn every_tenant_table_shows_only_the_tenant_set_and_nothing_without_it() {
    let pg = PgScratch::new();
    let (_store, _catalog) = two_tenants(&pg);
    let tables = tenant_tables(&pg);
    // A stream's events are stored in blocks, `pay#blocks` and its week partitions; `pay` is
    // the view that unnests them (a view: its rows are the blocks' rows, under their policy).
    for expected in [
        "pay#blocks",
        "daily",
        "tally_streams",
        "tally_views",
        "pay#2026-02-23",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "{expected} in {tables:?}"
        );
    }
    // Tally's own role owns the tables; FORCE makes the policy apply to it too.
    let mut tally = Client::connect(pg.url(), NoTls).unwrap();
    tally
        .batch_execute(&format!("SET search_path TO \"{}\"", pg.schema()))
        .unwrap();
    for table in &tables {
        assert!(
            tenants_seen(&mut tally, table, None).is_empty(),
            "{table} shows rows to a transaction without the tenant setting"
        );
        let seen = tenants_seen(&mut tally, table, Some("acme"));
        assert!(
            seen.is_empty() || seen == ["acme"],
            "{table} shows {seen:?} to acme"
        );
    }
    assert_eq!(tenants_seen(&mut tally, "pay", Some("beta")), ["beta"]);
    assert_eq!(tenants_seen(&mut tally, "daily", Some("beta")), ["beta"]);
}

#[test]
fn a_reader_role_sees_one_tenant_in_every_table() {
    let pg = PgScratch::new();
    let (store, _catalog) = two_tenants(&pg);
    let role = format!("bi_{}", pg.schema());
    let mut admin = admin();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN PASSWORD '{role}' NOSUPERUSER NOBYPASSRLS;
             ALTER ROLE {role} SET tally.tenant_id = 'acme';"
        ))
        .unwrap();
    let reader_schema = store.grant_reader("acme", &role).unwrap();
    assert!(matches!(
        store.grant_reader("nobody", &role),
        Err(StoreError::NoTenant(_))
    ));

    let mut bi =
        Client::connect(&role_url(&tally_store::testing::admin_url(), &role), NoTls).unwrap();
    bi.batch_execute(&format!("SET search_path TO \"{reader_schema}\""))
        .unwrap();
    let views: Vec<String> = ["pay", "daily", "tally_streams", "tally_views"]
        .map(String::from)
        .to_vec();
    for view in &views {
        let mut tx = bi.transaction().unwrap();
        let seen: Vec<String> = tx
            .query(&format!("SELECT DISTINCT tenant_id FROM \"{view}\""), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().unwrap();
        assert_eq!(seen, ["acme"], "{view}");
        // Pointing the setting at another tenant shows nothing, not that tenant.
        let mut tx = bi.transaction().unwrap();
        tx.batch_execute("SET LOCAL tally.tenant_id = 'beta'")
            .unwrap();
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM \"{view}\""), &[])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        assert_eq!(n, 0, "{view} shows beta's rows");
        // A transaction that clears the setting sees nothing.
        let mut tx = bi.transaction().unwrap();
        tx.batch_execute("SET LOCAL tally.tenant_id = ''").unwrap();
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM \"{view}\""), &[])
            .unwrap()
            .get(0);
        tx.rollback().unwrap();
        assert_eq!(n, 0, "{view} shows rows without the setting");
    }
    // The tables themselves are out of reach.
    let direct = bi.query(
        &format!("SELECT count(*) FROM \"{}\".pay", pg.schema()),
        &[],
    );
    assert!(direct.is_err(), "the reader role reads the table directly");
    drop(bi);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{reader_schema}\" CASCADE; DROP OWNED BY {role}; DROP ROLE {role};"
        ))
        .unwrap();
}

#[test]
fn superusers_and_bypassrls_roles_are_refused_with_the_fix() {
    let pg = PgScratch::new();
    let mut config = pg.config();
    config.url = tally_store::testing::admin_url();
    let Err(StoreError::Unsafe(message)) = Store::open_postgres(config.clone()) else {
        panic!("a superuser was accepted");
    };
    assert!(message.contains("superuser"), "{message}");
    assert!(message.contains("CREATE ROLE"), "{message}");

    let role = format!("bypass_{}", pg.schema());
    let mut admin = admin();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{role}' BYPASSRLS"
        ))
        .unwrap();
    config.url = role_url(&tally_store::testing::admin_url(), &role);
    let Err(StoreError::Unsafe(message)) = Store::open_postgres(config) else {
        panic!("a BYPASSRLS role was accepted");
    };
    assert!(message.contains("BYPASSRLS"), "{message}");
    admin.batch_execute(&format!("DROP ROLE {role}")).unwrap();
}

#[test]
fn a_tenant_table_without_forced_security_is_refused_with_the_fix() {
    let pg = PgScratch::new();
    let (store, _catalog) = two_tenants(&pg);
    let mut tally = Client::connect(pg.url(), NoTls).unwrap();
    tally
        .batch_execute(&format!(
            "ALTER TABLE \"{}\".daily NO FORCE ROW LEVEL SECURITY",
            pg.schema()
        ))
        .unwrap();
    let Err(StoreError::Unsafe(message)) = store.check_isolation() else {
        panic!("an unforced table was accepted");
    };
    assert!(message.contains("daily"), "{message}");
    assert!(message.contains("FORCE ROW LEVEL SECURITY"), "{message}");
}

#[test]
fn retention_drops_whole_partitions_once_every_tenant_applied_them() {
    let pg = PgScratch::new();
    let (store, catalog) = two_tenants(&pg);
    let stream = catalog.stream("pay").unwrap();
    let partition_exists = |name: &str| {
        admin()
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&pg.schema(), &name],
            )
            .unwrap()
            .is_some()
    };
    assert!(partition_exists("pay#2026-02-23"));
    let mut acme = store.tenant("acme").unwrap();
    // acme applied both its events; beta has not said so yet: the week stays, acme's old
    // event goes row by row.
    assert_eq!(
        acme.delete_events_before(stream, ts("2026-03-05T00:00:00Z"), 2)
            .unwrap(),
        1
    );
    assert!(partition_exists("pay#2026-02-23"));
    let mut beta = store.tenant("beta").unwrap();
    assert_eq!(
        beta.delete_events_before(stream, ts("2026-03-05T00:00:00Z"), 2)
            .unwrap(),
        1
    );
    assert!(
        !partition_exists("pay#2026-02-23"),
        "the week was not dropped"
    );
    // The newer week and its events stay.
    assert!(partition_exists("pay#2026-03-09"));
    assert_eq!(beta.read_events(stream, 0, 10).unwrap().len(), 1);
    // The dropped week's dedupe keys went with it; the kept week's still count.
    let again = beta
        .append(
            stream,
            &[
                pay("beta-1", "beta", "2026-03-10T10:00:00Z"),
                // Sent again with a time in another week: still the same event.
                pay("beta-2", "beta", "2026-03-03T10:00:00Z"),
            ],
        )
        .unwrap();
    assert!(again[0].is_some(), "an expired event's key is free again");
    assert_eq!(
        again[1], None,
        "a retained event's key is a duplicate in any week"
    );
}

#[test]
fn decimals_and_json_round_trip_exactly() {
    let pg = PgScratch::new();
    let store = Store::open_postgres(pg.config()).unwrap();
    store.migrations().up().unwrap();
    let catalog = apply(
        &Catalog::new(),
        "CREATE STREAM m (d DECIMAL(38,10), j JSON, at TIMESTAMP NOT NULL) WITH (event_time = 'at');",
    )
    .unwrap()
    .catalog;
    let stream = catalog.stream("m").unwrap();
    store
        .create_tenant("acme", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let mut t = store.tenant("acme").unwrap();
    t.create_stream(stream).unwrap();
    let decimals = [
        "0",
        "0.00",
        "-0.5",
        "1",
        "-1",
        "3",
        "1.50",
        "10000",
        "9999",
        "0.0001",
        "0.00010",
        "12345.6789",
        "-98765.4321",
        "100000000",
        "123456789012345678.1234567890",
        "-0.0000000001",
        "99999999.9999000000",
        "7.0700",
    ];
    let rows: Vec<Vec<Value>> = decimals
        .iter()
        .enumerate()
        .map(|(i, d)| {
            vec![
                Value::Decimal(tally_views::decimal::Decimal::parse(d).unwrap()),
                Value::Json(format!("{{\"i\": {i}, \"s\": \"caf\\u00e9\"}}").into()),
                Value::Timestamp(ts("2026-03-01T00:00:00Z")),
            ]
        })
        .collect();
    t.append(stream, &rows).unwrap();
    let back = t.read_events(stream, 0, 100).unwrap();
    for (event, row) in back.iter().zip(&rows) {
        assert_eq!(event.row[0].to_string(), row[0].to_string());
        assert_eq!(event.row[1], row[1], "JSON is kept as sent");
    }
    // And PostgreSQL reads the same numbers, through the view of the stream's events (which
    // reads the blocks as Tally's role, under the tenant policy: the tenant is set).
    let mut admin = admin();
    let mut tx = admin.transaction().unwrap();
    tx.execute("SELECT set_config('tally.tenant_id', 'acme', true)", &[])
        .unwrap();
    let texts: Vec<String> = tx
        .query(
            &format!("SELECT d::text FROM \"{}\".m ORDER BY _seq", pg.schema()),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(texts, decimals);
}

#[test]
fn connections_use_tls_as_sslmode_says() {
    let pg = PgScratch::new();
    let with_mode = |mode: &str| {
        let mut config = pg.config();
        config.url = config
            .url
            .replace("sslmode=disable", &format!("sslmode={mode}"));
        config
    };
    let server_tls: String = admin().query_one("SHOW ssl", &[]).unwrap().get(0);
    let tls_of_ours = || -> Vec<bool> {
        admin()
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                  WHERE a.application_name = $1",
                &[&pg.schema()],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    if server_tls == "on" {
        let store = Store::open_postgres(with_mode("require")).unwrap();
        store.migrations().up().unwrap();
        let ours = tls_of_ours();
        assert!(!ours.is_empty() && ours.iter().all(|&ssl| ssl), "{ours:?}");
        drop(store);
        // The server's certificate is not signed by a public root (a test server's is
        // self-signed): verify-full refuses it and says why.
        let Err(e) = Store::open_postgres(with_mode("verify-full")) else {
            panic!("verify-full accepted an untrusted certificate");
        };
        assert!(e.to_string().contains("certificate"), "{e}");
    } else {
        // A server without TLS: prefer connects in the clear, require refuses.
        let store = Store::open_postgres(with_mode("prefer")).unwrap();
        assert!(tls_of_ours().iter().all(|&ssl| !ssl));
        drop(store);
        assert!(Store::open_postgres(with_mode("require")).is_err());
    }
    let Err(e) = Store::open_postgres(with_mode("sometimes")) else {
        panic!("a bad sslmode was accepted");
    };
    assert!(e.to_string().contains("sslmode=sometimes"), "{e}");
}

#[test]
fn a_view_table_rebuilt_for_one_tenant_voids_the_others_positions() {
    let pg = PgScratch::new();
    let (store, catalog) = two_tenants(&pg);
    let plan = catalog.view("daily").unwrap();
    let mut acme = store.tenant("acme").unwrap();
    let mut beta = store.tenant("beta").unwrap();
    assert_eq!(beta.materialized().unwrap().views[0].position, 2);
    // acme's node drops the view and creates it again: the shared table is new, beta's rows
    // are gone with it, so beta's position must not survive.
    acme.drop_view("daily").unwrap();
    acme.reset_view(plan).unwrap();
    let stale = &beta.materialized().unwrap().views[0];
    assert_eq!(stale.position, 0);
    assert_ne!(stale.fingerprint, plan.fingerprint(), "beta must rebuild");
    // And a flush beta's node prepared before it noticed lands nothing.
    let err = beta
        .flush(&[ViewFlush {
            failed: 0,
            plan,
            rows: Vec::new(),
            position: 3,
        }])
        .unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err}");
    beta.reset_view(plan).unwrap();
    assert_eq!(
        beta.materialized().unwrap().views[0].fingerprint,
        plan.fingerprint()
    );
}

#[test]
fn a_table_tally_did_not_create_is_never_replaced() {
    let pg = PgScratch::new();
    let store = Store::open_postgres(pg.config()).unwrap();
    store.migrations().up().unwrap();
    let catalog = apply(&Catalog::new(), SCHEMA).unwrap().catalog;
    let mut own = Client::connect(pg.url(), NoTls).unwrap();
    own.batch_execute(&format!(
        "CREATE TABLE \"{}\".daily (precious text); INSERT INTO \"{}\".daily VALUES ('keep')",
        pg.schema(),
        pg.schema()
    ))
    .unwrap();
    store
        .create_tenant("acme", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let mut t = store.tenant("acme").unwrap();
    let Err(StoreError::Unsafe(message)) = t.reset_view(catalog.view("daily").unwrap()) else {
        panic!("a foreign table was replaced");
    };
    assert!(message.contains("did not create"), "{message}");
    let kept: String = own
        .query_one(
            &format!("SELECT precious FROM \"{}\".daily", pg.schema()),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, "keep");
}

/// Tenant names may be 63 characters long; the reader schemas of two long names that share
/// their start are distinct, fit PostgreSQL's 63 bytes and work.
#[test]
fn reader_schemas_of_long_tenant_names() {
    let pg = PgScratch::new();
    let (store, _catalog) = two_tenants(&pg);
    let role = format!("bi_{}", pg.schema());
    admin()
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN PASSWORD '{role}' NOSUPERUSER NOBYPASSRLS;"
        ))
        .unwrap();
    let long = |last: char| format!("{}{last}", "t".repeat(62));
    let mut schemas = Vec::new();
    for name in [long('a'), long('b')] {
        store
            .create_tenant(&name, "UTC", ts("2026-01-01T00:00:00Z"))
            .unwrap();
        let schema = store.grant_reader(&name, &role).unwrap();
        assert!(schema.len() <= 63, "{schema}");
        let mut bi =
            Client::connect(&role_url(&tally_store::testing::admin_url(), &role), NoTls).unwrap();
        let mut tx = bi.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tally.tenant_id = '{name}'"))
            .unwrap();
        let n: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".tally_streams"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
        schemas.push(schema);
    }
    assert_ne!(schemas[0], schemas[1]);
    admin()
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE; DROP SCHEMA IF EXISTS \"{}\" CASCADE; DROP OWNED BY {role}; DROP ROLE IF EXISTS {role};",
            schemas[0], schemas[1]
        ))
        .unwrap();
}

/// The indexes of `table` in the scratch schema (method and columns, as `btree (tenant_id, h)`),
/// and whether it has a primary key.
fn key_indexes(pg: &PgScratch, table: &str) -> (Vec<String>, bool) {
    let mut admin = admin();
    let indexes = admin
        .query(
            "SELECT split_part(pg_get_indexdef(i.indexrelid), ' USING ', 2) FROM pg_index i
               JOIN pg_class t ON t.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE n.nspname = $1 AND t.relname = $2 ORDER BY 1",
            &[&pg.schema(), &table],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let primary = admin
        .query_opt(
            "SELECT 1 FROM pg_constraint k
               JOIN pg_class t ON t.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE n.nspname = $1 AND t.relname = $2 AND k.contype = 'p'",
            &[&pg.schema(), &table],
        )
        .unwrap()
        .is_some();
    (indexes, primary)
}

/// Appends an event as a binary from before migration 7 did: a row of the raw table (`columns`:
/// the stream's values, as SQL) and of the key table, the key without its hash (`key`, as SQL),
/// under the stream's next sequence number.
fn old_append(pg: &PgScratch, stream: &str, tenant: &str, key: &str, columns: &str) {
    let schema = pg.schema();
    let next = format!(
        "FROM \"{schema}\".tally_streams WHERE tenant_id = '{tenant}' AND name = '{stream}'"
    );
    admin()
        .batch_execute(&format!(
            "UPDATE \"{schema}\".tally_streams SET last_seq = last_seq + 1 WHERE tenant_id = '{tenant}' AND name = '{stream}';
             INSERT INTO \"{schema}\".\"{stream}\" SELECT '{tenant}', last_seq, {columns} {next};
             INSERT INTO \"{schema}\".\"{stream}#keys\" (tenant_id, key, _seq, at) SELECT '{tenant}', {key}, last_seq, now() {next}"
        ))
        .unwrap();
}

/// Migration 7 moves a stream's dedupe keys from a primary key to an index by hash and back;
/// on either layout a key is a duplicate within its tenant only, and keys stored under one are
/// found under the other.
#[test]
fn dedupe_keys_move_to_an_index_by_hash_and_back() {
    let pg = PgScratch::new();
    let (store, catalog) = two_tenants(&pg);
    let stream = catalog.stream("pay").unwrap();
    assert_eq!(
        key_indexes(&pg, "pay#keys"),
        (vec!["brin (at)".to_owned(), "hash (h)".to_owned()], false)
    );
    let fresh = |store: &Store, tenant: &str, ids: &[&str]| -> Vec<bool> {
        let rows: Vec<Vec<Value>> = ids
            .iter()
            .map(|id| pay(id, tenant, "2026-03-02T10:00:00Z"))
            .collect();
        let mut t = store.tenant(tenant).unwrap();
        t.append(stream, &rows)
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect()
    };
    // acme-1 is stored for acme only; beta may store it too, once.
    assert_eq!(
        fresh(&store, "acme", &["acme-1", "n1", "n1"]),
        [false, true, false]
    );
    assert_eq!(fresh(&store, "beta", &["acme-1", "n1"]), [true, true]);
    assert_eq!(fresh(&store, "beta", &["acme-1", "n1"]), [false, false]);

    // Migrations 10 (incarnations), 9 (events in blocks) and 8 (the policies) go down first,
    // then 7.
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0010_stream_incarnations");
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0009_event_blocks");
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0008_policy_setting_once");
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0007_keys_by_hash");
    assert_eq!(
        key_indexes(&pg, "pay#keys"),
        (
            vec!["brin (at)".to_owned(), "btree (tenant_id, key)".to_owned()],
            true
        )
    );
    // What an older binary's append writes: the key without its hash.
    for tenant in ["acme", "beta"] {
        let event = format!("'n2', '{tenant}', 1.50, '2026-03-02T10:00:00Z'");
        old_append(&pg, "pay", tenant, "'n2'", &event);
    }

    store.migrations().up().unwrap();
    assert_eq!(
        key_indexes(&pg, "pay#keys"),
        (vec!["brin (at)".to_owned(), "hash (h)".to_owned()], false)
    );
    assert_eq!(
        fresh(&store, "acme", &["n2", "n3", "acme-2"]),
        [false, true, false]
    );
    assert_eq!(fresh(&store, "beta", &["n3", "beta-2"]), [true, false]);
}

/// The `USING` and `WITH CHECK` expressions of every `tally_tenant` policy in the scratch
/// schema, by table.
fn policies(pg: &PgScratch) -> Vec<(String, String, String)> {
    admin()
        .query(
            "SELECT tablename::text, qual, with_check FROM pg_policies
              WHERE schemaname = $1 AND policyname = 'tally_tenant' ORDER BY tablename",
            &[&pg.schema()],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Migration 8 makes every policy read the tenant setting once per statement (a scalar
/// subquery), new tables get the same policy, and reverting it restores the per-row call;
/// appends and reads work under either (the isolation tests check the policies themselves).
#[test]
fn policies_read_the_tenant_setting_once() {
    let pg = PgScratch::new();
    let (store, catalog) = two_tenants(&pg);
    let stream = catalog.stream("pay").unwrap();
    let once =
        "(tenant_id = ( SELECT current_setting('tally.tenant_id'::text, true) AS current_setting))";
    let each = "(tenant_id = current_setting('tally.tenant_id'::text, true))";
    let all_are = |expected: &str| {
        let found = policies(&pg);
        // The catalog's tables, the stream's raw table, its partitions and its key table.
        assert!(found.len() >= 8, "{found:?}");
        for (table, using, check) in found {
            assert_eq!(
                (using.as_str(), check.as_str()),
                (expected, expected),
                "{table}"
            );
        }
    };
    all_are(once);
    let stored = |tenant: &str| -> usize {
        let t = store.tenant(tenant).unwrap();
        t.read_events(stream, 0, 100).unwrap().len()
    };
    let append = |tenant: &str, id: &str| {
        let mut t = store.tenant(tenant).unwrap();
        t.append(stream, &[pay(id, tenant, "2026-03-02T10:00:00Z")])
            .unwrap();
    };
    let (acme, beta) = (stored("acme"), stored("beta"));
    append("acme", "a1");
    assert_eq!((stored("acme"), stored("beta")), (acme + 1, beta));

    // Migrations 10 (incarnations) and 9 (events in blocks) go down first: this binary appends
    // to blocks only, so under the per-row policy the old layout is read as an older binary
    // reads it, as SQL.
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0010_stream_incarnations");
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0009_event_blocks");
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0008_policy_setting_once");
    all_are(each);
    let mut tally = Client::connect(pg.url(), NoTls).unwrap();
    tally
        .batch_execute(&format!("SET search_path TO \"{}\"", pg.schema()))
        .unwrap();
    for (tenant, count) in [("acme", acme + 1), ("beta", beta)] {
        assert_eq!(tenants_seen(&mut tally, "pay", Some(tenant)), [tenant]);
        let mut tx = tally.transaction().unwrap();
        tx.execute("SELECT set_config('tally.tenant_id', $1, true)", &[&tenant])
            .unwrap();
        let n: i64 = tx
            .query_one("SELECT count(*) FROM pay", &[])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        assert_eq!(n as usize, count, "{tenant}");
    }

    store.migrations().up().unwrap();
    all_are(once);
    append("acme", "a2");
    append("beta", "b1");
    assert_eq!((stored("acme"), stored("beta")), (acme + 2, beta + 1));
}

/// Without a unique index on the key table, the stream's row lock is what keeps two
/// connections (two nodes) appending the same keys of one tenant at once from storing both:
/// each probes after it holds the lock.
#[test]
fn concurrent_appends_of_the_same_keys_store_each_once() {
    let pg = PgScratch::new();
    let (_, catalog) = two_tenants(&pg);
    let stream = catalog.stream("pay").unwrap();
    let rounds = 20;
    let stored: Vec<usize> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let node = Store::open_postgres(pg.config()).unwrap();
                    let mut t = node.tenant("acme").unwrap();
                    (0..rounds)
                        .map(|round| {
                            let rows: Vec<Vec<Value>> = (0..50)
                                .map(|i| pay(&format!("k{round}-{i}"), "x", "2026-03-02T10:00:00Z"))
                                .collect();
                            t.append(stream, &rows)
                                .unwrap()
                                .iter()
                                .filter(|s| s.is_some())
                                .count()
                        })
                        .sum()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(stored.iter().sum::<usize>(), rounds * 50, "{stored:?}");
    let mut admin = admin();
    let keys: i64 = admin
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".\"pay#keys\" WHERE tenant_id = 'acme' AND key LIKE 'k%'",
                pg.schema()
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(keys, (rounds * 50) as i64);
}

/// Keys of every type a dedupe key can have hash alike when appended and when migration 7
/// hashes the keys an older binary stored, and equal values written differently (`1.0`,
/// `1.00`) are one key.
#[test]
fn keys_of_every_type_are_found_across_migration_7() {
    let pg = PgScratch::new();
    let store = Store::open_postgres(pg.config()).unwrap();
    store.migrations().up().unwrap();
    let catalog = apply(
        &Catalog::new(),
        "CREATE STREAM a (k BIGINT NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'k');
         CREATE STREAM b (k DECIMAL(10,2) NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'k');
         CREATE STREAM d (k TIMESTAMP NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'k');
         CREATE STREAM e (k BOOLEAN NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'k');
         CREATE STREAM f (x TEXT NOT NULL, y BIGINT NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at', dedupe_key = 'x, y');",
    )
    .unwrap()
    .catalog;
    store
        .create_tenant("acme", "UTC", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    let at = Value::Timestamp(ts("2026-03-02T10:00:00Z"));
    let dec = |s: &str| Value::Decimal(tally_views::decimal::Decimal::parse(s).unwrap());
    let row = |key: &[Value]| {
        let mut row = key.to_vec();
        row.push(at.clone());
        row
    };
    // Per stream: a key Tally stores before the migration goes down; one an older binary
    // stores while it is down (as SQL), and the same key as Tally receives it.
    type OldKey<'a> = Option<(&'a str, Vec<Value>)>;
    let keys: Vec<(&str, Vec<Value>, OldKey<'_>)> = vec![
        ("a", vec![Value::Int(7)], Some(("-8", vec![Value::Int(-8)]))),
        ("b", vec![dec("1.0")], Some(("2.50", vec![dec("2.5")]))),
        (
            "d",
            vec![Value::Timestamp(ts("2026-03-01T10:00:00.123456Z"))],
            Some((
                "'1999-12-31T23:59:59Z'",
                vec![Value::Timestamp(ts("1999-12-31T23:59:59Z"))],
            )),
        ),
        (
            "e",
            vec![Value::Bool(true)],
            Some(("false", vec![Value::Bool(false)])),
        ),
        // A composite key's text is Tally's own encoding: no older-binary row for it.
        ("f", vec![Value::text("p"), Value::Int(1)], None),
    ];
    let mut t = store.tenant("acme").unwrap();
    for (name, first, _) in &keys {
        let stream = catalog.stream(name).unwrap();
        t.create_stream(stream).unwrap();
        assert!(
            t.append(stream, &[row(first)]).unwrap()[0].is_some(),
            "{name}"
        );
    }
    drop(t);
    // Migrations 10 (incarnations), 9 (events in blocks) and 8 (the policies) go down first,
    // then 7.
    store.migrations().down().unwrap().unwrap();
    store.migrations().down().unwrap().unwrap();
    store.migrations().down().unwrap().unwrap();
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0007_keys_by_hash");
    for (name, _, old) in &keys {
        if let Some((sql, _)) = old {
            let event = format!("{sql}, '2026-03-02T10:00:00Z'");
            old_append(&pg, name, "acme", sql, &event);
        }
    }
    store.migrations().up().unwrap();
    let mut t = store.tenant("acme").unwrap();
    for (name, first, old) in &keys {
        let stream = catalog.stream(name).unwrap();
        let mut rows = vec![row(first)];
        rows.extend(old.as_ref().map(|(_, key)| row(key)));
        let seqs = t.append(stream, &rows).unwrap();
        assert!(seqs.iter().all(Option::is_none), "{name}: {seqs:?}");
    }
    // 1.00 is the stored 1.0.
    let b = catalog.stream("b").unwrap();
    assert!(t.append(b, &[row(&[dec("1.00")])]).unwrap()[0].is_none());
}

/// The kind of relation `name` is in the scratch schema (`p` a partitioned table, `v` a view),
/// and how many rows it holds for every tenant (as the superuser, whom no policy on a table
/// applies to; a view reads as its owner, Tally's role, so the superuser's count of one is 0).
fn relation(pg: &PgScratch, name: &str) -> (String, i64) {
    let mut admin = admin();
    let kind: i8 = admin
        .query_one(
            "SELECT c.relkind::\"char\" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&pg.schema(), &name],
        )
        .unwrap()
        .get(0);
    let rows: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".\"{name}\"", pg.schema()),
            &[],
        )
        .unwrap()
        .get(0);
    (char::from(kind as u8).to_string(), rows)
}

/// Migration 9 moves each stream's events into blocks, and back: sequence numbers, values,
/// times, NOT NULL columns, partitions and dedupe keys are kept, for every
/// tenant, and for a stream whose name is long enough for derived names to be cut and hashed.
#[test]
fn events_move_into_blocks_and_back() {
    let pg = PgScratch::new();
    let (store, catalog) = two_tenants(&pg);
    let pay_stream = catalog.stream("pay").unwrap();
    let long = format!("v{}", "x".repeat(59));
    let visits = apply(
        &Catalog::new(),
        &format!("CREATE STREAM {long} (id BIGINT NOT NULL, at TIMESTAMP NOT NULL) WITH (event_time = 'at');"),
    )
    .unwrap()
    .catalog;
    let visit_stream = visits.stream(&long).unwrap();
    let mut t = store.tenant("acme").unwrap();
    // More than one block's worth of numbers (1,000), over two weeks.
    let rows: Vec<Vec<Value>> = (0..1_500)
        .map(|i| {
            let day = if i % 3 == 0 {
                "2026-03-02"
            } else {
                "2026-03-10"
            };
            pay(&format!("bulk-{i}"), "acme", &format!("{day}T10:00:00Z"))
        })
        .collect();
    t.append(pay_stream, &rows).unwrap();
    t.create_stream(visit_stream).unwrap();
    t.append(
        visit_stream,
        &[
            vec![Value::Int(1), Value::Timestamp(ts("2026-03-03T00:00:00Z"))],
            vec![Value::Int(2), Value::Timestamp(ts("2026-03-13T00:00:00Z"))],
            vec![Value::Int(3), Value::Timestamp(ts("2026-02-03T00:00:00Z"))],
        ],
    )
    .unwrap();
    drop(t);
    let events = |tenant: &str, stream: &tally_views::StreamDef| {
        let t = store.tenant(tenant).unwrap();
        t.read_events(stream, 0, usize::MAX).unwrap()
    };
    let before = (
        events("acme", pay_stream),
        events("beta", pay_stream),
        events("acme", visit_stream),
    );
    assert_eq!(before.0.len(), 1_502);
    assert_eq!(relation(&pg, "pay").0, "v");
    let events_in_blocks = || -> i64 {
        admin()
            .query_one(
                &format!(
                    "SELECT sum(_n)::bigint FROM \"{}\".\"pay#blocks\"",
                    pg.schema()
                ),
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(events_in_blocks(), 1_504);
    let blocks = relation(&pg, "pay#blocks");
    assert_eq!(blocks.0, "p");
    // One block per append and week: acme's two appends and beta's one, two weeks each.
    assert_eq!(blocks.1, 2 + 2 + 2);

    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0010_stream_incarnations");
    let reverted = store.migrations().down().unwrap().unwrap();
    assert_eq!(reverted.name, "0009_event_blocks");
    assert_eq!(relation(&pg, "pay"), ("p".into(), 1_504));
    assert_eq!(relation(&pg, &long).0, "p");
    let columns: Vec<(String, bool)> = admin()
        .query(
            "SELECT a.attname::text, a.attnotnull FROM pg_attribute a
              WHERE a.attrelid = format('%I.%I', $1::text, 'pay')::regclass AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&pg.schema()],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, bool)> = [
        ("tenant_id", true),
        ("_seq", true),
        ("id", true),
        ("who", false),
        ("amount", true),
        ("at", true),
    ]
    .iter()
    .map(|(c, n)| (c.to_string(), *n))
    .collect();
    assert_eq!(columns, expected);
    assert_eq!(relation(&pg, "pay#2026-03-09").0, "r");

    store.migrations().up().unwrap();
    let after = (
        events("acme", pay_stream),
        events("beta", pay_stream),
        events("acme", visit_stream),
    );
    assert_eq!(after, before);
    assert_eq!(relation(&pg, "pay").0, "v");
    assert_eq!(events_in_blocks(), 1_504);
    // The view's `_week` narrows a read to a week's partition; the tenant's events of that week.
    let mut tally = Client::connect(pg.url(), NoTls).unwrap();
    tally
        .batch_execute(&format!("SET search_path TO \"{}\"", pg.schema()))
        .unwrap();
    let mut tx = tally.transaction().unwrap();
    tx.execute("SELECT set_config('tally.tenant_id', 'acme', true)", &[])
        .unwrap();
    let week: i64 = tx
        .query_one(
            "SELECT count(*) FROM pay WHERE _week = '2026-03-09T00:00:00Z'",
            &[],
        )
        .unwrap()
        .get(0);
    let plan: String = tx
        .query(
            "EXPLAIN SELECT count(*) FROM pay WHERE _week = '2026-03-09T00:00:00Z'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    tx.commit().unwrap();
    assert_eq!(week, 1 + 1_000);
    assert!(
        plan.contains("pay#2026-03-09") && !plan.contains("pay#2026-03-02"),
        "{plan}"
    );
    // Cut every 1,000 numbers and by week: acme's 1-1000 over three weeks, 1001-1502 over two;
    // beta's over two.
    assert_eq!(relation(&pg, "pay#blocks").1, 3 + 2 + 2);
    store.check_isolation().unwrap();
    // Keys and numbers go on: a stored key is a duplicate, a new one takes the next number.
    let mut t = store.tenant("acme").unwrap();
    let seqs = t
        .append(
            pay_stream,
            &[
                pay("bulk-7", "acme", "2026-03-10T10:00:00Z"),
                pay("fresh", "acme", "2026-03-10T10:00:00Z"),
            ],
        )
        .unwrap();
    assert_eq!(seqs, [None, Some(1_503)]);
    let seqs = t
        .append(
            visit_stream,
            &[vec![
                Value::Int(4),
                Value::Timestamp(ts("2026-03-13T00:00:00Z")),
            ]],
        )
        .unwrap();
    assert_eq!(seqs, [Some(4)]);
}

/// Each connection of a tenant keeps a filter of a stream's stored keys, brought in step with
/// what other connections (other nodes) stored under the stream's row lock: a key another node
/// stored is a duplicate here, and so is one stored after another node created the stream
/// again, even where its new events have sequence numbers this node's filter had already
/// seen. A key whose event was erased is stored again.
#[test]
fn key_filters_keep_in_step_with_other_nodes() {
    let pg = PgScratch::new();
    let (store, catalog) = two_tenants(&pg);
    let stream = catalog.stream("pay").unwrap();
    let (mut a, mut b) = (store.tenant("acme").unwrap(), store.tenant("acme").unwrap());
    let fresh = |t: &mut TenantStore, ids: &[&str]| -> Vec<bool> {
        let rows: Vec<Vec<Value>> = ids
            .iter()
            .map(|id| pay(id, "acme", "2026-03-02T10:00:00Z"))
            .collect();
        let hashed = KeyHashes::new(stream, &rows);
        t.append_hashed(stream, &rows, Some(hashed))
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect()
    };
    assert!(a.hashes_keys(stream));
    // Stored before either connection kept a filter (two_tenants), then by each in turn.
    assert_eq!(fresh(&mut a, &["acme-1", "k1", "k2"]), [false, true, true]);
    assert_eq!(fresh(&mut b, &["k1", "k3", "k4"]), [false, true, true]);
    assert_eq!(fresh(&mut a, &["k3", "k5", "k4"]), [false, true, false]);
    assert_eq!(fresh(&mut b, &["k5", "k2", "k6"]), [false, false, true]);
    assert_eq!(a.last_seq(stream).unwrap(), 8);

    // b creates the stream again and stores more events than a's filter had seen: numbers
    // 1 to 9 again, k1 (a's) and k7 (new) among them.
    b.create_stream(stream).unwrap();
    let ids: Vec<String> = (0..7).map(|i| format!("r{i}")).collect();
    let mut again: Vec<&str> = ids.iter().map(String::as_str).collect();
    again.extend(["k1", "k7"]);
    assert!(fresh(&mut b, &again).iter().all(|&f| f));
    assert_eq!(b.last_seq(stream).unwrap(), 9);
    assert_eq!(
        fresh(&mut a, &["k7", "k1", "k2", "r6"]),
        [false, false, true, false]
    );

    // An erased event's key is stored again, though a's filter still holds its hash.
    let erased = a.events_of(stream, &[0], &["k2"]).unwrap();
    assert_eq!(erased.len(), 1);
    a.erase(&Erasure {
        events: vec![(stream, erased.iter().map(|e| e.seq).collect())],
        views: Vec::new(),
        records: Vec::new(),
    })
    .unwrap();
    assert_eq!(fresh(&mut a, &["k2", "k2"]), [true, false]);
    assert_eq!(fresh(&mut b, &["k2"]), [false]);
    assert_eq!(a.last_seq(stream).unwrap(), 11);

    // A node of an earlier version creates the stream again without a new incarnation: its
    // `last_seq` going back gives the stream one (migration 10's trigger), so a, which holds
    // numbers up to 11, reads the 12 new events whole.
    let schema = pg.schema();
    admin()
        .batch_execute(&format!(
            "DELETE FROM \"{schema}\".\"pay#blocks\" WHERE tenant_id = 'acme';
             DELETE FROM \"{schema}\".\"pay#keys\" WHERE tenant_id = 'acme';
             UPDATE \"{schema}\".tally_streams SET last_seq = 0 WHERE tenant_id = 'acme' AND name = 'pay'"
        ))
        .unwrap();
    let ids: Vec<String> = (0..12).map(|i| format!("old{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(fresh(&mut b, &ids).iter().all(|&f| f));
    assert_eq!(fresh(&mut a, &["old0", "k3"]), [false, true]);

    // Past the room a filter was built with (8,192 keys at first), a's is built again larger,
    // and every key is still found.
    let many: Vec<String> = (0..24_000).map(|i| format!("m{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for part in many.chunks(6_000) {
        assert!(fresh(&mut a, part).iter().all(|&f| f));
    }
    let sample: Vec<&str> = many.iter().step_by(97).copied().collect();
    assert!(fresh(&mut a, &sample).iter().all(|&f| !f));
    assert!(fresh(&mut b, &sample).iter().all(|&f| !f));
}
