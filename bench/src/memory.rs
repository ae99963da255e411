//! Memory per device: the `shopfloor-agent` release binary with 0, 25, 50, 100 and 200 CNC
//! machines (built-in template `cnc-modbus-generic`, 15 points, polled every second, as in the
//! `footprint` scenario) against `shopfloor-sim` in a separate process (20 Modbus TCP servers ×
//! 10 unit ids), publishing to an embedded broker in this process.
//!
//! Each agent: start, 5 s warm-up, 10 s window (SHOPFLOOR_BENCH_SECS); VmRSS sampled every
//! 250 ms (mean), VmHWM at the end. Figures: RSS for each device count (baseline: the agent
//! with no device), and the least-squares slope of RSS over the device count, in MiB per
//! device (mean RSS and peak).

use std::time::Duration;

use crate::Ctx;
use crate::footprint::{agent_config, scenario};
use crate::util::{
    AGENT, AgentRun, Figure, cores, embedded_broker, free_port, least_squares, runtime, start_sim,
    subscriber, tempdir, window_secs, write,
};

const SCENARIO: &str = "memory";
const COUNTS: [usize; 5] = [0, 25, 50, 100, 200];
const QUICK_COUNTS: [usize; 3] = [0, 5, 10];
const PREFIX: &str = "bench";

pub(crate) fn main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let secs = window_secs(ctx.quick, 2.0, 10.0);
    let warmup = Duration::from_secs(if ctx.quick { 1 } else { 5 });
    let counts: &[usize] = if ctx.quick { &QUICK_COUNTS } else { &COUNTS };
    let max = counts.iter().copied().max().unwrap_or(0);
    let servers = max.div_ceil(10).max(1);
    let agent_bin = AGENT.locate()?;
    let dir = tempdir("shopfloor-bench-memory")?;
    write(&dir.path().join("plant.toml"), &scenario(servers))?;
    let sim = start_sim(&dir.path().join("plant.toml"), &[], servers)?;
    let addrs = sim.modbus()?;
    let rt = runtime(Some(2))?;
    let runs = rt.block_on(async {
        let mqtt_port = free_port();
        embedded_broker(mqtt_port)?;
        let counter = subscriber(mqtt_port, PREFIX);
        let mut runs = Vec::new();
        for &n in counts {
            let name = format!("dev{n}");
            let f = AgentRun {
                bin: &agent_bin,
                dir: dir.path(),
                name: &name,
                warmup,
                secs,
                sim_pid: Some(sim.pid()),
                counts: Some(&counter),
            }
            .run(|data, m| agent_config(&format!("bench-mem-{n}"), data, mqtt_port, m, &addrs, n))
            .await?;
            runs.push((n, f));
        }
        Ok::<_, String>(runs)
    })?;
    drop(sim);

    println!(
        "shopfloor-agent memory per device: cnc-modbus-generic (15 points), poll 1 s, batch 5 s; \
         {warmup:?} warm-up, {secs} s window per point, {} cores",
        cores()
    );
    println!(
        "{:>8} {:>14} {:>14} {:>12} {:>14}",
        "devices", "RSS MiB mean", "peak MiB", "CPU %", "readings/s"
    );
    for (n, f) in &runs {
        println!(
            "{n:>8} {:>14.2} {:>14.2} {:>12.2} {:>14.1}",
            f.rss_mean_mib,
            f.hwm_mib,
            f.cpu_pct,
            f.samples_per_s()
        );
    }
    let mean: Vec<(f64, f64)> = runs
        .iter()
        .map(|(n, f)| (*n as f64, f.rss_mean_mib))
        .collect();
    let peak: Vec<(f64, f64)> = runs.iter().map(|(n, f)| (*n as f64, f.hwm_mib)).collect();
    let (slope, intercept) = least_squares(&mean);
    let (peak_slope, peak_intercept) = least_squares(&peak);
    println!(
        "least squares: RSS ≈ {intercept:.2} MiB + {slope:.4} MiB × devices ({:.0} KiB per device); \
         peak ≈ {peak_intercept:.2} MiB + {peak_slope:.4} MiB × devices ({:.0} KiB per device)",
        slope * 1024.0,
        peak_slope * 1024.0
    );
    let idle = runs.first().map_or(f64::NAN, |(_, f)| f.rss_mean_mib);
    let idle_peak = runs.first().map_or(f64::NAN, |(_, f)| f.hwm_mib);
    let mut figures = Vec::new();
    for (n, f) in runs.iter().filter(|(n, _)| *n > 0) {
        figures.push(
            Figure::new(
                SCENARIO,
                &format!("agent RSS (mean), {n} devices"),
                f.rss_mean_mib,
                "MiB",
            )
            .baseline(idle)
            .note("baseline: the agent with no device"),
        );
        figures.push(
            Figure::new(
                SCENARIO,
                &format!("agent peak RSS (VmHWM), {n} devices"),
                f.hwm_mib,
                "MiB",
            )
            .baseline(idle_peak)
            .note("baseline: the agent with no device"),
        );
    }
    figures.push(
        Figure::new(
            SCENARIO,
            "RSS per device (least-squares slope)",
            slope,
            "MiB/device",
        )
        .note(format!("intercept {intercept:.2} MiB")),
    );
    figures.push(
        Figure::new(
            SCENARIO,
            "peak RSS per device (least-squares slope)",
            peak_slope,
            "MiB/device",
        )
        .note(format!("intercept {peak_intercept:.2} MiB")),
    );
    Ok(figures)
}
