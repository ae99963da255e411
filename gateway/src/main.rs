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
    /// Dashboard users (password sign-in; only argon2id hashes are stored).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Agents and their signing keys: register, rotate, revoke, list (docs/SECURITY.md).
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// MQTT users of the embedded broker (argon2id hashes in `mqtt.auth.users_file`).
    MqttUser {
        #[command(subcommand)]
        command: MqttUserCommand,
    },
    /// The whole product on loopback: a simulated park (Modbus and OPC UA devices), one agent
    /// per workshop, the embedded broker, SQLite and the dashboard. Prints the dashboard URL
    /// and how to sign in; Ctrl-C stops.
    Demo(shopfloor_gateway::demo::Args),
    /// Recompute the indicators of an evidence file (shopfloor.evidence/1) and print them as JSON.
    Calc(calc::Args),
    /// Write the auditor's period report of an enterprise, workshop or park.
    ///
    /// Formats html (printable A4), xlsx, csv, or json (the evidence file); the stored batches'
    /// signatures and hash chain are verified again (docs/REPORTS.md).
    Report(report::Args),
    /// Re-check stored batches (signatures, hash chains, decoded rows) and sealed days
    /// (signatures, seal chains, evidence, batch manifests, indicators) against the store.
    ///
    /// Lists every mismatch; exit 1 on any (docs/GATEWAY.md, "Seals and verify").
    Verify(shopfloor_gateway::verify::Args),
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

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; without --password-stdin a random password is printed once.
    Add {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// 1–64 of a-z, 0-9, '.', '_', '-'.
        #[arg(long)]
        name: String,
        /// viewer, engineer, auditor or admin.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input (at least 12 characters).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (ends the user's sessions); random and printed once without
    /// --password-stdin.
    Passwd {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (ends its sessions).
    Disable {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the users (never passwords or hashes).
    List {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Register an agent with its public key (`shopfloor-agent key show`) and scopes.
    Add {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Agent id (as in its configuration and MQTT topic).
        #[arg(long)]
        id: String,
        /// `ed25519:<base64>`.
        #[arg(long, value_name = "KEY")]
        pubkey: String,
        /// An entity whose devices the agent reports (repeatable).
        #[arg(long, value_name = "ENTITY", required = true)]
        scope: Vec<String>,
    },
    /// Make KEY the agent's key; the old one stays valid for the overlap window.
    Rotate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        id: String,
        /// The new key (`shopfloor-agent key rotate` prints it).
        #[arg(long, value_name = "KEY")]
        pubkey: String,
        /// How long batches signed with the old key are still accepted (s, m, h, d).
        #[arg(long, default_value = shopfloor_gateway::agents::DEFAULT_OVERLAP)]
        overlap: String,
        /// Revoke the old key at once instead (it may be in other hands).
        #[arg(long)]
        revoke_old: bool,
    },
    /// Revoke one key (--key) or the whole agent.
    Revoke {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// List agents with their current, retired and revoked keys.
    List {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum MqttUserCommand {
    /// Add a user (or set a new password) and print the generated password once.
    Add {
        /// The users file (created with mode 0600; replaced atomically).
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// The user name: the agent id (or a reader of `mqtt.auth.readers`).
        #[arg(long)]
        name: String,
        /// Read the password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Remove {
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        #[arg(long)]
        name: String,
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
    if !matches!(cli.command, Command::Calc(_) | Command::Demo(_)) {
        run::init_logging();
    }
    match cli.command {
        Command::Run { config } => run::main(&config),
        Command::Check { config } => run::check(&config),
        Command::Token {
            command: TokenCommand::Add { config, name, role },
        } => run::token_add(&config, &name, &role),
        Command::User { command } => {
            use shopfloor_gateway::users::{Action, main as users};
            match command {
                UserCommand::Add {
                    config,
                    name,
                    role,
                    password_stdin,
                } => users(
                    &config,
                    Action::Add {
                        name,
                        role,
                        password_stdin,
                    },
                ),
                UserCommand::Passwd {
                    config,
                    name,
                    password_stdin,
                } => users(
                    &config,
                    Action::Passwd {
                        name,
                        password_stdin,
                    },
                ),
                UserCommand::Disable { config, name } => users(&config, Action::Disable { name }),
                UserCommand::Enable { config, name } => users(&config, Action::Enable { name }),
                UserCommand::List { config } => users(&config, Action::List),
            }
        }
        Command::Agents { command } => {
            use shopfloor_gateway::agents::{Action, main as agents};
            match command {
                AgentsCommand::Add {
                    config,
                    id,
                    pubkey,
                    scope,
                } => agents(&config, Action::Add { id, pubkey, scope }),
                AgentsCommand::Rotate {
                    config,
                    id,
                    pubkey,
                    overlap,
                    revoke_old,
                } => agents(
                    &config,
                    Action::Rotate {
                        id,
                        pubkey,
                        overlap,
                        revoke_old,
                    },
                ),
                AgentsCommand::Revoke { config, id, key } => {
                    agents(&config, Action::Revoke { id, key })
                }
                AgentsCommand::List { config } => agents(&config, Action::List),
            }
        }
        Command::MqttUser { command } => match command {
            MqttUserCommand::Add {
                file,
                name,
                password_stdin,
            } => shopfloor_gateway::guard::mqtt_user_add(&file, &name, password_stdin),
            MqttUserCommand::Remove { file, name } => {
                shopfloor_gateway::guard::mqtt_user_remove(&file, &name)
            }
        },
        Command::Demo(args) => shopfloor_gateway::demo::main(args),
        Command::Calc(args) => calc::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Verify(args) => shopfloor_gateway::verify::run(&args),
    }
}
