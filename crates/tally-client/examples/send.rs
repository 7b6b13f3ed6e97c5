//! Sends seed 003's messages to a running Tally with the blocking client: a sign-up, a page
//! view, and the seed's metric helpers (`api_request`, `active_users`, `missions_created`,
//! `database_query`) written with `MetricBuilder`.
//!
//! `cargo run -p tally-client --example send -- http://127.0.0.1:8420 WRITE_KEY`

use tally_client::blocking::Client;
use tally_client::{EventBuilder, MetricBuilder, PageBuilder};

/// Seed 003's `MetricBuilder::api_request`.
fn api_request(endpoint: &str, duration_ms: f64, status: i32) -> MetricBuilder {
    MetricBuilder::timer("api.request.duration")
        .value(duration_ms)
        .tag("endpoint", endpoint)
        .tag("status", status.to_string())
}

/// Seed 003's `MetricBuilder::database_query`.
fn database_query(query_type: &str, duration_ms: f64) -> MetricBuilder {
    MetricBuilder::timer("database.query.duration")
        .value(duration_ms)
        .tag("query_type", query_type)
}

fn main() -> Result<(), tally_client::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(key)) = (args.next(), args.next()) else {
        eprintln!("usage: send URL WRITE_KEY");
        std::process::exit(2);
    };
    let client = Client::new(&url, &key)?;
    client.track(
        EventBuilder::new("Signed Up")
            .user_id("u-1")
            .property("plan", "pro"),
    )?;
    client.page(
        PageBuilder::new("Pricing")
            .user_id("u-1")
            .property("url", "https://example.com/pricing"),
    )?;
    for (i, ms) in [12.0, 18.5, 25.0, 140.0].into_iter().enumerate() {
        client.metric(api_request("/missions", ms, if i == 3 { 500 } else { 200 }))?;
        client.metric(database_query("select", ms / 4.0))?;
    }
    client.metric(MetricBuilder::gauge("users.active").value(42.0))?;
    client.metric(MetricBuilder::counter("missions.created"))?;
    client.flush()?;
    let stats = client.stats();
    println!(
        "sent {}, duplicates {}, rejected {}",
        stats.sent, stats.duplicates, stats.rejected
    );
    Ok(())
}
