//! Acquisition throughput and agent CPU against the simulator (a separate `shopfloor-sim`
//! process, so that its CPU is not charged to the agent): 100 devices × 200 non-contiguous
//! tags over Modbus TCP, one connection per device.
//!
//! Two runs in the same process, same devices, same duration:
//! - baseline: one request per tag (what uncoalesced collectors do; `max_gap = 0`);
//! - planned: the read planner's coalesced requests (`max_gap = 8`, ≤ 125 registers).
//!
//! Figures: tags read per second, agent CPU ms per 1,000 tags (utime + stime of this process
//! from /proc/self/stat), and the ratios planned / baseline. Linux only (reads /proc).
//!
//! Run: `shopfloor-bench acquisition-modbus` (SHOPFLOOR_BENCH_SECS to change the 5 s
//! measuring window).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shopfloor_acquire::modbus::{BusConfig, DeviceConfig, Transport, run_bus};
use shopfloor_acquire::{Event, Outcome};
use shopfloor_devices::plan;
use shopfloor_devices::{Overrides, Template};
use tokio::sync::{mpsc, watch};

use crate::Ctx;
use crate::util::{Figure, cores, cpu_seconds, runtime, start_sim, tempdir, window_secs, write};

const SCENARIO: &str = "acquisition-modbus";
const DEVICES: usize = 100;
const QUICK_DEVICES: usize = 10;
pub(crate) const TAGS: usize = 200;

/// The 200-tag device: f32 tags 5 registers apart (2 registers of value, a hole of 3).
/// Also the device of the `agent-rate` scenario.
pub(crate) fn template(id: &str) -> String {
    let mut t = format!(
        "id = \"{id}\"\nname = \"bench\"\nname_zh = \"基准\"\nkind = \"test\"\nprotocol = \"modbus\"\n[modbus]\nmax_gap = 8\n"
    );
    for i in 0..TAGS {
        t += &format!(
            "[[point]]\nname = \"t{i:03}\"\ntable = \"holding\"\naddress = {}\ntype = \"f32\"\n",
            i * 5
        );
    }
    t
}

fn scenario(devices: usize) -> String {
    let mut s =
        String::from("name = \"bench\"\ntemplates = [\"bench-200.toml\"]\ntick_ms = 1000\n");
    for d in 0..devices {
        s += &format!("[[modbus_tcp]]\nname = \"s{d:03}\"\nlisten = \"127.0.0.1:0\"\n");
        s += &format!(
            "[[device]]\nname = \"d{d:03}\"\ntemplate = \"bench-200\"\nserver = \"s{d:03}\"\nholes = \"zero\"\n"
        );
        s += "[[device.ramp]]\npoint = \"t000\"\nper_hour = 3600\n";
    }
    s
}

struct Figures {
    requests_per_cycle: usize,
    tags_per_s: f64,
    requests_per_s: f64,
    cpu_ms_per_1000_tags: f64,
    sim_cpu_ms_per_1000_tags: f64,
}

async fn run(
    addrs: &[SocketAddr],
    t: &Template,
    max_gap: u16,
    secs: f64,
    sim_pid: &str,
) -> Result<Figures, String> {
    let overrides = Overrides {
        max_gap: Some(max_gap),
        ..Overrides::default()
    };
    let device = Arc::new(
        t.resolve_modbus(&overrides)
            .map_err(|e| format!("bench template: {e}"))?,
    );
    let requests_per_cycle =
        plan::plan(&device.points, &device.limits, &plan::Learned::default()).len();
    let (tx, mut rx) = mpsc::channel(65_536);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut bus = BusConfig::new(format!("s{i:03}"), Transport::Tcp { addr: *addr });
        bus.timeout = Duration::from_secs(2);
        let dev = DeviceConfig {
            id: Arc::from(format!("d{i:03}")),
            unit: 1,
            poll: Duration::from_millis(1),
            device: device.clone(),
        };
        tasks.push(tokio::spawn(run_bus(
            bus,
            vec![dev],
            tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(tx);
    // Warm up (connections, first plans), then measure.
    let warm = Instant::now() + Duration::from_secs(1);
    while Instant::now() < warm {
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
    }
    let (cpu0, sim0, t0) = (cpu_seconds("self"), cpu_seconds(sim_pid), Instant::now());
    let end = t0 + Duration::from_secs_f64(secs);
    let (mut tags, mut requests) = (0u64, 0u64);
    while let Ok(Some(e)) = tokio::time::timeout_at(end.into(), rx.recv()).await {
        tags += e.samples().iter().filter(|s| s.value.is_ok()).count() as u64;
        if let Event::Request {
            outcome: Outcome::Ok,
            ..
        } = e
        {
            requests += 1;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, sim1) = (cpu_seconds("self"), cpu_seconds(sim_pid));
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let per_k = |cpu: f64| cpu * 1000.0 / (tags.max(1) as f64) * 1000.0;
    Ok(Figures {
        requests_per_cycle,
        tags_per_s: tags as f64 / elapsed,
        requests_per_s: requests as f64 / elapsed,
        cpu_ms_per_1000_tags: per_k(cpu1 - cpu0),
        sim_cpu_ms_per_1000_tags: per_k(sim1 - sim0),
    })
}

pub(crate) fn main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let secs = window_secs(ctx.quick, 1.0, 5.0);
    let devices = if ctx.quick { QUICK_DEVICES } else { DEVICES };
    let dir = tempdir("shopfloor-bench-modbus")?;
    let dir = dir.path();
    write(&dir.join("bench-200.toml"), &template("bench-200"))?;
    write(&dir.join("bench.toml"), &scenario(devices))?;
    let t = Template::parse(&template("bench-200")).map_err(|e| format!("bench template: {e}"))?;
    let sim = start_sim(&dir.join("bench.toml"), &[], devices)?;
    let sim_pid = sim.pid().to_string();
    let addrs = sim.modbus()?;
    let rt = runtime(None)?;
    let (base, planned) = rt.block_on(async {
        let base = run(&addrs, &t, 0, secs, &sim_pid).await?;
        let planned = run(&addrs, &t, 8, secs, &sim_pid).await?;
        Ok::<_, String>((base, planned))
    })?;
    drop(sim);
    println!(
        "Modbus TCP, {devices} devices × {TAGS} non-contiguous f32 tags, {secs} s per run, {} cores",
        cores()
    );
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "", "baseline", "planned", "ratio"
    );
    let mut figures = Vec::new();
    let mut row = |name: &str, unit: &str, a: f64, b: f64| {
        println!("{name:<34} {a:>12.1} {b:>12.1} {:>11.2}×", b / a);
        figures.push(
            Figure::new(SCENARIO, &format!("planned: {name}"), b, unit)
                .baseline(a)
                .note("baseline: one request per tag"),
        );
    };
    row(
        "requests per device cycle",
        "requests",
        base.requests_per_cycle as f64,
        planned.requests_per_cycle as f64,
    );
    row(
        "tags read per second",
        "tags/s",
        base.tags_per_s,
        planned.tags_per_s,
    );
    row(
        "requests per second",
        "requests/s",
        base.requests_per_s,
        planned.requests_per_s,
    );
    row(
        "agent CPU ms per 1,000 tags",
        "ms",
        base.cpu_ms_per_1000_tags,
        planned.cpu_ms_per_1000_tags,
    );
    row(
        "simulator CPU ms per 1,000 tags",
        "ms",
        base.sim_cpu_ms_per_1000_tags,
        planned.sim_cpu_ms_per_1000_tags,
    );
    Ok(figures)
}
