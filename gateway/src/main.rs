//! `shopfloor-gateway`: thin entry point. Exit codes (DESIGN.md §2): 0 success, 2 bad input or
//! configuration, 1 runtime failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shopfloor_gateway::calc;

#[derive(Debug, Parser)]
#[command(
    name = "shopfloor-gateway",
    version,
    about = "Shopfloor gateway: indicators for workshops, enterprises and parks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute the indicators of an evidence file (shopfloor.evidence/1) and print them as JSON.
    Calc(calc::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Calc(args) => calc::run(&args),
    }
}
