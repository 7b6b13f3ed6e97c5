//! The `tally` command: parse the flags, run the command, print `error: …` on one line and exit
//! non-zero on failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tally::cli::Cli::parse();
    match tally::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
