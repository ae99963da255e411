//! Agent RSS and CPU when idle and when polling 50 devices.
//!
//! Processes:
//! - `shopfloor-sim` (a separate process): 5 Modbus TCP servers × 10 unit ids, 50 CNC machines
//!   of the built-in template `cnc-modbus-generic` (15 points each), each cycling through
//!   producing, stops, setup and alarms with its own cycle time at simulated time ×10, so
//!   states and part counters change during the run;
//! - this process: an embedded rumqttd broker (MQTT 3.1.1 listener only) and a subscriber
//!   counting the batches the agent publishes;
//! - the `shopfloor-agent` release binary (`run --config`), started twice:
//!   (a) **idle baseline**: the same agent with no device at all (the configuration allows
//!   zero devices), publishing to the broker, metrics on;
//!   (b) **polling**: 50 devices on 5 buses, `poll_ms = 1000`, `batch.interval_s = 5`,
//!   `outbox.fsync = "full"` (the default), publishing to the broker.
//!
//! Each run: start, 5 s warm-up, then a 20 s window. Figures: agent CPU (utime + stime from
//! /proc/<pid>/stat) as % of one core, VmRSS sampled every 250 ms (mean and last), VmHWM
//! (peak RSS since start) from /proc/<pid>/status, readings received by the agent per second
//! (sum of `shopfloor_agent_device_samples_total` on its /metrics, before and after), batches
//! and bytes received by the subscriber, and the ratios (b)/(a). Linux only (reads /proc).
//!
//! Run: `shopfloor-bench footprint`. The agent and the simulator are looked up next to this
//! program (target/release/), or at SHOPFLOOR_AGENT_BIN and SHOPFLOOR_SIM_BIN.
//! SHOPFLOOR_BENCH_SECS changes the 20 s window.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::Ctx;
use crate::util::{
    AGENT, AgentFigures, AgentRun, Figure, MB30_IN_MIB, Target, agent_head, cores, embedded_broker,
    free_port, runtime, start_sim, subscriber, tempdir, window_secs, write,
};

const SCENARIO: &str = "footprint";
const SERVERS: usize = 5;
const UNITS: usize = 10;
const DEVICES: usize = SERVERS * UNITS;
const PREFIX: &str = "bench";
const AGENT_ID: &str = "bench-footprint";

fn device_id(d: usize) -> String {
    format!("p1/e1/w1/l{}/cnc-{:02}", d / UNITS + 1, d + 1)
}

/// `servers` × 10 CNC machines behind `servers` Modbus TCP servers (unit ids 1..=10); the
/// footprint runs 5 servers (50 machines), the `memory` scenario up to 20.
pub(crate) fn scenario(servers: usize) -> String {
    let mut s = String::from("name = \"footprint\"\ntime_scale = 10\ntick_ms = 100\n");
    for srv in 0..servers {
        s += &format!("[[modbus_tcp]]\nname = \"s{srv:02}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    for d in 0..servers * UNITS {
        let (srv, unit) = (d / UNITS, d % UNITS + 1);
        // Different cycle times and phase lengths, so the machines do not move in lockstep.
        let cycle = 20 + (d % 7) * 3;
        let first = 60 + (d % 11) * 15;
        s += &format!(
            r#"[[device]]
name = "cnc-{n:02}"
template = "cnc-modbus-generic"
server = "s{srv:02}"
unit = {unit}
[device.machine]
cycle_s = {cycle}
scrap_every = 25
phases = [
  {{ state = "producing", for_s = {first} }},
  {{ state = "stopped", for_s = 40 }},
  {{ state = "producing", for_s = 300 }},
  {{ state = "alarm", for_s = 30, alarm_code = 1001 }},
  {{ state = "producing", for_s = 200 }},
  {{ state = "setup", for_s = 90 }},
]
[device.values]
program_number = {prog}
feed_override_pct = 100
spindle_override_pct = 100
last_cycle_time_s = {cycle_ms}
[[device.ramp]]
point = "spindle_speed_rpm"
per_hour = 36000
start = 1000
while_producing = true
[[device.ramp]]
point = "power_on_hours"
per_hour = 10
start = {hours}
"#,
            n = d + 1,
            prog = 1000 + d,
            cycle_ms = cycle * 1000,
            hours = 10_000 + d * 100,
        );
    }
    s
}

/// The agent's configuration: the first `devices` machines of [`scenario`] on `servers`
/// (none: the idle agent).
pub(crate) fn agent_config(
    agent_id: &str,
    data: &Path,
    mqtt_port: u16,
    metrics_port: u16,
    servers: &[SocketAddr],
    devices: usize,
) -> String {
    let mut s = agent_head(agent_id, data, None, mqtt_port, PREFIX, metrics_port);
    if devices > 0 {
        for (srv, a) in servers.iter().enumerate().take(devices.div_ceil(UNITS)) {
            s += &format!(
                "\n[[bus]]\nname = \"s{srv:02}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                a.port()
            );
        }
        for d in 0..devices {
            s += &format!(
                "\n[[device]]\nid = \"{}\"\ntemplate = \"cnc-modbus-generic\"\nbus = \"s{:02}\"\nunit = {}\npoll_ms = 1000\n",
                device_id(d),
                d / UNITS,
                d % UNITS + 1
            );
        }
    }
    s
}

pub(crate) fn main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let secs = window_secs(ctx.quick, 3.0, 20.0);
    let warmup = Duration::from_secs(if ctx.quick { 1 } else { 5 });
    let agent_bin = AGENT.locate()?;
    let dir = tempdir("shopfloor-bench-footprint")?;
    write(&dir.path().join("plant.toml"), &scenario(SERVERS))?;
    let sim = start_sim(&dir.path().join("plant.toml"), &[], SERVERS)?;
    let addrs = sim.modbus()?;

    let rt = runtime(Some(2))?;
    let (idle, busy) = rt.block_on(async {
        let mqtt_port = free_port();
        embedded_broker(mqtt_port)?;
        let counts = subscriber(mqtt_port, PREFIX);
        let run = |name| AgentRun {
            bin: &agent_bin,
            dir: dir.path(),
            name,
            warmup,
            secs,
            sim_pid: Some(sim.pid()),
            counts: Some(&counts),
        };
        let idle = run("idle")
            .run(|data, m| agent_config(AGENT_ID, data, mqtt_port, m, &addrs, 0))
            .await?;
        let busy = run("poll50")
            .run(|data, m| agent_config(AGENT_ID, data, mqtt_port, m, &addrs, DEVICES))
            .await?;
        Ok::<_, String>((idle, busy))
    })?;
    drop(sim);

    println!(
        "shopfloor-agent footprint: (a) idle, no device; (b) {DEVICES} Modbus TCP devices \
         (cnc-modbus-generic, {SERVERS} servers × {UNITS} units), poll 1 s, batch 5 s; \
         {warmup:?} warm-up, {secs} s window, {} cores",
        cores()
    );
    println!(
        "{:<48} {:>12} {:>12} {:>10}",
        "", "(a) idle", "(b) 50 dev", "(b)/(a)"
    );
    print_rows(&idle, &busy);
    let fig = |f: &AgentFigures| {
        serde_json::json!({
            "cpu_pct": (f.cpu_pct * 100.0).round() / 100.0,
            "rss_mean_mib": (f.rss_mean_mib * 100.0).round() / 100.0,
            "rss_last_mib": (f.rss_last_mib * 100.0).round() / 100.0,
            "hwm_mib": (f.hwm_mib * 100.0).round() / 100.0,
            "samples_per_s": (f.samples_per_s() * 10.0).round() / 10.0,
            "batches": f.batches,
            "batch_kb": (f.batch_kb * 100.0).round() / 100.0,
            "sim_cpu_pct": (f.sim_cpu_pct * 100.0).round() / 100.0,
            "threads_cpu_pct": f.threads.iter().map(|(k, v)| (k.clone(), serde_json::json!((v * 100.0).round() / 100.0))).collect::<serde_json::Map<_, _>>(),
        })
    };
    let line = serde_json::json!({
        "bench": "footprint",
        "devices": DEVICES,
        "window_s": secs,
        "cores": cores(),
        "idle": fig(&idle),
        "poll50": fig(&busy),
        "cpu_ratio": (busy.cpu_pct / idle.cpu_pct * 100.0).round() / 100.0,
        "rss_ratio": (busy.rss_mean_mib / idle.rss_mean_mib * 100.0).round() / 100.0,
        "hwm_ratio": (busy.hwm_mib / idle.hwm_mib * 100.0).round() / 100.0,
    });
    println!("{line}");
    let note = "baseline: the idle agent, no device";
    Ok(vec![
        Figure::new(
            SCENARIO,
            "agent CPU, 50 devices",
            busy.cpu_pct,
            "% of one core",
        )
        .baseline(idle.cpu_pct)
        .target(Target::at_most(15.0, "≤ 15 % of one core"))
        .note(note),
        Figure::new(
            SCENARIO,
            "agent RSS (mean), 50 devices",
            busy.rss_mean_mib,
            "MiB",
        )
        .baseline(idle.rss_mean_mib)
        .target(Target::at_most(MB30_IN_MIB, "≤ 30 MB"))
        .note(note),
        Figure::new(
            SCENARIO,
            "agent peak RSS (VmHWM), 50 devices",
            busy.hwm_mib,
            "MiB",
        )
        .baseline(idle.hwm_mib)
        .target(Target::at_most(MB30_IN_MIB, "≤ 30 MB"))
        .note(note),
        Figure::new(
            SCENARIO,
            "readings received, 50 devices",
            busy.samples_per_s(),
            "readings/s",
        ),
        Figure::new(
            SCENARIO,
            "batches received by the subscriber",
            busy.batches as f64,
            "batches",
        )
        .note(format!("{secs} s window")),
        Figure::new(SCENARIO, "kB per batch received", busy.batch_kb, "kB"),
        Figure::new(
            SCENARIO,
            "simulator CPU, 50 devices",
            busy.sim_cpu_pct,
            "% of one core",
        )
        .baseline(idle.sim_cpu_pct),
    ])
}

/// The detailed table of two agent runs: (a) a baseline, (b) the run measured.
pub(crate) fn print_rows(a: &AgentFigures, b: &AgentFigures) {
    for (name, v) in rows(&[a, b]) {
        let (a, b) = (v[0], v[1]);
        let ratio = if a > 0.0 {
            format!("{:.2}×", b / a)
        } else {
            "-".to_owned()
        };
        println!("{name:<48} {a:>12.2} {b:>12.2} {ratio:>10}");
    }
}

/// The rows of the detailed table, one value per run.
pub(crate) fn rows(runs: &[&AgentFigures]) -> Vec<(String, Vec<f64>)> {
    let each = |f: &dyn Fn(&AgentFigures) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let mut out = vec![
        ("agent CPU, % of one core".to_owned(), each(&|r| r.cpu_pct)),
        ("agent RSS MiB (mean)".to_owned(), each(&|r| r.rss_mean_mib)),
        ("agent RSS MiB (end)".to_owned(), each(&|r| r.rss_last_mib)),
        (
            "agent peak RSS MiB (VmHWM)".to_owned(),
            each(&|r| r.hwm_mib),
        ),
        (
            "readings received per second".to_owned(),
            each(&|r| r.samples_per_s()),
        ),
        (
            "batches received by the subscriber".to_owned(),
            each(&|r| r.batches as f64),
        ),
        ("kB per batch received".to_owned(), each(&|r| r.batch_kb)),
    ];
    let names: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.threads.keys()).collect();
    for n in names {
        out.push((
            format!("  agent thread {n}, % of one core"),
            each(&|r| r.threads.get(n).copied().unwrap_or(0.0)),
        ));
    }
    out.push((
        "simulator CPU, % of one core".to_owned(),
        each(&|r| r.sim_cpu_pct),
    ));
    out
}
