//! `shopfloor-agent`: the edge agent. A thin command line over the `shopfloor_agent` library:
//! `run`, `check`, `key show`, and the plant engineer's diagnostics (`probe modbus`,
//! `browse opcua`).

use shopfloor_agent::diag;

use std::process::ExitCode;

use std::path::PathBuf;

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
    /// Run the agent: acquire, compute, batch, store, publish.
    Run {
        /// Agent configuration (TOML; see docs/CONFIG.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration without starting anything: prints `ok`, or every error with
    /// file, field path and reason (exit 2).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// The agent's signing key.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
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

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Print the public key to register at the gateway (creates the key on first use).
    Show {
        /// Agent configuration (the key lives in its data directory).
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        config: Option<PathBuf>,
        /// Data directory, instead of a configuration.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Stage a new key (agent.key.next) and print its public key for the gateway
    /// (`shopfloor-gateway agents rotate`); the agent keeps signing with the current key.
    Rotate {
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Make the staged key the agent's key (after the gateway registered it); restart after.
    Activate {
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
        Some(Command::Run { config }) => {
            shopfloor_agent::alloc::configure();
            shopfloor_agent::run::main(&config)
        }
        Some(Command::Check { config }) => shopfloor_agent::config::check_command(&config),
        Some(Command::Key {
            action: KeyAction::Show { config, data_dir },
        }) => shopfloor_agent::identity::show_command(config.as_deref(), data_dir.as_deref()),
        Some(Command::Key {
            action: KeyAction::Rotate { config, data_dir },
        }) => shopfloor_agent::identity::rotate_command(config.as_deref(), data_dir.as_deref()),
        Some(Command::Key {
            action: KeyAction::Activate { config, data_dir },
        }) => shopfloor_agent::identity::activate_command(config.as_deref(), data_dir.as_deref()),
        Some(Command::Probe { protocol }) => diag::probe(protocol),
        Some(Command::Browse { protocol }) => diag::browse(protocol),
    }
}
