//! Fuzz target: schema text compiled against a catalog with a stream of every type. Any input
//! must compile or fail with a position, never panic or exhaust the stack.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_views::Catalog;

const BASE: &str = "CREATE STREAM s (id TEXT NOT NULL, n BIGINT, x DOUBLE, d DECIMAL(12,4),
    ok BOOLEAN, j JSON, at TIMESTAMP NOT NULL) WITH (event_time = 'at');";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static BASE_CATALOG: OnceLock<Catalog> = OnceLock::new();
    let base = BASE_CATALOG.get_or_init(|| {
        tally_views::sql::apply(&Catalog::new(), BASE)
            .unwrap()
            .catalog
    });
    if let Ok(applied) = tally_views::sql::apply(base, text) {
        // A compiled schema prints, and its printed definitions compile again.
        for view in applied.catalog.views() {
            let _ = view.to_string();
        }
        let mut again = Catalog::new();
        for (_, sql) in applied.catalog.definitions() {
            again = tally_views::sql::apply(&again, &sql)
                .expect("a stored definition compiles again")
                .catalog;
        }
    }
});
