//! `shopfloor-agent`: the edge agent. This build carries the shared indicator engine; device
//! acquisition (`run`, `check`, `probe`, `browse`) arrives with issues 3 and 4.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "shopfloor-agent",
    version,
    about = "Shopfloor edge agent",
    long_about = "Shopfloor edge agent. This build has no acquisition commands yet: it prints its version and the engine it carries.",
    arg_required_else_help = true
)]
struct Cli {
    /// Print the indicator engine version and the coefficient sets compiled in.
    #[arg(long)]
    engine: bool,
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
    if cli.engine {
        println!(
            "engine {} · energy sets: {} · CO2 sets: {}",
            shopfloor_core::engine::ENGINE_VERSION,
            shopfloor_core::coefficients::energy_set_ids().join(", "),
            shopfloor_core::coefficients::co2_set_ids().join(", ")
        );
    }
    ExitCode::SUCCESS
}
