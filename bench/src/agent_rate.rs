//! The agent at issue 9's rate: ≥ 100,000 tags/s from simulated Modbus devices at ≤ 15 % of
//! one core and ≤ 30 MB RSS.
//!
//! Processes:
//! - `shopfloor-sim` (a separate process): 100 Modbus TCP servers, one device each, of the
//!   `acquisition-modbus` scenario's 200-tag device (f32 tags five registers apart, holes
//!   answered with zero); ramping tags change with their own slopes and the simulator ticks
//!   every 100 ms, so every poll reads new values of them and report by exception reports
//!   each of their readings. Two plants, one after the other: **every tag ramping** (the
//!   worst case: every reading travels) and **1 tag in 10 ramping** (the others constant:
//!   read, summarised, not reported);
//! - this process: an embedded rumqttd broker and a subscriber counting the batches;
//! - the `shopfloor-agent` release binary (`run --config`), the template given in its
//!   `agent.templates_dir`, started three times:
//!   (a) **idle baseline**: no device, as in the `footprint` scenario;
//!   (b), (c) **100 devices × 200 tags polled every 200 ms**: 100,000 tags/s offered, against
//!   each plant; batch interval 5 s, outbox `fsync = "full"` and every other key at its
//!   default.
//!
//! Each run: start, 5 s warm-up, then a 20 s window (SHOPFLOOR_BENCH_SECS). Figures as in the
//! `footprint` scenario: tags read per second (`shopfloor_agent_device_samples_total` on the
//! agent's /metrics), agent CPU (utime + stime) as % of one core, VmRSS mean and VmHWM, batches
//! and bytes published, readings reported after report by exception, read errors.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::Ctx;
use crate::acquisition::{TAGS, template};
use crate::footprint::rows;
use crate::util::{
    AGENT, AgentFigures, AgentRun, Figure, MB30_IN_MIB, Target, agent_head, cores, embedded_broker,
    free_port, runtime, start_sim, subscriber, tempdir, window_secs, write,
};

const SCENARIO: &str = "agent-rate";
const DEVICES: usize = 100;
const QUICK_DEVICES: usize = 10;
const POLL_MS: u64 = 200;
const PREFIX: &str = "bench";
const AGENT_ID: &str = "bench-rate";
const TEMPLATE: &str = "bench-200";

/// What changes in a plant: tags `i` with `i % every == 0` ramp, the others stay constant.
#[derive(Debug, Clone, Copy)]
struct Plant {
    every: usize,
    label: &'static str,
}

const PLANTS: [Plant; 2] = [
    Plant {
        every: 1,
        label: "every tag changing",
    },
    Plant {
        every: 10,
        label: "1 tag in 10 changing",
    },
];

fn scenario(devices: usize, every: usize) -> String {
    let mut s =
        format!("name = \"agent-rate\"\ntemplates = [\"{TEMPLATE}.toml\"]\ntick_ms = 100\n");
    for d in 0..devices {
        s += &format!("[[modbus_tcp]]\nname = \"s{d:03}\"\nlisten = \"127.0.0.1:0\"\n");
        s += &format!(
            "[[device]]\nname = \"d{d:03}\"\ntemplate = \"{TEMPLATE}\"\nserver = \"s{d:03}\"\nholes = \"zero\"\n"
        );
        for i in (0..TAGS).step_by(every) {
            // Different slopes, so that no two tags carry the same series.
            s += &format!(
                "[[device.ramp]]\npoint = \"t{i:03}\"\nper_hour = {}\n",
                3600 + i * 7 + d
            );
        }
    }
    s
}

fn agent_config(
    templates: &Path,
    data: &Path,
    mqtt_port: u16,
    metrics_port: u16,
    devices: &[SocketAddr],
) -> String {
    let mut s = agent_head(
        AGENT_ID,
        data,
        Some(templates),
        mqtt_port,
        PREFIX,
        metrics_port,
    );
    for (d, a) in devices.iter().enumerate() {
        s += &format!(
            "\n[[device]]\nid = \"p1/e1/w1/l1/d{d:03}\"\ntemplate = \"{TEMPLATE}\"\nhost = \"127.0.0.1\"\nport = {}\nunit = 1\npoll_ms = {POLL_MS}\n",
            a.port()
        );
    }
    s
}

pub(crate) fn main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let secs = window_secs(ctx.quick, 3.0, 20.0);
    let warmup = Duration::from_secs(if ctx.quick { 1 } else { 5 });
    let devices = if ctx.quick { QUICK_DEVICES } else { DEVICES };
    let offered = (devices * TAGS) as f64 * 1000.0 / POLL_MS as f64;
    let agent_bin = AGENT.locate()?;
    let dir = tempdir("shopfloor-bench-rate")?;
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).map_err(|e| format!("{}: {e}", templates.display()))?;
    write(
        &templates.join(format!("{TEMPLATE}.toml")),
        &template(TEMPLATE),
    )?;
    write(
        &dir.path().join(format!("{TEMPLATE}.toml")),
        &template(TEMPLATE),
    )?;

    let rt = runtime(Some(2))?;
    let (idle, runs) = rt.block_on(async {
        let mqtt_port = free_port();
        embedded_broker(mqtt_port)?;
        let counts = subscriber(mqtt_port, PREFIX);
        let mut idle = None;
        let mut runs = Vec::new();
        for (k, plant) in PLANTS.iter().enumerate() {
            // One simulator per plant, so the other's ramps cost nothing during the window.
            let file = dir.path().join(format!("plant-{k}.toml"));
            write(&file, &scenario(devices, plant.every))?;
            let sim = start_sim(&file, &[], devices)?;
            let addrs = sim.modbus()?;
            let run = |name| AgentRun {
                bin: &agent_bin,
                dir: dir.path(),
                name,
                warmup,
                secs,
                sim_pid: Some(sim.pid()),
                counts: Some(&counts),
            };
            if idle.is_none() {
                idle = Some(
                    run("idle")
                        .run(|data, m| agent_config(&templates, data, mqtt_port, m, &[]))
                        .await?,
                );
            }
            let name = format!("rate-{k}");
            runs.push((
                *plant,
                run(&name)
                    .run(|data, m| agent_config(&templates, data, mqtt_port, m, &addrs))
                    .await?,
            ));
        }
        Ok::<_, String>((idle.unwrap_or_default(), runs))
    })?;

    println!(
        "shopfloor-agent at rate: (a) idle, no device; {devices} Modbus TCP devices × {TAGS} \
         non-contiguous f32 tags, poll {POLL_MS} ms = {offered:.0} tags/s offered, (b) every tag \
         changing, (c) 1 tag in 10 changing; batch 5 s; {warmup:?} warm-up, {secs} s window, \
         {} cores",
        cores()
    );
    println!(
        "{:<48} {:>12} {:>12} {:>12}",
        "", "(a) idle", "(b) all", "(c) 1 in 10"
    );
    let mut all: Vec<&AgentFigures> = vec![&idle];
    all.extend(runs.iter().map(|(_, f)| f));
    let mut table = rows(&all);
    let reported = "shopfloor_agent_samples_reported_total";
    let errors = "shopfloor_agent_device_read_errors_total";
    let published = "shopfloor_agent_batches_published_total";
    let bytes = "shopfloor_agent_published_bytes_total";
    let dropped = "shopfloor_agent_outbox_dropped_samples_total";
    let each = |f: &dyn Fn(&AgentFigures) -> f64| all.iter().map(|r| f(r)).collect::<Vec<_>>();
    let cpu_per_k = |r: &AgentFigures| r.cpu_pct * 10.0 / r.samples_per_s().max(1.0) * 1000.0;
    table.extend([
        (
            "readings reported per second (by exception)".to_owned(),
            each(&|r| r.rate(reported)),
        ),
        (
            "read errors per second".to_owned(),
            each(&|r| r.rate(errors)),
        ),
        (
            "batches published per second (agent)".to_owned(),
            each(&|r| r.rate(published)),
        ),
        (
            "MB published per second (agent)".to_owned(),
            each(&|r| r.rate(bytes) / 1e6),
        ),
        (
            "outbox samples dropped per second".to_owned(),
            each(&|r| r.rate(dropped)),
        ),
        (
            "agent CPU ms per 1,000 tags".to_owned(),
            each(&|r| {
                if r.samples_per_s() > 0.0 {
                    cpu_per_k(r)
                } else {
                    f64::NAN
                }
            }),
        ),
    ]);
    for (name, v) in &table {
        let cells: Vec<String> = v
            .iter()
            .map(|x| {
                if x.is_finite() {
                    format!("{x:>12.2}")
                } else {
                    format!("{:>12}", "-")
                }
            })
            .collect();
        println!("{name:<48} {}", cells.join(" "));
    }

    let note = "baseline: the idle agent, no device";
    let mut figures = Vec::new();
    for (plant, busy) in &runs {
        let l = plant.label;
        figures.extend([
            Figure::new(
                SCENARIO,
                &format!("tags read per second, {l}"),
                busy.samples_per_s(),
                "tags/s",
            )
            .target(Target::at_least(100_000.0, "≥ 100000 tags/s"))
            .note(format!(
                "{devices} devices × {TAGS} tags, poll {POLL_MS} ms: {offered:.0} tags/s offered"
            )),
            Figure::new(
                SCENARIO,
                &format!("agent CPU, {l}"),
                busy.cpu_pct,
                "% of one core",
            )
            .baseline(idle.cpu_pct)
            .target(Target::at_most(15.0, "≤ 15 % of one core"))
            .note(note),
            Figure::new(
                SCENARIO,
                &format!("agent RSS (mean), {l}"),
                busy.rss_mean_mib,
                "MiB",
            )
            .baseline(idle.rss_mean_mib)
            .target(Target::at_most(MB30_IN_MIB, "≤ 30 MB"))
            .note(note),
            Figure::new(
                SCENARIO,
                &format!("agent peak RSS (VmHWM), {l}"),
                busy.hwm_mib,
                "MiB",
            )
            .baseline(idle.hwm_mib)
            .target(Target::at_most(MB30_IN_MIB, "≤ 30 MB"))
            .note(note),
            Figure::new(
                SCENARIO,
                &format!("agent CPU per 1,000 tags, {l}"),
                cpu_per_k(busy),
                "ms",
            ),
            Figure::new(
                SCENARIO,
                &format!("readings reported (by exception), {l}"),
                busy.rate(reported),
                "readings/s",
            ),
            Figure::new(
                SCENARIO,
                &format!("read errors, {l}"),
                busy.rate(errors),
                "errors/s",
            ),
            Figure::new(
                SCENARIO,
                &format!("batches published (agent), {l}"),
                busy.rate(published),
                "batches/s",
            ),
            Figure::new(
                SCENARIO,
                &format!("published (agent), {l}"),
                busy.rate(bytes) / 1e6,
                "MB/s",
            ),
            Figure::new(
                SCENARIO,
                &format!("outbox samples dropped, {l}"),
                busy.rate(dropped),
                "samples/s",
            ),
            Figure::new(
                SCENARIO,
                &format!("simulator CPU, {l}"),
                busy.sim_cpu_pct,
                "% of one core",
            )
            .baseline(idle.sim_cpu_pct),
        ]);
    }
    Ok(figures)
}
