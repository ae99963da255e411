//! `shopfloor-sim --scenario FILE`: serves a simulated plant until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shopfloor_sim::{Plant, Scenario, StartOptions};

#[derive(Debug, Parser)]
#[command(
    name = "shopfloor-sim",
    version,
    about = "Shopfloor plant simulator: Modbus TCP, Modbus RTU (pseudo-terminal) and OPC UA devices from a scenario file"
)]
struct Cli {
    /// Scenario file (TOML); see configs/scenarios/.
    #[arg(long)]
    scenario: PathBuf,
    /// Directory for the OPC UA servers' certificates (default: a temporary directory).
    #[arg(long)]
    pki_dir: Option<PathBuf>,
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let loaded = match Scenario::load(&cli.scenario) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let name = loaded.scenario.name.clone();
        let scale = loaded.scenario.time_scale;
        let plant = match Plant::start(
            loaded,
            StartOptions {
                pki_dir: cli.pki_dir,
                epoch: None,
            },
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        println!("shopfloor-sim: scenario \"{name}\", simulated time ×{scale}");
        for (n, a) in &plant.tcp {
            println!("  modbus-tcp  {n:<12} {a}");
        }
        for (n, p) in &plant.rtu {
            println!("  modbus-rtu  {n:<12} {p}");
        }
        for (n, e) in &plant.opcua {
            println!("  opcua       {n:<12} {e}");
        }
        for d in &plant.devices {
            println!(
                "    {:<16} {:<24} on {} unit {}",
                d.spec.name, d.template.id, d.spec.server, d.spec.unit
            );
        }
        println!("Ctrl-C stops.");
        let _ = tokio::signal::ctrl_c().await;
        plant.stop().await;
        ExitCode::SUCCESS
    })
}
