//! `shopfloor-bench`: every benchmark of docs/BENCHMARKS.md in one program. Each scenario
//! prints its own detailed table as it finishes; at the end one summary table of every figure
//! (value, baseline measured in the same run, ratio, issue-9 target, met) and a JSON file.
//! Figures are measured, never asserted: a missed target is a row, not a failure. The exit
//! status is 1 only when a scenario could not run (missing binary, failure), 2 for bad
//! arguments.
// A measuring program, like the benches it replaces: a broken setup stops its scenario with a
// message (caught and reported as an error row), not an error value threaded through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acquisition;
mod acquisition_opcua;
mod agent_rate;
mod footprint;
mod gateway;
mod memory;
mod outbox;
mod util;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use util::{Figure, Status, fmt_num};

/// Options every scenario sees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    /// Smaller sizes and shorter windows: a smoke run, not figures to publish.
    pub quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// Modbus TCP, 100 devices × 200 tags: one request per tag vs the read planner.
    AcquisitionModbus,
    /// OPC UA, 100 devices × 200 tags: Read per tag vs batched Read vs subscriptions.
    AcquisitionOpcua,
    /// Agent outbox: write, drain and replay of an hour of batches vs an append-only log.
    Outbox,
    /// Agent binary idle vs 50 CNC machines: CPU and RSS.
    Footprint,
    /// Agent binary at 100,000 tags/s from 100 simulated Modbus devices: CPU and RSS.
    AgentRate,
    /// Agent RSS with 0, 25, 50, 100, 200 devices: MiB per device.
    Memory,
    /// Gateway ingest into SQLite and PostgreSQL via Mosquitto (SHOPFLOOR_TEST_MQTT_URL).
    Ingest,
    /// Publish → visible latency (SHOPFLOOR_TEST_MQTT_URL).
    Latency,
    /// Park-year API query (loads 27 M roll-up rows: slow).
    Api,
}

impl Scenario {
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    fn run(self, ctx: &Ctx) -> Result<Vec<Figure>, String> {
        match self {
            Scenario::AcquisitionModbus => acquisition::main(ctx),
            Scenario::AcquisitionOpcua => acquisition_opcua::main(ctx),
            Scenario::Outbox => outbox::main(ctx),
            Scenario::Footprint => footprint::main(ctx),
            Scenario::AgentRate => agent_rate::main(ctx),
            Scenario::Memory => memory::main(ctx),
            Scenario::Ingest => gateway::ingest_main(ctx),
            Scenario::Latency => gateway::latency_main(ctx),
            Scenario::Api => gateway::api_main(ctx),
        }
    }
}

/// Shopfloor benchmarks (docs/BENCHMARKS.md). Runs the scenarios named (default: all, in the
/// order listed below), prints each one's table, a summary of every figure with its baseline
/// and issue-9 target, and writes JSON.
///
/// The agent and simulator binaries are looked up next to this program, or at
/// SHOPFLOOR_AGENT_BIN / SHOPFLOOR_SIM_BIN. SHOPFLOOR_BENCH_SECS and SHOPFLOOR_BENCH_BATCHES
/// change measuring windows and the outbox's batch count; ingest and latency need
/// SHOPFLOOR_TEST_MQTT_URL, their PostgreSQL runs SHOPFLOOR_TEST_POSTGRES_URL.
#[derive(Debug, Parser)]
#[command(name = "shopfloor-bench", version)]
struct Cli {
    /// Scenarios to run; always run in the order listed here.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Where to write the JSON (default: target/shopfloor-bench.json in the workspace, or
    /// shopfloor-bench.json in the current directory outside one).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Small sizes and short windows: a smoke run whose figures mean little.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx { quick: cli.quick };
    let mut scenarios = if cli.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        cli.scenarios.clone()
    };
    scenarios.sort();
    scenarios.dedup();
    let json_path = cli.json.clone().unwrap_or_else(default_json_path);
    let started = jiff::Timestamp::now();
    let clock = std::time::Instant::now();
    let load_start = util::loadavg();

    let mut figures: Vec<Figure> = Vec::new();
    for s in &scenarios {
        let name = s.name();
        println!("\n=== {name}{}", if ctx.quick { " (quick)" } else { "" });
        let t0 = std::time::Instant::now();
        let result = std::panic::catch_unwind(|| s.run(&ctx));
        let rows = match result {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                eprintln!("{name}: {e}");
                vec![Figure::not_run(&name, &name, Status::Error, e)]
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                vec![Figure::not_run(
                    &name,
                    &name,
                    Status::Error,
                    format!("failed: {msg}"),
                )]
            }
        };
        println!("({name}: {:.1} s)", t0.elapsed().as_secs_f64());
        figures.extend(rows);
    }

    print_summary(&figures);
    let doc = Doc {
        run: Run {
            date: started.to_string(),
            host_cores: util::cores(),
            git_commit: git_commit(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            quick: ctx.quick,
            scenarios: scenarios.iter().map(|s| s.name()).collect(),
            loadavg_start: load_start,
            loadavg_end: util::loadavg(),
            seconds: (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        },
        figures: figures.iter().map(Figure::json).collect(),
    };
    let mut status = ExitCode::SUCCESS;
    match write_json(&json_path, &doc) {
        Ok(()) => println!("\nJSON: {}", json_path.display()),
        Err(e) => {
            eprintln!("error: {}: {e}", json_path.display());
            status = ExitCode::FAILURE;
        }
    }
    if figures.iter().any(|f| f.status == Status::Error) {
        status = ExitCode::FAILURE;
    }
    status
}

/// The JSON file.
#[derive(Debug, serde::Serialize)]
struct Doc<'a> {
    run: Run,
    figures: Vec<util::FigureJson<'a>>,
}

/// Where and how the figures were measured.
#[derive(Debug, serde::Serialize)]
struct Run {
    date: String,
    host_cores: usize,
    git_commit: Option<String>,
    profile: &'static str,
    quick: bool,
    scenarios: Vec<String>,
    /// 1, 5 and 15 minute load averages when the run started and ended.
    loadavg_start: Option<[f64; 3]>,
    loadavg_end: Option<[f64; 3]>,
    seconds: f64,
}

fn write_json(path: &Path, doc: &Doc<'_>) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// `target/shopfloor-bench.json` of the workspace around the current directory, else
/// `shopfloor-bench.json` here.
fn default_json_path() -> PathBuf {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in here.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("[workspace]")) {
            return dir.join("target").join("shopfloor-bench.json");
        }
    }
    PathBuf::from("shopfloor-bench.json")
}

/// `git rev-parse HEAD`, if git and a repository are there.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// One table of every figure.
fn print_summary(figures: &[Figure]) {
    let rows: Vec<[String; 8]> = figures
        .iter()
        .map(|f| {
            let value = match f.status {
                Status::Ok => fmt_num(f.value),
                s => s.as_str().to_owned(),
            };
            let figure = match (f.status, &f.note) {
                (Status::Skipped, Some(why)) => format!("{} ({why})", f.name),
                _ => f.name.clone(),
            };
            [
                f.scenario.clone(),
                figure,
                value,
                f.unit.clone(),
                f.baseline.map_or_else(String::new, fmt_num),
                f.ratio().map_or_else(String::new, |r| format!("{r:.2}×")),
                f.target
                    .as_ref()
                    .map_or_else(String::new, |t| t.text().to_owned()),
                match f.met() {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let head = [
        "scenario", "figure", "value", "unit", "baseline", "ratio", "target", "met",
    ];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain(std::iter::once(head[i].chars().count()))
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..8).map(width).collect();
    let pad = |s: &str, n: usize, right: bool| {
        let fill = " ".repeat(n.saturating_sub(s.chars().count()));
        if right {
            format!("{fill}{s}")
        } else {
            format!("{s}{fill}")
        }
    };
    // Numbers right-aligned, text left; a skipped or failed row's message stays left.
    let line = |r: &[String], numeric: bool| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| pad(c, w[i], numeric && matches!(i, 2 | 4 | 5)))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    println!("\n=== summary");
    let head: Vec<String> = head.iter().map(|s| (*s).to_owned()).collect();
    line(&head, false);
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for (r, f) in rows.iter().zip(figures) {
        line(r, f.status == Status::Ok);
    }
    for f in figures.iter().filter(|f| f.status == Status::Error) {
        println!(
            "{}: {}: {}",
            f.scenario,
            f.name,
            f.note.as_deref().unwrap_or(f.status.as_str())
        );
    }
}
