//! `shopfloor-agent`: the edge agent. This build carries the shared indicator engine and the
//! plant engineer's diagnostics (`probe modbus`, `browse opcua`); `run` and `check` arrive with
//! issue 4.

mod diag;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shopfloor-agent",
    version,
    about = "Shopfloor edge agent",
    long_about = "Shopfloor edge agent: reads machines and meters over Modbus and OPC UA.\n\
                  Diagnostics: `probe modbus` reads registers once and decodes them; \
                  `browse opcua` prints a server's node tree.",
    arg_required_else_help = true
)]
struct Cli {
    /// Print the indicator engine version and the coefficient sets compiled in.
    #[arg(long)]
    engine: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read registers or bits once and print every decoded value.
    Probe {
        #[command(subcommand)]
        protocol: diag::ProbeProtocol,
    },
    /// Print an OPC UA server's node tree with node ids, browse names and values.
    Browse {
        #[command(subcommand)]
        protocol: diag::BrowseProtocol,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if cli.engine {
        println!(
            "engine {} · energy sets: {} · CO2 sets: {}",
            shopfloor_core::engine::ENGINE_VERSION,
            shopfloor_core::coefficients::energy_set_ids().join(", "),
            shopfloor_core::coefficients::co2_set_ids().join(", ")
        );
    }
    match cli.command {
        None => ExitCode::SUCCESS,
        Some(Command::Probe { protocol }) => diag::probe(protocol),
        Some(Command::Browse { protocol }) => diag::browse(protocol),
    }
}
