//! Writes the generated input files of one example pack (`examples/<pack>/`):
//!
//! ```sh
//! cargo run --release -p tally --example seed_data -- vaults ./tally-vaults/input
//! cargo run --release -p tally --example seed_data -- shadow ./out --now 2026-11-15T12:00:00Z
//! ```
//!
//! The data is deterministic: the same pack and `--now` give the same files. Every event lies
//! before `--now` (default: the current minute), so that queries with `now()` (the last 30 days,
//! recency, churn) see recent activity. `crates/tally/tests/examples.rs` loads the same files
//! and checks every saved query of the packs against a recomputation.

mod audifi;
mod common;
mod shadow;
mod spec355;
mod ticketing;
mod vaults;

use std::process::ExitCode;

const USAGE: &str =
    "usage: seed_data vaults|audifi|shadow|spec355|ticketing OUTDIR [--now RFC3339]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed_data: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (pack, dir, now) = match args.as_slice() {
        [pack, dir] => (pack, dir, None),
        [pack, dir, flag, now] if flag == "--now" => (pack, dir, Some(now)),
        _ => return Err(USAGE.into()),
    };
    let now = match now {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("--now {text}: {e}"))?
            .as_second(),
        None => jiff::Timestamp::now().as_second() / 60 * 60,
    };
    let files = match pack.as_str() {
        "vaults" => vaults::generate(now).files(),
        "audifi" => audifi::generate(now).files(),
        "shadow" => shadow::generate(now).files(),
        "spec355" => spec355::generate(now).files(),
        "ticketing" => ticketing::generate(now).files(),
        other => return Err(format!("unknown pack {other}; {USAGE}")),
    };
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for file in files.streams.iter().chain(&files.tables) {
        let path = dir.join(&file.name);
        std::fs::write(&path, &file.text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "wrote {} ({} lines, for {})",
            path.display(),
            file.text.lines().count(),
            file.target
        );
    }
    println!("events end at {}", common::rfc3339(now));
    Ok(())
}
