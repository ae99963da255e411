//! `shopfloor-gateway`: thin entry point. Exit codes (DESIGN.md §2): 0 success, 2 bad input or
//! configuration, 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shopfloor_gateway::{calc, report, run};

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
    /// Run the gateway: ingest, storage, roll-ups, REST API and /metrics.
    Run {
        /// Configuration file (docs/GATEWAY.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration and its registry files, then exit (0 valid, 2 invalid).
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// API tokens (only their hashes are stored).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Recompute the indicators of an evidence file (shopfloor.evidence/1) and print them as JSON.
    Calc(calc::Args),
    /// Write the auditor's period report of an enterprise, workshop or park.
    ///
    /// Formats html (printable A4), xlsx, csv, or json (the evidence file); the stored batches'
    /// signatures and hash chain are verified again (docs/REPORTS.md).
    Report(report::Args),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Add {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A name for the token (who or what uses it).
        #[arg(long)]
        name: String,
        /// viewer, engineer, auditor or admin.
        #[arg(long)]
        role: String,
    },
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
    if !matches!(cli.command, Command::Calc(_)) {
        run::init_logging();
    }
    match cli.command {
        Command::Run { config } => run::main(&config),
        Command::Check { config } => run::check(&config),
        Command::Token {
            command: TokenCommand::Add { config, name, role },
        } => run::token_add(&config, &name, &role),
        Command::Calc(args) => calc::run(&args),
        Command::Report(args) => report::run(&args),
    }
}
